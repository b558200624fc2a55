//! The userspace proxy every workload connection is redirected into.
//!
//! accept → take the kernel's record of the original destination (by the client's address) →
//! route by policy → deny (close at once), egress (TCP relay) or resource (protocol handler) →
//! record the decision and the outcome.

mod connection;
mod relay;
mod sessions;
mod shards;

pub use connection::{Connection, OUTSIDE};
pub use relay::{RelayError, RelayStats, connect_upstream, relay};
pub use sessions::{SessionGuard, SessionInfo, Sessions};
pub use shards::{Shards, default_threads};

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use enforcer_common::ORIG_AMBIGUOUS;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::{
    identity::{LOCAL_PRINCIPAL, WorkloadIdentity},
    metrics::{ConnectionLabels, DirectionLabels, Metrics},
    policy::{Policy, Route, RouteTarget},
    protocol,
    record::{ConnectionClosed, ConnectionDecided, Event, Recorder},
    redirect::{Redirect, proxy_addrs},
};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the proxy's connection threads: {0}")]
    Threads(std::io::Error),
}

/// Where the admin API listens, and the router that serves it to the workload.
pub struct AdminRoute {
    pub addr: SocketAddr,
    /// `/v1` only: the workload has no business with metrics or health.
    pub workload_router: axum::Router,
}

/// Everything a connection task needs.
pub struct Proxy {
    pub workload: String,
    pub identity: Option<WorkloadIdentity>,
    principal: String,
    pub policy: Arc<Policy>,
    pub redirect: Arc<Mutex<Redirect>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub port: u16,
    pub sessions: Arc<Sessions>,
    admin: Option<AdminRoute>,
    grants: Option<Arc<crate::grant::Grants>>,
    protocols: Arc<protocol::Shared>,
    next_id: AtomicU64,
}

/// The proxy's two listeners, IPv4 and IPv6 loopback, on one port; and the resources'
/// gateways.
pub struct Listeners {
    pub v4: TcpListener,
    pub v6: Option<TcpListener>,
    pub port: u16,
    pub gateways: Vec<(SocketAddr, TcpListener)>,
}

/// Binds every resource's gateway address.
pub fn bind_gateways(policy: &Policy) -> Result<Vec<(SocketAddr, TcpListener)>, ProxyError> {
    policy
        .resources
        .iter()
        .filter_map(|r| r.gateway)
        .map(|addr| Ok((addr, listen(addr)?)))
        .collect()
}

impl Listeners {
    /// Binds 127.0.0.1:`port` and [::1]:`port`. Port 0 picks a port free on both.
    pub fn bind(port: u16) -> Result<Listeners, ProxyError> {
        let attempts = if port == 0 { 32 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let [v4_addr, v6_addr] = proxy_addrs(port);
            let v4 = listen(v4_addr)?;
            let port = v4
                .local_addr()
                .map_err(|source| ProxyError::Bind {
                    addr: v4_addr,
                    source,
                })?
                .port();
            let v6_addr = SocketAddr::new(v6_addr.ip(), port);
            match listen(v6_addr) {
                Ok(v6) => {
                    return Ok(Listeners {
                        v4,
                        v6: Some(v6),
                        port,
                        gateways: Vec::new(),
                    });
                }
                // No IPv6 on this host: IPv6 connects then fail, which is what we want anyway.
                Err(ProxyError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrNotAvailable =>
                {
                    return Ok(Listeners {
                        v4,
                        v6: None,
                        port,
                        gateways: Vec::new(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ProxyError::Bind {
            addr: proxy_addrs(port)[1],
            source: std::io::Error::other("no port free on both loopback addresses"),
        }))
    }
}

fn listen(addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(4096).map_err(err)
}

impl Proxy {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        workload: String,
        identity: Option<WorkloadIdentity>,
        policy: Arc<Policy>,
        redirect: Arc<Mutex<Redirect>>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        port: u16,
        sessions: Arc<Sessions>,
        admin: Option<AdminRoute>,
        grants: Option<Arc<crate::grant::Grants>>,
        protocols: Arc<protocol::Shared>,
    ) -> Self {
        // Ids unique across restarts of the daemon: start from the clock.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let principal = identity
            .as_ref()
            .map_or_else(|| LOCAL_PRINCIPAL.to_owned(), WorkloadIdentity::principal);
        Proxy {
            workload,
            identity,
            principal,
            policy,
            redirect,
            recorder,
            metrics,
            port,
            sessions,
            admin,
            grants,
            protocols,
            next_id: AtomicU64::new(start),
        }
    }

    /// Accepts on every listener until the task is dropped.
    pub async fn serve(self: Arc<Self>, listeners: Listeners) {
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(Arc::clone(&self).accept_loop(listeners.v4, None));
        if let Some(v6) = listeners.v6 {
            tasks.spawn(Arc::clone(&self).accept_loop(v6, None));
        }
        for (addr, listener) in listeners.gateways {
            tasks.spawn(Arc::clone(&self).accept_loop(listener, Some(addr)));
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Accepts redirected workload connections, or (`gateway`) clients of that gateway.
    async fn accept_loop(self: Arc<Self>, listener: TcpListener, gateway: Option<SocketAddr>) {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let accepted = Instant::now();
                    let proxy = Arc::clone(&self);
                    tokio::spawn(async move {
                        let _here = crate::record::ServedHere::begin();
                        proxy.handle(stream, peer, accepted, gateway).await
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; connections wait in
                    // the backlog meanwhile.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn route(&self, conn: &Connection) -> Route {
        if proxy_addrs(self.port).contains(&crate::policy::canonical_addr(conn.orig_dst)) {
            return Route {
                target: RouteTarget::Deny {
                    reason: "connection to enforcer's own proxy port".into(),
                },
            };
        }
        // Any loopback or unspecified address on the admin port reaches the admin listener
        // (connect(0.0.0.0:P) lands on 127.0.0.1:P): all of them are the workload calling.
        let dst = crate::policy::canonical_addr(conn.orig_dst);
        if let Some(admin) = &self.admin
            && dst.port() == admin.addr.port()
            && (dst.ip().is_loopback() || dst.ip().is_unspecified())
        {
            return Route {
                target: RouteTarget::Admin,
            };
        }
        self.policy.route(conn.orig_dst)
    }

    /// The principal as Cedar sees it.
    pub fn cedar_principal(&self) -> crate::policy::Principal {
        crate::policy::Principal::of(self.identity.as_ref())
    }

    async fn handle(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        accepted: Instant,
        gateway: Option<SocketAddr>,
    ) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Some(gateway) = gateway {
            let conn = Connection::outside(id, peer, gateway);
            let route = self.policy.route(gateway);
            self.metrics
                .accept_latency
                .observe(accepted.elapsed().as_secs_f64());
            return self.serve_route(stream, conn, route).await;
        }
        let orig = match self.redirect.lock() {
            Ok(mut redirect) => redirect.take_orig_dst(peer),
            Err(poisoned) => poisoned.into_inner().take_orig_dst(peer),
        };
        let orig = match orig {
            Some(orig) if orig.flags & ORIG_AMBIGUOUS == 0 => Some(orig),
            Some(_) => None,
            None => {
                self.metrics.orig_dst_misses.inc();
                None
            }
        };
        let Some(orig) = orig else {
            self.metrics
                .accept_latency
                .observe(accepted.elapsed().as_secs_f64());
            let event = ConnectionDecided {
                connection: id,
                workload: self.workload.clone(),
                principal: self.principal.clone(),
                attributes: self.attributes(),
                process: None,
                peer,
                orig_dst: None,
                decision: "deny".into(),
                route: "deny".into(),
                rule: None,
                reason: Some(
                    "no unambiguous kernel record of the original destination (not from the \
                     enforced workload, or it re-used a client port while an earlier \
                     connection from it was still waiting)"
                        .into(),
                ),
            };
            self.count("deny", "deny", "");
            let _ = self
                .recorder
                .record_written(Event::ConnectionDecided(event))
                .await;
            reset(stream);
            return;
        };
        let conn = Connection::new(id, &self.workload, peer, &orig);
        let route = self.route(&conn);
        self.metrics
            .accept_latency
            .observe(accepted.elapsed().as_secs_f64());
        self.serve_route(stream, conn, route).await;
    }

    /// Records the routing decision, then serves the connection as it says.
    async fn serve_route(&self, mut stream: TcpStream, conn: Connection, route: Route) {
        let id = conn.id;
        let peer = conn.peer;
        let outside = conn.workload == OUTSIDE;
        let (workload, principal) = if outside {
            (conn.workload.clone(), String::new())
        } else {
            (self.workload.clone(), self.principal.clone())
        };
        let decision = if matches!(route.target, RouteTarget::Deny { .. }) {
            "deny"
        } else {
            "allow"
        };
        self.count(route.kind(), decision, route.rule().unwrap_or(""));
        let decided = ConnectionDecided {
            connection: id,
            workload: workload.clone(),
            principal: principal.clone(),
            attributes: if outside {
                Default::default()
            } else {
                self.attributes()
            },
            process: (!outside).then(|| conn.process.clone()),
            peer,
            orig_dst: Some(conn.orig_dst),
            decision: decision.into(),
            route: route.kind().into(),
            rule: route.rule().map(str::to_owned),
            reason: match &route.target {
                RouteTarget::Deny { reason } => Some(reason.clone()),
                _ => None,
            },
        };
        if self
            .recorder
            .record_written(Event::ConnectionDecided(decided))
            .await
            .is_err()
        {
            // Cannot record: fail closed.
            reset(stream);
            return;
        }
        let started = Instant::now();
        let _session = match &route.target {
            RouteTarget::Deny { .. } => None,
            _ => Some(self.sessions.open(SessionInfo {
                id,
                workload: workload.clone(),
                principal,
                process: conn.process.clone(),
                orig_dst: conn.orig_dst,
                route: route.kind().into(),
                rule: route.rule().map(str::to_owned),
                started_at: crate::store::now_ms(),
            })),
        };
        self.metrics.active_connections.inc();
        let result = match &route.target {
            RouteTarget::Deny { .. } => {
                self.metrics.active_connections.dec();
                reset(stream);
                return;
            }
            RouteTarget::Egress { .. } => relay(&mut stream, conn.orig_dst).await,
            RouteTarget::Admin => {
                self.serve_admin(stream, &conn).await;
                self.metrics.active_connections.dec();
                return;
            }
            RouteTarget::Resource(resource) => {
                let ctx = protocol::HandlerContext {
                    workload: if outside { OUTSIDE } else { &self.workload },
                    principal: if outside {
                        crate::policy::Principal::default()
                    } else {
                        self.cedar_principal()
                    },
                    policy: &self.policy,
                    grants: self.grants.as_ref(),
                    recorder: &self.recorder,
                    metrics: &self.metrics,
                    shared: &self.protocols,
                    token: None,
                };
                protocol::handler_for(resource.protocol)
                    .serve(&ctx, &conn, stream, resource)
                    .await
            }
        };
        self.metrics.active_connections.dec();
        let (stats, error) = match result {
            Ok(stats) => (stats, None),
            Err(RelayError::Io {
                stats, ref source, ..
            }) => (stats, Some(source.to_string())),
            Err(RelayError::Protocol {
                stats, ref message, ..
            }) => (stats, Some(message.clone())),
            Err(e) => (RelayStats::default(), Some(e.to_string())),
        };
        self.metrics
            .relay_bytes
            .get_or_create(&DirectionLabels {
                direction: "to_upstream".into(),
            })
            .inc_by(stats.to_upstream);
        self.metrics
            .relay_bytes
            .get_or_create(&DirectionLabels {
                direction: "to_client".into(),
            })
            .inc_by(stats.to_client);
        let closed = ConnectionClosed {
            connection: id,
            workload,
            rule: route.rule().map(str::to_owned),
            bytes_to_upstream: stats.to_upstream,
            bytes_to_client: stats.to_client,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
        };
        let _ = self.recorder.record_soon(Event::ConnectionClosed(closed));
    }

    async fn serve_admin(&self, stream: TcpStream, conn: &Connection) {
        let Some(admin) = &self.admin else { return };
        let caller = crate::admin::WorkloadCaller {
            requester: crate::grant::Requester {
                workload: self.workload.clone(),
                principal: self.cedar_principal(),
            },
            process: conn.process.clone(),
        };
        if let Err(e) =
            crate::admin::serve_workload(stream, admin.workload_router.clone(), caller).await
        {
            tracing::debug!(
                connection = conn.id,
                "admin API connection from the workload: {e}"
            );
        }
    }

    fn attributes(&self) -> std::collections::BTreeMap<String, String> {
        self.identity
            .as_ref()
            .map(|i| i.attributes.clone())
            .unwrap_or_default()
    }

    fn count(&self, route: &str, decision: &str, rule: &str) {
        self.metrics
            .connections
            .get_or_create(&ConnectionLabels {
                route: route.into(),
                decision: decision.into(),
                rule: rule.into(),
            })
            .inc();
    }
}

/// Closes with RST so a denied client fails at once instead of waiting on a half-open stream.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}
