//! `kubectl auth can-i` asks the API server a question (a SelfSubjectAccessReview). Behind
//! enforcer the cluster's answer would be about the injected credential, not about what
//! enforcer lets the workload do; so enforcer answers it itself, from the same policies and
//! grants that decide real requests.
//!
//! kubectl sends the review as protobuf (client-go's default for built-in types); the few
//! fields read here are declared with prost rather than decoded by hand.

use prost::Message;
use serde_json::{Value, json};

use super::request::{ApiRequest, Kind};

/// The `k8s\0` prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\0";

/// `k8s.io.apimachinery.pkg.runtime.Unknown`: the envelope of every protobuf body.
#[derive(Clone, PartialEq, Message)]
struct Unknown {
    #[prost(bytes = "vec", optional, tag = "2")]
    raw: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
struct Review {
    #[prost(message, optional, tag = "2")]
    spec: Option<Spec>,
}

#[derive(Clone, PartialEq, Message)]
struct Spec {
    #[prost(message, optional, tag = "1")]
    resource_attributes: Option<ResourceAttributes>,
    #[prost(message, optional, tag = "2")]
    non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceAttributes {
    #[prost(string, optional, tag = "1")]
    namespace: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
    #[prost(string, optional, tag = "3")]
    group: Option<String>,
    #[prost(string, optional, tag = "4")]
    version: Option<String>,
    #[prost(string, optional, tag = "5")]
    resource: Option<String>,
    #[prost(string, optional, tag = "6")]
    subresource: Option<String>,
    #[prost(string, optional, tag = "7")]
    name: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct NonResourceAttributes {
    #[prost(string, optional, tag = "1")]
    path: Option<String>,
    #[prost(string, optional, tag = "2")]
    verb: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the access review cannot be read: {0}")]
pub struct ReviewError(String);

/// The question, as the request it asks about, and its spec to echo back.
pub struct Question {
    pub request: ApiRequest,
    pub spec: Value,
}

/// Reads a SelfSubjectAccessReview body (protobuf or JSON).
pub fn read(body: &[u8], content_type: &str) -> Result<Question, ReviewError> {
    let spec = if content_type.contains("protobuf") {
        let envelope = body
            .strip_prefix(MAGIC)
            .ok_or_else(|| ReviewError("no k8s protobuf prefix".into()))?;
        let unknown = Unknown::decode(envelope).map_err(|e| ReviewError(e.to_string()))?;
        let review = Review::decode(unknown.raw.unwrap_or_default().as_slice())
            .map_err(|e| ReviewError(e.to_string()))?;
        let spec = review.spec.unwrap_or_default();
        match (spec.resource_attributes, spec.non_resource_attributes) {
            (Some(r), _) => json!({"resourceAttributes": {
                "namespace": r.namespace.unwrap_or_default(),
                "verb": r.verb.unwrap_or_default(),
                "group": r.group.unwrap_or_default(),
                "version": r.version.unwrap_or_default(),
                "resource": r.resource.unwrap_or_default(),
                "subresource": r.subresource.unwrap_or_default(),
                "name": r.name.unwrap_or_default(),
            }}),
            (None, Some(n)) => json!({"nonResourceAttributes": {
                "path": n.path.unwrap_or_default(),
                "verb": n.verb.unwrap_or_default(),
            }}),
            (None, None) => return Err(ReviewError("it asks about nothing".into())),
        }
    } else {
        let review: Value = serde_json::from_slice(body).map_err(|e| ReviewError(e.to_string()))?;
        review
            .get("spec")
            .cloned()
            .ok_or_else(|| ReviewError("no spec".into()))?
    };
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let request = if let Some(r) = spec.get("resourceAttributes") {
        ApiRequest {
            verb: text(r, "verb"),
            kind: Kind::Resource {
                group: text(r, "group"),
                version: text(r, "version"),
                resource: text(r, "resource"),
                subresource: text(r, "subresource"),
                namespace: text(r, "namespace"),
                name: text(r, "name"),
            },
        }
    } else if let Some(n) = spec.get("nonResourceAttributes") {
        ApiRequest {
            verb: text(n, "verb"),
            kind: Kind::NonResource {
                path: text(n, "path"),
            },
        }
    } else {
        return Err(ReviewError("it asks about nothing".into()));
    };
    if request.verb.is_empty() {
        return Err(ReviewError("it names no verb".into()));
    }
    Ok(Question { request, spec })
}

/// The answer, as the API server would send it.
pub fn answer(spec: &Value, allowed: bool, reason: &str) -> Value {
    json!({
        "kind": "SelfSubjectAccessReview",
        "apiVersion": "authorization.k8s.io/v1",
        "metadata": {},
        "spec": spec,
        "status": {"allowed": allowed, "reason": reason},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_protobuf_reviews_are_read() {
        let attributes = ResourceAttributes {
            namespace: Some("default".into()),
            verb: Some("create".into()),
            resource: Some("pods".into()),
            ..Default::default()
        };
        let review = Review {
            spec: Some(Spec {
                resource_attributes: Some(attributes),
                non_resource_attributes: None,
            }),
        };
        let mut body = MAGIC.to_vec();
        body.extend(
            Unknown {
                raw: Some(review.encode_to_vec()),
            }
            .encode_to_vec(),
        );
        let q = read(&body, "application/vnd.kubernetes.protobuf").expect("reads");
        assert_eq!(q.request.verb, "create");
        assert!(matches!(
            q.request.kind,
            Kind::Resource { ref resource, ref namespace, .. } if resource == "pods" && namespace == "default"
        ));
        let json = read(
            br#"{"spec":{"nonResourceAttributes":{"path":"/version","verb":"get"}}}"#,
            "application/json",
        )
        .expect("reads");
        assert!(matches!(json.request.kind, Kind::NonResource { .. }));
        assert!(read(b"garbage", "application/vnd.kubernetes.protobuf").is_err());
        assert!(read(b"k8s\0\xff\xff", "application/vnd.kubernetes.protobuf").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_body_is_read_or_refused(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..128)) {
            let mut body = MAGIC.to_vec();
            body.extend(&bytes);
            let _ = read(&body, "application/vnd.kubernetes.protobuf");
            let _ = read(&bytes, "application/json");
        }
    }
}
