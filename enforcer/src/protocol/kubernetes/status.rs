//! Refusals as the API server phrases them: a `meta/v1 Status` that kubectl and client
//! libraries print exactly like an RBAC denial
//! (`Error from server (Forbidden): secrets "db-creds" is forbidden: …`).

use serde_json::{Value, json};

use super::request::{ApiRequest, Kind};

/// The 403 `Status` body for a request the policy refuses, `why` naming the rule.
pub fn forbidden(request: &ApiRequest, why: &str) -> Value {
    let (message, details) = match &request.kind {
        Kind::Resource {
            group,
            resource,
            subresource,
            name,
            ..
        } => {
            // `pods "web-0"`, `deployments.apps "web"`, `pods "web-0" … exec`: the
            // server's wording, which kubectl users recognise.
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let subject = if name.is_empty() {
                qualified.clone()
            } else {
                format!("{qualified} {name:?}")
            };
            let sub = if subresource.is_empty() {
                String::new()
            } else {
                format!(" (subresource {subresource})")
            };
            let mut details = json!({ "kind": resource });
            if !name.is_empty() {
                details["name"] = json!(name);
            }
            if !group.is_empty() {
                details["group"] = json!(group);
            }
            (format!("{subject} is forbidden{sub}: {why}"), Some(details))
        }
        Kind::NonResource { path } => (format!("forbidden: {path}: {why}"), None),
    };
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "Forbidden",
        "code": 403,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::kubernetes::request::parse;

    #[test]
    fn denials_read_like_the_api_servers() {
        let req = parse("GET", "/api/v1/namespaces/default/secrets/db-creds", None).expect("req");
        let status = forbidden(&req, "k8s:get needs a grant (rule secrets-need-approval)");
        assert_eq!(
            status["message"],
            "secrets \"db-creds\" is forbidden: k8s:get needs a grant (rule secrets-need-approval)"
        );
        assert_eq!(status["code"], 403);
        assert_eq!(status["reason"], "Forbidden");
        assert_eq!(status["details"]["kind"], "secrets");
        assert_eq!(status["details"]["name"], "db-creds");
        let req = parse("DELETE", "/apis/apps/v1/namespaces/p/deployments/web", None).expect("req");
        assert!(
            forbidden(&req, "no policy permits it")["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("deployments.apps \"web\" is forbidden: ")),
        );
    }
}
