//! TCP pass-through: what egress rules get, and resources until their protocol handler lands.
//!
//! Bytes move with splice(2) through a pipe per direction, socket to socket inside the kernel:
//! no copy through userspace buffers, so throughput stays near loopback speed and an idle
//! connection costs no buffer memory at all (pipes are made at the first byte).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use tokio::{io::Interest, net::TcpStream};

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_upstream: u64,
    pub to_client: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("upstream {addr} refused or unreachable: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("upstream {addr} did not answer within {secs}s")]
    ConnectTimeout { addr: SocketAddr, secs: u64 },
    #[error("relay with {addr} failed after {stats:?}: {source}")]
    Io {
        addr: SocketAddr,
        stats: RelayStats,
        source: io::Error,
    },
    /// A protocol handler ended the session (bad input, upstream authentication, policy).
    #[error("{protocol} session ended after {stats:?}: {message}")]
    Protocol {
        protocol: &'static str,
        stats: RelayStats,
        message: String,
    },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of splice at a time; the pipe is grown to match.
const CHUNK: usize = 1 << 20;

pub async fn connect_upstream(addr: SocketAddr) -> Result<TcpStream, RelayError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(RelayError::Connect { addr, source }),
        Err(_) => Err(RelayError::ConnectTimeout {
            addr,
            secs: CONNECT_TIMEOUT.as_secs(),
        }),
    }
}

/// Connects to `upstream_addr` and relays both ways until both sides have closed; a
/// half-close is passed on, an error on either side ends both.
pub async fn relay(
    client: &mut TcpStream,
    upstream_addr: SocketAddr,
) -> Result<RelayStats, RelayError> {
    let upstream = connect_upstream(upstream_addr).await?;
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let result = tokio::try_join!(
        splice_half(&*client, &upstream, &up),
        splice_half(&upstream, &*client, &down)
    );
    let stats = RelayStats {
        to_upstream: up.load(Ordering::Relaxed),
        to_client: down.load(Ordering::Relaxed),
    };
    match result {
        Ok(_) => Ok(stats),
        Err(source) => Err(RelayError::Io {
            addr: upstream_addr,
            stats,
            source,
        }),
    }
}

/// One direction: `from` → pipe → `to`, until `from` reaches EOF; then half-closes `to`.
async fn splice_half(from: &TcpStream, to: &TcpStream, moved: &AtomicU64) -> io::Result<()> {
    let mut pipe: Option<(OwnedFd, OwnedFd)> = None;
    loop {
        from.readable().await?;
        let (pipe_r, pipe_w) = match &pipe {
            Some(p) => p,
            None => pipe.insert(new_pipe()?),
        };
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe_w.as_raw_fd(), CHUNK)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            // SAFETY: a valid connected socket; SHUT_WR has no memory effects.
            unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn new_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    // A bigger pipe moves more per syscall; failure (pipe-max-size) only costs speed.
    // SAFETY: a valid pipe fd.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    Ok((r, w))
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain fds; null offsets mean "current position", as sockets and pipes require.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
