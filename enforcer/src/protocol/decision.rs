//! How every protocol handler decides one operation (a statement, an API request): the
//! Cedar policies at baseline, then — if nothing permits or forbids it — with the workload's
//! active grant for the access level, taking a use of it; and, when a permitting policy says
//! `@approval("required")`, held until an operator decides.

use std::time::Duration;

use crate::{
    approval::{ApprovalKind, NewApproval, new_id},
    policy::Resource,
    protocol::HandlerContext,
    store::ApprovalRow,
};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DecisionError(String);

/// The outcome for one operation.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub allowed: bool,
    /// The policies that decided.
    pub policies: Vec<String>,
    /// The grant whose use allowed it.
    pub grant: Option<String>,
    /// Allowed only because of a grant (a prepared statement re-checks it at each run).
    pub grant_based: bool,
    /// Nothing permitted or forbade it at baseline: a grant would be the way in.
    pub grantable: bool,
    /// For a denial: why, naming the rule.
    pub why: String,
    pub approval_required: bool,
}

/// Decides `action` on `resource`; `context(grant)` builds the Cedar context with the grant's
/// access level (`""` at baseline). With `consume`, a counted grant's use is taken now.
pub async fn decide(
    ctx: &HandlerContext<'_>,
    resource: &Resource,
    action: &str,
    access: &str,
    context: impl Fn(&str) -> serde_json::Value,
    consume: bool,
) -> Result<Outcome, DecisionError> {
    let authz = &ctx.policy.authz;
    let err = |e: crate::policy::cedar::AuthzError| DecisionError(e.to_string());
    let first = authz
        .decide_trusted(&ctx.principal, action, resource, context(""))
        .map_err(err)?;
    let grantable = !first.allowed && first.policies.is_empty() && first.errors.is_empty();
    let mut decision = first;
    let mut grant = None;
    let mut grant_based = false;
    let mut token_refused = None;
    // A session opened with a token has that token's grant, and only it.
    let token = ctx
        .token
        .filter(|t| t.claims.resource == resource.name && t.claims.access == access);
    if grantable
        && let Some(grants) = ctx.grants
        && (token.is_some()
            || (ctx.token.is_none() && grants.has_active(ctx.workload, &resource.name, access)))
    {
        let second = authz
            .decide_trusted(&ctx.principal, action, resource, context(access))
            .map_err(err)?;
        if second.allowed {
            if consume {
                let used = match token {
                    Some(t) => {
                        let presenter = ctx.presenter();
                        match grants
                            .authorize_token(&t.text, Some(&presenter), &resource.name, access)
                            .await
                        {
                            Ok(u) => Some(u),
                            // Revoked, used up, expired: a denial naming why, not a failure.
                            Err(e) => {
                                token_refused = Some(format!("the presented grant token: {e}"));
                                None
                            }
                        }
                    }
                    None => grants
                        .authorize(ctx.workload, &resource.name, access)
                        .await
                        .map_err(|e| DecisionError(e.to_string()))?,
                };
                if let Some(u) = used {
                    grant = Some(u.grant);
                    grant_based = true;
                    decision = second;
                }
            } else {
                grant_based = true;
                decision = second;
            }
        }
    }
    Ok(Outcome {
        allowed: decision.allowed,
        why: token_refused.unwrap_or_else(|| decision.explain()),
        approval_required: decision.approval_required,
        policies: decision.policies,
        grant,
        grant_based,
        grantable,
    })
}

/// Opens an approval for a held operation; the caller may tell its client, then [`wait`].
pub async fn hold(
    ctx: &HandlerContext<'_>,
    resource: &Resource,
    connection: u64,
    summary: String,
) -> Result<ApprovalRow, DecisionError> {
    let Some(grants) = ctx.grants else {
        return Err(DecisionError(
            "it needs an approval and approvals are not available".into(),
        ));
    };
    grants
        .approvals()
        .open(NewApproval {
            id: new_id("a"),
            kind: ApprovalKind::Operation,
            subject: format!("connection {connection}"),
            summary,
            workload: ctx.workload.to_owned(),
            principal: ctx.principal.name.clone(),
            resource: resource.name.clone(),
        })
        .await
        .map_err(|e| DecisionError(e.to_string()))
}

/// Waits for an operator's decision on a held operation: `Ok(())` when approved,
/// `Err(why)` when denied or timed out.
pub async fn wait(
    ctx: &HandlerContext<'_>,
    approval: &str,
) -> Result<Result<(), String>, DecisionError> {
    let Some(grants) = ctx.grants else {
        return Ok(Err("approvals are not available".into()));
    };
    let approvals = grants.approvals();
    let held_since = std::time::Instant::now();
    let decided = approvals
        .wait(approval, approvals.timeout() + Duration::from_secs(2))
        .await
        .map_err(|e| DecisionError(e.to_string()))?;
    ctx.metrics
        .hold_seconds
        .observe(held_since.elapsed().as_secs_f64());
    Ok(match decided.status.as_str() {
        "approved" => Ok(()),
        "denied" => Err(format!(
            "an operator denied it{}",
            decided.reason.map_or(String::new(), |r| format!(": {r}"))
        )),
        _ => Err("no operator approved it before the approval timeout".into()),
    })
}

/// The refusal of a held operation an operator denied or nobody approved in time: the
/// rules that held it, so the client learns what asked for the approval, not only who
/// refused it.
pub fn held_denial(
    action: &str,
    resource: &str,
    why: &str,
    policies: &[String],
    approval: &str,
) -> String {
    let rules = if policies.is_empty() {
        String::new()
    } else {
        format!("held by rule {}, ", policies.join(", "))
    };
    format!("enforcer: {action} on {resource} denied: {why} ({rules}approval {approval})")
}

/// Text kept in records and approval summaries: at most `max` bytes, cut on a character.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

impl Outcome {
    /// For a denial nothing forbade: how to ask for the grant that would allow it.
    pub fn grant_hint(&self, resource: &str, access: &str) -> String {
        if self.grantable {
            format!(
                "; ask for a grant: enforcer grant request --resource {resource} --access {access} --reason …"
            )
        } else {
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_characters() {
        assert_eq!(truncate("héllo", 2), "h…");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
