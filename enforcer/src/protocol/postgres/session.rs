//! One client session: startup, upstream authentication, then the two directions.
//!
//! Client → server: every Query and Parse is classified and decided before it is forwarded.
//! A denial is carried out by the server itself: enforcer forwards, in place of the denied
//! statement, one that raises SQLSTATE 42501 with enforcer's message. The client therefore
//! sees the error exactly where its statement was, and the server aborts a surrounding
//! transaction as it would for any failed statement — nothing is half-applied.
//!
//! Server → client: responses are matched, in order, to what the client sent (a queue of
//! expectations), so every DataRow is masked by the columns of the statement or portal it
//! belongs to, and the replies to enforcer's own injected messages are not passed on.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex as StdMutex},
    time::{Duration, Instant},
};

use bytes::{BufMut, BytesMut};
use pgwire::{
    error::ErrorInfo,
    messages::{
        DecodeContext, Message, PgWireBackendMessage, PgWireFrontendMessage, ProtocolVersion,
        extendedquery::{Bind, Execute, Parse},
        response::{ErrorResponse, NoticeResponse},
        simplequery::Query,
        startup::{Authentication, Startup},
    },
};
use tokio::{
    io::{AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Mutex,
};

use super::{
    PgError,
    catalog::{Described, Scope, Tables},
    classify::{Classified, Classifier},
    copy::{CopyFormat, CopyMasker},
    frame::{DataRowValues, FrameReader, body, decode},
    frontend_context,
    upstream::{self, CancelTarget, MAX_BACKEND, Secret},
};
use crate::{
    policy::Resource,
    protocol::{
        HandlerContext, PresentedToken,
        decision::{self, truncate},
        statements::SessionStatements,
    },
    proxy::{Connection, RelayStats},
    record::{Event, StatementDecided, StatementDone},
    tls::MaybeTls,
};

/// Largest message accepted from the workload.
const MAX_FRONTEND: usize = 64 << 20;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const PROTOCOL_3_0: u32 = 196_608;
/// Statement text kept in records.
const RECORDED_TEXT: usize = 2000;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A column of a result set, as the client will read it.
#[derive(Debug, Clone)]
struct Column {
    /// The label the query gave it.
    name: String,
    type_oid: u32,
    binary: bool,
    /// Masked whole by a column rule: its label, or the table column it comes from, matches
    /// one (or the table could not be named while column rules exist). Decided once per
    /// result description, not per value.
    ruled: bool,
}

/// How a `COPY … TO STDOUT` the session allowed is to be masked.
#[derive(Debug, Clone)]
struct CopyPlan {
    format: CopyFormat,
    columns: Vec<Column>,
}

/// A reply the client's messages will cause, in order.
#[derive(Debug)]
enum Expect {
    /// Simple query: everything up to ReadyForQuery; how to mask the output of its COPY
    /// statements, in order.
    Query {
        copies: VecDeque<CopyPlan>,
    },
    Parse {
        swallow: bool,
    },
    Bind {
        portal: String,
        statement: String,
        formats: Vec<i16>,
        swallow: bool,
    },
    DescribeStatement {
        statement: String,
    },
    DescribePortal {
        portal: String,
    },
    Execute {
        portal: String,
        copy: Option<CopyPlan>,
    },
    Close,
    Sync,
}

#[derive(Default)]
struct Shared {
    expect: VecDeque<Expect>,
    statements: HashMap<String, Vec<Column>>,
    portals: HashMap<String, Vec<Column>>,
    /// Columns of the simple query's current result set.
    query_columns: Option<Vec<Column>>,
    /// Values masked since the last ReadyForQuery, counted into the metrics then.
    masked: Fired,
    /// Buffers masking reuses from row to row.
    masking: Masking,
    /// When the statement whose reply comes next was sent on (or the one before it ended).
    running_since: Option<std::time::Instant>,
    rows: u64,
    /// The COPY … TO STDOUT whose rows are coming.
    copy_active: Option<(CopyMasker, Vec<Column>)>,
}

fn lock(shared: &StdMutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub async fn run(
    ctx: &HandlerContext<'_>,
    conn: &Connection,
    client: &mut TcpStream,
    resource: &Resource,
    stats: &mut RelayStats,
) -> Result<(), PgError> {
    // Messages go out as they are decided: small writes must not wait for delayed ACKs.
    client.set_nodelay(true)?;
    let mut creader = FrameReader::new(MaybeTls::Plain(client));

    let parameters = loop {
        let Some(mut packet) = creader.startup().await? else {
            return Ok(());
        };
        let code = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
        match code {
            SSL_REQUEST if !creader.get_mut().is_tls() && resource.client_tls => {
                let Some(authority) = ctx.shared.tls.as_deref() else {
                    creader.get_mut().write_all(b"N").await?;
                    continue;
                };
                // Bytes sent after the request but before the answer would otherwise be
                // taken as if they had come through TLS.
                if creader.buffered() != 0 {
                    return Err(PgError::Protocol(
                        "data sent after SSLRequest before the answer".into(),
                    ));
                }
                let (MaybeTls::Plain(tcp), _) = creader.into_parts() else {
                    return Err(PgError::Protocol("TLS requested twice".into()));
                };
                tcp.write_all(b"S").await?;
                let tls = accept_tls(authority, tcp, conn).await?;
                creader = FrameReader::new(MaybeTls::Server(Box::new(tls)));
            }
            // Plaintext on loopback when the policy allows it (or TLS is already on).
            SSL_REQUEST | GSSENC_REQUEST => creader.get_mut().write_all(b"N").await?,
            CANCEL_REQUEST => {
                let pid = i32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
                let key = i32::from_be_bytes([packet[12], packet[13], packet[14], packet[15]]);
                // Only a key enforcer handed out for a live session reaches a server.
                if packet.len() == 16
                    && let Some(target) = ctx.shared.postgres.cancel_target(pid, key)
                {
                    upstream::cancel(&target).await?;
                }
                return Ok(());
            }
            PROTOCOL_3_0 => {
                let startup = decode(packet.split(), |b| {
                    Startup::decode(b, &DecodeContext::new(ProtocolVersion::PROTOCOL3_0))
                })?;
                break startup.parameters;
            }
            other => {
                let writer = Mutex::new(creader.get_mut());
                fatal(
                    &writer,
                    "0A000",
                    &format!("enforcer: unsupported protocol request {other}"),
                )
                .await;
                return Err(PgError::Protocol(format!("startup code {other}")));
            }
        }
    };
    let (stream, buffered) = creader.into_parts();
    let client_is_tls = stream.is_tls();
    let (cr, cw) = tokio::io::split(stream);
    let writer = Mutex::new(cw);
    let mut creader = FrameReader::with_buffer(cr, buffered);
    let client_user = parameters.get("user").cloned().unwrap_or_default();
    if parameters
        .get("replication")
        .is_some_and(|v| !matches!(v.as_str(), "false" | "0" | "off" | "no"))
    {
        fatal(
            &writer,
            "42501",
            "enforcer: replication connections are not allowed",
        )
        .await;
        return Err(PgError::Protocol("replication connection refused".into()));
    }
    // `options` could set the role or session settings behind the policy's back; the user is
    // the credential's, whatever the client says.
    let forwarded: Vec<(String, String)> = parameters
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "options" | "replication"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    // Through a gateway the password is the session's only credential: a grant token.
    let token = if resource.is_gateway(conn.orig_dst) {
        if !client_is_tls && !conn.peer.ip().is_loopback() {
            fatal(
                &writer,
                "28000",
                "enforcer: this gateway takes a grant token only over TLS (sslmode=require)",
            )
            .await;
            return Err(PgError::Client("gateway client without TLS".into()));
        }
        match token_password(ctx, conn, resource, &writer, &mut creader).await? {
            Some(token) => Some(token),
            None => return Ok(()),
        }
    } else {
        None
    };
    let token_ctx;
    let ctx = match &token {
        Some(token) => {
            token_ctx = ctx.with_token(token);
            &token_ctx
        }
        None => ctx,
    };

    let secret = match Secret::for_resource(resource, &client_user) {
        Ok(s) => s,
        Err(e) => {
            fatal(&writer, "28000", &format!("enforcer: {e}")).await;
            return Err(e);
        }
    };
    let addr = resource.upstream_for(conn.orig_dst);
    let (mut ureader, mut uw) = match upstream::open(resource, addr, &secret, &forwarded).await {
        Ok(up) => up,
        Err(e @ (PgError::Auth(_) | PgError::Credential(_))) => {
            fatal(&writer, "28000", &format!("enforcer: {e}")).await;
            return Err(e);
        }
        Err(e) => {
            fatal(
                &writer,
                "08001",
                &format!("enforcer: cannot reach {} ({addr}): {e}", resource.name),
            )
            .await;
            return Err(e);
        }
    };
    let mut ok = BytesMut::new();
    PgWireBackendMessage::Authentication(Authentication::Ok).encode(&mut ok)?;
    writer.lock().await.write_all(&ok).await?;
    // ParameterStatus, BackendKeyData, … up to the first ReadyForQuery, as they come; the
    // client gets a cancel key of enforcer's in place of the server's.
    let mut cancel_key = None;
    loop {
        let Some(frame) = ureader.message(MAX_BACKEND).await? else {
            return Ok(());
        };
        match frame[0] {
            b'K' if body(&frame).len() == 8 => {
                let b = body(&frame);
                let target = CancelTarget {
                    addr,
                    tls: resource.upstream_tls.clone(),
                    pid: i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    key: i32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                };
                let key = ctx.shared.postgres.cancel_key(target);
                let mut out = BytesMut::with_capacity(13);
                out.put_u8(b'K');
                out.put_i32(12);
                out.put_i32(key.key.0);
                out.put_i32(key.key.1);
                writer.lock().await.write_all(&out).await?;
                cancel_key = Some(key);
                continue;
            }
            b'E' => {
                writer.lock().await.write_all(&frame).await?;
                return Ok(());
            }
            _ => {}
        }
        writer.lock().await.write_all(&frame).await?;
        if frame[0] == b'Z' {
            break;
        }
    }
    let database = parameters
        .get("database")
        .cloned()
        .unwrap_or_else(|| secret.user.clone());

    let shared = StdMutex::new(Shared::default());
    let session = Session {
        ctx,
        conn,
        resource,
        writer: &writer,
        shared: &shared,
        upstream: addr,
        database,
        user: secret.user.clone(),
        classifier: StdMutex::default(),
        last_description: StdMutex::default(),
        statements: SessionStatements::new(ctx, resource),
    };
    let result = tokio::select! {
        r = session.client_to_server(&mut creader, &mut uw) => r,
        r = session.server_to_client(&mut ureader) => r,
    };
    if let Err(PgError::Protocol(message)) = &result {
        // The workload broke the protocol: it is told why before the connection closes.
        fatal(
            &writer,
            "08P01",
            &format!("enforcer: protocol violation: {message}"),
        )
        .await;
    }
    stats.to_upstream = creader.bytes;
    stats.to_client = ureader.bytes;
    drop(cancel_key);
    result
}

/// Asks a gateway client for its password and takes it only as a valid grant token for
/// this resource (`None`: refused, the client told why). The password is never logged or
/// echoed.
async fn token_password<W, R>(
    ctx: &HandlerContext<'_>,
    conn: &Connection,
    resource: &Resource,
    writer: &Mutex<W>,
    creader: &mut FrameReader<R>,
) -> Result<Option<PresentedToken>, PgError>
where
    W: AsyncWrite + Unpin,
    R: tokio::io::AsyncRead + Unpin,
{
    let Some(grants) = ctx.grants else {
        fatal(writer, "28000", "enforcer: grants are not available here").await;
        return Ok(None);
    };
    let mut ask = BytesMut::new();
    PgWireBackendMessage::Authentication(Authentication::CleartextPassword).encode(&mut ask)?;
    writer.lock().await.write_all(&ask).await?;
    // A password message is small; a grant token is a few hundred bytes.
    let Some(frame) = creader.message(16 * 1024).await? else {
        return Ok(None);
    };
    if frame[0] != b'p' {
        return Err(PgError::Protocol(format!(
            "expected a password message, got {:?}",
            frame[0] as char
        )));
    }
    let password = body(&frame);
    let password = password.strip_suffix(&[0]).unwrap_or(password);
    let text = std::str::from_utf8(password).unwrap_or("").trim();
    // A workload inside an enforced cgroup may only present its own grants.
    let presenter = (conn.workload != crate::proxy::OUTSIDE).then(|| ctx.presenter());
    match grants
        .verify_token(text, presenter.as_ref(), &resource.name)
        .await
    {
        Ok(claims) => Ok(Some(PresentedToken {
            text: text.to_owned(),
            claims,
        })),
        Err(e) => {
            fatal(
                writer,
                "28P01",
                &format!(
                    "enforcer: password authentication failed for resource {}: the password must be a grant token for it ({e})",
                    resource.name
                ),
            )
            .await;
            Err(PgError::Client(format!("grant token refused: {e}")))
        }
    }
}

/// The TLS handshake with the workload, with a certificate for the name it asked for (SNI)
/// or the address it dialled.
async fn accept_tls<'c>(
    authority: &crate::tls::Authority,
    tcp: &'c mut TcpStream,
    conn: &Connection,
) -> Result<tokio_rustls::server::TlsStream<&'c mut TcpStream>, PgError> {
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
        let sni = start.client_hello().server_name().map(str::to_owned);
        let config = authority
            .server_config(sni.as_deref(), conn.orig_dst.ip(), &[])
            .map_err(std::io::Error::other)?;
        start.into_stream(config).await
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(PgError::Protocol(format!(
            "TLS handshake with the client: {e}"
        ))),
        Err(_) => Err(PgError::Protocol(
            "TLS handshake with the client timed out".into(),
        )),
    }
}

/// Sends a FATAL error to the client (best effort: it may be gone).
async fn fatal<W: AsyncWrite + Unpin>(writer: &Mutex<W>, code: &str, message: &str) {
    let mut out = BytesMut::new();
    let error: ErrorResponse = ErrorInfo::new("FATAL".into(), code.into(), message.into()).into();
    if error.encode(&mut out).is_ok() {
        let _ = writer.lock().await.write_all(&out).await;
    }
}

/// What the policy decided for one statement.
enum Verdict {
    Allow {
        grant_based: bool,
        policies: Vec<String>,
    },
    Deny(String),
}

struct Session<'a, W> {
    ctx: &'a HandlerContext<'a>,
    conn: &'a Connection,
    resource: &'a Resource,
    writer: &'a Mutex<W>,
    shared: &'a StdMutex<Shared>,
    /// The server, database and user of the session, for catalog lookups.
    upstream: SocketAddr,
    database: String,
    user: String,
    classifier: StdMutex<Classifier>,
    last_description: StdMutex<Option<DescriptionMemo>>,
    statements: SessionStatements,
}

/// The last RowDescription the server sent and the columns it was resolved to.
struct DescriptionMemo {
    frame: Vec<u8>,
    columns: Vec<Column>,
    /// Until when the catalog names behind `columns` may be relied on.
    fresh_until: Instant,
}

/// How long a description resolved without the catalog (no column rules) is reused.
const REUSE_DESCRIPTION_FOR: Duration = Duration::from_secs(30);

/// A statement prepared by the client, as decided at Parse.
#[derive(Clone)]
struct Prepared {
    classified: Classified,
    /// Allowed because of a grant: each execution takes a use and stops when the grant ends.
    grant_based: bool,
    /// The policies that allowed it, recorded with each execution.
    policies: Vec<String>,
    copy: Option<CopyPlan>,
}

impl<W: AsyncWrite + Unpin> Session<'_, W> {
    async fn client_to_server<R, U>(
        &self,
        reader: &mut FrameReader<R>,
        upstream: &mut U,
    ) -> Result<(), PgError>
    where
        R: tokio::io::AsyncRead + Unpin,
        U: AsyncWrite + Unpin,
    {
        let fctx = frontend_context();
        let mut prepared: HashMap<String, Prepared> = HashMap::new();
        let mut portals: HashMap<String, Option<Prepared>> = HashMap::new();
        // Messages the client sent together go to the server together (one write), except
        // that what is pending goes out before a statement is decided, which may take long.
        let mut out = BytesMut::new();
        loop {
            if !out.is_empty() && !reader.has_message() {
                upstream.write_all(&out).await?;
                out.clear();
            }
            let Some(frame) = reader.message(MAX_FRONTEND).await? else {
                return Ok(());
            };
            let tag = frame[0];
            if matches!(tag, b'Q' | b'P') && !out.is_empty() {
                upstream.write_all(&out).await?;
                out.clear();
            }
            match tag {
                b'Q' => {
                    let PgWireFrontendMessage::Query(q) =
                        decode(frame, |b| PgWireFrontendMessage::decode(b, &fctx))?
                    else {
                        return Err(PgError::Protocol("bad Query".into()));
                    };
                    let (text, copies) = match self.decide_text(&q.query, true).await? {
                        Ok(plans) => (q.query, plans.into()),
                        Err(message) => (raise(&message), VecDeque::new()),
                    };
                    Query::new(text).encode(&mut out)?;
                    self.expect(Expect::Query { copies });
                }
                b'P' => {
                    let PgWireFrontendMessage::Parse(p) =
                        decode(frame.clone(), |b| PgWireFrontendMessage::decode(b, &fctx))?
                    else {
                        return Err(PgError::Protocol("bad Parse".into()));
                    };
                    let name = p.name.clone().unwrap_or_default();
                    match self.decide_prepared(&p.query).await? {
                        Ok(stmt) => {
                            prepared.insert(name, stmt);
                            out.extend_from_slice(&frame);
                            self.expect(Expect::Parse { swallow: false });
                        }
                        Err(message) => {
                            prepared.remove(&name);
                            self.inject_denial(&mut out, &message)?;
                        }
                    }
                }
                b'B' => {
                    let PgWireFrontendMessage::Bind(b) =
                        decode(frame.clone(), |b| PgWireFrontendMessage::decode(b, &fctx))?
                    else {
                        return Err(PgError::Protocol("bad Bind".into()));
                    };
                    let portal = b.portal_name.clone().unwrap_or_default();
                    let statement = b.statement_name.clone().unwrap_or_default();
                    // The portal runs the statement as it is now, even if the name is
                    // prepared anew before the Execute.
                    portals.insert(portal.clone(), prepared.get(&statement).cloned());
                    out.extend_from_slice(&frame);
                    self.expect(Expect::Bind {
                        portal,
                        statement,
                        formats: b.result_column_format_codes.clone(),
                        swallow: false,
                    });
                }
                b'E' => {
                    let PgWireFrontendMessage::Execute(e) =
                        decode(frame.clone(), |b| PgWireFrontendMessage::decode(b, &fctx))?
                    else {
                        return Err(PgError::Protocol("bad Execute".into()));
                    };
                    let portal = e.name.clone().unwrap_or_default();
                    let bound = portals.get(&portal).cloned().flatten();
                    let copy = bound.as_ref().and_then(|p| p.copy.clone());
                    // Taking a use of a grant waits on the store: what is pending goes first.
                    if bound.as_ref().is_some_and(|p| p.grant_based) && !out.is_empty() {
                        upstream.write_all(&out).await?;
                        out.clear();
                    }
                    match bound {
                        Some(p) if p.grant_based => match self.use_grant(&p.classified).await? {
                            Ok(_) => {
                                out.extend_from_slice(&frame);
                                self.expect(Expect::Execute { portal, copy });
                            }
                            Err(message) => self.inject_denial(&mut out, &message)?,
                        },
                        Some(p) => {
                            if !p.classified.text.is_empty() {
                                self.record(&p.classified, "allow", p.policies, None, None, None)
                                    .await?;
                            }
                            out.extend_from_slice(&frame);
                            self.expect(Expect::Execute { portal, copy });
                        }
                        None => {
                            out.extend_from_slice(&frame);
                            self.expect(Expect::Execute { portal, copy });
                        }
                    }
                }
                b'D' => {
                    let PgWireFrontendMessage::Describe(d) =
                        decode(frame.clone(), |b| PgWireFrontendMessage::decode(b, &fctx))?
                    else {
                        return Err(PgError::Protocol("bad Describe".into()));
                    };
                    let name = d.name.clone().unwrap_or_default();
                    self.expect(if d.target_type == b'S' {
                        Expect::DescribeStatement { statement: name }
                    } else {
                        Expect::DescribePortal { portal: name }
                    });
                    out.extend_from_slice(&frame);
                }
                b'C' => {
                    self.expect(Expect::Close);
                    out.extend_from_slice(&frame);
                }
                b'S' => {
                    self.expect(Expect::Sync);
                    out.extend_from_slice(&frame);
                }
                // Flush, COPY data from the client: no reply of their own.
                b'H' | b'd' | b'c' | b'f' => out.extend_from_slice(&frame),
                b'X' => {
                    out.extend_from_slice(&frame);
                    upstream.write_all(&out).await?;
                    return Ok(());
                }
                b'F' => {
                    // The fast-path function call runs any function by OID: it cannot be
                    // classified, so it is refused.
                    self.record_text(
                        "sql:admin",
                        "<fast-path function call>",
                        "deny",
                        Vec::new(),
                        None,
                        None,
                        Some("fast-path function calls are not allowed".into()),
                    )
                    .await?;
                    let mut reply = BytesMut::new();
                    let error: ErrorResponse = ErrorInfo::new(
                        "ERROR".into(),
                        "42501".into(),
                        "enforcer: fast-path function calls are not allowed".into(),
                    )
                    .into();
                    error.encode(&mut reply)?;
                    // Same transaction status as the last ReadyForQuery: unknown here, so idle.
                    reply.extend_from_slice(b"Z\x00\x00\x00\x05I");
                    self.writer.lock().await.write_all(&reply).await?;
                    continue;
                }
                other => {
                    return Err(PgError::Protocol(format!(
                        "unexpected message {:?} from the client",
                        char::from(other)
                    )));
                }
            }
        }
    }

    fn expect(&self, e: Expect) {
        let mut shared = lock(self.shared);
        if matches!(e, Expect::Query { .. } | Expect::Execute { .. })
            && shared.running_since.is_none()
        {
            shared.running_since = Some(std::time::Instant::now());
        }
        shared.expect.push_back(e);
    }

    /// In place of a denied extended-protocol statement: the server raises enforcer's error
    /// at this point of the pipeline (and skips to the client's Sync, as it would).
    fn inject_denial(&self, out: &mut BytesMut, message: &str) -> Result<(), PgError> {
        Parse::new(None, raise(message), Vec::new()).encode(out)?;
        Bind::new(None, None, Vec::new(), Vec::new(), Vec::new()).encode(out)?;
        Execute::new(None, 0).encode(out)?;
        self.expect(Expect::Parse { swallow: true });
        self.expect(Expect::Bind {
            portal: String::new(),
            statement: String::new(),
            formats: Vec::new(),
            swallow: true,
        });
        self.expect(Expect::Execute {
            portal: String::new(),
            copy: None,
        });
        Ok(())
    }

    /// Decides every statement of a query string; `Err(message)` if any is denied. On
    /// success, how to mask the COPY output the statements will send.
    async fn decide_text(
        &self,
        text: &str,
        consume: bool,
    ) -> Result<Result<Vec<CopyPlan>, String>, PgError> {
        let classified = match self.classifier.lock() {
            Ok(mut c) => c.classify(text),
            Err(p) => p.into_inner().classify(text),
        };
        let statements = match classified {
            Ok(s) => s,
            Err(e) => {
                let message = format!("enforcer: {e}");
                self.record_text(
                    "sql:unknown",
                    text,
                    "deny",
                    Vec::new(),
                    None,
                    None,
                    Some(e.to_string()),
                )
                .await?;
                return Ok(Err(message));
            }
        };
        let mut plans = Vec::new();
        for stmt in &statements {
            match self.copy_plan(stmt).await? {
                Ok(Some(plan)) => plans.push(plan),
                Ok(None) => {}
                Err(message) => return Ok(Err(message)),
            }
            match self.decide(stmt, consume, true).await? {
                Verdict::Allow { .. } => {}
                Verdict::Deny(message) => return Ok(Err(message)),
            }
        }
        Ok(Ok(plans))
    }

    /// For a `COPY … TO STDOUT`: its format and columns, or `Err(message)` (recorded as a
    /// denial) when its output could not be masked.
    async fn copy_plan(
        &self,
        stmt: &Classified,
    ) -> Result<Result<Option<CopyPlan>, String>, PgError> {
        let Some(copy) = &stmt.copy_out else {
            return Ok(Ok(None));
        };
        let refused = match &copy.format {
            CopyFormat::Unmaskable(why) => Err(why.clone()),
            // Without column rules only content is masked: the columns need not be known.
            _ if !self.resource.masking.has_column_rules() => Ok(Vec::new()),
            _ => match self
                .ctx
                .shared
                .postgres
                .catalogs
                .describe(&self.scope(), &copy.describe)
                .await
            {
                Ok(described) => Ok(self.resolve(described, &[]).await.0),
                Err(e) => Err(format!(
                    "the columns of this COPY cannot be learnt, so its output cannot be masked ({e})"
                )),
            },
        };
        match refused {
            Ok(columns) => Ok(Ok(Some(CopyPlan {
                format: copy.format.clone(),
                columns,
            }))),
            Err(why) => {
                self.record(stmt, "deny", Vec::new(), None, None, Some(why.clone()))
                    .await?;
                Ok(Err(format!("enforcer: {why}")))
            }
        }
    }

    fn scope(&self) -> Scope<'_> {
        Scope {
            resource: self.resource,
            addr: self.upstream,
            database: &self.database,
            user: &self.user,
        }
    }

    /// Names the table columns behind described result columns (when a column rule needs
    /// them); `binary` gives each column's result format. Also says until when the answer
    /// holds (`None`: a catalog lookup failed, so it should not be reused).
    async fn resolve(
        &self,
        described: Vec<Described>,
        binary: &[bool],
    ) -> (Vec<Column>, Option<Instant>) {
        let profile = &self.resource.masking;
        let tables = if profile.has_column_rules() {
            let oids: Vec<u32> = described.iter().map(|d| d.table_oid).collect();
            match self
                .ctx
                .shared
                .postgres
                .catalogs
                .tables(&self.scope(), &oids)
                .await
            {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(resource = %self.resource.name, error = %e, "catalog lookup failed; table columns are masked whole");
                    None
                }
            }
        } else {
            Some(Tables {
                found: HashMap::new(),
                fresh_until: Instant::now() + REUSE_DESCRIPTION_FOR,
            })
        };
        let columns = described
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let by_table = if d.table_oid == 0 || !profile.has_column_rules() {
                    false
                } else {
                    match tables
                        .as_ref()
                        .and_then(|t| t.found.get(&d.table_oid))
                        .and_then(|t| t.column(d.attnum).map(|c| (t, c)))
                    {
                        Some((table, column)) => {
                            profile.masks_table_column(&table.schema, &table.name, column)
                        }
                        None => true,
                    }
                };
                Column {
                    ruled: by_table || profile.masks_column(&d.name),
                    name: d.name,
                    type_oid: d.type_oid,
                    binary: binary.get(i).copied().unwrap_or(false),
                }
            })
            .collect();
        (columns, tables.map(|t| t.fresh_until))
    }

    /// The columns of a RowDescription: those of the last one when it is the same message
    /// and what they were resolved from still holds (a client repeating one query pays for
    /// decoding and naming its columns once), else decoded and resolved.
    async fn row_columns(
        &self,
        frame: &BytesMut,
        bctx: &DecodeContext,
    ) -> Result<Vec<Column>, PgError> {
        if let Ok(memo) = self.last_description.lock()
            && let Some(last) = memo.as_ref()
            && last.frame == frame[..]
            && Instant::now() < last.fresh_until
        {
            return Ok(last.columns.clone());
        }
        let PgWireBackendMessage::RowDescription(rd) =
            decode(frame.clone(), |b| PgWireBackendMessage::decode(b, bctx))?
        else {
            return Err(PgError::Upstream("bad RowDescription".into()));
        };
        let binary: Vec<bool> = rd.fields.iter().map(|f| f.format_code == 1).collect();
        let described = rd
            .fields
            .into_iter()
            .map(|f| Described {
                name: f.name,
                table_oid: f.table_id as u32,
                attnum: f.column_id,
                type_oid: f.type_id,
            })
            .collect();
        let (columns, fresh_until) = self.resolve(described, &binary).await;
        if let (Some(fresh_until), Ok(mut memo)) = (fresh_until, self.last_description.lock()) {
            *memo = Some(DescriptionMemo {
                frame: frame.to_vec(),
                columns: columns.clone(),
                fresh_until,
            });
        }
        Ok(columns)
    }

    /// Decides the one statement of a Parse.
    async fn decide_prepared(&self, text: &str) -> Result<Result<Prepared, String>, PgError> {
        let classified = match self.classifier.lock() {
            Ok(mut c) => c.classify(text),
            Err(p) => p.into_inner().classify(text),
        };
        let statements = match classified {
            Ok(s) => s,
            Err(e) => {
                self.record_text(
                    "sql:unknown",
                    text,
                    "deny",
                    Vec::new(),
                    None,
                    None,
                    Some(e.to_string()),
                )
                .await?;
                return Ok(Err(format!("enforcer: {e}")));
            }
        };
        let [stmt] = statements.as_slice() else {
            // Empty, or several statements: the server refuses these itself; nothing to run.
            return Ok(Ok(Prepared {
                classified: Classified {
                    class: super::classify::SqlClass::Read,
                    tables: Default::default(),
                    because: None,
                    text: String::new(),
                    copy_out: None,
                },
                grant_based: false,
                policies: Vec::new(),
                copy: None,
            }));
        };
        let copy = match self.copy_plan(stmt).await? {
            Ok(plan) => plan,
            Err(message) => return Ok(Err(message)),
        };
        // Recorded at each execution (a prepared statement may run many times, or never).
        Ok(match self.decide(stmt, false, false).await? {
            Verdict::Allow {
                grant_based,
                policies,
            } => Ok(Prepared {
                classified: stmt.clone(),
                grant_based,
                policies,
                copy,
            }),
            Verdict::Deny(message) => Err(message),
        })
    }

    /// An execution of a statement that a grant allowed: takes a use, and fails once the
    /// grant is gone (expired, used up, revoked).
    async fn use_grant(&self, stmt: &Classified) -> Result<Result<String, String>, PgError> {
        let class = stmt.class.as_str();
        let used = match self.ctx.grants {
            Some(g) => g
                .authorize(self.ctx.workload, &self.resource.name, class)
                .await
                .map_err(|e| PgError::Upstream(e.to_string()))?,
            None => None,
        };
        match used {
            Some(u) => {
                self.record(
                    stmt,
                    "allow",
                    Vec::new(),
                    Some(u.grant.clone()),
                    None,
                    Some("execution of a statement prepared under the grant".into()),
                )
                .await?;
                Ok(Ok(u.grant))
            }
            None => {
                let message = format!(
                    "enforcer: sql:{class} on {} denied: the grant that allowed this prepared statement has ended (expired, used up or revoked)",
                    self.resource.name
                );
                self.record(
                    stmt,
                    "deny",
                    Vec::new(),
                    None,
                    None,
                    Some("grant ended".into()),
                )
                .await?;
                Ok(Err(message))
            }
        }
    }

    async fn decide(
        &self,
        stmt: &Classified,
        consume: bool,
        record_allow: bool,
    ) -> Result<Verdict, PgError> {
        let class = stmt.class.as_str();
        let action = stmt.class.action();
        let context = |grant: &str| {
            serde_json::json!({
                "tables": stmt.tables.iter().collect::<Vec<_>>(),
                "statement": truncate(&stmt.text, RECORDED_TEXT),
                "grant": grant,
            })
        };
        let outcome = decision::decide(self.ctx, self.resource, action, class, context, consume)
            .await
            .map_err(|e| PgError::Upstream(e.to_string()))?;
        if !outcome.allowed {
            let because = stmt
                .because
                .as_ref()
                .map_or(String::new(), |b| format!(" (it {b})"));
            let hint = outcome.grant_hint(&self.resource.name, class);
            let message = format!(
                "enforcer: sql:{class}{because} on {} denied: {}{hint}",
                self.resource.name, outcome.why
            );
            self.record(
                stmt,
                "deny",
                outcome.policies.clone(),
                None,
                None,
                Some(outcome.why),
            )
            .await?;
            return Ok(Verdict::Deny(message));
        }
        let mut approval_id = None;
        if outcome.approval_required {
            match self.hold(stmt, action, &outcome.policies).await? {
                Ok(id) => approval_id = Some(id),
                Err((id, why)) => {
                    let message = decision::held_denial(
                        action,
                        &self.resource.name,
                        &why,
                        &outcome.policies,
                        &id,
                    );
                    self.record(
                        stmt,
                        "deny",
                        outcome.policies.clone(),
                        outcome.grant,
                        Some(id),
                        Some(why),
                    )
                    .await?;
                    return Ok(Verdict::Deny(message));
                }
            }
        }
        if record_allow || approval_id.is_some() {
            self.record(
                stmt,
                "allow",
                outcome.policies.clone(),
                outcome.grant.clone(),
                approval_id,
                None,
            )
            .await?;
        }
        Ok(Verdict::Allow {
            grant_based: outcome.grant_based,
            policies: outcome.policies,
        })
    }

    /// Holds the statement until an operator decides; tells the client why it waits.
    /// `Ok(approval)` when approved, `Err((approval, why))` otherwise.
    async fn hold(
        &self,
        stmt: &Classified,
        action: &str,
        policies: &[String],
    ) -> Result<Result<String, (String, String)>, PgError> {
        let row = match decision::hold(
            self.ctx,
            self.resource,
            self.conn.id,
            format!(
                "{action} on {}: {}",
                self.resource.name,
                truncate(&stmt.text, 300)
            ),
        )
        .await
        {
            Ok(row) => row,
            Err(e) => return Ok(Err((String::new(), e.to_string()))),
        };
        let mut notice = BytesMut::new();
        let held: NoticeResponse = ErrorInfo::new(
            "NOTICE".into(),
            "00000".into(),
            format!(
                "enforcer: {action} on {} is held for approval {} ({}); it runs once an operator approves it (enforcer approvals approve {})",
                self.resource.name,
                row.id,
                policies.join(", "),
                row.id
            ),
        )
        .into();
        held.encode(&mut notice)?;
        self.writer.lock().await.write_all(&notice).await?;
        Ok(
            match decision::wait(self.ctx, &row.id)
                .await
                .map_err(|e| PgError::Upstream(e.to_string()))?
            {
                Ok(()) => Ok(row.id),
                Err(why) => Err((row.id, why)),
            },
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_text(
        &self,
        action: &'static str,
        text: &str,
        decision: &'static str,
        policies: Vec<String>,
        grant: Option<String>,
        approval: Option<String>,
        reason: Option<String>,
    ) -> Result<(), PgError> {
        let mut event = self.decided(action, text, decision);
        event.policies = policies;
        event.grant = grant;
        event.approval = approval;
        event.reason = reason;
        self.emit(event).await
    }

    async fn record(
        &self,
        stmt: &Classified,
        decision: &'static str,
        policies: Vec<String>,
        grant: Option<String>,
        approval: Option<String>,
        reason: Option<String>,
    ) -> Result<(), PgError> {
        let mut event = self.decided(stmt.class.action(), &stmt.text, decision);
        event.tables = stmt.tables.iter().cloned().collect();
        event.policies = policies;
        event.grant = grant;
        event.approval = approval;
        event.reason = reason;
        self.emit(event).await
    }

    fn decided(
        &self,
        action: &'static str,
        text: &str,
        decision: &'static str,
    ) -> StatementDecided {
        self.statements.decided(
            self.conn.id,
            Cow::Borrowed(action),
            truncate(text, RECORDED_TEXT),
            decision,
        )
    }

    async fn emit(&self, event: StatementDecided) -> Result<(), PgError> {
        self.statements.count(&event.action, &event.decision);
        // The statement goes on only once its record is in the audit file.
        self.ctx
            .recorder
            .record_written(Event::Statement(event))
            .await
            .map_err(|_| PgError::Recorder)
    }

    async fn server_to_client<R>(&self, reader: &mut FrameReader<R>) -> Result<(), PgError>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        let bctx = DecodeContext::new(ProtocolVersion::PROTOCOL3_0);
        // Replies the server sent together go to the client together (one write).
        let mut out = BytesMut::new();
        loop {
            if !out.is_empty() && !reader.has_message() {
                self.writer.lock().await.write_all(&out).await?;
                out.clear();
            }
            let Some(frame) = reader.message(MAX_BACKEND).await? else {
                if !out.is_empty() {
                    self.writer.lock().await.write_all(&out).await?;
                }
                return Ok(());
            };
            let tag = frame[0];
            let described = if tag == b'T' {
                // A catalog lookup may wait on the network: what is ready goes out first.
                if !out.is_empty() && self.resource.masking.has_column_rules() {
                    self.writer.lock().await.write_all(&out).await?;
                    out.clear();
                }
                Some(self.row_columns(&frame, &bctx).await?)
            } else {
                None
            };
            let done = self.statement_done(&frame, tag, &bctx);
            let forward = self.on_server_message(frame, &bctx, described)?;
            if let Some(bytes) = forward {
                out.extend_from_slice(&bytes);
            }
            if let Some(done) = done {
                self.statements.upstream_took(done.duration_us);
                self.ctx
                    .recorder
                    .record_soon(Event::StatementDone(done))
                    .map_err(|_| PgError::Recorder)?;
            }
        }
    }

    /// Counts rows and, when a statement's reply ends, says how it ended (before
    /// [`Self::on_server_message`] moves the expectations on).
    fn statement_done(
        &self,
        frame: &BytesMut,
        tag: u8,
        bctx: &DecodeContext,
    ) -> Option<StatementDone> {
        let mut shared = lock(self.shared);
        let running = matches!(
            shared.expect.front(),
            Some(Expect::Query { .. } | Expect::Execute { .. })
        );
        match tag {
            b'D' => {
                shared.rows += 1;
                None
            }
            b'C' | b'I' | b's' | b'E' if running => {
                let now = std::time::Instant::now();
                let since = shared.running_since.unwrap_or(now);
                let rows = std::mem::take(&mut shared.rows);
                shared.running_since = Some(now);
                let (text_tag, error) = if tag == b'E' {
                    let message = decode(frame.clone(), |b| PgWireBackendMessage::decode(b, bctx))
                        .ok()
                        .and_then(|m| match m {
                            PgWireBackendMessage::ErrorResponse(e) => e
                                .fields
                                .into_iter()
                                .find(|(k, _)| *k == b'M')
                                .map(|(_, v)| v),
                            _ => None,
                        })
                        .unwrap_or_else(|| "error".into());
                    (String::new(), Some(message))
                } else if tag == b'C' {
                    let text = body(frame)
                        .split(|&b| b == 0)
                        .next()
                        .map(|t| String::from_utf8_lossy(t).into_owned())
                        .unwrap_or_default();
                    (text, None)
                } else {
                    (String::new(), None)
                };
                let rows_affected = text_tag
                    .rsplit(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|_| !text_tag.starts_with("SELECT"));
                Some(StatementDone {
                    connection: self.conn.id,
                    resource: Arc::clone(&self.statements.resource),
                    tag: text_tag,
                    rows_returned: rows,
                    rows_affected,
                    duration_us: now.duration_since(since).as_micros() as u64,
                    error,
                    bytes: None,
                    request: None,
                })
            }
            b'Z' => {
                // Pipelined statements already sent start being timed now.
                let more = shared
                    .expect
                    .iter()
                    .skip(1)
                    .any(|e| matches!(e, Expect::Query { .. } | Expect::Execute { .. }));
                shared.running_since = more.then(std::time::Instant::now);
                shared.rows = 0;
                None
            }
            _ => None,
        }
    }

    /// What to pass on to the client for one server message (`None`: nothing).
    fn on_server_message(
        &self,
        frame: BytesMut,
        bctx: &DecodeContext,
        described: Option<Vec<Column>>,
    ) -> Result<Option<BytesMut>, PgError> {
        let mut shared = lock(self.shared);
        let tag = frame[0];
        Ok(match tag {
            b'1' => match shared.expect.pop_front() {
                Some(Expect::Parse { swallow: true }) => None,
                _ => Some(frame),
            },
            b'2' => match shared.expect.pop_front() {
                Some(Expect::Bind {
                    portal,
                    statement,
                    formats,
                    swallow,
                }) => {
                    let described = shared.statements.get(&statement).cloned();
                    if let Some(described) = described {
                        let columns = with_formats(described, &formats);
                        shared.portals.insert(portal, columns);
                    } else {
                        shared.portals.remove(&portal);
                    }
                    (!swallow).then_some(frame)
                }
                _ => Some(frame),
            },
            b'3' => {
                shared.expect.pop_front();
                Some(frame)
            }
            b'T' => {
                let columns = described.unwrap_or_default();
                match shared.expect.front() {
                    Some(Expect::DescribeStatement { statement }) => {
                        let statement = statement.clone();
                        shared.statements.insert(statement, columns);
                        shared.expect.pop_front();
                    }
                    Some(Expect::DescribePortal { portal }) => {
                        let portal = portal.clone();
                        shared.portals.insert(portal, columns);
                        shared.expect.pop_front();
                    }
                    _ => shared.query_columns = Some(columns),
                }
                Some(frame)
            }
            b'H' => {
                // COPY … TO STDOUT begins: only as the session decided it, in text.
                let plan = match shared.expect.front_mut() {
                    Some(Expect::Query { copies }) => copies.pop_front(),
                    Some(Expect::Execute { copy, .. }) => copy.take(),
                    _ => None,
                };
                let Some(plan) = plan else {
                    return Err(PgError::Upstream(
                        "COPY output the session did not decide".into(),
                    ));
                };
                if body(&frame).first() != Some(&0) {
                    return Err(PgError::Upstream(
                        "COPY output in binary format cannot be masked".into(),
                    ));
                }
                shared.copy_active = Some((CopyMasker::new(plan.format), plan.columns));
                Some(frame)
            }
            b'd' | b'c' => {
                let Some((mut masker, columns)) = shared.copy_active.take() else {
                    return Ok(Some(frame));
                };
                drop(shared);
                let mut fired = Fired::default();
                let mut masking = Masking::default();
                let mut mask = |i: usize, text: &str| match self.mask_value(
                    columns.get(i),
                    text.as_bytes(),
                    &mut fired,
                    &mut masking,
                ) {
                    Fate::Unchanged => None,
                    Fate::Null => Some(None),
                    Fate::Replaced => {
                        Some(Some(String::from_utf8_lossy(&masking.value).into_owned()))
                    }
                };
                let mut out = BytesMut::new();
                let data = if tag == b'd' {
                    masker.feed(body(&frame), &mut mask)
                } else {
                    masker.finish(&mut mask)
                };
                fired.count(self.ctx.metrics);
                if !data.is_empty() {
                    out.put_u8(b'd');
                    out.put_i32(4 + data.len() as i32);
                    out.put_slice(&data);
                }
                if tag == b'c' {
                    out.extend_from_slice(&frame);
                } else {
                    lock(self.shared).copy_active = Some((masker, columns));
                }
                (!out.is_empty()).then_some(out)
            }
            b'n' => {
                match shared.expect.front() {
                    Some(Expect::DescribeStatement { statement }) => {
                        let statement = statement.clone();
                        shared.statements.insert(statement, Vec::new());
                        shared.expect.pop_front();
                    }
                    Some(Expect::DescribePortal { portal }) => {
                        let portal = portal.clone();
                        shared.portals.insert(portal, Vec::new());
                        shared.expect.pop_front();
                    }
                    _ => {}
                }
                Some(frame)
            }
            b'D' => {
                // Masked under the lock (nothing here waits): the columns are borrowed, not
                // copied, and the counts go straight into the session's tally.
                let shared = &mut *shared;
                let columns = match shared.expect.front() {
                    Some(Expect::Execute { portal, .. }) => shared.portals.get(portal),
                    _ => shared.query_columns.as_ref(),
                };
                Some(self.mask_row(
                    frame,
                    columns.map(Vec::as_slice),
                    &mut shared.masked,
                    &mut shared.masking,
                )?)
            }
            b'C' | b'I' | b's' => {
                if matches!(shared.expect.front(), Some(Expect::Execute { .. })) {
                    shared.expect.pop_front();
                } else {
                    shared.query_columns = None;
                }
                Some(frame)
            }
            b'E' => {
                shared.copy_active = None;
                if !matches!(shared.expect.front(), Some(Expect::Query { .. }) | None) {
                    // Extended protocol: the server skips everything up to the Sync.
                    while !matches!(shared.expect.front(), Some(Expect::Sync) | None) {
                        shared.expect.pop_front();
                    }
                }
                Some(own_error_without_context(frame, bctx)?)
            }
            b'Z' => {
                shared.masked.count(self.ctx.metrics);
                shared.expect.pop_front();
                shared.query_columns = None;
                shared.copy_active = None;
                Some(frame)
            }
            _ => Some(frame),
        })
    }

    /// Masks one DataRow per the resource's profile. A value that cannot be masked safely in
    /// its type becomes NULL, which every type admits.
    fn mask_row(
        &self,
        frame: BytesMut,
        columns: Option<&[Column]>,
        fired: &mut Fired,
        masking: &mut Masking,
    ) -> Result<BytesMut, PgError> {
        let ruled = columns.is_some_and(|c| c.iter().any(|c| c.ruled));
        if !ruled && self.resource.masking.detectors.is_empty() {
            // Nothing could be masked: the row passes as the server sent it (the frame
            // reader has already checked its length).
            return Ok(frame);
        }
        let malformed = || PgError::Upstream("malformed DataRow from the server".into());
        let mut values = DataRowValues::new(body(&frame)).ok_or_else(malformed)?;
        // Written only once a value changes: most rows of most results pass untouched, and
        // the values before the first change are copied as they came.
        let mut rewriting = false;
        for (i, item) in values.by_ref().enumerate() {
            let (at, value) = item.ok_or_else(malformed)?;
            let fate = match value {
                Some(v) => self.mask_value(columns.and_then(|c| c.get(i)), v, fired, masking),
                None => Fate::Unchanged,
            };
            if fate != Fate::Unchanged && !rewriting {
                // The frame is the tag, the length word, then the body. The row buffer is
                // split off below and dropped once sent, so its allocation comes back here.
                masking.row.reserve(frame.len() + 64);
                masking.row.extend_from_slice(&frame[..5 + at]);
                rewriting = true;
            }
            if rewriting {
                let out = &mut masking.row;
                match fate {
                    Fate::Unchanged => put_value(out, value),
                    Fate::Null => put_value(out, None),
                    Fate::Replaced => put_value(out, Some(&masking.value)),
                }
            }
        }
        if !values.is_complete() {
            masking.row.clear();
            return Err(malformed());
        }
        if !rewriting {
            return Ok(frame);
        }
        let mut row = masking.row.split();
        let len = (row.len() - 1) as i32;
        row[1..5].copy_from_slice(&len.to_be_bytes());
        Ok(row)
    }
}

fn put_value(out: &mut BytesMut, value: Option<&[u8]>) {
    match value {
        Some(bytes) => {
            out.put_i32(bytes.len() as i32);
            out.put_slice(bytes);
        }
        None => out.put_i32(-1),
    }
}

/// What masking does to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Unchanged,
    Null,
    /// Replaced by `Masking::value`.
    Replaced,
}

/// Buffers reused from value to value and row to row: masking a result allocates nothing
/// per value once they have grown.
#[derive(Debug, Default)]
struct Masking {
    /// A masked value: UTF-8 text.
    value: Vec<u8>,
    scratch: crate::mask::Scratch,
    row: BytesMut,
}

/// Masked values by what masked them, counted into the metrics in bulk rather than once per
/// value (a labelled counter costs a lookup).
#[derive(Debug, Default)]
struct Fired(Vec<(&'static str, u64)>);

impl Fired {
    fn add_n(&mut self, what: &'static str, n: u64) {
        match self.0.iter_mut().find(|(w, _)| *w == what) {
            Some((_, count)) => *count += n,
            None => self.0.push((what, n)),
        }
    }

    fn add(&mut self, what: &'static str) {
        self.add_n(what, 1);
    }

    /// Counts into the metrics and starts again.
    fn count(&mut self, metrics: &crate::metrics::Metrics) {
        for (what, n) in self.0.drain(..) {
            metrics.masked_n(what, n);
        }
    }
}

impl<W> Session<'_, W> {
    /// One value's fate; a replacement is left in `masking.value`.
    fn mask_value(
        &self,
        column: Option<&Column>,
        value: &[u8],
        fired: &mut Fired,
        masking: &mut Masking,
    ) -> Fate {
        let profile = &self.resource.masking;
        let textual = column.is_none_or(|c| !c.binary || is_text_type(c.type_oid));
        let text_type = column.is_none_or(|c| is_text_type(c.type_oid));
        if let Some(c) = column.filter(|c| c.ruled) {
            fired.add("column");
            return match std::str::from_utf8(value) {
                Ok(text) if textual && text_type => {
                    profile.mask_value_into(text, &c.name, &mut masking.value);
                    Fate::Replaced
                }
                _ => Fate::Null,
            };
        }
        let detect = !profile.detectors.is_empty()
            && textual
            && column.is_none_or(|c| may_hold_text(c.type_oid));
        if !detect {
            return Fate::Unchanged;
        }
        let detected = profile.scan_into(value, &mut masking.value, &mut masking.scratch);
        if detected.is_empty() {
            return Fate::Unchanged;
        }
        for detector in detected.names() {
            fired.add(detector);
        }
        if text_type {
            Fate::Replaced
        } else {
            Fate::Null
        }
    }
}

/// enforcer's denials are raised by the server from an anonymous code block; the client
/// needs the message, not the server's note of where it was raised.
fn own_error_without_context(frame: BytesMut, bctx: &DecodeContext) -> Result<BytesMut, PgError> {
    let PgWireBackendMessage::ErrorResponse(mut error) =
        decode(frame.clone(), |b| PgWireBackendMessage::decode(b, bctx))?
    else {
        return Ok(frame);
    };
    let ours = error.fields.iter().any(|(k, v)| *k == b'C' && v == "42501")
        && error
            .fields
            .iter()
            .any(|(k, v)| *k == b'M' && v.starts_with("enforcer: "));
    if !ours {
        return Ok(frame);
    }
    error.fields.retain(|(k, _)| *k != b'W');
    let mut out = BytesMut::new();
    error.encode(&mut out)?;
    Ok(out)
}

/// Types whose values are text in both formats (binary text is the UTF-8 bytes).
fn is_text_type(oid: u32) -> bool {
    // text, varchar, bpchar, name, unknown, json, xml, citext-less defaults
    matches!(oid, 25 | 1043 | 1042 | 19 | 705 | 114 | 142)
}

/// Whether content detectors read values of this type. Numbers, times, addresses and the
/// like are left to column rules: their digit runs look like phone or card numbers (a
/// timestamp, a 10-digit id) and masking them would corrupt ordinary results. A type not
/// known here (citext, enums, domains: their OIDs vary per database) is read.
fn may_hold_text(oid: u32) -> bool {
    !matches!(
        oid,
        16 // bool
        | 20 | 21 | 23 | 700 | 701 | 1700 | 790 // integers, floats, numeric, money
        | 24 | 26 | 27 | 28 | 29 | 2202..=2206 | 4089 | 4096 | 5069 // reg*, oid, tid, xid, cid
        | 1082 | 1083 | 1114 | 1184 | 1186 | 1266 // date and time
        | 650 | 869 | 774 | 829 // cidr, inet, macaddr8, macaddr
        | 600..=604 | 628 | 718 // geometry
        | 1560 | 1562 | 2950 | 3220 // bit, varbit, uuid, pg_lsn
        | 1005 | 1007 | 1016 | 1021 | 1022 | 1231 | 2951 // arrays of numbers and uuids
        | 1115 | 1182 | 1183 | 1185 | 1187 | 1270 // arrays of dates and times
    )
}

/// A statement's columns with the result formats a Bind asked for.
fn with_formats(mut columns: Vec<Column>, formats: &[i16]) -> Vec<Column> {
    for (i, c) in columns.iter_mut().enumerate() {
        let format = match formats {
            [] => 0,
            [one] => *one,
            all => all.get(i).copied().unwrap_or(0),
        };
        c.binary = format == 1;
    }
    columns
}

/// A statement that makes the server raise enforcer's denial (SQLSTATE 42501), so the
/// server's own transaction handling applies. The message is a string literal inside a
/// dollar-quoted body with a random tag: it cannot end either early.
fn raise(message: &str) -> String {
    let tag = format!("enforcer_{}", hex::encode(rand::random::<[u8; 6]>()));
    let literal = message.replace('\'', "''").replace(&tag, "");
    format!(
        "DO ${tag}$ BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = '{literal}'; END ${tag}$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denial_messages_cannot_escape_their_literal() {
        let sql = raise("it's $$ END $$; DROP TABLE x; --");
        // The body is quoted by a random dollar tag that appears exactly twice, and the
        // message is one single-quoted literal with its quotes doubled.
        let tag = sql.split('$').nth(1).expect("a dollar tag").to_owned();
        assert!(tag.starts_with("enforcer_"), "{sql}");
        assert_eq!(sql.matches(&format!("${tag}$")).count(), 2, "{sql}");
        assert!(
            sql.contains("MESSAGE = 'it''s $$ END $$; DROP TABLE x; --'; END"),
            "{sql}"
        );
    }
}
