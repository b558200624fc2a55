//! The admin listener (loopback only): `/healthz` and `/metrics` for SREs, and the `/v1` JSON
//! API for grants, approvals and sessions ([`api`]). Who may do what is decided per request
//! from the [`caller::Caller`]: the workload (through the proxy), an operator (token), or
//! anyone (health and metrics only).

pub mod api;
pub mod caller;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Extension, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::{TcpListener, TcpStream};

use crate::{grant::Grants, metrics::Metrics, proxy::Sessions, redirect::Redirect};
pub use caller::{Caller, OperatorToken, WorkloadCaller};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot listen on {addr} for the admin API: {source} (choose another with --admin ADDR:PORT)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("admin address {0} is not a loopback address; the admin API must not be exposed")]
    NotLoopback(SocketAddr),
}

#[derive(Clone)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub redirect: Arc<Mutex<Redirect>>,
    pub grants: Option<Arc<Grants>>,
    pub sessions: Arc<Sessions>,
    pub operator_token: Option<OperatorToken>,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

pub fn router(state: AdminState) -> Router {
    let token = state.operator_token.clone();
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(api::routes())
        .with_state(state);
    match token {
        Some(token) => router.layer(Extension(token)),
        None => router,
    }
}

pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
}

/// What the workload is served: the `/v1` API only, never with operator rights.
pub fn workload_router(state: AdminState) -> Router {
    Router::new().merge(api::routes()).with_state(state)
}

/// Serves one connection that came from inside the workload (through the proxy): every
/// request on it carries `caller`, whatever headers it sends.
pub async fn serve_workload(
    stream: TcpStream,
    router: Router,
    caller: WorkloadCaller,
) -> Result<(), hyper::Error> {
    let service = hyper_util::service::TowerToHyperService::new(router.layer(Extension(caller)));
    // The workload may hold connections open: a header that never ends is cut off.
    hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(30))
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics_text(State(state): State<AdminState>, headers: HeaderMap) -> impl IntoResponse {
    let counters = match state.redirect.lock() {
        Ok(redirect) => redirect.counters(),
        Err(poisoned) => poisoned.into_inner().counters(),
    };
    state.metrics.set_kernel_counters(&counters);
    // Prometheus asks for OpenMetrics in its Accept header; everyone else gets text 0.0.4.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let (encoded, content_type) = if openmetrics {
        (
            state.metrics.encode_openmetrics(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            state.metrics.encode_prometheus(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    match encoded {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n").into_response(),
    }
}
