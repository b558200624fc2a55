//! A Kubernetes API-server double: real TLS (a CA of its own), real HTTP/1.1, and the API
//! shapes kubectl reads — aggregated discovery (when asked for, as kubectl 1.32 does) and
//! legacy discovery, Tables, lists and objects of pods, secrets, configmaps, deployments,
//! serviceaccounts and rolebindings (pod specs with an environment), watch streams (plain or
//! as Tables, ending after two events or held open), exec/attach/port-forward over
//! WebSocket, `Status` answers.
//! It records every request it receives (method, path, query, Accept and Authorization
//! headers) so tests can check what reached "the cluster".

use std::{
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Frame, body::Incoming, header};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub accept: Option<String>,
    pub accept_encoding: Option<String>,
    pub authorization: Option<String>,
    /// Whether the connection presented a client certificate of the cluster's CA.
    pub client_certificate: bool,
}

pub struct ApiServer {
    pub port: u16,
    /// The CA its certificate chains to (for the policy's `upstream_tls`).
    pub ca: PathBuf,
    /// A client certificate (and key) the cluster authenticates, for a policy's
    /// `credential: {client_certificate, client_key}`.
    pub client_certificate: PathBuf,
    pub client_key: PathBuf,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Watches the double is serving now: a watch held open counts until its client (or
    /// whoever relays it) goes away.
    pub open_watches: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub const SECRET_VALUE: &str = "c3VwZXItc2VjcmV0LXBhc3N3b3Jk"; // "super-secret-password"

/// The double's TLS: a server certificate for 127.0.0.1 and a client certificate, both of its
/// own CA; client certificates are verified when presented, not required (bearer tokens
/// are the other way in).
fn tls_config(dir: &std::path::Path) -> (Arc<rustls::ServerConfig>, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "test cluster CA");
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let ca_path = dir.join("cluster-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("write ca");
    let client_key = KeyPair::generate().expect("client key");
    let mut client = CertificateParams::default();
    client
        .distinguished_name
        .push(DnType::CommonName, "system:enforcer");
    let client_cert = client.signed_by(&client_key, &issuer).expect("client cert");
    std::fs::write(dir.join("client.pem"), client_cert.pem()).expect("write client cert");
    std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).expect("write key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_cert.der().clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    (Arc::new(config), ca_path)
}

impl ApiServer {
    pub fn start() -> ApiServer {
        ApiServer::start_with(Sizes {
            pods: 2,
            secrets: 1,
        })
    }

    /// A double whose pod list holds `pods` pods (`web-0`…) and whose secret and configmap
    /// lists hold `secrets` objects each (`db-creds`, then `secret-1`…); for benchmarks.
    pub fn start_with(sizes: Sizes) -> ApiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (config, ca) = tls_config(dir.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let open_watches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watches = Arc::clone(&open_watches);
        runtime.spawn(async move {
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let log = Arc::clone(&log);
                let watches = Arc::clone(&watches);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let certified = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let service = hyper::service::service_fn(move |req| {
                        let log = Arc::clone(&log);
                        let watches = Arc::clone(&watches);
                        async move {
                            Ok::<_, Infallible>(answer(req, &log, &watches, sizes, certified))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        ApiServer {
            port,
            client_certificate: dir.path().join("client.pem"),
            client_key: dir.path().join("client-key.pem"),
            ca,
            seen,
            open_watches,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A watch's body as the API server streams it: events as they happen, here cut into
/// pieces of `piece` bytes (an event's end rarely falls at a chunk's end), a millisecond
/// apart, so that each arrives in chunks of its own.
fn trickle(text: String, piece: usize) -> Body {
    let bytes = Bytes::from(text);
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(piece.max(1))
        .map(|at| bytes.slice(at..(at + piece).min(bytes.len())))
        .collect();
    let stream = futures_util::stream::unfold(pieces.into_iter(), |mut rest| async move {
        let next = rest.next()?;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        Some((Ok::<_, Infallible>(Frame::data(next)), rest))
    });
    StreamBody::new(stream).boxed()
}

/// Counts a watch as open while its body lives (hyper drops the body when the connection
/// that carries it goes away).
struct OpenWatch(Arc<std::sync::atomic::AtomicUsize>);

impl OpenWatch {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> OpenWatch {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenWatch(Arc::clone(count))
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A watch that sends `first` and then stays open, as a real one does until something
/// changes or its timeout: whatever reads the first event has read it from a live stream.
fn held_open(first: String, open: OpenWatch) -> Body {
    use futures_util::StreamExt as _;
    let first =
        futures_util::stream::once(
            async move { Ok::<_, Infallible>(Frame::data(Bytes::from(first))) },
        );
    // Never ends; `open` lives as long as the body does.
    let rest = futures_util::stream::poll_fn(move |_| {
        let _counted = &open;
        std::task::Poll::<Option<Result<Frame<Bytes>, Infallible>>>::Pending
    });
    http_body_util::BodyExt::boxed(StreamBody::new(first.chain(rest)))
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn resource_list(group_version: &str, resources: &[(&str, &str, bool)]) -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources.iter().map(|(name, kind, namespaced)| json!({
            "name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        })).collect::<Vec<_>>(),
    })
}

/// A group version's resources: name, kind, namespaced.
type Resources = &'static [(&'static str, &'static str, bool)];

/// The double's API: per group version, its resources.
const CORE: Resources = &[
    ("pods", "Pod", true),
    ("secrets", "Secret", true),
    ("serviceaccounts", "ServiceAccount", true),
    ("configmaps", "ConfigMap", true),
    ("namespaces", "Namespace", false),
];
const APPS: Resources = &[("deployments", "Deployment", true)];
const RBAC: Resources = &[
    ("roles", "Role", true),
    ("rolebindings", "RoleBinding", true),
    ("clusterroles", "ClusterRole", false),
    ("clusterrolebindings", "ClusterRoleBinding", false),
];
const GROUPS: &[(&str, Resources)] = &[("apps", APPS), ("rbac.authorization.k8s.io", RBAC)];

/// The media type of aggregated discovery, which kubectl 1.32 asks for first on `/api` and
/// `/apis` (one answer instead of a request per group version).
const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// `/api` or `/apis` as an `APIGroupDiscoveryList` (apidiscovery.k8s.io/v2).
fn aggregated(groups: &[(&str, Resources)]) -> Value {
    let items = groups.iter().map(|(group, resources)| {
        json!({
            "metadata": if group.is_empty() { json!({}) } else { json!({"name": group}) },
            "versions": [{
                "version": "v1",
                "freshness": "Current",
                "resources": resources.iter().map(|(name, kind, namespaced)| json!({
                    "resource": name,
                    "responseKind": {"group": group, "version": "v1", "kind": kind},
                    "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": kind.to_lowercase(),
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                })).collect::<Vec<_>>(),
            }],
        })
    });
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {}, "items": items.collect::<Vec<_>>()})
}

fn rolebinding(name: &str) -> Value {
    json!({"kind": "RoleBinding", "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "ci-bot", "namespace": "default"}]})
}

fn secret(name: &str) -> Value {
    let applied = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"password": SECRET_VALUE}})
    .to_string();
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
        "type": "Opaque",
        "data": {"password": SECRET_VALUE, "username": "YXBw"},
    })
}

fn pod(name: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [container()]},
        "status": {"phase": "Running"}})
}

/// The container of every pod and pod template: its environment names a password.
fn container() -> Value {
    json!({"name": "web", "image": "registry.example/web:1", "env": [
        {"name": "DB_PASSWORD", "value": POD_PASSWORD},
        {"name": "LOG_LEVEL", "value": "debug"},
    ]})
}

/// The value of `DB_PASSWORD` in pod specs, which a profile's `keys` mask.
pub const POD_PASSWORD: &str = "pod-env-hunter2";

fn deployment(name: &str) -> Value {
    json!({"kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
            "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [container()]}}},
        "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2,
            "updatedReplicas": 2, "observedGeneration": 1}})
}

/// `objects` as the API server's `Table`: one Name column; each row's object is the
/// object's metadata (`includeObject=Metadata`, the default) or the whole object
/// (`includeObject=Object`). `columns: false` leaves out the column definitions, as the
/// server does for the watch events after the first.
fn table(objects: &[Value], whole: bool, columns: bool) -> Value {
    let definitions = if columns {
        json!([{"name": "Name", "type": "string", "format": "name", "description": "name", "priority": 0}])
    } else {
        Value::Null
    };
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": "7"},
        "columnDefinitions": definitions,
        "rows": objects.iter().map(|o| json!({
            "cells": [o["metadata"]["name"]],
            "object": if whole { o.clone() } else {
                json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"]})
            },
        })).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub pods: usize,
    pub secrets: usize,
}

/// Shaped as [`secret`] is (same fields, same annotation), so that a list of each is the
/// same work to pass on: the benchmark's pass-through baseline.
fn config_map(name: &str) -> Value {
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"password": SECRET_VALUE}})
    .to_string();
    json!({"kind": "ConfigMap", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
        "data": {"password": SECRET_VALUE, "username": "YXBw"}})
}

/// The first channel subprotocol the client offers that the double speaks.
fn channel_protocol(req: &Request<Incoming>) -> Option<&'static str> {
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        .into_iter()
        .find(|p| offered.contains(p))
}

/// exec, attach and port-forward over WebSocket, as the kubelet would answer them through
/// the API server: `exec` of `cat` echoes stdin to stdout until stdin closes, any other
/// command prints `ran: <command>`; port-forward echoes each port's data back.
fn stream_answer(mut req: Request<Incoming>) -> Response<Body> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::{
        Message,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    };
    let (Some(protocol), Some(key)) = (
        channel_protocol(&req),
        req.headers().get(header::SEC_WEBSOCKET_KEY).cloned(),
    ) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "unsupported stream protocol", "reason": "BadRequest", "code": 400}),
        );
    };
    let query = req.uri().query().unwrap_or("").to_owned();
    let port_forward = req.uri().path().ends_with("/portforward");
    let attach = req.uri().path().ends_with("/attach");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let command: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let port: u16 = pairs
        .iter()
        .find(|(k, _)| k == "ports")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let frame = |channel: u8, data: &[u8]| {
            let mut b = vec![channel];
            b.extend_from_slice(data);
            Message::Binary(b.into())
        };
        if port_forward {
            let _ = ws.send(frame(0, &port.to_le_bytes())).await;
            let _ = ws.send(frame(1, &port.to_le_bytes())).await;
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    Message::Binary(b) if b.first() == Some(&0) && b.len() > 1 => {
                        let _ = ws.send(frame(0, &b[1..])).await;
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            return;
        }
        if command.first().map(String::as_str) == Some("cat") {
            while let Some(Ok(message)) = ws.next().await {
                match message {
                    Message::Binary(b) if b.first() == Some(&0) => {
                        let _ = ws.send(frame(1, &b[1..])).await;
                    }
                    // v5: the client closed stdin.
                    Message::Binary(b) if b.as_ref() == [255, 0] => break,
                    Message::Close(_) => break,
                    _ => {}
                }
            }
        } else if attach {
            let _ = ws.send(frame(1, b"attached to web\n")).await;
        } else {
            let _ = ws
                .send(frame(1, format!("ran: {}\n", command.join(" ")).as_bytes()))
                .await;
        }
        let _ = ws
            .send(frame(3, br#"{"metadata":{},"status":"Success"}"#))
            .await;
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await;
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        header::HeaderValue::from_static(protocol),
    );
    if let Ok(accept) = header::HeaderValue::from_str(
        &tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
    ) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    r
}

fn answer(
    req: Request<Incoming>,
    log: &Mutex<Vec<Seen>>,
    open_watches: &Arc<std::sync::atomic::AtomicUsize>,
    sizes: Sizes,
    certified: bool,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let method = req.method().as_str().to_owned();
    log.lock().expect("log").push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        accept: req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        accept_encoding: req
            .headers()
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        authorization: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_certificate: certified,
    });
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if upgrade
        && (path.ends_with("/exec") || path.ends_with("/attach") || path.ends_with("/portforward"))
    {
        return stream_answer(req);
    }
    let wants_table = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let whole = param("includeObject") == Some("Object");
    let watching = matches!(param("watch"), Some("1" | "true"));
    let wants_aggregated = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=APIGroupDiscoveryList"));
    // The form the client asks for first, as the API server would choose it. Other than
    // JSON, the double only labels the JSON as that form (protobuf, YAML, CBOR): a client
    // that gets it has got the values in it.
    let first_accepted = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
        .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default();
    let secret_answer = |status: StatusCode, value: Value| {
        let mut r = json_response(status, value);
        if !first_accepted.is_empty()
            && first_accepted != "application/json"
            && first_accepted != "*/*"
            && let Ok(form) = header::HeaderValue::from_str(&first_accepted)
        {
            r.headers_mut().insert(header::CONTENT_TYPE, form);
        }
        r
    };
    let partial_list = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
    let list = |kind: &str, items: Vec<Value>| {
        let version = if kind.starts_with("RoleBinding") {
            "rbac.authorization.k8s.io/v1"
        } else {
            "v1"
        };
        if wants_table {
            table(&items, whole, true)
        } else {
            // As the API server lists them: items do not repeat their kind and version.
            let items: Vec<Value> = items
                .into_iter()
                .map(|mut item| {
                    if let Some(fields) = item.as_object_mut() {
                        fields.remove("kind");
                        fields.remove("apiVersion");
                    }
                    item
                })
                .collect();
            json!({"kind": kind, "apiVersion": version, "metadata": {"resourceVersion": "7"}, "items": items})
        }
    };
    let ok = StatusCode::OK;
    // HEAD is answered as GET is (hyper leaves the body out).
    let verb = if method == "HEAD" {
        "GET"
    } else {
        method.as_str()
    };
    match (verb, path.as_str()) {
        ("GET", "/version") => json_response(
            ok,
            json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0", "platform": "linux/amd64"}),
        ),
        ("GET", "/api") if wants_aggregated => {
            let mut r = json_response(ok, aggregated(&[("", CORE)]));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(AGGREGATED),
            );
            r
        }
        ("GET", "/apis") if wants_aggregated => {
            let mut r = json_response(ok, aggregated(GROUPS));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(AGGREGATED),
            );
            r
        }
        ("GET", "/api") => json_response(
            ok,
            json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        ("GET", "/apis") => json_response(
            ok,
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": GROUPS.iter().map(|(group, _)| json!({
                "name": group,
                "versions": [{"groupVersion": format!("{group}/v1"), "version": "v1"}],
                "preferredVersion": {"groupVersion": format!("{group}/v1"), "version": "v1"},
            })).collect::<Vec<_>>()}),
        ),
        ("GET", "/api/v1") => json_response(ok, resource_list("v1", CORE)),
        ("GET", p)
            if let Some((group, resources)) = GROUPS
                .iter()
                .find(|(group, _)| p == format!("/apis/{group}/v1")) =>
        {
            json_response(ok, resource_list(&format!("{group}/v1"), resources))
        }
        ("GET", "/api/v1/namespaces/default/pods") => {
            let pods = (0..sizes.pods).map(|i| pod(&format!("web-{i}"))).collect();
            json_response(ok, list("PodList", pods))
        }
        // `-l hold=open`: one change to db-creds, then the watch stays open.
        ("GET", "/api/v1/namespaces/default/secrets")
            if watching && param("labelSelector") == Some("hold=open") =>
        {
            let mut changed = secret("db-creds");
            changed["metadata"]["resourceVersion"] = json!("9");
            let event = format!("{}\n", json!({"type": "MODIFIED", "object": changed}));
            let mut r = Response::new(held_open(event, OpenWatch::new(open_watches)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        (
            "GET",
            "/api/v1/namespaces/default/secrets" | "/api/v1/watch/namespaces/default/secrets",
        ) if watching || path.starts_with("/api/v1/watch/") => {
            // Two events for db-creds (the only Secret a name selector can pick), one per
            // line, then the stream ends. As Tables when asked: column definitions with the
            // first event only.
            let selected = param("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="))
                .is_none_or(|name| name == "db-creds");
            let events: String = ["ADDED", "MODIFIED"]
                .iter()
                .enumerate()
                .filter(|_| selected)
                .map(|(i, kind)| {
                    let mut changed = secret("db-creds");
                    changed["metadata"]["resourceVersion"] = json!((7 + i).to_string());
                    let object = if wants_table {
                        table(&[changed], whole, i == 0)
                    } else {
                        changed
                    };
                    format!("{}\n", json!({"type": kind, "object": object}))
                })
                .collect();
            let mut r = Response::new(trickle(events, 97));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        ("GET", "/api/v1/namespaces/default/secrets") if partial_list => json_response(
            ok,
            json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"resourceVersion": "7"},
                "items": [{"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": secret("db-creds")["metadata"]}]}),
        ),
        ("GET", "/api/v1/namespaces/default/secrets") => {
            let names = std::iter::once("db-creds".to_owned())
                .chain((1..sizes.secrets).map(|i| format!("secret-{i}")));
            secret_answer(ok, list("SecretList", names.map(|n| secret(&n)).collect()))
        }
        // Writes answer with the Secret as stored, values and all (the double stores
        // nothing: it answers with db-creds as it is).
        ("PATCH" | "PUT", "/api/v1/namespaces/default/secrets/db-creds") => {
            secret_answer(ok, secret("db-creds"))
        }
        ("POST", "/api/v1/namespaces/default/secrets") => {
            secret_answer(StatusCode::CREATED, secret("db-creds"))
        }
        ("GET", "/api/v1/namespaces/default/configmaps") => {
            let maps = (0..sizes.secrets)
                .map(|i| config_map(&format!("config-{i}")))
                .collect();
            json_response(ok, list("ConfigMapList", maps))
        }
        ("GET" | "PATCH", p) if p.starts_with("/apis/apps/v1/namespaces/default/deployments/") => {
            json_response(
                ok,
                deployment(&p["/apis/apps/v1/namespaces/default/deployments/".len()..]),
            )
        }
        ("GET", p) if p.starts_with("/api/v1/namespaces/default/pods/web-") => {
            json_response(ok, pod(&p["/api/v1/namespaces/default/pods/".len()..]))
        }
        ("GET", "/api/v1/namespaces/default/secrets/db-creds") if wants_table => {
            json_response(ok, table(&[secret("db-creds")], whole, true))
        }
        ("GET", "/api/v1/namespaces/default/secrets/db-creds") => {
            secret_answer(ok, secret("db-creds"))
        }
        ("GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings") => {
            json_response(
                ok,
                list("RoleBindingList", vec![rolebinding("ci-bot-view")]),
            )
        }
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings") => {
            json_response(StatusCode::CREATED, rolebinding("ci-bot-admin"))
        }
        ("GET", "/api/v1/namespaces/default/configmaps/app-config") => json_response(
            ok,
            json!({"kind": "ConfigMap", "apiVersion": "v1",
                "metadata": {"name": "app-config", "namespace": "default"},
                "data": {"db_password": "plain-text-password", "log_level": "debug"}}),
        ),
        ("POST", "/api/v1/namespaces/default/serviceaccounts") => json_response(
            StatusCode::CREATED,
            json!({"kind": "ServiceAccount", "apiVersion": "v1",
                "metadata": {"name": "ci-bot", "namespace": "default", "uid": "6a1f",
                    "creationTimestamp": "2026-01-01T00:00:00Z"}}),
        ),
        ("DELETE", p) if p.starts_with("/apis/apps/v1/namespaces/default/deployments/") => {
            json_response(
                ok,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success",
                    "details": {"name": "web", "group": "apps", "kind": "deployments"}}),
            )
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("the server could not find the requested resource ({method} {path})"),
                "reason": "NotFound", "code": 404}),
        ),
    }
}
