//! Announces new approval requests: one JSON POST per request, with a Slack-compatible
//! `text` so an incoming-webhook URL works as it is, and the request's fields for tools.

use std::time::Duration;

use serde_json::json;

use crate::store::ApprovalRow;

#[derive(Clone, Debug)]
pub struct Webhook {
    url: String,
    client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: String) -> Result<Webhook, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhook { url, client })
    }

    /// Posts in the background: a slow or failing webhook never holds up the request (the
    /// request is pending in the store whether or not anyone was told).
    pub fn announce(&self, row: &ApprovalRow) {
        let body = json!({
            "text": format!(
                "enforcer: approval {} requested by {} ({}) on {}: {}. Decide with `enforcer approvals approve {}` or `deny {} --reason …`",
                row.id, row.principal, row.workload, row.resource, row.summary, row.id, row.id
            ),
            "approval": row,
        });
        let hook = self.clone();
        let id = row.id.clone();
        tokio::spawn(async move {
            match hook.client.post(&hook.url).json(&body).send().await {
                Ok(resp) if resp.status().is_success() => {}
                Ok(resp) => {
                    tracing::warn!(approval = %id, status = %resp.status(), "approval webhook refused the announcement")
                }
                Err(e) => tracing::warn!(approval = %id, "approval webhook failed: {e}"),
            }
        });
    }
}
