//! The admin listener (loopback only): `/healthz` and `/metrics` for SREs. Grants, approvals and
//! sessions join it with the grants issue.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::net::TcpListener;

use crate::{metrics::Metrics, redirect::Redirect};

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
struct AdminState {
    metrics: Arc<Metrics>,
    redirect: Arc<Mutex<Redirect>>,
}

pub async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminError> {
    if !addr.ip().is_loopback() {
        return Err(AdminError::NotLoopback(addr));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminError::Bind { addr, source })
}

pub fn router(metrics: Arc<Metrics>, redirect: Arc<Mutex<Redirect>>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState { metrics, redirect })
}

pub async fn serve(listener: TcpListener, router: Router) -> std::io::Result<()> {
    axum::serve(listener, router).await
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
