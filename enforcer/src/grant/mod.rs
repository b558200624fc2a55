//! JIT grants: short-lived, scoped to one resource and one access level, bound to the workload
//! that asked.
//!
//! A workload asks (`enforcer grant request`, through the admin API, identified by the kernel's
//! record of its connection); the Cedar policies decide (`grant:request`), possibly holding the
//! request for an operator's approval; an issued grant lives in the store until it expires, is
//! used up or is revoked. Protocol handlers ask [`Grants::authorize`] on the hot path: an
//! in-memory view of the active grants of the workloads this enforcer serves, refreshed from
//! the store (so approvals and revocations made on another host arrive within
//! [`REFRESH`]), with use counts taken atomically in the store.
//!
//! A grant is also a signed JWT ([`token`]) that any enforcer sharing the store verifies and
//! that a client can present as its password or bearer token.

pub mod token;

pub use token::{GrantClaims, GrantSigner, TokenError};

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    approval::{ApprovalError, ApprovalKind, Approvals, NewApproval, new_id},
    metrics::Metrics,
    policy::{Policy, Principal, cedar::AuthzError},
    record::{Event, GrantEvent, Recorder, RecorderClosed},
    store::{ApprovalRow, GrantRow, Store, StoreError, now_ms},
};

/// How often the in-memory view of active grants is re-read from the store.
pub const REFRESH: Duration = Duration::from_secs(1);
/// The requester's reason is shown to operators and posted to chat: bounded, printable.
pub const MAX_REASON: usize = 500;
/// Pending requests one workload may have at once (each one pings the approvers).
pub const MAX_PENDING: i64 = 5;
/// Grant requests one workload may make per minute.
pub const MAX_REQUESTS_PER_MINUTE: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Approval(#[from] ApprovalError),
    #[error(transparent)]
    Recorder(#[from] RecorderClosed),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Authz(#[from] AuthzError),
    #[error("no resource {0:?} in the policy")]
    UnknownResource(String),
    #[error("access {access:?} does not exist for {protocol} resources; use one of: {levels}")]
    UnknownAccess {
        access: String,
        protocol: &'static str,
        levels: String,
    },
    #[error("a reason is required: say what the grant is for")]
    NoReason,
    #[error(
        "the reason must be at most {MAX_REASON} characters of printable text (no control characters)"
    )]
    BadReason,
    #[error("too many requests: {0}")]
    TooMany(String),
    #[error("--uses must be at least 1")]
    NoUses,
    #[error("ttl {asked} exceeds the longest allowed, {limit}")]
    TtlTooLong { asked: String, limit: String },
    #[error("grant request denied: {0}")]
    Denied(String),
    #[error("no grant {0:?}")]
    NotFound(String),
    #[error("grant {id} is {status}; only pending or active grants can be revoked")]
    NotRevocable { id: String, status: String },
    #[error("this grant belongs to another workload")]
    OtherWorkload,
    #[error("grant {id} is {status}")]
    NotActive { id: String, status: String },
    #[error("grant {id} is for {resource} / {access}, not for this")]
    OtherScope {
        id: String,
        resource: String,
        access: String,
    },
}

/// What a workload asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantRequest {
    pub resource: String,
    pub access: String,
    /// Seconds; the policy's default when absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    #[serde(default)]
    pub uses: Option<u32>,
    pub reason: String,
}

/// The workload asking, as identified by the kernel's record of its connection.
#[derive(Debug, Clone)]
pub struct Requester {
    pub workload: String,
    pub principal: Principal,
}

/// A grant as shown to people and to the workload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantView {
    #[serde(flatten)]
    pub grant: GrantRow,
    /// The grant as a JWT, for its own workload while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Permission to go ahead, from an active grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    pub grant: String,
    /// Uses left after this one, for counted grants.
    pub uses_left: Option<i64>,
}

#[derive(Debug, Clone)]
struct Active {
    id: String,
    expires_at: i64,
    counted: bool,
}

type ActiveGrants = HashMap<String, HashMap<String, Vec<Active>>>;

pub struct Grants {
    store: Store,
    signer: GrantSigner,
    approvals: Arc<Approvals>,
    policy: Arc<Policy>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    host: String,
    /// workload → resource → access → its active grants, for the workloads this enforcer
    /// serves. Nested maps so a lookup by `&str` allocates nothing.
    active: RwLock<HashMap<String, ActiveGrants>>,
    /// Grants revoked or used up on this host (see [`Grants::tombstone`]).
    ended: std::sync::Mutex<std::collections::HashSet<String>>,
    /// workload → (minute, requests in it).
    requests: std::sync::Mutex<HashMap<String, (i64, u32)>>,
}

impl Grants {
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        store: Store,
        signer: GrantSigner,
        approvals: Arc<Approvals>,
        policy: Arc<Policy>,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        host: String,
        served: &[String],
    ) -> Result<Grants, GrantError> {
        store
            .publish_key(signer.kid(), &signer.public_jwk()?, &host)
            .await?;
        let grants = Grants {
            store,
            signer,
            approvals,
            policy,
            recorder,
            metrics,
            host,
            active: RwLock::new(
                served
                    .iter()
                    .map(|w| (w.clone(), ActiveGrants::new()))
                    .collect(),
            ),
            ended: Default::default(),
            requests: Default::default(),
        };
        grants.refresh().await?;
        Ok(grants)
    }

    pub fn approvals(&self) -> &Arc<Approvals> {
        &self.approvals
    }

    /// Decides a workload's request: denied, pending an operator, or issued.
    pub async fn request(
        &self,
        who: &Requester,
        req: GrantRequest,
    ) -> Result<GrantRow, GrantError> {
        let resource = self
            .policy
            .resources
            .iter()
            .find(|r| r.name == req.resource)
            .ok_or_else(|| GrantError::UnknownResource(req.resource.clone()))?;
        let levels = resource.protocol.access_levels();
        if !levels.contains(&req.access.as_str()) {
            return Err(GrantError::UnknownAccess {
                access: req.access.clone(),
                protocol: resource.protocol.as_str(),
                levels: levels.join(", "),
            });
        }
        let reason = req.reason.trim();
        if reason.is_empty() {
            return Err(GrantError::NoReason);
        }
        // Operators read it in a terminal and in chat: no escape sequences, no fake lines.
        if reason.chars().count() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(GrantError::BadReason);
        }
        self.rate_limit(&who.workload)?;
        if req.uses == Some(0) {
            return Err(GrantError::NoUses);
        }
        let limits = &self.policy.grants;
        let ttl = req.ttl_secs.map_or(limits.default_ttl, Duration::from_secs);
        if ttl.is_zero() || ttl > limits.max_ttl {
            return Err(GrantError::TtlTooLong {
                asked: humantime::format_duration(ttl).to_string(),
                limit: humantime::format_duration(limits.max_ttl).to_string(),
            });
        }
        let context = serde_json::json!({
            "access": req.access,
            "ttl_secs": ttl.as_secs(),
            // Unlimited is the largest number, so "at most N uses" policies refuse it.
            "uses": req.uses.map_or(i64::MAX, i64::from),
            "reason": reason,
        });
        let decision =
            self.policy
                .authz
                .decide_trusted(&who.principal, "grant:request", resource, context)?;
        let mut row = GrantRow {
            id: new_id("g"),
            workload: who.workload.clone(),
            principal: who.principal.name.clone(),
            resource: req.resource.clone(),
            access: req.access.clone(),
            reason: reason.to_owned(),
            status: "pending".into(),
            requested_at: now_ms(),
            ttl_ms: ttl.as_millis() as i64,
            issued_at: None,
            expires_at: None,
            uses_left: req.uses.map(i64::from),
            approval_id: None,
            decided_by: None,
            decision_reason: None,
            policies: decision.policies.join(","),
            host: self.host.clone(),
        };
        self.metrics.grant_event("requested");
        self.audit("requested", &row, None, None).await?;
        if !decision.allowed {
            let why = decision.explain();
            return self.refuse(row, why).await;
        }
        if let Some(max) = decision.max_ttl
            && ttl > max
        {
            let why = format!(
                "ttl {} exceeds the {} that {} allows",
                humantime::format_duration(ttl),
                humantime::format_duration(max),
                decision.policies.join(", ")
            );
            return self.refuse(row, why).await;
        }
        if decision.approval_required {
            if self.store.pending_approvals_of(&row.workload).await? >= MAX_PENDING {
                return Err(GrantError::TooMany(format!(
                    "{MAX_PENDING} requests of this workload already wait for approval"
                )));
            }
            row.approval_id = Some(new_id("a"));
            self.store.insert_grant(&row).await?;
            let opened = self
                .approvals
                .open(NewApproval {
                    id: row.approval_id.clone().unwrap_or_default(),
                    kind: ApprovalKind::Grant,
                    subject: row.id.clone(),
                    summary: format!(
                        "grant {} access to {} for {}{}: {}",
                        row.access,
                        row.resource,
                        humantime::format_duration(ttl),
                        req.uses.map_or(String::new(), |u| format!(", {u} use(s)")),
                        row.reason
                    ),
                    workload: row.workload.clone(),
                    principal: row.principal.clone(),
                    resource: row.resource.clone(),
                })
                .await;
            let approval = match opened {
                Ok(approval) => approval,
                Err(e) => {
                    // Nothing would ever decide it: the request fails closed.
                    let _ = self
                        .store
                        .deny_grant(
                            &row.id,
                            "enforcer",
                            Some("the approval request could not be stored"),
                        )
                        .await;
                    return Err(e.into());
                }
            };
            self.metrics.grant_event("pending");
            self.audit(
                "pending",
                &row,
                None,
                Some(format!(
                    "approval {} required by {}",
                    approval.id,
                    decision.policies.join(", ")
                )),
            )
            .await?;
            return Ok(row);
        }
        row.status = "active".into();
        row.issued_at = Some(row.requested_at);
        row.expires_at = Some(row.requested_at.saturating_add(row.ttl_ms));
        row.decided_by = Some("policy".into());
        // Recorded before it exists: a grant nobody can find in the audit trail never works.
        self.issued_audit(&row).await?;
        self.store.insert_grant(&row).await?;
        self.cache(&row, true);
        Ok(row)
    }

    /// The policy said no: kept (store and audit) and answered with the reason.
    async fn refuse(&self, mut row: GrantRow, why: String) -> Result<GrantRow, GrantError> {
        row.status = "denied".into();
        row.decided_by = Some("policy".into());
        row.decision_reason = Some(why.clone());
        self.store.insert_grant(&row).await?;
        self.metrics.grant_event("denied");
        self.audit("denied", &row, Some("policy".into()), Some(why.clone()))
            .await?;
        Err(GrantError::Denied(why))
    }

    async fn issued(&self, row: &GrantRow) -> Result<(), GrantError> {
        self.issued_audit(row).await?;
        self.cache(row, true);
        Ok(())
    }

    async fn issued_audit(&self, row: &GrantRow) -> Result<(), GrantError> {
        self.metrics.grant_event("issued");
        let detail = format!(
            "ttl {}{}",
            humantime::format_duration(Duration::from_millis(row.ttl_ms as u64)),
            row.uses_left
                .map_or(String::new(), |u| format!(", {u} use(s)"))
        );
        self.audit("issued", row, row.decided_by.clone(), Some(detail))
            .await?;
        Ok(())
    }

    /// The grant side of an approval decision (or timeout) of a grant request.
    pub async fn approval_decided(&self, approval: &ApprovalRow) -> Result<(), GrantError> {
        if approval.kind != ApprovalKind::Grant.as_str() {
            return Ok(());
        }
        let by = approval.decided_by.clone().unwrap_or_default();
        let changed = if approval.status == "approved" {
            self.store
                .activate_grant(
                    &approval.subject,
                    approval.decided_at.unwrap_or_else(now_ms),
                    &by,
                    approval.reason.as_deref(),
                )
                .await?
        } else {
            let why = match approval.status.as_str() {
                "timed_out" => "no operator decided before the approval timeout".to_owned(),
                _ => approval
                    .reason
                    .clone()
                    .unwrap_or_else(|| "denied by an operator".into()),
            };
            self.store
                .deny_grant(&approval.subject, &by, Some(&why))
                .await?
        };
        if !changed {
            return Ok(());
        }
        let Some(row) = self.store.grant(&approval.subject).await? else {
            return Ok(());
        };
        if row.status == "active" {
            self.issued(&row).await?;
        } else {
            self.metrics.grant_event("denied");
            self.audit("denied", &row, Some(by), row.decision_reason.clone())
                .await?;
        }
        Ok(())
    }

    /// An operator decides an approval; the grant it holds follows.
    pub async fn decide(
        &self,
        approval: &str,
        approve: bool,
        by: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalRow, GrantError> {
        let row = self.approvals.decide(approval, approve, by, reason).await?;
        self.approval_decided(&row).await?;
        Ok(row)
    }

    pub async fn get(&self, id: &str) -> Result<GrantRow, GrantError> {
        self.store
            .grant(id)
            .await?
            .ok_or_else(|| GrantError::NotFound(id.to_owned()))
    }

    pub async fn list(&self, workload: Option<&str>) -> Result<Vec<GrantRow>, GrantError> {
        Ok(self.store.grants(workload).await?)
    }

    /// The view of a grant for its own workload: with its token while active.
    pub fn view(&self, grant: GrantRow, for_owner: bool) -> Result<GrantView, GrantError> {
        let token = match (&grant.status[..], grant.expires_at, for_owner) {
            ("active", Some(exp), true) => Some(self.token(&grant, exp)?),
            _ => None,
        };
        Ok(GrantView { grant, token })
    }

    fn token(&self, grant: &GrantRow, expires_at: i64) -> Result<String, GrantError> {
        let claims = GrantClaims {
            iss: token::GRANT_ISSUER.into(),
            aud: token::GRANT_AUDIENCE.into(),
            sub: grant.principal.clone(),
            jti: grant.id.clone(),
            iat: (grant.issued_at.unwrap_or(grant.requested_at) / 1000) as u64,
            exp: (expires_at / 1000) as u64,
            resource: grant.resource.clone(),
            access: grant.access.clone(),
            wl: grant.workload.clone(),
            uses: grant.uses_left.map(|u| u.max(0) as u32),
        };
        Ok(self.signer.issue(&claims)?)
    }

    pub async fn revoke(
        &self,
        id: &str,
        by: &str,
        reason: Option<&str>,
    ) -> Result<GrantRow, GrantError> {
        if !self.store.revoke_grant(id, by, reason).await? {
            let row = self.get(id).await?;
            return Err(GrantError::NotRevocable {
                id: id.to_owned(),
                status: row.status,
            });
        }
        // Stops working here at once (also against a refresh already in flight); elsewhere
        // within REFRESH.
        self.tombstone(id);
        let row = self.get(id).await?;
        self.cache(&row, false);
        self.metrics.grant_event("revoked");
        self.audit(
            "revoked",
            &row,
            Some(by.to_owned()),
            reason.map(str::to_owned),
        )
        .await?;
        if let Some(approval) = &row.approval_id {
            // A revoked pending request no longer waits for anyone.
            // Already decided is fine: then nothing waits.
            let _ = self
                .approvals
                .withdraw(approval, &format!("grant revoked by {by}"))
                .await;
        }
        Ok(row)
    }

    /// The hot path: may `workload` do `access` on `resource` by a grant? Counted grants take
    /// one use, atomically across hosts.
    pub async fn authorize(
        &self,
        workload: &str,
        resource: &str,
        access: &str,
    ) -> Result<Option<GrantUse>, GrantError> {
        let candidates = self.find_active(workload, resource, access, now_ms());
        // Uncounted grants first: they cost nothing to use.
        if let Some(free) = candidates.iter().find(|g| !g.counted) {
            return Ok(Some(GrantUse {
                grant: free.id.clone(),
                uses_left: None,
            }));
        }
        for counted in candidates {
            // Used up elsewhere since our last refresh: try the next one.
            if let Some(used) = self.take_use(&counted.id).await? {
                return Ok(Some(used));
            }
        }
        Ok(None)
    }

    /// Whether `workload` holds an active grant for `access` on `resource`, without taking a
    /// use (a statement is prepared now and run, using the grant, later).
    pub fn has_active(&self, workload: &str, resource: &str, access: &str) -> bool {
        !self
            .find_active(workload, resource, access, now_ms())
            .is_empty()
    }

    /// The lock-free part of [`authorize`]: an uncounted active grant, or a counted one to take
    /// a use of.
    fn find_active(&self, workload: &str, resource: &str, access: &str, now: i64) -> Vec<Active> {
        let active = match self.active.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        active
            .get(workload)
            .and_then(|w| w.get(resource))
            .and_then(|r| r.get(access))
            .map(|grants| {
                grants
                    .iter()
                    .filter(|g| g.expires_at > now)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn take_use(&self, id: &str) -> Result<Option<GrantUse>, GrantError> {
        match self.store.consume_use(id, now_ms()).await? {
            Some(left) => {
                if left == 0 {
                    self.tombstone(id);
                    let row = self.get(id).await?;
                    self.cache(&row, false);
                    self.metrics.grant_event("used_up");
                    self.audit("used_up", &row, None, None).await?;
                }
                Ok(Some(GrantUse {
                    grant: id.to_owned(),
                    uses_left: Some(left),
                }))
            }
            None => {
                // Used up, revoked or expired elsewhere: our view was stale.
                let row = self.get(id).await?;
                self.cache(&row, false);
                Ok(None)
            }
        }
    }

    /// A grant presented as a token (password or bearer), checked without taking a use:
    /// signature (this enforcer's key or one published in the store), expiry, resource, the
    /// workload it is bound to (when presented from inside an enforced workload, `presenter`),
    /// and its state in the store (revoked, used up).
    pub async fn verify_token(
        &self,
        token_text: &str,
        presenter: Option<&Requester>,
        resource: &str,
    ) -> Result<GrantClaims, GrantError> {
        let claims = match token::token_kid(token_text)? {
            Some(kid) if kid == self.signer.kid() => self.signer.verify(token_text)?,
            Some(kid) => match self.store.key(&kid).await? {
                Some(jwk) => token::verify_with_jwk(token_text, &jwk)?,
                None => return Err(TokenError::BadSignature.into()),
            },
            None => self.signer.verify(token_text)?,
        };
        if let Some(presenter) = presenter
            && (presenter.workload != claims.wl || presenter.principal.name != claims.sub)
        {
            return Err(GrantError::OtherWorkload);
        }
        if claims.resource != resource {
            return Err(GrantError::OtherScope {
                id: claims.jti,
                resource: claims.resource,
                access: claims.access,
            });
        }
        let row = self.get(&claims.jti).await?;
        let live = row.status == "active" && row.expires_at.is_some_and(|e| e > now_ms());
        if !live {
            let status = if row.status == "active" {
                "expired".to_owned()
            } else {
                row.status
            };
            return Err(GrantError::NotActive {
                id: claims.jti,
                status,
            });
        }
        Ok(claims)
    }

    /// [`Grants::verify_token`] for one operation of `access`, taking a use of a counted grant.
    pub async fn authorize_token(
        &self,
        token_text: &str,
        presenter: Option<&Requester>,
        resource: &str,
        access: &str,
    ) -> Result<GrantUse, GrantError> {
        let claims = self.verify_token(token_text, presenter, resource).await?;
        if claims.access != access {
            return Err(GrantError::OtherScope {
                id: claims.jti,
                resource: claims.resource,
                access: claims.access,
            });
        }
        let row = self.get(&claims.jti).await?;
        if row.uses_left.is_none() {
            return Ok(GrantUse {
                grant: row.id,
                uses_left: None,
            });
        }
        self.take_use(&row.id).await?.ok_or(GrantError::NotActive {
            id: row.id,
            status: "used".into(),
        })
    }

    /// Adds an issued grant to (or removes an ended one from) the in-memory view, if its
    /// workload is served here.
    fn cache(&self, row: &GrantRow, active: bool) {
        let mut all = match self.active.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(grants) = all.get_mut(&row.workload) else {
            return;
        };
        let list = grants
            .entry(row.resource.clone())
            .or_default()
            .entry(row.access.clone())
            .or_default();
        list.retain(|g| g.id != row.id);
        if active {
            list.push(Active {
                id: row.id.clone(),
                expires_at: row.expires_at.unwrap_or(0),
                counted: row.uses_left.is_some(),
            });
        }
    }

    /// Remembers a grant that ended here, so a refresh that read the store just before cannot
    /// bring it back.
    fn tombstone(&self, id: &str) {
        let mut ended = match self.ended.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Bounded: the store itself says "not active" to every refresh after the next.
        if ended.len() >= 4096 {
            ended.clear();
        }
        ended.insert(id.to_owned());
    }

    /// Re-reads the active grants of every served workload.
    pub async fn refresh(&self) -> Result<(), GrantError> {
        let served: Vec<String> = match self.active.read() {
            Ok(g) => g.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        for workload in served {
            self.refresh_workload(&workload).await?;
        }
        Ok(())
    }

    async fn refresh_workload(&self, workload: &str) -> Result<(), GrantError> {
        let rows = self.store.active_grants(workload, now_ms()).await?;
        let mut fresh = ActiveGrants::new();
        let ended = match self.ended.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for r in rows {
            if ended.contains(&r.id) {
                continue;
            }
            fresh
                .entry(r.resource)
                .or_default()
                .entry(r.access)
                .or_default()
                .push(Active {
                    counted: r.uses_left.is_some(),
                    expires_at: r.expires_at.unwrap_or(0),
                    id: r.id,
                });
        }
        let mut active = match self.active.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(slot) = active.get_mut(workload) {
            *slot = fresh;
        }
        Ok(())
    }

    /// Times out overdue approvals (denying their grants) and expires grants past their TTL.
    pub async fn sweep(&self) -> Result<(), GrantError> {
        // Every step runs whatever the others did: one bad row must not stop revocations from
        // other hosts reaching this one.
        let mut first_error = None;
        let mut note = |r: Result<(), GrantError>| {
            if let Err(e) = r {
                tracing::error!("grant sweep: {e}");
                first_error.get_or_insert(e);
            }
        };
        note(self.approvals.sweep().await.map(drop).map_err(Into::into));
        // Also catches decisions whose grant side was never applied (a waiter timed the
        // approval out, or a host died between the two updates).
        match self.store.unapplied_grant_decisions().await {
            Ok(decided) => {
                for approval in decided {
                    note(self.approval_decided(&approval).await);
                }
            }
            Err(e) => note(Err(e.into())),
        }
        match self.store.expire_grants(now_ms()).await {
            Ok(expired) => {
                for row in expired {
                    self.metrics.grant_event("expired");
                    note(self.audit("expired", &row, None, None).await);
                }
            }
            Err(e) => note(Err(e.into())),
        }
        note(self.refresh().await);
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn rate_limit(&self, workload: &str) -> Result<(), GrantError> {
        let minute = now_ms() / 60_000;
        let mut requests = match self.requests.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let slot = requests.entry(workload.to_owned()).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += 1;
        if slot.1 > MAX_REQUESTS_PER_MINUTE {
            return Err(GrantError::TooMany(format!(
                "more than {MAX_REQUESTS_PER_MINUTE} grant requests in a minute"
            )));
        }
        Ok(())
    }

    async fn audit(
        &self,
        action: &str,
        row: &GrantRow,
        by: Option<String>,
        detail: Option<String>,
    ) -> Result<(), GrantError> {
        let event = GrantEvent {
            action: action.to_owned(),
            grant: row.id.clone(),
            workload: row.workload.clone(),
            principal: row.principal.clone(),
            resource: row.resource.clone(),
            access: row.access.clone(),
            reason: row.reason.clone(),
            by,
            policies: row
                .policies
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            detail,
        };
        self.recorder.record_written(Event::Grant(event)).await?;
        Ok(())
    }
}
