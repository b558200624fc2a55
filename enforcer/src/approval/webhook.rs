//! Announces new approval requests: one JSON POST per request, with a Slack-compatible
//! `text` so an incoming-webhook URL works as it is, and the request's fields for tools.

use std::time::Duration;

use serde_json::json;

use crate::store::ApprovalRow;

#[derive(Clone, Debug)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
    /// Announcements in flight; beyond it new ones are dropped (and logged) rather than
    /// piling up tasks and connections.
    in_flight: std::sync::Arc<tokio::sync::Semaphore>,
}

const IN_FLIGHT: usize = 8;

/// Slack's mrkdwn control characters: workload text must not become mentions or links.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Webhook {
    pub fn new(url: String) -> Result<Webhook, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook {
            url,
            client,
            in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        })
    }

    /// Posts in the background: a slow or failing webhook never holds up the request (the
    /// request is pending in the store whether or not anyone was told).
    pub fn announce(&self, row: &ApprovalRow) {
        let body = json!({
            "text": format!(
                "enforcer: approval {} requested by {} ({}) on {}: {}. Decide with `enforcer approvals approve {}` or `deny {} --reason …`",
                row.id,
                escape(&row.principal),
                escape(&row.workload),
                escape(&row.resource),
                escape(&row.summary),
                row.id,
                row.id
            ),
            "approval": row,
        });
        let hook = self.clone();
        let id = row.id.clone();
        let Ok(permit) = std::sync::Arc::clone(&self.in_flight).try_acquire_owned() else {
            tracing::warn!(approval = %id, "approval webhook busy: announcement dropped (the request is pending all the same)");
            return;
        };
        tokio::spawn(async move {
            let _permit = permit;
            match hook.client.post(&hook.url).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(approval = %id, status = %resp.status(), "approval webhook refused the announcement")
                }
                // The URL is a secret (Slack's are): never in the log.
                Err(e) => {
                    tracing::warn!(approval = %id, "approval webhook failed: {}", e.without_url())
                }
            }
        });
    }
}
