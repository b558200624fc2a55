//! Human-readable warnings on stderr (RUST_LOG overrides the level). The enforcement log (every
//! decision, JSON lines, in the state directory) is written by the recorder, beside the audit
//! chain, so its lines cost no formatting layer on a statement's path.

use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

pub fn init() -> anyhow::Result<()> {
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(stderr_filter);
    tracing_subscriber::registry().with(stderr).try_init()?;
    Ok(())
}
