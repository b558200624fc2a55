//! Message framing, done here rather than by the codec library: every message is cut out by
//! its own length (bounded) before anything decodes it, so a lying length or a truncated body
//! from the workload can only ever fail that one message, never read into the next one.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::PgError;

/// What a read asks room for at first, and at most: a connection that reads full buffers
/// (a large result streaming in) doubles its room up to the most, so that a busy peer is read
/// in few syscalls (and written on in few), while an idle one keeps a small buffer.
const FIRST_ROOM: usize = 8 * 1024;
const MOST_ROOM: usize = 64 * 1024;

/// Startup-phase packets (no tag): SSLRequest, GSSENCRequest, CancelRequest, StartupMessage.
const MAX_STARTUP: usize = 10_000;

pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    /// Room the next read asks for (`FIRST_ROOM` to `MOST_ROOM`).
    room: usize,
    /// Bytes read from the peer, for the session's statistics.
    pub bytes: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(FIRST_ROOM),
            room: FIRST_ROOM,
            bytes: 0,
        }
    }

    /// Goes on reading `inner` after bytes already read from it.
    pub fn with_buffer(inner: R, buf: BytesMut) -> Self {
        FrameReader {
            inner,
            buf,
            room: FIRST_ROOM,
            bytes: 0,
        }
    }

    /// The stream and what was read from it but not yet taken.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Whether a whole tagged message is already read (so the next `message` will not wait).
    pub fn has_message(&self) -> bool {
        self.buf.len() >= 5
            && usize::try_from(i32::from_be_bytes([
                self.buf[1],
                self.buf[2],
                self.buf[3],
                self.buf[4],
            ]))
            .is_ok_and(|len| self.buf.len() > len)
    }

    /// Bytes read but not yet taken as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Fills the buffer to `n` bytes; `false` on a clean end of stream before any byte of a
    /// new packet.
    async fn fill(&mut self, n: usize) -> Result<bool, PgError> {
        while self.buf.len() < n {
            // Without this, a full buffer would be grown by `read_buf` 64 bytes at a time.
            if self.buf.capacity() - self.buf.len() < self.room / 4 {
                self.buf.reserve(self.room);
            }
            let spare = self.buf.capacity() - self.buf.len();
            let read = self.inner.read_buf(&mut self.buf).await?;
            if read == spare {
                self.room = (self.room * 2).min(MOST_ROOM);
            }
            if read == 0 {
                if self.buf.is_empty() {
                    return Ok(false);
                }
                return Err(PgError::Protocol(
                    "connection closed in the middle of a message".into(),
                ));
            }
            self.bytes += read as u64;
        }
        Ok(true)
    }

    /// One startup-phase packet, length prefix included.
    pub async fn startup(&mut self) -> Result<Option<BytesMut>, PgError> {
        if !self.fill(4).await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| (8..=MAX_STARTUP).contains(&l))
            .ok_or_else(|| PgError::Protocol(format!("startup packet length {len} is invalid")))?;
        self.fill(len).await?;
        Ok(Some(self.buf.split_to(len)))
    }

    /// One tagged message, tag and length included. `None` on a clean end of stream.
    pub async fn message(&mut self, max: usize) -> Result<Option<BytesMut>, PgError> {
        if !self.fill(5).await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l >= 4 && l <= max)
            .ok_or_else(|| {
                PgError::Protocol(format!(
                    "message {:?} has invalid length {len} (at most {max})",
                    char::from(self.buf[0])
                ))
            })?;
        self.fill(1 + len).await?;
        Ok(Some(self.buf.split_to(1 + len)))
    }
}

/// The body of a tagged frame.
pub fn body(frame: &BytesMut) -> &[u8] {
    frame.get(5..).unwrap_or(&[])
}

/// Decodes a frame with the codec library, turning any panic inside it (it trusts lengths
/// more than it should) into a protocol error.
pub fn decode<T>(
    frame: BytesMut,
    f: impl FnOnce(&mut BytesMut) -> pgwire::error::PgWireResult<Option<T>>,
) -> Result<T, PgError> {
    let mut frame = frame;
    let tag = frame.first().copied().unwrap_or(0);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut frame)));
    match result {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(PgError::Protocol(format!(
            "message {:?} is truncated",
            char::from(tag)
        ))),
        Ok(Err(e)) => Err(PgError::Protocol(format!(
            "message {:?} is malformed: {e}",
            char::from(tag)
        ))),
        Err(_) => Err(PgError::Protocol(format!(
            "message {:?} is malformed",
            char::from(tag)
        ))),
    }
}

/// A DataRow's values (`None` is SQL NULL), or `None` if the row is malformed.
pub fn data_row_values(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let mut values = DataRowValues::new(body)?;
    let collected = values
        .by_ref()
        .map(|v| v.map(|(_, value)| value))
        .collect::<Option<Vec<_>>>()?;
    values.is_complete().then_some(collected)
}

/// The values of a DataRow body one at a time, each with the offset (in the body) of its
/// length word, so that a rewriter can copy the unchanged values before it whole. An item
/// of `None` means the row is malformed (and is the last item).
pub struct DataRowValues<'a> {
    body: &'a [u8],
    at: usize,
    left: usize,
}

impl<'a> DataRowValues<'a> {
    pub fn new(body: &'a [u8]) -> Option<DataRowValues<'a>> {
        let count = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
        Some(DataRowValues {
            body,
            at: 2,
            left: usize::try_from(count).ok()?,
        })
    }

    /// Whether every value was read and nothing follows them.
    pub fn is_complete(&self) -> bool {
        self.left == 0 && self.at == self.body.len()
    }
}

impl<'a> Iterator for DataRowValues<'a> {
    type Item = Option<(usize, Option<&'a [u8]>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        let start = self.at;
        let value = self.read();
        self.left = if value.is_some() { self.left - 1 } else { 0 };
        Some(value.map(|v| (start, v)))
    }
}

impl<'a> DataRowValues<'a> {
    fn read(&mut self) -> Option<Option<&'a [u8]>> {
        let word = self.body.get(self.at..self.at.checked_add(4)?)?;
        let n = i32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        self.at += 4;
        if n < 0 {
            return Some(None);
        }
        let end = self.at.checked_add(usize::try_from(n).ok()?)?;
        let value = self.body.get(self.at..end)?;
        self.at = end;
        Some(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lengths_are_bounded_and_frames_cut_exactly() {
        let mut wire: &[u8] = b"Q\x00\x00\x00\x09abcd\x00S\x00\x00\x00\x04";
        let mut r = FrameReader::new(&mut wire);
        let q = r.message(1 << 20).await.expect("ok").expect("frame");
        assert_eq!(&q[..], b"Q\x00\x00\x00\x09abcd\x00");
        let s = r.message(1 << 20).await.expect("ok").expect("frame");
        assert_eq!(&s[..], b"S\x00\x00\x00\x04");
        assert!(r.message(1 << 20).await.expect("ok").is_none());
        for bad in [
            &b"Q\x00\x00\x00\x03"[..],
            b"Q\xff\xff\xff\xff",
            b"Q\x7f\x00\x00\x00",
        ] {
            let mut wire = bad;
            assert!(FrameReader::new(&mut wire).message(1 << 20).await.is_err());
        }
        let mut cut: &[u8] = b"Q\x00\x00\x00\x09ab";
        assert!(FrameReader::new(&mut cut).message(1 << 20).await.is_err());
    }

    #[tokio::test]
    async fn a_streaming_peer_is_read_in_larger_pieces_an_idle_one_is_not() {
        // 5,000 DataRow-sized messages, streamed: every one comes out whole, in order, and
        // the reader's room grows to the most; two small messages leave it as it was.
        let mut wire = Vec::new();
        for i in 0..5_000u32 {
            wire.push(b'D');
            wire.extend_from_slice(&(4 + 60u32).to_be_bytes());
            wire.extend((0..60).map(|j| (i as u8).wrapping_add(j)));
        }
        let mut stream: &[u8] = &wire;
        let mut r = FrameReader::new(&mut stream);
        for i in 0..5_000u32 {
            let m = r.message(1 << 20).await.expect("ok").expect("frame");
            assert_eq!(m.len(), 65);
            assert_eq!(m[5], i as u8);
        }
        assert!(r.message(1 << 20).await.expect("ok").is_none());
        assert_eq!(r.room, MOST_ROOM);
        assert_eq!(r.bytes, wire.len() as u64);
        let mut small: &[u8] = b"Q\x00\x00\x00\x09abcd\x00S\x00\x00\x00\x04";
        let mut r = FrameReader::new(&mut small);
        while r.message(1 << 20).await.expect("ok").is_some() {}
        assert_eq!(r.room, FIRST_ROOM);
    }

    #[test]
    fn data_rows_parse_or_are_refused() {
        let row = b"\x00\x02\x00\x00\x00\x02hi\xff\xff\xff\xff";
        assert_eq!(data_row_values(row), Some(vec![Some(&b"hi"[..]), None]));
        assert_eq!(data_row_values(b"\x00\x01\x00\x00\x00\x09hi"), None);
        assert_eq!(data_row_values(b"\x00\x01\x00\x00\x00\x02hiX"), None);
    }

    /// A peer whose bytes arrive in pieces of the given sizes (cycled), as a socket's do.
    struct Pieces {
        data: Vec<u8>,
        sizes: Vec<usize>,
        at: usize,
        turn: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let size = self.sizes[self.turn % self.sizes.len()];
            self.turn += 1;
            let n = size.min(buf.remaining()).min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    proptest::proptest! {
        /// Messages come out whole and in order however their bytes are cut in arrival, and
        /// whatever room the reader has grown to.
        #[test]
        fn frames_survive_any_arrival_pieces(
            bodies in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 1..60),
            sizes in proptest::collection::vec(1usize..20_000, 1..8),
        ) {
            let mut data = Vec::new();
            for body in &bodies {
                data.push(b'D');
                data.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
                data.extend_from_slice(body);
            }
            let total = data.len() as u64;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let got = runtime.block_on(async {
                let mut r = FrameReader::new(Pieces { data, sizes, at: 0, turn: 0 });
                let mut got = Vec::new();
                while let Some(m) = r.message(1 << 20).await.expect("whole messages") {
                    got.push(m[5..].to_vec());
                }
                (got, r.bytes)
            });
            proptest::prop_assert_eq!(got, (bodies, total));
        }

        #[test]
        fn any_data_row_bytes_are_safe(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = data_row_values(&bytes);
        }

        #[test]
        fn data_rows_round_trip_with_their_offsets(values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..8)), 0..6)) {
            let mut body = (values.len() as i16).to_be_bytes().to_vec();
            let mut offsets = Vec::new();
            for v in &values {
                offsets.push(body.len());
                match v {
                    Some(v) => {
                        body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        body.extend_from_slice(v);
                    }
                    None => body.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
            let mut read = DataRowValues::new(&body).expect("a count");
            let items: Vec<_> = read.by_ref().map(|i| i.expect("well formed")).collect();
            proptest::prop_assert!(read.is_complete());
            let expected: Vec<_> = offsets.iter().copied().zip(values.iter().map(|v| v.as_deref())).collect();
            proptest::prop_assert_eq!(items, expected);
        }

        #[test]
        fn any_frontend_frame_decodes_or_errors(bytes in proptest::collection::vec(proptest::num::u8::ANY, 5..64), tag in proptest::sample::select(b"QPBDECSHXdcf".to_vec())) {
            let mut frame = BytesMut::from(&bytes[..]);
            frame[0] = tag;
            let len = (frame.len() - 1) as i32;
            frame[1..5].copy_from_slice(&len.to_be_bytes());
            let ctx = super::super::frontend_context();
            let _ = decode(frame, |b| pgwire::messages::PgWireFrontendMessage::decode(b, &ctx));
        }
    }
}
