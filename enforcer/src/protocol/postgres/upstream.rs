//! The upstream side: connect to the real server and authenticate with the injected
//! credential (SCRAM-SHA-256, md5 or cleartext, whichever the server asks for).

use bytes::{Bytes, BytesMut};
use pgwire::messages::{
    DecodeContext, Message, PgWireBackendMessage, ProtocolVersion,
    startup::{Authentication, Password, SASLInitialResponse, SASLResponse, Startup},
};
use postgres_protocol::authentication::{
    md5_hash,
    sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256},
};
use std::net::SocketAddr;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
};

use super::{
    PgError,
    frame::{FrameReader, decode},
};
use crate::{
    policy::{Resource, UpstreamTls},
    proxy::connect_upstream,
    tls::MaybeTls,
};

pub type Upstream = MaybeTls<TcpStream>;

const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects to the real server, over verified TLS when the policy configures it.
pub async fn connect(tls: Option<&UpstreamTls>, addr: SocketAddr) -> Result<Upstream, PgError> {
    let mut tcp = connect_upstream(addr)
        .await
        .map_err(|e| PgError::Upstream(e.to_string()))?;
    let Some(tls) = tls else {
        return Ok(MaybeTls::Plain(tcp));
    };
    tcp.write_all(&SSL_REQUEST).await?;
    // Exactly one byte: anything the server sends before the handshake is not trusted.
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(PgError::Upstream(format!(
            "{addr} does not accept TLS, which the policy requires for it"
        )));
    }
    let name = crate::tls::server_name(tls.server_name.as_deref(), addr.ip())
        .map_err(|e| PgError::Upstream(e.to_string()))?;
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(&tls.config));
    let stream = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| PgError::Upstream(format!("TLS handshake with {addr} timed out")))?
        .map_err(|e| PgError::Upstream(format!("TLS with {addr}: {e}")))?;
    Ok(MaybeTls::Client(Box::new(stream)))
}

/// An authenticated connection to the real server, split; the server's ParameterStatus,
/// BackendKeyData and first ReadyForQuery are next on the reader.
pub async fn open(
    resource: &Resource,
    addr: SocketAddr,
    secret: &Secret,
    parameters: &[(String, String)],
) -> Result<(FrameReader<ReadHalf<Upstream>>, WriteHalf<Upstream>), PgError> {
    let up = connect(resource.upstream_tls.as_ref(), addr).await?;
    let (r, mut w) = tokio::io::split(up);
    let mut reader = FrameReader::new(r);
    authenticate(&mut reader, &mut w, secret, parameters).await?;
    Ok((reader, w))
}

/// Where a client's CancelRequest goes: the server backend enforcer opened for it.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub addr: SocketAddr,
    pub tls: Option<UpstreamTls>,
    pub pid: i32,
    pub key: i32,
}

/// Asks the server to cancel what the target backend is running.
pub async fn cancel(target: &CancelTarget) -> Result<(), PgError> {
    let mut up = connect(target.tls.as_ref(), target.addr).await?;
    let mut packet = Vec::with_capacity(16);
    packet.extend_from_slice(&16i32.to_be_bytes());
    packet.extend_from_slice(&80_877_102i32.to_be_bytes());
    packet.extend_from_slice(&target.pid.to_be_bytes());
    packet.extend_from_slice(&target.key.to_be_bytes());
    up.write_all(&packet).await?;
    up.flush().await?;
    // The server closes the connection once it has read the request.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), up.read(&mut sink)).await;
    Ok(())
}

/// Largest message accepted from the server (DataRow and friends may be large).
pub const MAX_BACKEND: usize = 1 << 30;

/// The real secret, read at use, never logged.
pub struct Secret {
    pub user: String,
    password: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {{ user: {:?}, password: … }}", self.user)
    }
}

impl Secret {
    pub fn for_resource(resource: &Resource, client_user: &str) -> Result<Secret, PgError> {
        let Some(cred) = &resource.credential else {
            return Err(PgError::Credential(format!(
                "resource {} has no credential source",
                resource.name
            )));
        };
        let password = cred
            .read_secret(&resource.name)
            .map_err(PgError::Credential)?;
        Ok(Secret {
            user: cred
                .username
                .clone()
                .unwrap_or_else(|| client_user.to_owned()),
            password,
        })
    }
}

fn backend_context() -> DecodeContext {
    DecodeContext::new(ProtocolVersion::PROTOCOL3_0)
}

/// Sends the startup message and completes authentication. Returns at AuthenticationOk; the
/// server's ParameterStatus/BackendKeyData/ReadyForQuery follow on `reader`.
pub async fn authenticate<R, W>(
    reader: &mut FrameReader<R>,
    writer: &mut W,
    secret: &Secret,
    parameters: &[(String, String)],
) -> Result<(), PgError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut startup = Startup::new();
    startup
        .parameters
        .insert("user".to_owned(), secret.user.clone());
    for (k, v) in parameters {
        startup.parameters.insert(k.clone(), v.clone());
    }
    let mut out = BytesMut::new();
    startup.encode(&mut out)?;
    writer.write_all(&out).await?;
    let ctx = backend_context();
    let mut scram: Option<ScramSha256> = None;
    loop {
        let Some(frame) = reader.message(MAX_BACKEND).await? else {
            return Err(PgError::Upstream(
                "the server closed the connection during authentication".into(),
            ));
        };
        if frame[0] == b'E' {
            let message = decode(frame, |b| PgWireBackendMessage::decode(b, &ctx))?;
            let text = match message {
                PgWireBackendMessage::ErrorResponse(e) => e
                    .fields
                    .iter()
                    .find(|(k, _)| *k == b'M')
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                _ => String::new(),
            };
            return Err(PgError::Auth(text));
        }
        if frame[0] != b'R' {
            return Err(PgError::Upstream(format!(
                "unexpected message {:?} during authentication",
                char::from(frame[0])
            )));
        }
        let PgWireBackendMessage::Authentication(auth) =
            decode(frame, |b| PgWireBackendMessage::decode(b, &ctx))?
        else {
            return Err(PgError::Upstream("malformed authentication request".into()));
        };
        let mut out = BytesMut::new();
        match auth {
            Authentication::Ok => return Ok(()),
            Authentication::SASL(mechanisms) => {
                if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                    return Err(PgError::Auth(format!(
                        "the server offers only {mechanisms:?}; enforcer speaks SCRAM-SHA-256"
                    )));
                }
                let client =
                    ScramSha256::new(secret.password.as_bytes(), ChannelBinding::unsupported());
                SASLInitialResponse::new(
                    SCRAM_SHA_256.to_owned(),
                    Some(Bytes::copy_from_slice(client.message())),
                )
                .encode(&mut out)?;
                scram = Some(client);
            }
            Authentication::SASLContinue(data) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| PgError::Upstream("SASL continue without SASL".into()))?;
                client
                    .update(&data)
                    .map_err(|e| PgError::Auth(e.to_string()))?;
                SASLResponse::new(Bytes::copy_from_slice(client.message())).encode(&mut out)?;
            }
            Authentication::SASLFinal(data) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| PgError::Upstream("SASL final without SASL".into()))?;
                // Fails unless the server proved it knows the password too.
                client.finish(&data).map_err(|e| {
                    PgError::Auth(format!("the server's SCRAM proof is wrong: {e}"))
                })?;
            }
            Authentication::MD5Password(salt) => {
                let salt: [u8; 4] = salt
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| PgError::Upstream("md5 salt is not 4 bytes".into()))?;
                Password::new(md5_hash(
                    secret.user.as_bytes(),
                    secret.password.as_bytes(),
                    salt,
                ))
                .encode(&mut out)?;
            }
            Authentication::CleartextPassword => {
                Password::new(secret.password.clone()).encode(&mut out)?;
            }
            _ => {
                return Err(PgError::Auth(
                    "the server asks for an authentication method enforcer does not speak".into(),
                ));
            }
        }
        if !out.is_empty() {
            writer.write_all(&out).await?;
        }
    }
}
