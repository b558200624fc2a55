//! PostgreSQL at layer 7. The workload's unmodified client talks to enforcer as if it were the
//! server; enforcer talks to the real server as a client, authenticating with the credential
//! the policy names (the workload's own password, if it sends one, is never asked for or
//! forwarded). Every statement is classified ([`classify`]) and decided by the Cedar
//! policies (`sql:<class>`) and the workload's grants: allowed, denied with SQLSTATE 42501
//! naming the rule, or held until an operator approves. Result values are masked
//! ([`crate::mask`]) before they reach the workload. Every statement is recorded.

mod catalog;
pub mod classify;
mod copy;
mod frame;
mod session;
mod upstream;

use std::{collections::HashMap, sync::Mutex as StdMutex};

use upstream::CancelTarget;

use crate::{
    policy::Resource,
    protocol::{HandlerContext, HandlerFuture, ProtocolHandler},
    proxy::{Connection, RelayError, RelayStats},
};

use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("cannot authenticate to the resource with the injected credential: {0}")]
    Auth(String),
    #[error("client authentication: {0}")]
    Client(String),
    #[error("credential: {0}")]
    Credential(String),
    #[error("the audit writer has stopped")]
    Recorder,
}

impl From<pgwire::error::PgWireError> for PgError {
    fn from(e: pgwire::error::PgWireError) -> Self {
        PgError::Protocol(e.to_string())
    }
}

/// The decoding context for frontend messages after the startup phase.
pub(crate) fn frontend_context() -> pgwire::messages::DecodeContext {
    let mut ctx =
        pgwire::messages::DecodeContext::new(pgwire::messages::ProtocolVersion::PROTOCOL3_0);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = false;
    ctx
}

/// What the PostgreSQL handler keeps across connections.
#[derive(Default)]
pub struct State {
    catalogs: catalog::Catalogs,
    /// The cancel keys enforcer gave its clients, and the server backends they stand for.
    cancels: StdMutex<HashMap<(i32, i32), CancelTarget>>,
}

impl State {
    fn cancels(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, i32), CancelTarget>> {
        match self.cancels.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Gives the client its own cancel key for `target`, valid until the guard drops. The
    /// server's key never reaches the workload, so a cancel request reaches only a backend
    /// enforcer opened for a live session.
    fn cancel_key(&self, target: CancelTarget) -> CancelKey<'_> {
        let mut cancels = self.cancels();
        let key = loop {
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if !cancels.contains_key(&key) {
                break key;
            }
        };
        cancels.insert(key, target);
        CancelKey { state: self, key }
    }

    fn cancel_target(&self, pid: i32, key: i32) -> Option<CancelTarget> {
        self.cancels().get(&(pid, key)).cloned()
    }
}

struct CancelKey<'a> {
    state: &'a State,
    key: (i32, i32),
}

impl Drop for CancelKey<'_> {
    fn drop(&mut self) {
        self.state.cancels().remove(&self.key);
    }
}

pub struct Postgres;

impl ProtocolHandler for Postgres {
    fn serve<'a>(
        &'a self,
        ctx: &'a HandlerContext<'a>,
        conn: &'a Connection,
        mut client: TcpStream,
        resource: &'a Resource,
    ) -> HandlerFuture<'a> {
        Box::pin(async move {
            let mut stats = RelayStats::default();
            match session::run(ctx, conn, &mut client, resource, &mut stats).await {
                Ok(()) => Ok(stats),
                Err(e) => Err(RelayError::Protocol {
                    protocol: "postgres",
                    stats,
                    message: e.to_string(),
                }),
            }
        })
    }
}
