//! The peer wire format, as pure functions over bytes (no sockets): every test of the wire is a
//! raw byte string.
//!
//! ```text
//! +----------------+---------+------+---------+--------------+------------------+
//! | length: u32 BE | version | kind | tag u16 | id: u64 BE   | payload          |
//! | (bytes after   |  u8 = 1 |  u8  |   BE    |              | length - 12      |
//! |  this prefix)  |         |      |         |              | bytes, opaque    |
//! +----------------+---------+------+---------+--------------+------------------+
//! ```
//!
//! The length is checked against the receiver's maximum *before* anything is allocated for the
//! frame (BAD-INPUT 21): a peer merely claiming 4 GiB gets its connection closed, not a buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The only protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const LEN_PREFIX_BYTES: usize = 4;

/// Bytes of the header after the length prefix: version, kind, tag, id.
pub const HEADER_BYTES: usize = 1 + 1 + 2 + 8;

/// Default largest frame (header + payload, without the length prefix) either side accepts.
/// A partition-streaming batch or a Merkle level fits well below it; anything larger is a bug or
/// an attack.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// Largest frame accepted before the handshake has authenticated the peer: a stranger gets no
/// more than this much of our memory.
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 1024;

/// What a frame is for. The numbering is part of the wire format: never reuse a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// A call that expects exactly one `Response` or `Error` with the same id.
    Request,
    /// The successful answer to the `Request` with the same id.
    Response,
    /// The failed answer to the `Request` with the same id; the payload is a UTF-8 message.
    Error,
    /// A message that gets no answer (gossip). Its id is informational only.
    OneWay,
    /// Handshake, acceptor -> dialer: a fresh nonce.
    Hello,
    /// Handshake, dialer -> acceptor: node id, nonce and proof of the secret.
    Auth,
    /// Handshake, acceptor -> dialer: node id and proof of the secret.
    Welcome,
    /// Handshake, acceptor -> dialer: the dialer was refused; the payload is a UTF-8 reason.
    Refused,
}

impl FrameKind {
    pub fn to_byte(self) -> u8 {
        match self {
            FrameKind::Request => 1,
            FrameKind::Response => 2,
            FrameKind::Error => 3,
            FrameKind::OneWay => 4,
            FrameKind::Hello => 0x10,
            FrameKind::Auth => 0x11,
            FrameKind::Welcome => 0x12,
            FrameKind::Refused => 0x13,
        }
    }

    pub fn from_byte(b: u8) -> Option<FrameKind> {
        Some(match b {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Error,
            4 => FrameKind::OneWay,
            0x10 => FrameKind::Hello,
            0x11 => FrameKind::Auth,
            0x12 => FrameKind::Welcome,
            0x13 => FrameKind::Refused,
            _ => return None,
        })
    }

    /// Kinds that only appear during the handshake.
    pub fn is_handshake(self) -> bool {
        matches!(
            self,
            FrameKind::Hello | FrameKind::Auth | FrameKind::Welcome | FrameKind::Refused
        )
    }
}

/// One decoded frame. The payload shares the receive buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// Routes the payload to an upper layer (gossip, coordinator, ...); see `handler::tags`.
    pub tag: u16,
    /// Matches a `Response`/`Error` to its `Request` on one connection.
    pub id: u64,
    pub payload: Bytes,
}

/// Why bytes are not a frame. Every variant closes the connection it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame of {len} bytes is shorter than the {HEADER_BYTES}-byte header")]
    ShorterThanHeader { len: usize },
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    BadVersion(u8),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

impl Frame {
    pub fn new(kind: FrameKind, tag: u16, id: u64, payload: Bytes) -> Frame {
        Frame {
            kind,
            tag,
            id,
            payload,
        }
    }

    /// Bytes on the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        LEN_PREFIX_BYTES + HEADER_BYTES + self.payload.len()
    }

    /// The length prefix and header; the payload follows them on the wire unchanged, so a writer
    /// can send a large payload without copying it into a frame buffer.
    pub fn encode_head(&self, max_frame_bytes: usize) -> Result<[u8; 16], FrameError> {
        let len = HEADER_BYTES + self.payload.len();
        if len > max_frame_bytes || len > u32::MAX as usize {
            return Err(FrameError::TooLarge {
                len,
                max: max_frame_bytes,
            });
        }
        let mut head = [0u8; LEN_PREFIX_BYTES + HEADER_BYTES];
        let mut w = &mut head[..];
        w.put_u32(len as u32);
        w.put_u8(PROTOCOL_VERSION);
        w.put_u8(self.kind.to_byte());
        w.put_u16(self.tag);
        w.put_u64(self.id);
        Ok(head)
    }

    /// The whole frame as one buffer (tests, handshake).
    pub fn encode(&self, max_frame_bytes: usize) -> Result<Bytes, FrameError> {
        let head = self.encode_head(max_frame_bytes)?;
        let mut out = BytesMut::with_capacity(head.len() + self.payload.len());
        out.put_slice(&head);
        out.put_slice(&self.payload);
        Ok(out.freeze())
    }
}

/// The length a buffered prefix announces, checked against `max`; `Ok(None)` when fewer than four
/// bytes are buffered. Readers call this before reserving space for the body.
pub fn peek_len(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < LEN_PREFIX_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    if len < HEADER_BYTES {
        return Err(FrameError::ShorterThanHeader { len });
    }
    Ok(Some(len))
}

/// Takes one complete frame off the front of `buf`; `Ok(None)` when more bytes are needed.
/// The header is validated as soon as it is buffered, so garbage is refused without waiting for
/// the body it claims.
pub fn decode(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Option<Frame>, FrameError> {
    let Some(len) = peek_len(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() >= LEN_PREFIX_BYTES + 2 {
        let version = buf[LEN_PREFIX_BYTES];
        if version != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion(version));
        }
        let kind = buf[LEN_PREFIX_BYTES + 1];
        if FrameKind::from_byte(kind).is_none() {
            return Err(FrameError::UnknownKind(kind));
        }
    }
    if buf.len() < LEN_PREFIX_BYTES + len {
        return Ok(None);
    }
    buf.advance(LEN_PREFIX_BYTES);
    let mut body = buf.split_to(len);
    let _version = body.get_u8();
    // Checked above: the header was complete.
    let kind = FrameKind::from_byte(body.get_u8()).ok_or(FrameError::UnknownKind(0))?;
    let tag = body.get_u16();
    let id = body.get_u64();
    Ok(Some(Frame {
        kind,
        tag,
        id,
        payload: body.freeze(),
    }))
}

/// Called when the stream ended: leftover bytes are a truncated frame.
pub fn check_eof(buf: &[u8]) -> Result<(), FrameError> {
    if buf.is_empty() {
        Ok(())
    } else {
        Err(FrameError::Truncated {
            buffered: buf.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    fn raw(len: u32, version: u8, kind: u8, tag: u16, id: u64, payload: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.put_u32(len);
        b.put_u8(version);
        b.put_u8(kind);
        b.put_u16(tag);
        b.put_u64(id);
        b.put_slice(payload);
        b
    }

    #[test]
    fn round_trip_on_raw_bytes() {
        let f = Frame::new(FrameKind::Request, 7, 42, Bytes::from_static(b"hello"));
        let wire = f.encode(MAX).unwrap();
        assert_eq!(
            &wire[..],
            b"\x00\x00\x00\x11\x01\x01\x00\x07\x00\x00\x00\x00\x00\x00\x00\x2ahello"
        );
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(f));
        assert!(buf.is_empty());
    }

    #[test]
    fn every_kind_round_trips() {
        for b in 0..=255u8 {
            if let Some(k) = FrameKind::from_byte(b) {
                assert_eq!(k.to_byte(), b);
            }
        }
    }

    #[test]
    fn two_frames_back_to_back_and_byte_by_byte() {
        let a = Frame::new(FrameKind::Response, 1, 1, Bytes::from_static(b"a"));
        let b = Frame::new(FrameKind::OneWay, 2, 2, Bytes::new());
        let mut wire = a.encode(MAX).unwrap().to_vec();
        wire.extend_from_slice(&b.encode(MAX).unwrap());
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire {
            buf.put_u8(byte);
            while let Some(f) = decode(&mut buf, MAX).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![a, b]);
    }

    #[test]
    fn truncated_frame_waits_then_fails_at_eof() {
        let wire = Frame::new(FrameKind::Request, 0, 9, Bytes::from_static(b"payload"))
            .encode(MAX)
            .unwrap();
        for cut in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            assert_eq!(decode(&mut buf, MAX).unwrap(), None, "cut at {cut}");
            assert_eq!(check_eof(&buf).is_err(), cut > 0);
        }
    }

    #[test]
    fn oversize_is_refused_from_the_prefix_alone() {
        // Only the four prefix bytes: nothing about the body is known or allocated yet.
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        assert_eq!(
            decode(&mut buf, MAX),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max: MAX
            })
        );
        // An HTTP request reads as a ~1.2 GB length.
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            decode(&mut buf, DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
        // Exactly the maximum is fine.
        let f = Frame::new(
            FrameKind::Request,
            0,
            0,
            Bytes::from(vec![0; MAX - HEADER_BYTES]),
        );
        let mut buf = BytesMut::from(&f.encode(MAX).unwrap()[..]);
        assert_eq!(decode(&mut buf, MAX).unwrap(), Some(f));
        let f = Frame::new(FrameKind::Request, 0, 0, Bytes::from(vec![0; MAX]));
        assert!(matches!(f.encode(MAX), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn bad_version_unknown_kind_and_short_header() {
        let mut buf = raw(12, 2, 1, 0, 0, b"");
        assert_eq!(decode(&mut buf, MAX), Err(FrameError::BadVersion(2)));
        let mut buf = raw(12, 1, 0x7f, 0, 0, b"");
        assert_eq!(decode(&mut buf, MAX), Err(FrameError::UnknownKind(0x7f)));
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x03\x01\x01\x00"[..]);
        assert_eq!(
            decode(&mut buf, MAX),
            Err(FrameError::ShorterThanHeader { len: 3 })
        );
        // The header is judged before the body arrives: a bad version with a large claimed body
        // is refused at once.
        let mut buf = raw(1000, 9, 1, 0, 0, b"");
        buf.truncate(6);
        assert_eq!(decode(&mut buf, MAX), Err(FrameError::BadVersion(9)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix of many pseudo-random strings.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let n = (x % 40) as usize;
            let mut bytes = Vec::with_capacity(n);
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                bytes.push(x as u8);
            }
            // Bias toward plausible headers so the deeper paths run too.
            if n > 5 && x % 2 == 0 {
                bytes[0..4].copy_from_slice(&((n as u32).saturating_sub(4)).to_be_bytes());
                bytes[4] = PROTOCOL_VERSION;
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf, MAX) {}
        }
    }
}
