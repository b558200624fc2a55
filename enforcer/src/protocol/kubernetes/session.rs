//! One workload connection to a Kubernetes API server. enforcer terminates TLS with a
//! certificate of its CA for the name (SNI) or address the client dialled, reads each
//! HTTP/2 or HTTP/1.1 request the way the API server will ([`super::request`]), decides it with the
//! Cedar policies and the workload's grants, and forwards what is allowed over its own
//! verified TLS connection with the injected credential — the workload's `Authorization`
//! header never leaves enforcer. What comes back from `secrets` is redacted; a stream into a
//! container, once allowed, is relayed and recorded by [`super::stream`].

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming},
    header::{self, HeaderMap, HeaderValue},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    K8sError, budget, redact,
    request::{ApiRequest, Kind, RequestError, parse},
    review, status, stream,
};
use crate::{
    grant::{GrantError, TokenError},
    policy::{CredentialSource, Resource},
    protocol::{
        HandlerContext, PresentedToken,
        decision::{self, truncate},
    },
    proxy::{Connection, connect_upstream},
    record::{Event, StatementDecided, StatementDone},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body enforcer reads whole to redact (a list of Secrets).
const MAX_REDACTED_BODY: usize = 64 << 20;
/// Requests an HTTP/2 client may have open at once on one connection.
const MAX_STREAMS: u32 = 100;
/// Idle connections to the API server kept per workload connection.
const IDLE_UPSTREAMS: usize = 4;
/// Request text kept in records.
const RECORDED_TEXT: usize = 2000;

/// Headers that belong to one hop, or that enforcer sets itself.
const NOT_FORWARDED: [&str; 9] = [
    "authorization",
    "connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
];

pub async fn run(
    ctx: &HandlerContext<'_>,
    conn: &Connection,
    client: TcpStream,
    resource: &Resource,
) -> Result<(), K8sError> {
    let authority = ctx.shared.tls.as_deref().ok_or(K8sError::NoAuthority)?;
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), client)
                .await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = authority
            .server_config(sni.as_deref(), conn.orig_dst.ip(), &[b"h2", b"http/1.1"])
            .map_err(std::io::Error::other)?;
        start.into_stream(config).await
    };
    let tls = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| K8sError::Tls("the client's TLS handshake timed out".into()))?
        .map_err(|e| K8sError::Tls(format!("TLS handshake with the client: {e}")))?;

    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    // A credential that cannot be used is said to the client, request by request, in the
    // API server's terms (kubectl prints it), rather than by a dropped connection.
    let (bearer, tls_config) = match credential(resource) {
        Ok((bearer, config)) => (bearer, Ok(config)),
        Err(e) => {
            tracing::warn!(resource = %resource.name, error = %e, "the cluster credential cannot be used");
            (None, Err(e.to_string()))
        }
    };
    let session = Session {
        ctx,
        conn,
        resource,
        addr: resource.upstream_for(conn.orig_dst),
        tls_config,
        idle: Arc::new(std::sync::Mutex::new(Vec::new())),
        bearer,
        streams: std::sync::Mutex::new(Vec::new()),
        requests: std::sync::atomic::AtomicU64::new(0),
    };
    if h2 {
        return serve_h2(&session, tls)
            .await
            .map_err(|e| K8sError::Http(e.to_string()));
    }
    let service = hyper::service::service_fn(|req| session.handle(req));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(64 << 10)
        .serve_connection(TokioIo::new(tls), service)
        .with_upgrades()
        .await
        .map_err(|e| K8sError::Http(e.to_string()));
    // A connection switched to a stream ends its HTTP life here; the stream goes on.
    let streams = std::mem::take(&mut *lock(&session.streams));
    for stream in streams {
        stream.await;
    }
    served
}

/// How enforcer authenticates to the API server, read at each workload connection (so a
/// rotated token or certificate is picked up): a bearer token, or a client certificate
/// presented in the TLS handshake.
fn credential(
    resource: &Resource,
) -> Result<(Option<HeaderValue>, Arc<rustls::ClientConfig>), K8sError> {
    let credential = resource
        .credential
        .as_ref()
        .ok_or_else(|| K8sError::Credential(format!("{} has no credential", resource.name)))?;
    let tls = resource.upstream_tls.as_ref().ok_or_else(|| {
        K8sError::Upstream(format!(
            "{} has no upstream_tls: enforcer speaks to API servers over verified TLS",
            resource.name
        ))
    })?;
    if let CredentialSource::ClientCertificate { certificate, key } = &credential.source {
        let identity = crate::tls::Identity::read(certificate, key)
            .map_err(|e| K8sError::Credential(e.to_string()))?;
        let config = crate::tls::upstream_config(tls.ca.as_deref(), &[], Some(identity))
            .map_err(|e| K8sError::Credential(e.to_string()))?;
        return Ok((None, Arc::new(config)));
    }
    let token = credential
        .read_secret(&resource.name)
        .map_err(K8sError::Credential)?;
    let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| K8sError::Credential("the token is not a valid header value".into()))?;
    Ok((Some(bearer), Arc::clone(&tls.config)))
}

/// An HTTP/2 client connection. Built outside `async` code, with the session's lifetimes
/// named, so that the connection's future is provably `Send` (the compiler cannot prove it
/// for the anonymous lifetimes inside an `async fn`).
fn serve_h2<'s, 'a: 's>(
    session: &'s Session<'a>,
    tls: tokio_rustls::server::TlsStream<TcpStream>,
) -> Pin<Box<dyn std::future::Future<Output = Result<(), hyper::Error>> + Send + 's>> {
    let service =
        hyper::service::service_fn(move |req| -> Answer<'s> { Box::pin(session.handle(req)) });
    let tasks = LocalTasks::default();
    let connection = hyper::server::conn::http2::Builder::new(tasks.clone())
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(64 << 10)
        .serve_connection(TokioIo::new(tls), service);
    Box::pin(WithTasks {
        connection: Box::pin(connection),
        tasks,
        running: futures_util::stream::FuturesUnordered::new(),
    })
}

/// The tasks hyper's HTTP/2 server starts, one per request. They borrow the session (whose
/// context lives only as long as this connection), so rather than being spawned they run
/// in [`WithTasks`], polled with the connection they belong to.
#[derive(Clone, Default)]
struct LocalTasks<'a>(Arc<std::sync::Mutex<Vec<StreamFuture<'a>>>>);

impl<'a, F> hyper::rt::Executor<F> for LocalTasks<'a>
where
    F: std::future::Future<Output = ()> + Send + 'a,
{
    fn execute(&self, task: F) {
        lock(&self.0).push(Box::pin(task));
    }
}

/// A connection and every task it starts, until the connection ends (its tasks cannot
/// answer anyone after that).
struct WithTasks<'a, C> {
    connection: Pin<Box<C>>,
    tasks: LocalTasks<'a>,
    running: futures_util::stream::FuturesUnordered<StreamFuture<'a>>,
}

impl<C: std::future::Future> std::future::Future for WithTasks<'_, C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        use futures_util::StreamExt as _;
        let this = &mut *self;
        let done = this.connection.as_mut().poll(cx);
        this.running.extend(lock(&this.tasks.0).drain(..));
        while let Poll::Ready(Some(())) = this.running.poll_next_unpin(cx) {}
        done
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One HTTP/1.1 connection to the real API server.
struct Upstream {
    sender: hyper::client::conn::http1::SendRequest<Body>,
    authority: HeaderValue,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type UpstreamTls = tokio_rustls::client::TlsStream<TcpStream>;

impl Upstream {
    async fn connect(
        resource: &Resource,
        config: &Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> Result<Upstream, K8sError> {
        let (stream, authority) = Upstream::tls(resource, config, addr).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        // Ends by itself once the last handle and the last answer's body are dropped.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream API connection ended");
            }
        });
        Ok(Upstream { sender, authority })
    }

    /// A verified TLS connection to the API server, and the authority to name it by.
    async fn tls(
        resource: &Resource,
        config: &Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> Result<(UpstreamTls, HeaderValue), K8sError> {
        let server_name = resource
            .upstream_tls
            .as_ref()
            .and_then(|t| t.server_name.as_deref());
        let tcp = connect_upstream(addr)
            .await
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        let name = crate::tls::server_name(server_name, addr.ip())
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
        let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| K8sError::Upstream(format!("TLS handshake with {addr} timed out")))?
            .map_err(|e| K8sError::Upstream(format!("TLS with {addr}: {e}")))?;
        let authority = HeaderValue::from_str(
            &server_name.map_or_else(|| addr.to_string(), |n| format!("{n}:{}", addr.port())),
        )
        .map_err(|e| K8sError::Upstream(e.to_string()))?;
        Ok((stream, authority))
    }
}

type Answer<'s> =
    Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 's>>;

type StreamFuture<'a> = Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

struct Session<'a> {
    /// Requests begun on this connection: each is numbered in its records.
    requests: std::sync::atomic::AtomicU64,
    ctx: &'a HandlerContext<'a>,
    conn: &'a Connection,
    resource: &'a Resource,
    /// The API server's address.
    addr: std::net::SocketAddr,
    /// TLS toward the API server, with the client certificate when that is the credential;
    /// why there is none when the credential cannot be read.
    tls_config: Result<Arc<rustls::ClientConfig>, String>,
    /// Connections to the API server ready for a request. HTTP/1.1 carries one exchange at a
    /// time (a watch holds its connection as long as it lasts) while an HTTP/2 client sends
    /// many at once: each request takes an idle connection or opens one.
    idle: Arc<std::sync::Mutex<Vec<Upstream>>>,
    /// The injected bearer token, unless the credential is a client certificate.
    bearer: Option<HeaderValue>,
    /// A stream (exec, attach, port-forward) the connection switched to, relayed once the
    /// HTTP exchange that opened it is over.
    streams: std::sync::Mutex<Vec<StreamFuture<'a>>>,
}

fn full(status: StatusCode, body: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn failure(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    full(
        code,
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
        }),
    )
}

/// The verb as a Cedar action: resource verbs as they are, non-resource methods mapped onto
/// the same verbs.
fn action(request: &ApiRequest) -> String {
    let verb = match request.verb.as_str() {
        "head" | "options" => "get",
        "post" => "create",
        "put" => "update",
        v => v,
    };
    format!("k8s:{verb}")
}

impl Session<'_> {
    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let number = 1 + self
            .requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        REQUEST.scope(number, self.handle_request(req)).await
    }

    async fn handle_request(&self, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let method = req.method().as_str().to_owned();
        let target = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
        let text = format!("{method} {}", truncate(&target, RECORDED_TEXT));
        let parsed = parse(&method, req.uri().path(), req.uri().query());
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                let code = match e {
                    RequestError::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
                    _ => StatusCode::BAD_REQUEST,
                };
                self.record_refusal(self.ctx, None, "k8s:unknown", &text, &e.to_string())
                    .await;
                return Ok(failure(code, "BadRequest", format!("enforcer: {e}")));
            }
        };
        let action = action(&request);
        if let Err(why) = &self.tls_config {
            let message = format!(
                "enforcer cannot authenticate to the API server of {}: {why}",
                self.resource.name
            );
            self.record_refusal(self.ctx, Some(&request), &action, &text, &message)
                .await;
            return Ok(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                message,
            ));
        }
        let token = match self.presented_token(req.headers()).await {
            Ok(token) => token,
            Err(why) => {
                self.record_refusal(self.ctx, Some(&request), &action, &text, &why)
                    .await;
                return Ok(failure(StatusCode::UNAUTHORIZED, "Unauthorized", why));
            }
        };
        let token_ctx;
        let ctx = match &token {
            Some(token) => {
                token_ctx = self.ctx.with_token(token);
                &token_ctx
            }
            None => self.ctx,
        };
        if request.is_can_i() {
            return Ok(self.review(ctx, req, &text).await);
        }
        // The API server would act as whoever these name, with the injected credential's
        // right to impersonate: a request enforcer decided as the workload's would run as
        // someone else's, and the cluster's audit would name that someone.
        if let Some(name) = req
            .headers()
            .keys()
            .find(|n| n.as_str().starts_with("impersonate-"))
        {
            let refusal = format!(
                "enforcer: requests may not impersonate (the {name} header): they run as the workload"
            );
            return Ok(self.refuse(ctx, &request, &action, &text, refusal).await);
        }
        let upgrade = stream::upgrade_of(req.headers());
        if let Some(stream::Upgrade::Other(asked)) = &upgrade
            && is_into_container(&request)
        {
            return Ok(self
                .refuse_transport(ctx, &request, &action, &text, asked)
                .await);
        }
        if upgrade.is_some() && !is_into_container(&request) {
            let refusal = "enforcer: only exec, attach and portforward may switch protocols; ask for this over plain HTTP".to_owned();
            return Ok(self.refuse(ctx, &request, &action, &text, refusal).await);
        }
        let req = match read_guarded_write(&request, req, &self.resource.masking).await {
            Ok(req) => req,
            Err(refusal) => {
                return Ok(self.refuse(ctx, &request, &action, &text, refusal).await);
            }
        };
        match self.decide(ctx, &request, &action, &text).await {
            Ok(Ok(())) => {}
            Ok(Err(message)) => {
                return Ok(full(
                    StatusCode::FORBIDDEN,
                    status::forbidden(&request, &message),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "kubernetes request not decided");
                // Recorded when the recorder still can: a request refused for a reason the
                // audit trail does not show would be a gap in it.
                let why = format!("not decided: {e}");
                self.record_refusal(ctx, Some(&request), &action, &text, &why)
                    .await;
                return Ok(failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "enforcer: the request could not be decided or recorded".into(),
                ));
            }
        }
        if upgrade.is_some() {
            return Ok(self.open_stream(req, &request, started).await);
        }
        // HEAD's answer has no body, so nothing in it to redact.
        let redacting =
            needs_redaction(&request, &self.resource.masking) && req.method() != Method::HEAD;
        let watch = request.verb == "watch";
        let response = match self.forward(req, redacting).await {
            Ok(r) => r,
            Err(e) => {
                self.done(502, started, Some(e.to_string()));
                return Ok(failure(
                    StatusCode::BAD_GATEWAY,
                    "ServiceUnavailable",
                    format!(
                        "enforcer: the API server of {} did not answer: {e}",
                        self.resource.name
                    ),
                ));
            }
        };
        let response = if !redacting {
            response.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed())
        } else if watch {
            match redact_stream(
                response,
                self.resource.masking.clone(),
                implied_kind(&request),
                Arc::clone(self.ctx.metrics),
            ) {
                Ok(r) => r,
                Err(e) => {
                    self.done(502, started, Some(e.clone()));
                    return Ok(failure(
                        StatusCode::BAD_GATEWAY,
                        "InternalError",
                        format!(
                            "enforcer: the watch could not be redacted, so it is withheld: {e}"
                        ),
                    ));
                }
            }
        } else {
            match redact_whole(
                response,
                &self.resource.masking,
                implied_kind(&request),
                self.ctx.metrics,
            )
            .await
            {
                Ok(r) => r,
                Err(e) => {
                    self.done(502, started, Some(e.clone()));
                    return Ok(failure(
                        StatusCode::BAD_GATEWAY,
                        "InternalError",
                        format!(
                            "enforcer: the answer could not be redacted, so it is withheld: {e}"
                        ),
                    ));
                }
            }
        };
        Ok(RecordedBody::wrap(
            response,
            Ending::new(self.ctx, self.conn, self.resource, started),
        ))
    }

    /// [`Session::grant_token`]; through the gateway a grant token is the only credential
    /// there is, so a request without one is refused.
    async fn presented_token(&self, headers: &HeaderMap) -> Result<Option<PresentedToken>, String> {
        let token = self.grant_token(headers).await?;
        if token.is_none() && self.resource.is_gateway(self.conn.orig_dst) {
            return Err(format!(
                "enforcer: the gateway of {} takes only a grant token as the bearer token (enforcer kubeconfig --gateway --grant-token FILE)",
                self.resource.name
            ));
        }
        Ok(token)
    }

    /// The grant token in the request's `Authorization`, if it carries one. Any other
    /// credential (the agent's stale cluster token) is no business of enforcer's: it is
    /// dropped unread. A grant token that does not hold (expired, revoked, spent, another
    /// workload's, another resource's) is refused with the reason.
    async fn grant_token(&self, headers: &HeaderMap) -> Result<Option<PresentedToken>, String> {
        let Some(text) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Ok(None);
        };
        let Some(grants) = self.ctx.grants else {
            return Ok(None);
        };
        let presenter = (self.conn.workload != crate::proxy::OUTSIDE).then(|| self.ctx.presenter());
        match grants
            .verify_token(text, presenter.as_ref(), &self.resource.name)
            .await
        {
            Ok(claims) => Ok(Some(PresentedToken {
                text: text.to_owned(),
                claims,
            })),
            Err(GrantError::Token(
                TokenError::Malformed(_) | TokenError::NotAGrant | TokenError::BadSignature,
            )) => Ok(None),
            Err(e) => Err(format!(
                "enforcer: the grant token in Authorization does not hold for {}: {e}",
                self.resource.name
            )),
        }
    }

    /// `Ok(Ok(()))` to forward; `Ok(Err(message))` to refuse with 403.
    async fn decide(
        &self,
        ctx: &HandlerContext<'_>,
        request: &ApiRequest,
        action: &str,
        text: &str,
    ) -> Result<Result<(), String>, K8sError> {
        let access = request.access();
        let outcome = decision::decide(
            ctx,
            self.resource,
            action,
            access.as_str(),
            |grant| context(request, grant),
            true,
        )
        .await
        .map_err(|e| K8sError::Decision(e.to_string()))?;
        if !outcome.allowed {
            let message = self.denial(action, access.as_str(), &outcome);
            self.record(
                ctx,
                Some(request),
                action,
                text,
                "deny",
                outcome.policies,
                None,
                None,
                Some(outcome.why),
            )
            .await?;
            return Ok(Err(message));
        }
        let mut approval = None;
        if outcome.approval_required {
            let row = decision::hold(
                ctx,
                self.resource,
                self.conn.id,
                format!("{action} on {}: {text}", self.resource.name),
            )
            .await
            .map_err(|e| K8sError::Decision(e.to_string()))?;
            match decision::wait(ctx, &row.id)
                .await
                .map_err(|e| K8sError::Decision(e.to_string()))?
            {
                Ok(()) => approval = Some(row.id),
                Err(why) => {
                    let message = decision::held_denial(
                        action,
                        &self.resource.name,
                        &why,
                        &outcome.policies,
                        &row.id,
                    );
                    self.record(
                        ctx,
                        Some(request),
                        action,
                        text,
                        "deny",
                        outcome.policies,
                        outcome.grant,
                        Some(row.id),
                        Some(why),
                    )
                    .await?;
                    return Ok(Err(message));
                }
            }
        }
        self.record(
            ctx,
            Some(request),
            action,
            text,
            "allow",
            outcome.policies,
            outcome.grant,
            approval,
            None,
        )
        .await?;
        Ok(Ok(()))
    }

    /// The 403 message for a request the policy refuses: the rule, and the grant that would
    /// allow it when there is one.
    fn denial(&self, action: &str, access: &str, outcome: &decision::Outcome) -> String {
        let hint = outcome.grant_hint(&self.resource.name, access);
        format!(
            "enforcer: {action} ({access}) on {} denied: {}{hint}",
            self.resource.name, outcome.why
        )
    }

    /// Refuses a request before it is decided (it asks for what no policy can allow):
    /// recorded as denied, answered 403 with `refusal`.
    async fn refuse(
        &self,
        ctx: &HandlerContext<'_>,
        request: &ApiRequest,
        action: &str,
        text: &str,
        refusal: String,
    ) -> Response<Body> {
        self.record_refusal(ctx, Some(request), action, text, &refusal)
            .await;
        full(StatusCode::FORBIDDEN, status::forbidden(request, &refusal))
    }

    /// Refuses a stream into a container asked for over another transport than WebSocket
    /// (SPDY): its streams are not read, so not recorded. The policy's own refusal is named
    /// first when there is one (kubectl falls back to SPDY after any failed WebSocket), and
    /// no grant use is taken either way.
    async fn refuse_transport(
        &self,
        ctx: &HandlerContext<'_>,
        request: &ApiRequest,
        action: &str,
        text: &str,
        asked: &str,
    ) -> Response<Body> {
        let access = request.access();
        let outcome = decision::decide(
            ctx,
            self.resource,
            action,
            access.as_str(),
            |grant| context(request, grant),
            false,
        )
        .await;
        let (why, policies) = match outcome {
            Ok(o) if !o.allowed => (self.denial(action, access.as_str(), &o), o.policies),
            _ => (
                format!(
                    "enforcer: streams into containers are relayed over WebSocket only, where each message is recorded; this client asked for {asked:?} (kubectl 1.30 and later, client-go and kube use WebSocket)"
                ),
                Vec::new(),
            ),
        };
        let _ = self
            .record(
                ctx,
                Some(request),
                action,
                text,
                "deny",
                policies,
                None,
                None,
                Some(why.clone()),
            )
            .await;
        full(StatusCode::FORBIDDEN, status::forbidden(request, &why))
    }

    /// Answers `kubectl auth can-i` from enforcer's own policies and the workload's grants
    /// (without taking a use), instead of the cluster answering for the injected credential.
    async fn review(
        &self,
        ctx: &HandlerContext<'_>,
        req: Request<Incoming>,
        text: &str,
    ) -> Response<Body> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = match http_body_util::Limited::new(req.into_body(), 64 << 10)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("enforcer: reading the access review: {e}"),
                );
            }
        };
        let question = match review::read(&body, &content_type) {
            Ok(q) => q,
            Err(e) => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("enforcer: {e}"),
                );
            }
        };
        let asked = action(&question.request);
        let access = question.request.access();
        let outcome = match decision::decide(
            ctx,
            self.resource,
            &asked,
            access.as_str(),
            |grant| context(&question.request, grant),
            false,
        )
        .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "access review not decided");
                return failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ServiceUnavailable",
                    "enforcer: the access review could not be decided".into(),
                );
            }
        };
        let reason = if !outcome.allowed {
            let hint = if outcome.grantable {
                format!(
                    "; a grant would allow it: enforcer grant request --resource {} --access {access}",
                    self.resource.name
                )
            } else {
                String::new()
            };
            format!("enforcer: {asked} ({access}): {}{hint}", outcome.why)
        } else if outcome.approval_required {
            format!(
                "enforcer: {asked} ({access}) is allowed once an operator approves it ({})",
                outcome.policies.join(", ")
            )
        } else {
            format!(
                "enforcer: {asked} ({access}) is allowed by {}",
                outcome.policies.join(", ")
            )
        };
        let recorded = self
            .record(
                ctx,
                None,
                "k8s:create",
                text,
                "allow",
                Vec::new(),
                None,
                None,
                Some(format!("access review answered by enforcer: {reason}")),
            )
            .await;
        if recorded.is_err() {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "enforcer: the request could not be recorded".into(),
            );
        }
        full(
            StatusCode::CREATED,
            review::answer(&question.spec, outcome.allowed, &reason),
        )
    }

    async fn forward(
        &self,
        req: Request<Body>,
        redacting: bool,
    ) -> Result<Response<Incoming>, K8sError> {
        let mut upstream = self.take_upstream().await?;
        let request = self.upstream_request(req, &upstream.authority, redacting)?;
        let response = upstream
            .sender
            .send_request(request)
            .await
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        // Back to the idle ones once the answer's body has been read (as long as a watch
        // lasts); gone if the API server closes it.
        let idle = Arc::clone(&self.idle);
        tokio::spawn(async move {
            if upstream.sender.ready().await.is_ok() {
                let mut idle = lock(&idle);
                if idle.len() < IDLE_UPSTREAMS {
                    idle.push(upstream);
                }
            }
        });
        Ok(response)
    }

    async fn take_upstream(&self) -> Result<Upstream, K8sError> {
        loop {
            let Some(upstream) = lock(&self.idle).pop() else {
                break;
            };
            if upstream.sender.is_ready() {
                return Ok(upstream);
            }
        }
        Upstream::connect(self.resource, self.config()?, self.addr).await
    }

    fn config(&self) -> Result<&Arc<rustls::ClientConfig>, K8sError> {
        self.tls_config
            .as_ref()
            .map_err(|why| K8sError::Credential(why.clone()))
    }

    /// The client's request as enforcer sends it on: its own hop headers and credential in
    /// place of the client's, and, when the answer must be read, JSON asked for.
    fn upstream_request<B>(
        &self,
        req: Request<B>,
        authority: &HeaderValue,
        redacting: bool,
    ) -> Result<Request<B>, K8sError> {
        let (parts, body) = req.into_parts();
        let mut builder = Request::builder().method(parts.method).uri(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        );
        let headers = builder
            .headers_mut()
            .ok_or_else(|| K8sError::Http("request builder".into()))?;
        for (name, value) in &parts.headers {
            let name_text = name.as_str();
            if NOT_FORWARDED.contains(&name_text) || name_text.starts_with("x-remote-") {
                continue;
            }
            if name == header::SEC_WEBSOCKET_PROTOCOL {
                if let Some(kept) = stream_protocols(value) {
                    headers.append(name, kept);
                }
                continue;
            }
            headers.append(name, value.clone());
        }
        headers.insert(header::HOST, authority.clone());
        if let Some(bearer) = &self.bearer {
            headers.insert(header::AUTHORIZATION, bearer.clone());
        }
        if redacting {
            // What enforcer must read: JSON, uncompressed (Table or plain, as asked).
            let accept = json_accept(
                parts
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            headers.insert(
                header::ACCEPT,
                HeaderValue::from_str(&accept)
                    .unwrap_or_else(|_| HeaderValue::from_static("application/json")),
            );
            headers.remove(header::ACCEPT_ENCODING);
        }
        builder
            .body(body)
            .map_err(|e| K8sError::Http(e.to_string()))
    }

    /// Opens the stream the client asked for (already decided) on a connection of its own to
    /// the API server, hands the client the server's answer, and, when that is `101
    /// Switching Protocols`, queues the relay of the stream for when the exchange is over.
    async fn open_stream(
        &self,
        mut req: Request<Body>,
        request: &ApiRequest,
        started: Instant,
    ) -> Response<Body> {
        let on_client = hyper::upgrade::on(&mut req);
        let port_forward = matches!(&request.kind, Kind::Resource { subresource, .. } if subresource == "portforward");
        let (mut response, driver) = match self.send_upgrade(req).await {
            Ok(r) => r,
            Err(e) => {
                self.done(502, started, Some(e.to_string()));
                return failure(
                    StatusCode::BAD_GATEWAY,
                    "ServiceUnavailable",
                    format!(
                        "enforcer: the API server of {} did not answer: {e}",
                        self.resource.name
                    ),
                );
            }
        };
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return RecordedBody::wrap(
                response.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed()),
                Ending::new(self.ctx, self.conn, self.resource, started),
            );
        }
        let subprotocol = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let on_upstream = hyper::upgrade::on(&mut response);
        let mut switch = Response::new(
            http_body_util::Empty::new()
                .map_err(|e: Infallible| -> BoxError { match e {} })
                .boxed(),
        );
        *switch.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for name in [
            header::UPGRADE,
            header::CONNECTION,
            header::SEC_WEBSOCKET_ACCEPT,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            for value in response.headers().get_all(&name) {
                switch.headers_mut().append(&name, value.clone());
            }
        }
        let (ctx, conn, resource) = (self.ctx, self.conn, self.resource);
        // The relay runs after the exchange that opened it: its end is prepared now.
        let ending = Ending::new(ctx, conn, resource, started);
        let relay = async move {
            let _driver = driver;
            let (client, upstream) = match tokio::try_join!(on_client, on_upstream) {
                Ok(both) => both,
                Err(e) => {
                    let error = Some(format!("the stream did not open: {e}"));
                    ending.record("HTTP 101".into(), None, error);
                    return;
                }
            };
            let record = stream::StreamRecord {
                recorder: ctx.recorder,
                connection: conn.id,
                resource,
                subprotocol,
                port_forward,
            };
            let summary = stream::relay(client, upstream, &record).await;
            let tag = format!(
                "HTTP 101 {}: {} bytes to the container, {} from it",
                record.subprotocol, summary.to_container, summary.from_container
            );
            ending.record(tag, None, summary.error);
        };
        lock(&self.streams).push(Box::pin(relay));
        switch
    }

    async fn send_upgrade(
        &self,
        req: Request<Body>,
    ) -> Result<(Response<Incoming>, AbortOnDrop), K8sError> {
        let (stream, authority) = Upstream::tls(self.resource, self.config()?, self.addr).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upstream stream connection ended");
            }
        }));
        let mut request = self.upstream_request(req, &authority, false)?;
        let headers = request.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        // enforcer's WebSocket speaks no extensions (compression would hide the content).
        headers.remove(header::SEC_WEBSOCKET_EXTENSIONS);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| K8sError::Upstream(e.to_string()))?;
        Ok((response, driver))
    }

    #[allow(clippy::too_many_arguments)]
    /// Records a request refused before any policy decided it (nothing to name but why).
    /// A recorder failure is not reported: the request is refused either way.
    async fn record_refusal(
        &self,
        ctx: &HandlerContext<'_>,
        request: Option<&ApiRequest>,
        action: &str,
        text: &str,
        why: &str,
    ) {
        let _ = self
            .record(
                ctx,
                request,
                action,
                text,
                "deny",
                Vec::new(),
                None,
                None,
                Some(why.to_owned()),
            )
            .await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        ctx: &HandlerContext<'_>,
        request: Option<&ApiRequest>,
        action: &str,
        text: &str,
        decision: &str,
        policies: Vec<String>,
        grant: Option<String>,
        approval: Option<String>,
        reason: Option<String>,
    ) -> Result<(), K8sError> {
        ctx.metrics
            .statements
            .get_or_create(&crate::metrics::StatementLabels {
                resource: self.resource.name.clone(),
                action: action.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
        ctx.recorder
            .record_written(Event::Statement(StatementDecided {
                connection: self.conn.id,
                workload: ctx.workload.into(),
                principal: ctx.principal.name.as_str().into(),
                resource: self.resource.name.as_str().into(),
                action: action.to_owned().into(),
                tables: Vec::new(),
                statement: text.to_owned(),
                decision: decision.to_owned().into(),
                policies,
                grant,
                approval,
                reason,
                object: request.and_then(api_object),
                request: this_request(),
            }))
            .await
            .map_err(|_| K8sError::Recorder)
    }

    /// Records how an allowed request ended.
    fn done(&self, code: u16, started: Instant, error: Option<String>) {
        Ending::new(self.ctx, self.conn, self.resource, started).record(
            format!("HTTP {code}"),
            None,
            error,
        );
    }
}

tokio::task_local! {
    /// The number of the request being handled, on its connection. A task-local, because
    /// an HTTP/2 connection's requests run interleaved on one task and every record made
    /// while one is handled must name it.
    static REQUEST: u64;
}

fn this_request() -> Option<u64> {
    REQUEST.try_with(|n| *n).ok()
}

/// What the record of an allowed request's end needs, owned, so that the answer's body can
/// carry it to where the answer ends.
struct Ending {
    recorder: crate::record::Recorder,
    metrics: Arc<crate::metrics::Metrics>,
    connection: u64,
    request: Option<u64>,
    resource: String,
    started: Instant,
}

impl Ending {
    fn new(
        ctx: &HandlerContext<'_>,
        conn: &Connection,
        resource: &Resource,
        started: Instant,
    ) -> Ending {
        Ending {
            recorder: ctx.recorder.clone(),
            metrics: Arc::clone(ctx.metrics),
            connection: conn.id,
            // Made while the request is handled; recorded later, where its body ends.
            request: this_request(),
            resource: resource.name.clone(),
            started,
        }
    }

    fn record(self, tag: String, bytes: Option<u64>, error: Option<String>) {
        let duration = self.started.elapsed();
        self.metrics
            .upstream_seconds
            .get_or_create(&crate::metrics::ResourceLabels {
                resource: self.resource.clone(),
            })
            .observe(duration.as_secs_f64());
        let _ = self
            .recorder
            .record_soon(Event::StatementDone(StatementDone {
                connection: self.connection,
                resource: self.resource.into(),
                tag,
                rows_returned: 0,
                rows_affected: None,
                duration_us: duration.as_micros() as u64,
                error,
                bytes,
                request: self.request,
            }));
    }
}

/// An answer's body on its way to the client, counted; the request's end is recorded when
/// the body ends (a watch: when it is closed), with the bytes sent and the whole duration.
struct RecordedBody {
    inner: Body,
    code: u16,
    bytes: u64,
    ending: Option<Ending>,
}

impl RecordedBody {
    fn wrap(response: Response<Body>, ending: Ending) -> Response<Body> {
        let code = response.status().as_u16();
        response.map(|inner| {
            BoxBody::new(RecordedBody {
                inner,
                code,
                bytes: 0,
                ending: Some(ending),
            })
        })
    }

    fn end(&mut self, note: &str, error: Option<String>) {
        if let Some(ending) = self.ending.take() {
            ending.record(format!("HTTP {}{note}", self.code), Some(self.bytes), error);
        }
    }
}

impl hyper::body::Body for RecordedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.is_end_stream() {
                    this.end("", None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let error = e.to_string();
                this.end("", Some(error));
            }
            Poll::Ready(None) => this.end("", None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RecordedBody {
    fn drop(&mut self) {
        if hyper::body::Body::is_end_stream(&self.inner) {
            self.end("", None);
        } else {
            // A watch the client stopped, or a client that went away mid-answer.
            self.end(" (closed by the client)", None);
        }
    }
}

/// What a resource request names, for its record.
fn api_object(request: &ApiRequest) -> Option<crate::record::ApiObject> {
    match &request.kind {
        Kind::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } => Some(crate::record::ApiObject {
            group: group.clone(),
            resource: resource.clone(),
            subresource: subresource.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
        }),
        Kind::NonResource { .. } => None,
    }
}

/// The Cedar context of a request, with the access level of the grant being tried.
fn context(request: &ApiRequest, grant: &str) -> serde_json::Value {
    let (group, resource, subresource, namespace, name, path) = match &request.kind {
        Kind::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            ..
        } => (
            group.as_str(),
            resource.as_str(),
            subresource.as_str(),
            namespace.as_str(),
            name.as_str(),
            "",
        ),
        Kind::NonResource { path } => ("", "", "", "", "", path.as_str()),
    };
    serde_json::json!({
        "group": group, "resource": resource, "subresource": subresource,
        "namespace": namespace, "name": name, "path": path,
        "access": request.access().as_str(), "grant": grant,
    })
}

/// The WebSocket subprotocols offered that name a stream protocol (`v5.channel.k8s.io`,
/// `base64.channel.k8s.io`, `v2.portforward.k8s.io`…), without the rest. The API server also
/// reads a bearer token offered as `base64url.bearer.authorization.k8s.io.<token>`: the
/// agent's own credential must never reach it that way. `None` when nothing is left.
fn stream_protocols(offered: &HeaderValue) -> Option<HeaderValue> {
    let text = offered.to_str().ok()?;
    let kept: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| {
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                && (*p == "channel.k8s.io"
                    || p.ends_with(".channel.k8s.io")
                    || *p == "portforward.k8s.io"
                    || p.ends_with(".portforward.k8s.io"))
                && !p.to_ascii_lowercase().contains("bearer")
        })
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join(", ")).ok()
}

/// The most of a Secret write's body enforcer reads (the API server's own limit is 3 MiB).
const MAX_SECRET_WRITE: usize = 3 << 20;

/// The request as enforcer forwards it. A write to a Secret is read whole first, and refused
/// when it carries enforcer's placeholder (it would overwrite the real values with it) or,
/// as a JSON patch, copies, moves or tests a value: the answer, or the server's error about
/// where the value went, would show it where no redaction looks.
/// Other writes to what enforcer redacts (ConfigMaps and pod specs under the profile's
/// `keys`) are checked for the placeholder too: `get -o yaml | kubectl replace -f -` would
/// overwrite real values with it.
async fn read_guarded_write(
    request: &ApiRequest,
    req: Request<Incoming>,
    profile: &crate::mask::Profile,
) -> Result<Request<Body>, String> {
    let secret = matches!(&request.kind, Kind::Resource { resource, .. } if resource == "secrets");
    let guarded = matches!(request.verb.as_str(), "create" | "update" | "patch")
        && (secret || needs_redaction(request, profile));
    if !guarded {
        return Ok(req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed()));
    }
    let (parts, body) = req.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_SECRET_WRITE)
        .collect()
        .await
        .map_err(|e| format!("enforcer: the write's body could not be read whole: {e}"))?
        .to_bytes();
    if redact::carries_placeholder(&bytes) {
        return Err("enforcer: this write carries enforcer's redaction placeholder, which would replace the object's real values; send the values themselves".into());
    }
    if !secret {
        return Ok(Request::from_parts(
            parts,
            Full::new(bytes)
                .map_err(|e: Infallible| -> BoxError { match e {} })
                .boxed(),
        ));
    }
    let json_patch = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.trim_start().starts_with("application/json-patch+json"));
    if json_patch {
        let ops: Vec<serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("enforcer: the JSON patch does not read: {e}"))?;
        if let Some(op) = ops.iter().find_map(|op| {
            op.get("op")
                .and_then(serde_json::Value::as_str)
                .filter(|o| !matches!(*o, "add" | "remove" | "replace"))
        }) {
            return Err(format!(
                "enforcer: a JSON patch of a Secret may only add, remove or replace (not {op}): other operations can bring a value back where redaction does not look"
            ));
        }
    }
    Ok(Request::from_parts(
        parts,
        Full::new(bytes)
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed(),
    ))
}

/// Whether the request opens a stream into a container — the only requests that may switch
/// protocols (a watch over WebSocket would otherwise escape redaction).
fn is_into_container(request: &ApiRequest) -> bool {
    matches!(&request.kind, Kind::Resource { subresource, .. }
        if matches!(subresource.as_str(), "exec" | "attach" | "portforward"))
}

/// Resources whose objects carry a pod spec (and so environment variables).
const WITH_POD_SPEC: [&str; 10] = [
    "pods",
    "controllerrevisions",
    "podtemplates",
    "replicationcontrollers",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "jobs",
    "cronjobs",
];

/// The kind of object the request is for, where redaction needs to know it (objects in
/// lists and Table rows may not say).
fn implied_kind(request: &ApiRequest) -> Option<&'static str> {
    match &request.kind {
        Kind::Resource {
            group, resource, ..
        } if group.is_empty() => match resource.as_str() {
            "secrets" => Some("Secret"),
            "configmaps" => Some("ConfigMap"),
            _ => None,
        },
        _ => None,
    }
}

/// Whether the answer may carry values to redact: anything about Secrets; ConfigMaps and
/// objects with a pod spec when the profile names keys (the objects themselves and their
/// status, not a pod's log or what a proxy reaches, which are not API objects).
fn needs_redaction(request: &ApiRequest, profile: &crate::mask::Profile) -> bool {
    match &request.kind {
        Kind::Resource {
            resource,
            subresource,
            ..
        } => {
            resource == "secrets"
                || (!profile.keys.is_empty()
                    && matches!(subresource.as_str(), "" | "status" | "ephemeralcontainers")
                    && (resource == "configmaps" || WITH_POD_SPEC.contains(&resource.as_str())))
        }
        Kind::NonResource { .. } => false,
    }
}

/// What to ask the API server for when enforcer must read the answer: the JSON forms the
/// client accepts (plain, Table, watch stream), or plain JSON. Anything else it might
/// choose — protobuf, YAML, CBOR — could not be redacted.
fn json_accept(asked: Option<&str>) -> String {
    let json: Vec<&str> = asked
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
        .collect();
    if json.is_empty() {
        "application/json".into()
    } else {
        json.join(",")
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        })
}

/// A whole JSON answer, redacted. Anything that is not JSON cannot be checked, so it is not
/// passed on.
async fn redact_whole(
    response: Response<Incoming>,
    profile: &crate::mask::Profile,
    kind: Option<&'static str>,
    metrics: &crate::metrics::Metrics,
) -> Result<Response<Body>, String> {
    let (mut parts, mut body) = response.into_parts();
    if !is_json(&parts.headers) {
        return Err("the API server did not answer in JSON".into());
    }
    let mut held = budget::Held::new();
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the answer: {e}"))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > MAX_REDACTED_BODY {
            return Err(format!(
                "the answer is larger than the {} MiB enforcer redacts",
                MAX_REDACTED_BODY >> 20
            ));
        }
        held.set(bytes.len() + data.len())
            .map_err(|e| e.to_string())?;
        bytes.extend_from_slice(&data);
    }
    let mut value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("the answer is not JSON: {e}"))?;
    redact::redact_as(&mut value, profile, kind).count_into(metrics);
    let out = Bytes::from(value.to_string());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from_str(&out.len().to_string()).unwrap_or(HeaderValue::from_static("0")),
    );
    Ok(Response::from_parts(
        parts,
        Full::new(out)
            .map_err(|e: Infallible| -> BoxError { match e {} })
            .boxed(),
    ))
}

/// A watch stream, redacted event by event as the events arrive (one JSON object per line).
/// An answer that is not JSON is refused whole: it could not be read, so not redacted.
fn redact_stream(
    response: Response<Incoming>,
    profile: crate::mask::Profile,
    kind: Option<&'static str>,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Response<Body>, String> {
    let (mut parts, mut body) = response.into_parts();
    if !is_json(&parts.headers) {
        return Err("the API server did not answer the watch in JSON".into());
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(16);
    tokio::spawn(async move {
        let mut pending: Vec<u8> = Vec::new();
        let mut held = budget::Held::new();
        loop {
            // A client that left ends the watch upstream now, not at the next event.
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = tx.closed() => return,
            };
            let Some(frame) = frame else { break };
            let data = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    return;
                }
            };
            // Only the new bytes can end an event: scanned once each.
            let scanned = pending.len();
            if let Err(e) = held.set(scanned + data.len()) {
                let _ = tx.send(Err(Box::new(e))).await;
                return;
            }
            pending.extend_from_slice(&data);
            let mut out = Vec::new();
            let mut start = 0;
            let mut from = scanned;
            while let Some(at) = pending[from..].iter().position(|&b| b == b'\n') {
                let end = from + at + 1;
                match redact_line(&pending[start..end], &profile, kind, &metrics) {
                    Some(l) => out.extend_from_slice(&l),
                    None => {
                        let _ = tx
                            .send(Err("a watch event could not be redacted".into()))
                            .await;
                        return;
                    }
                }
                start = end;
                from = end;
            }
            pending.drain(..start);
            // Giving back never fails.
            let _ = held.set(pending.len());
            if pending.len() > MAX_REDACTED_BODY {
                let _ = tx.send(Err("watch event too large to redact".into())).await;
                return;
            }
            if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                return;
            }
        }
        if !pending.is_empty() {
            // The stream ended inside an event: what arrived of it is redacted if it reads,
            // refused otherwise, never passed on as it came.
            let last = redact_line(&pending, &profile, kind, &metrics)
                .map(Bytes::from)
                .ok_or_else(|| -> BoxError { "a watch event could not be redacted".into() });
            let _ = tx.send(last).await;
        }
    });
    Ok(Response::from_parts(parts, BoxBody::new(ChannelBody(rx))))
}

fn redact_line(
    line: &[u8],
    profile: &crate::mask::Profile,
    kind: Option<&'static str>,
    metrics: &crate::metrics::Metrics,
) -> Option<Vec<u8>> {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Some(line.to_vec());
    }
    let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
    redact::redact_as(&mut value, profile, kind).count_into(metrics);
    let mut out = value.to_string().into_bytes();
    out.push(b'\n');
    Some(out)
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_stream_subprotocols_go_upstream() {
        let offered =
            |v: &str| super::stream_protocols(&HeaderValue::from_str(v).expect("a header value"));
        assert_eq!(
            offered("v5.channel.k8s.io, v4.channel.k8s.io,base64.channel.k8s.io"),
            Some(HeaderValue::from_static(
                "v5.channel.k8s.io, v4.channel.k8s.io, base64.channel.k8s.io"
            ))
        );
        assert_eq!(
            offered("base64url.bearer.authorization.k8s.io.c3RhbGU, v5.channel.k8s.io"),
            Some(HeaderValue::from_static("v5.channel.k8s.io"))
        );
        assert_eq!(
            offered("base64url.bearer.authorization.k8s.io.c3RhbGU.channel.k8s.io"),
            None
        );
        assert_eq!(
            offered("base64url.bearer.authorization.k8s.io.c3RhbGU"),
            None
        );
        assert_eq!(
            offered("v2.portforward.k8s.io"),
            Some(HeaderValue::from_static("v2.portforward.k8s.io"))
        );
        assert_eq!(offered("chat, x_y.channel.k8s.io"), None);
    }

    use super::*;

    #[test]
    fn only_json_is_asked_for_when_the_answer_must_be_read() {
        assert_eq!(json_accept(None), "application/json");
        assert_eq!(
            json_accept(Some("application/vnd.kubernetes.protobuf")),
            "application/json"
        );
        assert_eq!(
            json_accept(Some(
                "application/json;as=Table;v=v1;g=meta.k8s.io, application/vnd.kubernetes.protobuf, application/json"
            )),
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        );
        for other in [
            "application/yaml",
            "application/cbor",
            "*/*",
            "text/plain",
            "",
        ] {
            assert_eq!(json_accept(Some(other)), "application/json", "{other}");
        }
        assert_eq!(
            json_accept(Some("Application/JSON;stream=watch")),
            "Application/JSON;stream=watch"
        );
    }

    #[test]
    fn answers_are_read_where_values_may_be() {
        let request = |path: &str| super::super::request::parse("GET", path, None).expect("parses");
        let plain = crate::mask::Profile::default();
        let keyed = crate::mask::Profile {
            keys: vec!["*password*".into()],
            ..crate::mask::Profile::default()
        };
        let secret = request("/api/v1/namespaces/d/secrets/x");
        assert!(needs_redaction(&secret, &plain));
        let pod = request("/api/v1/namespaces/d/pods/p");
        assert!(!needs_redaction(&pod, &plain));
        assert!(needs_redaction(&pod, &keyed));
        assert!(needs_redaction(
            &request("/apis/apps/v1/namespaces/d/controllerrevisions"),
            &keyed
        ));
        // A pod's log and what a proxy reaches are not API objects.
        for text in [
            "/api/v1/namespaces/d/pods/p/log",
            "/api/v1/namespaces/d/pods/p/proxy/x",
        ] {
            assert!(!needs_redaction(&request(text), &keyed), "{text}");
        }
        assert!(!needs_redaction(&request("/version"), &keyed));
    }
}
