//! Secret values never reach the workload: in any JSON the API server answers (an object, a
//! list, a Table's embedded objects, a watch event), every `Secret`'s `data` and
//! `stringData` values are replaced — keys kept, `data` still valid base64 — and so are the
//! copies kubectl keeps in the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation.

use serde_json::Value;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// What a redacted value reads as.
const REDACTED: &str = "[redacted by enforcer]";
/// `REDACTED`, base64-encoded, for `data` (whose values must stay base64).
const REDACTED_B64: &str = "W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ==";

/// Redacts every Secret in `value`; returns how many values were replaced.
pub fn redact(value: &mut Value) -> usize {
    let mut count = 0;
    walk(value, &mut count);
    count
}

fn walk(value: &mut Value, count: &mut usize) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| walk(v, count)),
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("Secret") {
                for (field, replacement) in [("data", REDACTED_B64), ("stringData", REDACTED)] {
                    if let Some(Value::Object(values)) = map.get_mut(field) {
                        for v in values.values_mut() {
                            *v = Value::String(replacement.to_owned());
                            *count += 1;
                        }
                    }
                }
            }
            if let Some(Value::String(applied)) = map
                .get_mut("metadata")
                .and_then(|m| m.get_mut("annotations"))
                .and_then(|a| a.get_mut(LAST_APPLIED))
            {
                match serde_json::from_str::<Value>(applied) {
                    Ok(mut inner) => {
                        let before = *count;
                        walk(&mut inner, count);
                        if *count > before {
                            *applied = inner.to_string();
                        }
                    }
                    // Not JSON: cannot be read, so cannot be shown safely.
                    Err(_) => {
                        *applied = REDACTED.to_owned();
                        *count += 1;
                    }
                }
            }
            map.values_mut().for_each(|v| walk(v, count));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_keep_their_keys_and_lose_their_values() {
        let applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
            "stringData": {"password": "hunter2"}})
        .to_string();
        let mut list = json!({
            "kind": "SecretList", "apiVersion": "v1",
            "items": [{
                "kind": "Secret", "apiVersion": "v1",
                "metadata": {"name": "db", "annotations": {LAST_APPLIED: applied}},
                "data": {"password": "aHVudGVyMg==", "user": "YWRtaW4="},
                "type": "Opaque"
            }, {
                "kind": "ConfigMap", "data": {"plain": "visible"}
            }]
        });
        assert_eq!(redact(&mut list), 3);
        let text = list.to_string();
        assert!(
            !text.contains("aHVudGVyMg==") && !text.contains("hunter2"),
            "{text}"
        );
        assert_eq!(list["items"][0]["data"]["user"], REDACTED_B64);
        assert_eq!(list["items"][1]["data"]["plain"], "visible");
        let inner: Value = serde_json::from_str(
            list["items"][0]["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .expect("annotation"),
        )
        .expect("json");
        assert_eq!(inner["stringData"]["password"], REDACTED);
        use base64::Engine as _;
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(REDACTED_B64)
                .expect("base64"),
            REDACTED.as_bytes()
        );
    }

    #[test]
    fn watch_events_and_tables_are_walked() {
        let mut event =
            json!({"type": "ADDED", "object": {"kind": "Secret", "data": {"k": "dg=="}}});
        assert_eq!(redact(&mut event), 1);
        let mut table = json!({"kind": "Table", "rows": [{"cells": ["db"], "object":
            {"kind": "Secret", "data": {"k": "dg=="}}}]});
        assert_eq!(redact(&mut table), 1);
        assert_eq!(table["rows"][0]["object"]["data"]["k"], REDACTED_B64);
    }
}
