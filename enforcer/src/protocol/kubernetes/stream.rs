//! Streams into containers (exec, attach, port-forward) once a request for one is allowed.
//!
//! Clients open them as WebSocket connections (kubectl since 1.30, client-go, the `kube`
//! crate) speaking one of the Kubernetes channel subprotocols: every message starts with a
//! channel byte (stdin, stdout, stderr, error, resize; for port-forward a data and an error
//! channel per port). enforcer terminates the WebSocket on both sides — the client's, and its
//! own toward the API server — so that it sees whole messages: each is recorded (channel,
//! size, content with the resource's detectors applied) before it is passed on, and if it
//! cannot be recorded the stream is cut. SPDY, the older transport, multiplexes its streams
//! with compressed headers enforcer does not read; it is refused, and kubectl then has no
//! reason to fall back to it because the WebSocket succeeds.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper::{
    header::{self, HeaderMap},
    upgrade::Upgraded,
};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::Role},
};

use crate::{
    policy::Resource,
    record::{Event, Recorder, StreamFrame},
};

/// Content kept per message in the record; its full size is recorded regardless.
const RECORDED_CONTENT: usize = 16 << 10;
/// How long the second direction may go on once the first has ended (the close handshake,
/// the last status message).
const CLOSING_GRACE: Duration = Duration::from_secs(5);

/// What a request asks to switch its connection to.
#[derive(Debug, PartialEq, Eq)]
pub enum Upgrade {
    WebSocket,
    /// Any other protocol (SPDY/3.1 for kubectl's fallback), named as the client did.
    Other(String),
}

pub fn upgrade_of(headers: &HeaderMap) -> Option<Upgrade> {
    let asked = headers
        .get(header::UPGRADE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    let connection_upgrade = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("upgrade"))
    });
    match asked {
        Some(p) if p.eq_ignore_ascii_case("websocket") => Some(Upgrade::WebSocket),
        Some(p) => Some(Upgrade::Other(p)),
        None if connection_upgrade => Some(Upgrade::Other(String::new())),
        None => None,
    }
}

/// How the messages of a subprotocol map onto channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `vN.channel.k8s.io`: binary messages, the first byte the channel.
    Channels,
    /// `vN.base64.channel.k8s.io`: text messages, an ASCII digit then base64.
    Base64Channels,
    /// Anything else: recorded whole.
    Opaque,
}

impl Framing {
    fn of(subprotocol: &str) -> Framing {
        if subprotocol.ends_with("base64.channel.k8s.io") {
            Framing::Base64Channels
        } else if subprotocol.ends_with("channel.k8s.io") {
            Framing::Channels
        } else {
            Framing::Opaque
        }
    }
}

/// Names channel `n` the way the Kubernetes stream protocols number them.
fn channel_name(n: u8, port_forward: bool) -> String {
    if port_forward {
        let kind = if n.is_multiple_of(2) { "data" } else { "error" };
        return format!("port #{} {kind}", n / 2);
    }
    match n {
        0 => "stdin".into(),
        1 => "stdout".into(),
        2 => "stderr".into(),
        3 => "error".into(),
        4 => "resize".into(),
        255 => "close".into(),
        n => format!("channel {n}"),
    }
}

/// The channel and content of one data message, as recorded.
fn split(message: &Message, framing: Framing, port_forward: bool) -> Option<(String, Vec<u8>)> {
    let payload: &[u8] = match message {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_bytes(),
        _ => return None,
    };
    match framing {
        Framing::Opaque => Some(("data".into(), payload.to_vec())),
        Framing::Channels => {
            let (&n, rest) = payload.split_first()?;
            if n == 255 {
                // v5's "close": the next byte names the channel the sender is done with.
                let closed = rest
                    .first()
                    .map_or_else(String::new, |&c| channel_name(c, port_forward));
                return Some(("close".into(), closed.into_bytes()));
            }
            Some((channel_name(n, port_forward), rest.to_vec()))
        }
        Framing::Base64Channels => {
            let (&digit, rest) = payload.split_first()?;
            let n = digit.checked_sub(b'0').filter(|n| *n < 10)?;
            let content = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .unwrap_or_else(|_| rest.to_vec());
            Some((channel_name(n, port_forward), content))
        }
    }
}

/// Where one stream goes, for its records.
pub struct StreamRecord<'a> {
    pub recorder: &'a Recorder,
    pub connection: u64,
    pub resource: &'a Resource,
    pub subprotocol: String,
    pub port_forward: bool,
}

impl StreamRecord<'_> {
    fn frame(&self, direction: &str, channel: String, content: &[u8]) -> Event {
        let truncated = content.len() > RECORDED_CONTENT;
        let kept = &content[..content.len().min(RECORDED_CONTENT)];
        let (text, base64) = match std::str::from_utf8(kept) {
            Ok(t) => (Some(self.resource.masking.scan(t).0.into_owned()), None),
            Err(_) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(kept)),
            ),
        };
        Event::StreamFrame(StreamFrame {
            connection: self.connection,
            resource: self.resource.name.clone(),
            direction: direction.to_owned(),
            channel,
            bytes: content.len() as u64,
            text,
            base64,
            truncated,
        })
    }
}

/// Bytes carried each way, and why the stream ended if not by a close.
#[derive(Debug, Default)]
pub struct StreamSummary {
    pub to_container: u64,
    pub from_container: u64,
    pub error: Option<String>,
}

/// Relays one WebSocket stream between the client and the API server until both ends close,
/// recording every data message on its way.
pub async fn relay(
    client: Upgraded,
    upstream: Upgraded,
    record: &StreamRecord<'_>,
) -> StreamSummary {
    let client = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
    let upstream =
        WebSocketStream::from_raw_socket(TokioIo::new(upstream), Role::Client, None).await;
    let framing = Framing::of(&record.subprotocol);
    let (client_tx, client_rx) = client.split();
    let (upstream_tx, upstream_rx) = upstream.split();
    let inbound = pump(client_rx, upstream_tx, "to_container", framing, record);
    let outbound = pump(upstream_rx, client_tx, "from_container", framing, record);
    tokio::pin!(inbound, outbound);
    let (to_container, from_container) = tokio::select! {
        sent = &mut inbound => {
            let received = tokio::time::timeout(CLOSING_GRACE, outbound).await;
            (sent, received.unwrap_or(Ok(0)))
        }
        received = &mut outbound => {
            let sent = tokio::time::timeout(CLOSING_GRACE, inbound).await;
            (sent.unwrap_or(Ok(0)), received)
        }
    };
    let error = [&to_container, &from_container]
        .iter()
        .find_map(|r| r.as_ref().err().cloned());
    StreamSummary {
        to_container: to_container.unwrap_or(0),
        from_container: from_container.unwrap_or(0),
        error,
    }
}

/// One direction: each data message recorded, then forwarded; control messages handled by
/// each side's own WebSocket (pings answered where they arrive), a close passed on.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    direction: &str,
    framing: Framing,
    record: &StreamRecord<'_>,
) -> Result<u64, String>
where
    R: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
    W: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let mut bytes = 0u64;
    while let Some(message) = from.next().await {
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                let _ = to.close().await;
                return Err(format!("{direction}: {e}"));
            }
        };
        match &message {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            Message::Close(_) => {
                let _ = to.send(message).await;
                return Ok(bytes);
            }
            Message::Text(_) | Message::Binary(_) => {}
        }
        let (channel, content) = split(&message, framing, record.port_forward)
            .unwrap_or_else(|| ("malformed".into(), Vec::new()));
        bytes += content.len() as u64;
        if record
            .recorder
            .record_written(record.frame(direction, channel, &content))
            .await
            .is_err()
        {
            let _ = to.close().await;
            return Err("the audit log cannot be written: the stream is cut".into());
        }
        if let Err(e) = to.send(message).await {
            return Err(format!("{direction}: {e}"));
        }
    }
    let _ = to.close().await;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_named_by_subprotocol() {
        let binary = |b: &[u8]| Message::Binary(bytes::Bytes::copy_from_slice(b));
        assert_eq!(
            split(&binary(b"\x00ls\n"), Framing::Channels, false),
            Some(("stdin".into(), b"ls\n".to_vec()))
        );
        assert_eq!(
            split(&binary(b"\xff\x00"), Framing::Channels, false),
            Some(("close".into(), b"stdin".to_vec()))
        );
        assert_eq!(
            split(&binary(b"\x03{}"), Framing::Channels, true),
            Some(("port #1 error".into(), b"{}".to_vec()))
        );
        assert_eq!(split(&binary(b""), Framing::Channels, false), None);
        assert_eq!(
            split(&Message::text("1aGk="), Framing::Base64Channels, false),
            Some(("stdout".into(), b"hi".to_vec()))
        );
        assert_eq!(
            split(&Message::text("x"), Framing::Base64Channels, false),
            None
        );
        assert_eq!(Framing::of("v5.channel.k8s.io"), Framing::Channels);
        assert_eq!(
            Framing::of("v4.base64.channel.k8s.io"),
            Framing::Base64Channels
        );
        assert_eq!(Framing::of("SPDY/3.1+portforward.k8s.io"), Framing::Opaque);
    }

    #[test]
    fn upgrades_are_told_apart() {
        let mut h = HeaderMap::new();
        assert_eq!(upgrade_of(&h), None);
        h.insert(header::CONNECTION, "Upgrade".parse().expect("value"));
        h.insert(header::UPGRADE, "SPDY/3.1".parse().expect("value"));
        assert_eq!(upgrade_of(&h), Some(Upgrade::Other("SPDY/3.1".into())));
        h.insert(header::UPGRADE, "websocket".parse().expect("value"));
        assert_eq!(upgrade_of(&h), Some(Upgrade::WebSocket));
    }
}
