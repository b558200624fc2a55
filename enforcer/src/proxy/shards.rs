//! Connection threads. Each runs a single-threaded tokio runtime that accepts on its own copy
//! of every listener and serves what it accepted, start to end, on that thread.
//!
//! Why not the multi-threaded runtime: a statement crosses the proxy in a few microseconds of
//! work, and the work-stealing scheduler woke a parked worker (a futex call and a context
//! switch) for about every second task wake-up, which cost more than the work itself
//! (pgbench -S -c8 through enforcer: 15.2k TPS with two workers, 17.9k with one). Threads that
//! each own their connections never wake each other; the kernel spreads accepts over them
//! (each thread waits on the same listening sockets), and a busy thread accepts less.

use std::{net::SocketAddr, sync::Arc, thread::JoinHandle};

use tokio::{net::TcpListener, sync::oneshot};

use super::{Listeners, Proxy, ProxyError};

/// The listeners, detached from the runtime that bound them, for each thread to register
/// with its own.
struct Detached {
    v4: std::net::TcpListener,
    v6: Option<std::net::TcpListener>,
    port: u16,
    gateways: Vec<(SocketAddr, std::net::TcpListener)>,
}

impl Detached {
    fn from(listeners: Listeners) -> std::io::Result<Detached> {
        Ok(Detached {
            v4: listeners.v4.into_std()?,
            v6: listeners.v6.map(TcpListener::into_std).transpose()?,
            port: listeners.port,
            gateways: listeners
                .gateways
                .into_iter()
                .map(|(addr, l)| Ok((addr, l.into_std()?)))
                .collect::<std::io::Result<_>>()?,
        })
    }

    fn try_clone(&self) -> std::io::Result<Detached> {
        Ok(Detached {
            v4: self.v4.try_clone()?,
            v6: self.v6.as_ref().map(|l| l.try_clone()).transpose()?,
            port: self.port,
            gateways: self
                .gateways
                .iter()
                .map(|(addr, l)| Ok((*addr, l.try_clone()?)))
                .collect::<std::io::Result<_>>()?,
        })
    }

    /// Registers with the runtime this is called on.
    fn register(self) -> std::io::Result<Listeners> {
        Ok(Listeners {
            v4: TcpListener::from_std(self.v4)?,
            v6: self.v6.map(TcpListener::from_std).transpose()?,
            port: self.port,
            gateways: self
                .gateways
                .into_iter()
                .map(|(addr, l)| Ok((addr, TcpListener::from_std(l)?)))
                .collect::<std::io::Result<_>>()?,
        })
    }
}

/// One thread per four CPUs, at least one. The proxy shares the host with the workload and
/// the servers it talks to: on 2 CPUs one thread served pgbench -S -c8 at 19.2k TPS and two at
/// 13.2k (each sleeping and waking for half the work; every wake-up is a context switch the
/// workload's processes wait behind), while one thread's ~35 µs per statement leaves room for
/// some 25k statements a second before it is the limit.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (usize::from(n) / 4).max(1))
}

/// The running connection threads. Dropping this (or [`Shards::stop`]) ends them: each stops
/// accepting and its runtime, with every connection it serves, is dropped.
pub struct Shards {
    stop: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Starts `threads` connection threads serving `listeners`; 0 picks [`default_threads`].
    pub fn start(
        proxy: &Arc<Proxy>,
        listeners: Listeners,
        threads: usize,
    ) -> Result<Shards, ProxyError> {
        let threads = match threads {
            0 => default_threads(),
            n => n,
        };
        let detached = Detached::from(listeners).map_err(ProxyError::Threads)?;
        let mut shards = Shards {
            stop: Vec::with_capacity(threads),
            threads: Vec::with_capacity(threads),
        };
        for index in 0..threads {
            let own = detached.try_clone().map_err(ProxyError::Threads)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ProxyError::Threads)?;
            // Registered with the thread's runtime here, so that a failure fails the start.
            let listeners = {
                let _entered = runtime.enter();
                own.register().map_err(ProxyError::Threads)?
            };
            let (stop, stopped) = oneshot::channel();
            let proxy = Arc::clone(proxy);
            let thread = std::thread::Builder::new()
                .name(format!("proxy-{index}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        tokio::select! {
                            () = proxy.serve(listeners) => {}
                            _ = stopped => {}
                        }
                    });
                    // Dropping the runtime here drops every connection this thread served.
                })
                .map_err(ProxyError::Threads)?;
            shards.stop.push(stop);
            shards.threads.push(thread);
        }
        Ok(shards)
    }

    /// Tells every thread to stop accepting and to end its connections.
    pub fn stop(&mut self) {
        self.stop.clear();
    }

    /// Stops the threads and waits until they have ended.
    pub fn join(mut self) {
        self.stop();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
