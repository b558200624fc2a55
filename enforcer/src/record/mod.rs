//! Recording: every decision enforcer takes becomes an [`Event`], written both as a JSON line
//! in the enforcement log (through `tracing`, for log shippers) and into the hash-chained audit
//! file ([`audit`]) that `enforcer audit verify` checks.

pub mod audit;
mod event;

pub use event::{
    ApprovalEvent, ConnectionClosed, ConnectionDecided, Event, GrantEvent, Process,
    StatementDecided, StatementDone,
};

use tokio::sync::mpsc;

/// Hands events to the audit writer. Cloned into every connection task.
///
/// The channel is bounded: if the writer falls behind, connection tasks wait (backpressure)
/// instead of events being dropped. If the writer is gone, recording fails and the caller
/// refuses the connection: nothing is let through unrecorded.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::Sender<Queued>,
}

/// An event on its way to the writer, with who to tell once it is in the file.
#[derive(Debug)]
pub struct Queued {
    pub event: Event,
    pub written: Option<tokio::sync::oneshot::Sender<()>>,
}

#[derive(Debug, thiserror::Error)]
#[error("the audit writer has stopped; refusing to continue unrecorded")]
pub struct RecorderClosed;

impl Recorder {
    pub fn new(tx: mpsc::Sender<Queued>) -> Self {
        Self { tx }
    }

    /// Like [`Recorder::record`], but returns only once the record is in the audit file
    /// (written, so it survives enforcer being killed; synced within 50 ms). For what is
    /// let through on the strength of its record: a statement runs only once it is recorded.
    pub async fn record_written(&self, event: Event) -> Result<(), RecorderClosed> {
        let (done, written) = tokio::sync::oneshot::channel();
        self.tx
            .send(Queued {
                event,
                written: Some(done),
            })
            .await
            .map_err(|_| RecorderClosed)?;
        written.await.map_err(|_| RecorderClosed)
    }

    /// Queues the event; the writer thread logs it and appends it to the audit chain, so
    /// neither JSON formatting nor file writes sit on a connection's path.
    pub async fn record(&self, event: Event) -> Result<(), RecorderClosed> {
        self.tx
            .send(Queued {
                event,
                written: None,
            })
            .await
            .map_err(|_| RecorderClosed)
    }
}
