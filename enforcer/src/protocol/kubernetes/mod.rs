//! The Kubernetes API at layer 7. The workload's unmodified kubectl or client library talks
//! TLS to the API server's address and is redirected to enforcer, which presents a
//! certificate of its own CA (`enforcer kubeconfig` hands out a kubeconfig trusting it),
//! decides every request as `k8s:<verb>` with the Cedar policies and the workload's grants,
//! and forwards what is allowed with the injected credential. Secret values are redacted in
//! what comes back ([`redact`]).

mod budget;
mod redact;
pub mod request;
mod review;
mod session;
pub mod status;
mod stream;

use tokio::net::TcpStream;

use crate::{
    policy::Resource,
    protocol::{HandlerContext, HandlerFuture, ProtocolHandler},
    proxy::{Connection, RelayError, RelayStats},
};

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("enforcer has no certificate authority to terminate TLS with")]
    NoAuthority,
    #[error("{0}")]
    Tls(String),
    #[error("credential: {0}")]
    Credential(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("http: {0}")]
    Http(String),
    #[error("decision: {0}")]
    Decision(String),
    #[error("the audit log cannot be written")]
    Recorder,
}

pub struct Kubernetes;

impl ProtocolHandler for Kubernetes {
    fn serve<'a>(
        &'a self,
        ctx: &'a HandlerContext<'a>,
        conn: &'a Connection,
        client: TcpStream,
        resource: &'a Resource,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            match session::run(ctx, conn, client, resource).await {
                Ok(()) => Ok(RelayStats::default()),
                Err(e) => Err(RelayError::Protocol {
                    protocol: "kubernetes",
                    stats: RelayStats::default(),
                    message: e.to_string(),
                }),
            }
        })
    }
}
