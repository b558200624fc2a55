//! Rows as stored, decoded by column name.

use serde::{Deserialize, Serialize};
use sqlx::{Row, any::AnyRow};

use super::StoreError;

/// One grant, in any state (see the `grants` table for the meaning of each column).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRow {
    pub id: String,
    pub workload: String,
    pub principal: String,
    pub resource: String,
    pub access: String,
    pub reason: String,
    pub status: String,
    pub requested_at: i64,
    pub ttl_ms: i64,
    pub issued_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub uses_left: Option<i64>,
    pub approval_id: Option<String>,
    pub decided_by: Option<String>,
    pub decision_reason: Option<String>,
    pub policies: String,
    pub host: String,
}

impl GrantRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<GrantRow, StoreError> {
        Ok(GrantRow {
            id: r.try_get("id")?,
            workload: r.try_get("workload")?,
            principal: r.try_get("principal")?,
            resource: r.try_get("resource")?,
            access: r.try_get("access")?,
            reason: r.try_get("reason")?,
            status: r.try_get("status")?,
            requested_at: r.try_get("requested_at")?,
            ttl_ms: r.try_get("ttl_ms")?,
            issued_at: r.try_get("issued_at")?,
            expires_at: r.try_get("expires_at")?,
            uses_left: r.try_get("uses_left")?,
            approval_id: r.try_get("approval_id")?,
            decided_by: r.try_get("decided_by")?,
            decision_reason: r.try_get("decision_reason")?,
            policies: r.try_get("policies")?,
            host: r.try_get("host")?,
        })
    }
}

/// One approval request, in any state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRow {
    pub id: String,
    pub kind: String,
    pub subject: String,
    pub summary: String,
    pub workload: String,
    pub principal: String,
    pub resource: String,
    pub status: String,
    pub requested_at: i64,
    pub deadline: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub host: String,
}

impl ApprovalRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<ApprovalRow, StoreError> {
        Ok(ApprovalRow {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            subject: r.try_get("subject")?,
            summary: r.try_get("summary")?,
            workload: r.try_get("workload")?,
            principal: r.try_get("principal")?,
            resource: r.try_get("resource")?,
            status: r.try_get("status")?,
            requested_at: r.try_get("requested_at")?,
            deadline: r.try_get("deadline")?,
            decided_at: r.try_get("decided_at")?,
            decided_by: r.try_get("decided_by")?,
            reason: r.try_get("reason")?,
            host: r.try_get("host")?,
        })
    }
}
