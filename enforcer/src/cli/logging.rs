//! Two outputs: the enforcement log (every decision, JSON lines, in the state directory) and
//! human-readable warnings on stderr (RUST_LOG overrides the level).

use std::{fs::OpenOptions, path::Path, sync::Arc};

use tracing_subscriber::{
    EnvFilter, Layer, filter::Targets, layer::SubscriberExt, util::SubscriberInitExt,
};

pub fn init(enforcement_log: Option<&Path>) -> anyhow::Result<()> {
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(stderr_filter);
    let json = match enforcement_log {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(Arc::new(file))
                    .with_filter(
                        Targets::new().with_target("enforcer::decision", tracing::Level::INFO),
                    ),
            )
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(json)
        .try_init()?;
    Ok(())
}
