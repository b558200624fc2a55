//! Recording: every decision enforcer takes becomes an [`Event`], written both as a JSON line
//! in the enforcement log (through `tracing`, for log shippers) and into the hash-chained audit
//! file ([`audit`]) that `enforcer audit verify` checks.

pub mod audit;
mod event;

pub use event::{
    ApprovalEvent, ConnectionClosed, ConnectionDecided, Event, GrantEvent, Process,
    StatementDecided, StatementDone, StreamFrame,
};

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
    mpsc,
};

use audit::{AuditError, AuditLog};

/// How long an appended record may wait for fsync. Records reach the file (and so survive a
/// crash of enforcer) before `record` returns; this only bounds what a power loss can take.
/// Syncing after every record would cost each statement a disk flush.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes events to the enforcement log and the audit chain. Cloned into every connection
/// task.
///
/// Appends happen on the caller's thread, under one lock, before `record` returns: a
/// statement or connection goes on only once its record is in the file (backpressure by
/// construction, nothing queued to lose), and no thread hop sits on a statement's path. A
/// background thread makes the appends durable every [`SYNC_EVERY`]. If a write fails,
/// recording fails from then on and callers refuse what they were about to let through.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    /// Dropped with the last recorder: tells the syncer to finish.
    _alive: mpsc::Sender<()>,
}

struct Shared {
    log: Mutex<AuditLog>,
    dirty: AtomicBool,
    failed: AtomicBool,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be written; refusing to continue unrecorded")]
pub struct RecorderClosed;

fn lock(log: &Mutex<AuditLog>) -> std::sync::MutexGuard<'_, AuditLog> {
    match log.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Recorder {
    /// Starts recording into `log`. The thread returned syncs it and, once every recorder is
    /// gone, syncs a last time and returns how many records this run appended.
    pub fn start(log: AuditLog) -> (Recorder, std::thread::JoinHandle<Result<u64, AuditError>>) {
        let (alive, gone) = mpsc::channel();
        let shared = Arc::new(Shared {
            log: Mutex::new(log),
            dirty: AtomicBool::new(false),
            failed: AtomicBool::new(false),
        });
        let syncer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("audit-sync".into())
                .spawn(move || sync_until_closed(&shared, &gone))
                .unwrap_or_else(|e| panic!("cannot start the audit sync thread: {e}"))
        };
        (
            Recorder {
                shared,
                _alive: alive,
            },
            syncer,
        )
    }

    /// Records the event: in the enforcement log and appended to the audit chain when this
    /// returns (synced within 50 ms). For what is let through on the strength of its record.
    pub async fn record_written(&self, event: Event) -> Result<(), RecorderClosed> {
        self.write(&event)
    }

    /// Records the event (the same guarantee as [`Recorder::record_written`]; both names are
    /// kept for what the call site relies on).
    pub async fn record(&self, event: Event) -> Result<(), RecorderClosed> {
        self.write(&event)
    }

    fn write(&self, event: &Event) -> Result<(), RecorderClosed> {
        let mut log = lock(&self.shared.log);
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(RecorderClosed);
        }
        event.log();
        match log.append(event) {
            Ok(()) => {
                self.shared.dirty.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "audit log write failed; enforcement refuses from now on");
                self.shared.failed.store(true, Ordering::Relaxed);
                Err(RecorderClosed)
            }
        }
    }
}

fn sync_until_closed(shared: &Shared, gone: &mpsc::Receiver<()>) -> Result<u64, AuditError> {
    let handle = lock(&shared.log).sync_handle()?;
    loop {
        let closed = matches!(
            gone.recv_timeout(SYNC_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        if shared.dirty.swap(false, Ordering::Acquire) || closed {
            // The link is taken first: the sync then covers it (and perhaps more), so the
            // head never names a record that is not durable.
            let link = lock(&shared.log).link();
            if let Err(e) = handle.sync(&link) {
                shared.failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        if closed {
            return Ok(lock(&shared.log).appended());
        }
    }
}
