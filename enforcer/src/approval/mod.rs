//! Approvals: a request (a JIT grant, or a single held operation) that the policy wants a
//! human to decide waits here as pending until an operator approves or denies it, or its
//! deadline passes (a timeout is a denial). Pending requests live in the store, so an operator
//! on any host sharing it can decide, and a waiter on any host sees the decision.
//!
//! New requests are announced to an optional webhook (JSON POST with a Slack-compatible
//! `text` field).

mod webhook;

pub use webhook::Webhook;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use crate::{
    metrics::{ApprovalLabels, Metrics},
    record::{ApprovalEvent, Event, Recorder, RecorderClosed},
    store::{ApprovalRow, Store, StoreError, now_ms},
};

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Recorder(#[from] RecorderClosed),
    #[error("no approval request {0:?}")]
    NotFound(String),
    #[error("approval request {id} is already {status}")]
    AlreadyDecided { id: String, status: String },
    #[error(
        "approvals are decided by an operator on the host, never from inside an enforced workload"
    )]
    SelfApproval,
}

/// What kind of thing waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalKind {
    Grant,
    Operation,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Grant => "grant",
            ApprovalKind::Operation => "operation",
        }
    }
}

/// A request to be decided.
#[derive(Debug, Clone)]
pub struct NewApproval {
    /// Made by the caller ([`new_id`]) so what waits can point at it before it exists.
    pub id: String,
    pub kind: ApprovalKind,
    /// The grant id, or the session of a held operation.
    pub subject: String,
    /// One line an operator reads to decide.
    pub summary: String,
    pub workload: String,
    pub principal: String,
    pub resource: String,
}

pub struct Approvals {
    store: Store,
    host: String,
    timeout: Duration,
    webhook: Option<Webhook>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Wakes local waiters at once when this host decides; decisions made on other hosts are
    /// seen by polling the store.
    changed: Notify,
}

/// How often a waiter looks at the store for a decision taken elsewhere.
const POLL: Duration = Duration::from_millis(200);

impl Approvals {
    pub fn new(
        store: Store,
        host: String,
        timeout: Duration,
        webhook: Option<Webhook>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
    ) -> Approvals {
        Approvals {
            store,
            host,
            timeout,
            webhook,
            recorder,
            metrics,
            changed: Notify::new(),
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Records a pending request and announces it.
    pub async fn open(&self, new: NewApproval) -> Result<ApprovalRow, ApprovalError> {
        let now = now_ms();
        let row = ApprovalRow {
            id: new.id,
            kind: new.kind.as_str().to_owned(),
            subject: new.subject,
            summary: new.summary,
            workload: new.workload,
            principal: new.principal,
            resource: new.resource,
            status: "pending".into(),
            requested_at: now,
            deadline: now.saturating_add(self.timeout.as_millis() as i64),
            decided_at: None,
            decided_by: None,
            reason: None,
            host: self.host.clone(),
        };
        self.store.insert_approval(&row).await?;
        self.audit("requested", &row, None, None).await?;
        if let Some(hook) = &self.webhook {
            hook.announce(&row);
        }
        Ok(row)
    }

    pub async fn get(&self, id: &str) -> Result<ApprovalRow, ApprovalError> {
        self.store
            .approval(id)
            .await?
            .ok_or_else(|| ApprovalError::NotFound(id.to_owned()))
    }

    pub async fn list(&self, pending_only: bool) -> Result<Vec<ApprovalRow>, ApprovalError> {
        Ok(self.store.approvals(pending_only).await?)
    }

    /// An operator decides. Exactly one decision wins; deciding twice, or after the
    /// deadline, is an error naming the state it is in.
    pub async fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalRow, ApprovalError> {
        let status = if approve { "approved" } else { "denied" };
        let won = self
            .store
            .decide_approval(id, status, by, reason, now_ms())
            .await?;
        let row = self.get(id).await?;
        if !won {
            let status = if row.status == "pending" {
                // Past its deadline; the sweeper has not caught up yet.
                "timed out".to_owned()
            } else {
                row.status.clone()
            };
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                status,
            });
        }
        self.decided(&row).await?;
        Ok(row)
    }

    /// The request was withdrawn (its grant revoked): nobody needs to decide any more. Not a
    /// decision, so not attributed to anyone's approval or denial.
    pub async fn withdraw(&self, id: &str, why: &str) -> Result<ApprovalRow, ApprovalError> {
        if !self
            .store
            .decide_approval(id, "withdrawn", "enforcer", Some(why), now_ms())
            .await?
        {
            let row = self.get(id).await?;
            return Err(ApprovalError::AlreadyDecided {
                id: id.to_owned(),
                status: row.status,
            });
        }
        let row = self.get(id).await?;
        self.audit("withdrawn", &row, None, Some(why.to_owned()))
            .await?;
        self.changed.notify_waiters();
        Ok(row)
    }

    /// Someone inside a workload tried to decide: refused, and kept in the audit trail.
    pub async fn refuse_self_approval(
        &self,
        id: &str,
        caller: &str,
    ) -> Result<ApprovalError, ApprovalError> {
        let row = self.store.approval(id).await?;
        let event = ApprovalEvent {
            action: "refused".into(),
            approval: id.to_owned(),
            approval_kind: row.as_ref().map(|r| r.kind.clone()).unwrap_or_default(),
            subject: row.as_ref().map(|r| r.subject.clone()).unwrap_or_default(),
            workload: row.as_ref().map(|r| r.workload.clone()).unwrap_or_default(),
            principal: row
                .as_ref()
                .map(|r| r.principal.clone())
                .unwrap_or_default(),
            resource: row.as_ref().map(|r| r.resource.clone()).unwrap_or_default(),
            by: Some(caller.to_owned()),
            reason: Some("decision attempted from inside an enforced workload".into()),
        };
        tracing::warn!(
            approval = id,
            caller,
            "self-approval from a workload refused"
        );
        self.recorder.record_written(Event::Approval(event)).await?;
        Ok(ApprovalError::SelfApproval)
    }

    /// Waits until the request is decided (or times out) and returns it in its final state.
    /// `limit` bounds the wait for callers that poll (the request itself stays pending).
    pub async fn wait(&self, id: &str, limit: Duration) -> Result<ApprovalRow, ApprovalError> {
        let until = Instant::now() + limit;
        loop {
            // Registered before reading, so a decision between the read and the wait wakes us.
            let notified = self.changed.notified();
            let row = self.get(id).await?;
            if row.status != "pending" {
                return Ok(row);
            }
            if row.deadline <= now_ms() {
                self.sweep().await?;
                continue;
            }
            let now = Instant::now();
            if now >= until {
                return Ok(row);
            }
            let _ = tokio::time::timeout(POLL.min(until - now), notified).await;
        }
    }

    /// Times out overdue requests. Returns those this call timed out (each exactly once
    /// across hosts) so their subjects can be denied.
    pub async fn sweep(&self) -> Result<Vec<ApprovalRow>, ApprovalError> {
        let timed_out = self.store.time_out_approvals(now_ms()).await?;
        for row in &timed_out {
            self.decided(row).await?;
        }
        self.metrics
            .approvals_pending
            .set(self.store.pending_approvals().await?);
        Ok(timed_out)
    }

    async fn decided(&self, row: &ApprovalRow) -> Result<(), ApprovalError> {
        let waited = row.decided_at.unwrap_or_else(now_ms) - row.requested_at;
        self.metrics
            .approval_decision_seconds
            .get_or_create(&ApprovalLabels {
                outcome: row.status.clone(),
            })
            .observe(waited.max(0) as f64 / 1000.0);
        self.audit(&row.status, row, row.decided_by.clone(), row.reason.clone())
            .await?;
        self.changed.notify_waiters();
        Ok(())
    }

    async fn audit(
        &self,
        action: &str,
        row: &ApprovalRow,
        by: Option<String>,
        reason: Option<String>,
    ) -> Result<(), ApprovalError> {
        let event = ApprovalEvent {
            action: action.to_owned(),
            approval: row.id.clone(),
            approval_kind: row.kind.clone(),
            subject: row.subject.clone(),
            workload: row.workload.clone(),
            principal: row.principal.clone(),
            resource: row.resource.clone(),
            by,
            reason,
        };
        self.recorder.record_written(Event::Approval(event)).await?;
        Ok(())
    }
}

/// A short random id with a prefix saying what it names (`g-…` grant, `a-…` approval).
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 8] = rand::random();
    format!("{prefix}-{}", hex::encode(bytes))
}
