//! Protocol handlers: one per protocol a resource can speak, behind one trait, so adding a
//! protocol touches neither the redirect nor the router.
//!
//! Until a protocol's own handler exists its resources are relayed as plain TCP
//! ([`PassThrough`]), recorded like egress.

pub mod decision;
pub mod kubernetes;
pub mod postgres;
pub mod statements;

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc};

use tokio::net::TcpStream;

use crate::{
    grant::Grants,
    metrics::Metrics,
    policy::{Policy, Principal, Protocol, Resource},
    proxy::{Connection, RelayError, RelayStats, relay},
    record::Recorder,
};

/// What a protocol handler needs beyond the connection: who the workload is, what the
/// policy says, its grants, and where to record.
pub struct HandlerContext<'a> {
    pub workload: &'a str,
    pub principal: Principal,
    pub policy: &'a Arc<Policy>,
    pub grants: Option<&'a Arc<Grants>>,
    pub recorder: &'a Recorder,
    pub metrics: &'a Arc<Metrics>,
    pub shared: &'a Shared,
    /// The grant token the client presented (through a gateway): its grant is the session's.
    pub token: Option<&'a PresentedToken>,
}

/// A grant token a client presented, verified when presented and again at each use.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    pub text: String,
    pub claims: crate::grant::GrantClaims,
}

impl HandlerContext<'_> {
    /// This context for operations that present `token`: the token's grant is theirs. A
    /// client outside any cgroup becomes the token's principal and workload; inside one,
    /// the token was checked to be the workload's own.
    pub fn with_token<'b>(&'b self, token: &'b PresentedToken) -> HandlerContext<'b> {
        let outside = self.workload == crate::proxy::OUTSIDE;
        HandlerContext {
            workload: if outside {
                &token.claims.wl
            } else {
                self.workload
            },
            principal: if outside {
                Principal::named(&token.claims.sub)
            } else {
                self.principal.clone()
            },
            policy: self.policy,
            grants: self.grants,
            recorder: self.recorder,
            metrics: self.metrics,
            shared: self.shared,
            token: Some(token),
        }
    }

    /// Who presented a token from inside an enforced workload (a grant bound to another
    /// workload must not work there); `None` for a client outside any cgroup, which the token
    /// itself names.
    pub fn presenter(&self) -> crate::grant::Requester {
        crate::grant::Requester {
            workload: self.workload.to_owned(),
            principal: self.principal.clone(),
        }
    }
}

/// What protocol handlers keep across connections.
#[derive(Default)]
pub struct Shared {
    /// enforcer's CA, for TLS toward workloads; `None` declines every TLS request.
    pub tls: Option<Arc<crate::tls::Authority>>,
    pub postgres: postgres::State,
}

pub type HandlerFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RelayStats, RelayError>> + Send + 'a>>;

/// Serves one workload connection to a resource.
pub trait ProtocolHandler: Send + Sync {
    fn serve<'a>(
        &'a self,
        ctx: &'a HandlerContext<'a>,
        conn: &'a Connection,
        client: TcpStream,
        resource: &'a Resource,
    ) -> HandlerFuture<'a>;
}

/// Plain TCP relay to the resource's upstream (or the original destination).
pub struct PassThrough;

impl ProtocolHandler for PassThrough {
    fn serve<'a>(
        &'a self,
        _ctx: &'a HandlerContext<'a>,
        conn: &'a Connection,
        mut client: TcpStream,
        resource: &'a Resource,
    ) -> HandlerFuture<'a> {
        let upstream: SocketAddr = resource.upstream_for(conn.orig_dst);
        Box::pin(async move { relay(&mut client, upstream).await })
    }
}

/// The handler for a protocol.
pub fn handler_for(protocol: Protocol) -> &'static dyn ProtocolHandler {
    match protocol {
        Protocol::Postgres => &postgres::Postgres,
        Protocol::Kubernetes => &kubernetes::Kubernetes,
        Protocol::Mysql | Protocol::Ssh | Protocol::Http => &PassThrough,
    }
}
