//! Secret values never reach the workload: in any JSON the API server answers (an object, a
//! list, a Table's embedded objects, a watch event), every `Secret`'s `data` and
//! `stringData` values are replaced — keys kept, `data` still valid base64 — and so are the
//! copies kubectl keeps in the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation. The resource's masking profile may name more (`keys`): ConfigMap keys and
//! container environment variables whose values are replaced the same way.

use serde_json::Value;

use crate::mask::Profile;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// What a redacted value reads as.
const REDACTED: &str = "[redacted by enforcer]";
/// `REDACTED`, base64-encoded, for `data` (whose values must stay base64).
const REDACTED_B64: &str = "W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ==";

/// Whether a request body carries enforcer's placeholder, as JSON would (`data` in base64,
/// `stringData` as text) or protobuf (a Secret's `data` as raw bytes): written back, it would
/// replace the real values.
pub fn carries_placeholder(body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    has(REDACTED.as_bytes()) || has(REDACTED_B64.as_bytes())
}

/// How many values a redaction replaced, by why (the `masked_values` metric's detectors).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redacted {
    /// Values of Secrets (`data`, `stringData`, an unreadable last-applied annotation).
    pub secret_values: usize,
    /// ConfigMap values and environment variables the profile's `keys` name.
    pub profile_keys: usize,
}

impl Redacted {
    pub fn total(self) -> usize {
        self.secret_values + self.profile_keys
    }

    /// Counts them into the `masked_values` metric.
    pub fn count_into(self, metrics: &crate::metrics::Metrics) {
        if self.secret_values > 0 {
            metrics.masked_n("kubernetes_secret", self.secret_values as u64);
        }
        if self.profile_keys > 0 {
            metrics.masked_n("kubernetes_key", self.profile_keys as u64);
        }
    }
}

/// Redacts every Secret in `value`, and what the profile's `keys` name; returns how many
/// values were replaced. `kind` is what the request asked for (`Secret` for a request to
/// `secrets`): an object there that does not say its kind is taken to be one. The API server
/// leaves `kind` out of a list's items (`SecretList.items`) and may leave it out of a Table
/// row's object; a redaction that waited for `"kind": "Secret"` would pass them on.
pub fn redact_as(value: &mut Value, profile: &Profile, kind: Option<&str>) -> Redacted {
    let mut count = Redacted::default();
    walk(value, profile, &mut count, kind);
    count
}

fn replace_all(
    map: &mut serde_json::Map<String, Value>,
    field: &str,
    with: &str,
    count: &mut Redacted,
) {
    if let Some(Value::Object(values)) = map.get_mut(field) {
        for v in values.values_mut() {
            if v.as_str() != Some(with) {
                *v = Value::String(with.to_owned());
                count.secret_values += 1;
            }
        }
    }
}

fn replace_keys(
    map: &mut serde_json::Map<String, Value>,
    field: &str,
    with: &str,
    profile: &Profile,
    count: &mut Redacted,
) {
    if let Some(Value::Object(values)) = map.get_mut(field) {
        for (k, v) in values.iter_mut() {
            if profile.masks_key(k) {
                *v = Value::String(with.to_owned());
                count.profile_keys += 1;
            }
        }
    }
}

fn walk(value: &mut Value, profile: &Profile, count: &mut Redacted, implied: Option<&str>) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| walk(v, profile, count, implied)),
        Value::Object(map) => {
            let kind = match map.get("kind").and_then(Value::as_str) {
                // Metadata only (`as=PartialObjectMetadataList`, Table rows): still the
                // request's kind for what its annotations may copy.
                Some("PartialObjectMetadata") if implied.is_some() => implied.map(str::to_owned),
                Some(k) => Some(k.to_owned()),
                None if map.contains_key("metadata") => implied.map(str::to_owned),
                None => None,
            };
            // The items of an `XList` are `X`s, whether or not they say so.
            let items_kind = kind
                .as_deref()
                .and_then(|k| k.strip_suffix("List"))
                .filter(|k| !k.is_empty())
                .map(str::to_owned);
            match kind.as_deref() {
                Some("Secret") => {
                    replace_all(map, "data", REDACTED_B64, count);
                    replace_all(map, "stringData", REDACTED, count);
                }
                Some("ConfigMap") if !profile.keys.is_empty() => {
                    replace_keys(map, "data", REDACTED, profile, count);
                    replace_keys(map, "binaryData", REDACTED_B64, profile, count);
                }
                _ => {}
            }
            // A container's `env: [{name, value}]`, wherever a pod spec sits (pods, templates
            // of deployments, jobs…).
            if !profile.keys.is_empty()
                && let Some(Value::Array(env)) = map.get_mut("env")
            {
                for var in env.iter_mut() {
                    let masked = var
                        .get("name")
                        .and_then(Value::as_str)
                        .is_some_and(|n| profile.masks_key(n));
                    if masked && let Some(v) = var.get_mut("value") {
                        *v = Value::String(REDACTED.to_owned());
                        count.profile_keys += 1;
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
                        let before = count.total();
                        // A Secret's annotation is a copy of that Secret, whatever kind it
                        // claims to be (or none).
                        if kind.as_deref() == Some("Secret")
                            && let Value::Object(copy) = &mut inner
                        {
                            replace_all(copy, "data", REDACTED_B64, count);
                            replace_all(copy, "stringData", REDACTED, count);
                        }
                        walk(&mut inner, profile, count, kind.as_deref());
                        if count.total() > before {
                            *applied = inner.to_string();
                        }
                    }
                    // Not JSON: cannot be read, so cannot be shown safely.
                    Err(_) => {
                        *applied = REDACTED.to_owned();
                        count.secret_values += 1;
                    }
                }
            }
            for (key, v) in map.iter_mut() {
                let inner = match (&items_kind, key.as_str()) {
                    (Some(k), "items") if k != "PartialObjectMetadata" => Some(k.as_str()),
                    _ => implied,
                };
                walk(v, profile, count, inner);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redact(value: &mut Value, profile: &Profile) -> usize {
        redact_as(value, profile, None).total()
    }

    #[test]
    fn the_placeholder_is_recognised_in_any_encoding() {
        assert!(carries_placeholder(
            br#"{"data":{"password":"W3JlZGFjdGVkIGJ5IGVuZm9yY2VyXQ=="}}"#
        ));
        assert!(carries_placeholder(
            b"k8s\0\n\x0c\n\x02v1\x12\x06Secret\x12\x16[redacted by enforcer]"
        ));
        assert!(!carries_placeholder(
            br#"{"data":{"password":"aHVudGVyMg=="}}"#
        ));
        assert!(!carries_placeholder(b""));
    }

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
        assert_eq!(redact(&mut list, &Profile::default()), 3);
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
        assert_eq!(redact(&mut event, &Profile::default()), 1);
        let mut table = json!({"kind": "Table", "rows": [{"cells": ["db"], "object":
            {"kind": "Secret", "data": {"k": "dg=="}}}]});
        assert_eq!(redact(&mut table, &Profile::default()), 1);
        assert_eq!(table["rows"][0]["object"]["data"]["k"], REDACTED_B64);
    }

    /// As a real API server answers: list items and Table row objects without `kind`.
    #[test]
    fn objects_that_do_not_say_their_kind_are_redacted_by_where_they_are() {
        let mut list = json!({
            "kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
            "items": [
                {"metadata": {"name": "a"}, "data": {"k": "c2VjcmV0"}, "type": "Opaque"},
                {"metadata": {"name": "b"}, "stringData": {"k": "secret"}}
            ]
        });
        assert_eq!(redact(&mut list, &Profile::default()), 2);
        assert_eq!(list["items"][0]["data"]["k"], REDACTED_B64);
        assert_eq!(list["items"][1]["stringData"]["k"], REDACTED);

        let mut table = json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "rows": [{"cells": ["a"], "object": {"metadata": {"name": "a"}, "data": {"k": "c2VjcmV0"}}}]
        });
        assert_eq!(redact(&mut table.clone(), &Profile::default()), 0);
        assert_eq!(
            redact_as(&mut table, &Profile::default(), Some("Secret")).secret_values,
            1
        );
        assert_eq!(table["rows"][0]["object"]["data"]["k"], REDACTED_B64);
        // Metadata only: the annotation's copy is read as the request's kind, even when
        // the copy itself does not say it.
        let applied = json!({"metadata": {"name": "a"}, "data": {"k": "c2VjcmV0"}}).to_string();
        let mut partial = json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
            "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "a", "annotations": {LAST_APPLIED: applied}}}]
        });
        assert_eq!(
            redact_as(&mut partial, &Profile::default(), Some("Secret")).secret_values,
            1
        );
        assert!(!partial.to_string().contains("c2VjcmV0"), "{partial}");
        // A Secret whose annotation claims another kind, or none, and has no metadata.
        for claim in [json!("ConfigMap"), Value::Null] {
            let applied =
                json!({"kind": claim, "data": {"k": "c2VjcmV0"}, "stringData": {"s": "hunter2"}})
                    .to_string();
            let mut secret = json!({"kind": "Secret", "apiVersion": "v1",
                "metadata": {"name": "a", "annotations": {LAST_APPLIED: applied}}});
            assert_eq!(redact(&mut secret, &Profile::default()), 2, "{claim}");
            let shown = secret.to_string();
            assert!(
                !shown.contains("c2VjcmV0") && !shown.contains("hunter2"),
                "{shown}"
            );
        }
        // A watch event's object, kind left out.
        let mut event =
            json!({"type": "ADDED", "object": {"metadata": {"name": "a"}, "data": {"k": "eA=="}}});
        assert_eq!(
            redact_as(&mut event, &Profile::default(), Some("Secret")).total(),
            1
        );
    }

    #[test]
    fn profile_keys_mask_config_maps_and_environment_variables() {
        let profile = Profile {
            keys: vec!["*password*".into(), "api_token".into()],
            ..Profile::default()
        };
        let mut cm = json!({"kind": "ConfigMap", "data": {"db_password": "x", "mode": "fast"},
            "binaryData": {"API_TOKEN": "dg=="}});
        assert_eq!(
            redact_as(&mut cm, &profile, None),
            Redacted {
                secret_values: 0,
                profile_keys: 2
            }
        );
        assert_eq!(cm["data"]["db_password"], REDACTED);
        assert_eq!(cm["data"]["mode"], "fast");
        assert_eq!(cm["binaryData"]["API_TOKEN"], REDACTED_B64);
        let mut deployment = json!({"kind": "Deployment", "spec": {"template": {"spec": {
        "containers": [{"name": "app", "env": [
            {"name": "API_TOKEN", "value": "t0k3n"},
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}
        ]}]}}}});
        assert_eq!(redact(&mut deployment, &profile), 1);
        let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
        assert_eq!(env[0]["value"], REDACTED);
        assert_eq!(env[1]["value"], "debug");
        // Without keys in the profile, ConfigMaps pass as they are.
        let mut plain = json!({"kind": "ConfigMap", "data": {"db_password": "x"}});
        assert_eq!(redact(&mut plain, &Profile::default()), 0);
    }
}
