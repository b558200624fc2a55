//! Two outputs: the enforcement log (every decision, JSON lines, in the state directory) and
//! human-readable warnings on stderr (RUST_LOG overrides the level).

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::Path,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

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
            let file = Arc::new(Batched(Mutex::new(BufWriter::with_capacity(
                64 << 10,
                file,
            ))));
            let _ = ENFORCEMENT_LOG.set(Arc::clone(&file));
            std::thread::Builder::new()
                .name("log-flush".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(FLUSH_EVERY);
                        flush();
                    }
                })?;
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(file)
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

/// How far the enforcement log may trail. Every decision is also appended to the audit chain
/// before it takes effect; this file is for log shippers, so its lines are written in batches
/// rather than one write per line on the statement's path.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

static ENFORCEMENT_LOG: OnceLock<Arc<Batched>> = OnceLock::new();

struct Batched(Mutex<BufWriter<File>>);

impl Batched {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

impl Write for &Batched {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Lines are flushed by the batch, not one by one.
        Ok(())
    }
}

/// Writes out what the enforcement log holds; called before the process exits.
pub fn flush() {
    if let Some(log) = ENFORCEMENT_LOG.get() {
        let _ = log.lock().flush();
    }
}
