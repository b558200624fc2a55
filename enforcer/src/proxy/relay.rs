//! TCP pass-through: what egress rules get, and resources until their protocol handler lands.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpStream;

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_upstream: u64,
    pub to_client: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("upstream {addr} refused or unreachable: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {addr} did not answer within {secs}s")]
    ConnectTimeout { addr: SocketAddr, secs: u64 },
    #[error("relay with {addr} failed after {stats:?}: {source}")]
    Io {
        addr: SocketAddr,
        stats: RelayStats,
        source: std::io::Error,
    },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Copies both ways until both sides have closed; half-closes are passed on.
pub async fn relay(
    client: &mut TcpStream,
    upstream_addr: SocketAddr,
) -> Result<RelayStats, RelayError> {
    let mut upstream = connect_upstream(upstream_addr).await?;
    match tokio::io::copy_bidirectional(client, &mut upstream).await {
        Ok((to_upstream, to_client)) => Ok(RelayStats {
            to_upstream,
            to_client,
        }),
        Err(source) => Err(RelayError::Io {
            addr: upstream_addr,
            stats: RelayStats::default(),
            source,
        }),
    }
}
