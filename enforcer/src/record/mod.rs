//! Recording: every decision enforcer takes becomes an [`Event`], written both as a JSON line
//! in the enforcement log (for log shippers) and into the hash-chained audit file ([`audit`])
//! that `enforcer audit verify` checks.

pub mod audit;
mod event;
mod json;

pub use event::{
    ApiObject, ApprovalEvent, ConnectionClosed, ConnectionDecided, Event, GrantEvent, Process,
    StatementDecided, StatementDone, StreamFrame,
};

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
};

use audit::{AuditError, AuditLog};

/// How long an appended record may wait for fsync, and a record appended with
/// [`Recorder::record_soon`] (or an enforcement log line) for its write. Records written with
/// [`Recorder::record_written`] reach the file (and so survive a crash of enforcer) before the
/// call returns; this only bounds what a power loss can take. Syncing after every record would
/// cost each statement a disk flush.
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Writes events to the enforcement log and the audit chain. Cloned into every connection
/// task.
///
/// Appends happen on the caller's thread, under one lock, before `record_*` returns: nothing
/// is queued to another thread (so nothing queued can be lost or fall behind: a busy writer
/// slows its callers, which is the backpressure), and no thread hop sits on a statement's
/// path. What an operation's going ahead rests on (a decision) is written before the call
/// returns; what only reports on something done (a statement's outcome, a connection's close)
/// is chained at once and written with the next record or within 50 ms, so a statement costs
/// one write. A background thread makes the appends durable every [`SYNC_EVERY`]. If a write
/// fails, recording fails from then on and callers refuse what they were about to let through.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    /// Dropped with the last recorder: tells the syncer to finish.
    _alive: mpsc::Sender<()>,
}

struct Shared {
    sinks: Mutex<Sinks>,
    dirty: AtomicBool,
    failed: AtomicBool,
}

/// Where a record goes, behind one lock so that both see the same order.
struct Sinks {
    audit: AuditLog,
    /// The enforcement log (JSON lines for log shippers), written in batches.
    log: Option<EnforcementLog>,
    /// One line's bytes, reused.
    line: Vec<u8>,
}

struct EnforcementLog {
    path: std::path::PathBuf,
    file: BufWriter<File>,
    /// A write failure is reported once, not per line.
    failed: bool,
}

impl EnforcementLog {
    fn write(&mut self, bytes: &[u8]) {
        if let Err(e) = self.file.write_all(bytes) {
            self.fail(&e);
        }
    }

    fn flush(&mut self) {
        if let Err(e) = self.file.flush() {
            self.fail(&e);
        }
    }

    fn fail(&mut self, e: &std::io::Error) {
        // The audit chain is the record enforcement rests on; this file is a copy for log
        // shippers, so losing it is reported, not fatal.
        if !self.failed {
            self.failed = true;
            tracing::error!(path = %self.path.display(), error = %e, "the enforcement log cannot be written; the audit log still records every decision");
        }
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the audit log cannot be written; refusing to continue unrecorded")]
pub struct RecorderClosed;

fn lock(sinks: &Mutex<Sinks>) -> std::sync::MutexGuard<'_, Sinks> {
    match sinks.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Recorder {
    /// Starts recording into `log` and, when given, the enforcement log at `enforcement_log`
    /// (appended to, created if missing). The thread returned syncs them and, once every
    /// recorder is gone, syncs a last time and returns how many records this run appended.
    pub fn start(
        log: AuditLog,
        enforcement_log: Option<&Path>,
    ) -> Result<(Recorder, std::thread::JoinHandle<Result<u64, AuditError>>), AuditError> {
        let log_file = enforcement_log
            .map(|path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map(|file| EnforcementLog {
                        path: path.to_owned(),
                        file: BufWriter::with_capacity(256 << 10, file),
                        failed: false,
                    })
                    .map_err(|source| AuditError::Open {
                        path: path.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        let (alive, gone) = mpsc::channel();
        let shared = Arc::new(Shared {
            sinks: Mutex::new(Sinks {
                audit: log,
                log: log_file,
                line: Vec::with_capacity(1024),
            }),
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
        Ok((
            Recorder {
                shared,
                _alive: alive,
            },
            syncer,
        ))
    }

    /// Records the event: in the audit file when this returns (synced within 50 ms), and in
    /// the enforcement log within 50 ms. For what is let through on the strength of its
    /// record: a decision, a relayed frame.
    ///
    /// Group commit: the record is chained at once, then the task yields, so that the other
    /// connections this proxy thread has ready chain theirs too; the first of them back
    /// writes them all in one write. A statement still goes on only once its own record is
    /// in the file.
    ///
    /// The only connection on its thread has nobody to share the write with: its record is
    /// written at once (the yield would cost a pass through the I/O driver, a syscall, on
    /// every statement).
    pub async fn record_written(&self, event: Event) -> Result<(), RecorderClosed> {
        let seq = self.chain(&event)?;
        if SERVED_HERE.with(|n| n.load(Ordering::Relaxed)) > 1 {
            tokio::task::yield_now().await;
        }
        self.written_through(seq)
    }

    /// Makes sure the record `seq` is in the file (written by this call if no other wrote it).
    fn written_through(&self, seq: u64) -> Result<(), RecorderClosed> {
        let mut sinks = lock(&self.shared.sinks);
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(RecorderClosed);
        }
        if sinks.audit.written() >= seq {
            return Ok(());
        }
        sinks.audit.flush().map_err(|e| self.fail(e))
    }

    /// A failed audit write closes the recorder for good: enforcement refuses from then on.
    fn fail(&self, error: AuditError) -> RecorderClosed {
        tracing::error!(%error, "audit log write failed; enforcement refuses from now on");
        self.shared.failed.store(true, Ordering::Relaxed);
        RecorderClosed
    }

    /// Records an event that reports on something already done (a statement's outcome, a
    /// connection's end): chained now, in the file with the next written record or within
    /// 50 ms.
    /// Takes no await: it can run where none is possible (a response body being dropped).
    pub fn record_soon(&self, event: Event) -> Result<(), RecorderClosed> {
        self.chain(&event).map(drop)
    }

    /// Chains the event (in the file with the next write); returns its seq.
    fn chain(&self, event: &Event) -> Result<u64, RecorderClosed> {
        let seq = {
            let mut sinks = lock(&self.shared.sinks);
            if self.shared.failed.load(Ordering::Relaxed) {
                return Err(RecorderClosed);
            }
            let stamp = time::OffsetDateTime::now_utc();
            let Sinks { audit, log, line } = &mut *sinks;
            if let Err(e) = audit.append_at(event, stamp, false) {
                return Err(self.fail(e));
            }
            if let Some(log) = log {
                line.clear();
                if event.log_line(stamp, line) {
                    log.write(line);
                }
            }
            self.shared.dirty.store(true, Ordering::Release);
            audit.seq()
        };
        // Human-readable, on stderr, as RUST_LOG asks (denied connections by default).
        event.log();
        Ok(seq)
    }
}

thread_local! {
    /// Connections being served on this thread.
    static SERVED_HERE: Arc<AtomicUsize> = Arc::new(AtomicUsize::new(0));
}

/// Counts a connection as served on the thread that made it, for as long as it lives (a
/// connection task holds one). Should the task move to another thread, the count it left
/// behind only makes that thread's records wait for company they might not have.
pub struct ServedHere(Arc<AtomicUsize>);

impl ServedHere {
    pub fn begin() -> ServedHere {
        let count = SERVED_HERE.with(Arc::clone);
        count.fetch_add(1, Ordering::Relaxed);
        ServedHere(count)
    }
}

impl Drop for ServedHere {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn sync_until_closed(shared: &Shared, gone: &mpsc::Receiver<()>) -> Result<u64, AuditError> {
    let handle = lock(&shared.sinks).audit.sync_handle()?;
    let fail = |e: AuditError| {
        shared.failed.store(true, Ordering::Relaxed);
        e
    };
    loop {
        let closed = matches!(
            gone.recv_timeout(SYNC_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        if shared.dirty.swap(false, Ordering::Acquire) || closed {
            // Lines held back are written and the link taken under the lock; the sync then
            // covers them (and perhaps more), so the head never names a record that is not
            // durable.
            let link = {
                let mut sinks = lock(&shared.sinks);
                if let Some(log) = &mut sinks.log {
                    log.flush();
                }
                sinks.audit.flush().map_err(fail)?;
                sinks.audit.link()
            };
            handle.sync(&link).map_err(fail)?;
        }
        if closed {
            return Ok(lock(&shared.sinks).audit.appended());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(n: u64) -> Event {
        Event::ConnectionClosed(ConnectionClosed {
            connection: n,
            workload: "w".into(),
            rule: None,
            bytes_to_upstream: 0,
            bytes_to_client: 0,
            duration_ms: 0,
            error: None,
        })
    }

    fn here() -> usize {
        SERVED_HERE.with(|n| n.load(Ordering::Relaxed))
    }

    #[test]
    fn connections_are_counted_on_their_thread_while_they_live() {
        let before = here();
        let a = ServedHere::begin();
        let b = ServedHere::begin();
        assert_eq!(here(), before + 2);
        std::thread::spawn(|| assert_eq!(here(), 0, "another thread counts its own"))
            .join()
            .expect("thread");
        drop(a);
        assert_eq!(here(), before + 1);
        drop(b);
        assert_eq!(here(), before);
    }

    #[test]
    fn a_written_record_is_in_the_file_alone_on_its_thread_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        let (recorder, syncer) = Recorder::start(log, None).expect("start");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let lines = || {
            std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count()
        };
        let mut served = Vec::new();
        for (n, how) in [
            (1, "alone on the thread, no yield"),
            (2, "with company, after a yield"),
        ] {
            served.push(ServedHere::begin());
            runtime
                .block_on(recorder.record_written(closed(n)))
                .expect("recorded");
            assert_eq!(
                lines(),
                n as usize,
                "in the file when the call returned, {how}"
            );
        }
        drop(served);
        drop(recorder);
        assert_eq!(syncer.join().expect("syncer").expect("synced"), 2);
        assert!(matches!(
            audit::verify(&path).expect("verify"),
            audit::Verdict::Intact { records: 2, .. }
        ));
    }
}
