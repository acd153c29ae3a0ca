//! The reply writer: RESP2 or RESP3 straight into the connection's output buffer.
//!
//! Replies are written as they are produced, with no intermediate reply tree: a pipelined batch
//! becomes one buffer and one `write`. Integers are formatted by hand (no `fmt` machinery on the
//! hot path). The protocol version only changes how a few types are spelled:
//!
//! | type      | RESP2                  | RESP3             |
//! |-----------|------------------------|-------------------|
//! | null      | `$-1`                  | `_`               |
//! | map of n  | `*2n` (flat pairs)     | `%n`              |
//! | set of n  | `*n`                   | `~n`              |
//! | verbatim  | `$len` (bulk)          | `=len` `txt:...`  |
//!
//! Error messages may quote client bytes; CR and LF are replaced by spaces so that a reply can
//! never be split into two (Redis does the same).

use bytes::BytesMut;

/// The reply protocol a connection speaks (`HELLO 2` / `HELLO 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

impl Protocol {
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A connection's output buffer and the protocol its replies are spelled in.
#[derive(Debug)]
pub struct Reply {
    pub buf: BytesMut,
    pub proto: Protocol,
}

impl Reply {
    pub fn new(capacity: usize) -> Reply {
        Reply {
            buf: BytesMut::with_capacity(capacity),
            proto: Protocol::Resp2,
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn is_resp3(&self) -> bool {
        self.proto == Protocol::Resp3
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string. `s` must hold no CR or LF (callers pass constants).
    pub fn simple(&mut self, s: &str) {
        debug_assert!(!s.contains(['\r', '\n']));
        self.buf.reserve(s.len() + 3);
        self.buf.extend_from_slice(b"+");
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error reply. `msg` starts with its code (`ERR ...`, `NOAUTH ...`); CR and LF in it are
    /// replaced by spaces.
    pub fn error(&mut self, msg: &str) {
        self.buf.reserve(msg.len() + 3);
        self.buf.extend_from_slice(b"-");
        let start = self.buf.len();
        self.buf.extend_from_slice(msg.as_bytes());
        for b in &mut self.buf[start..] {
            if *b == b'\r' || *b == b'\n' {
                *b = b' ';
            }
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    pub fn integer(&mut self, n: i64) {
        self.header(b':', n);
    }

    pub fn bulk(&mut self, data: &[u8]) {
        self.buf.reserve(data.len() + 16);
        self.header(b'$', data.len() as i64);
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A missing value: `$-1` (RESP2) or `_` (RESP3).
    pub fn null(&mut self) {
        match self.proto {
            Protocol::Resp2 => self.buf.extend_from_slice(b"$-1\r\n"),
            Protocol::Resp3 => self.buf.extend_from_slice(b"_\r\n"),
        }
    }

    /// The header of an array of `n` elements; the elements follow.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// The header of a map of `n` pairs; `2n` elements (key, value, ...) follow.
    pub fn map(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', 2 * n as i64),
            Protocol::Resp3 => self.header(b'%', n as i64),
        }
    }

    /// The header of a set of `n` elements.
    pub fn set(&mut self, n: usize) {
        match self.proto {
            Protocol::Resp2 => self.header(b'*', n as i64),
            Protocol::Resp3 => self.header(b'~', n as i64),
        }
    }

    /// Human-readable text (`INFO`, `CLIENT LIST`): a verbatim string in RESP3, as Redis sends.
    pub fn verbatim(&mut self, text: &[u8]) {
        match self.proto {
            Protocol::Resp2 => self.bulk(text),
            Protocol::Resp3 => {
                self.buf.reserve(text.len() + 20);
                self.header(b'=', text.len() as i64 + 4);
                self.buf.extend_from_slice(b"txt:");
                self.buf.extend_from_slice(text);
                self.buf.extend_from_slice(b"\r\n");
            }
        }
    }

    /// `<marker><n>\r\n`
    fn header(&mut self, marker: u8, n: i64) {
        let mut digits = [0u8; 20];
        let text = format_i64(n, &mut digits);
        self.buf.reserve(text.len() + 3);
        self.buf.extend_from_slice(&[marker]);
        self.buf.extend_from_slice(text);
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// Decimal text of `n` in `scratch`, without `fmt`.
pub fn format_i64(n: i64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut v = n.unsigned_abs();
    let mut i = scratch.len();
    loop {
        i -= 1;
        scratch[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        i -= 1;
        scratch[i] = b'-';
    }
    &scratch[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both(f: impl Fn(&mut Reply)) -> (Vec<u8>, Vec<u8>) {
        let mut r2 = Reply::new(64);
        f(&mut r2);
        let mut r3 = Reply::new(64);
        r3.proto = Protocol::Resp3;
        f(&mut r3);
        (r2.buf.to_vec(), r3.buf.to_vec())
    }

    #[test]
    fn integers_format_without_fmt() {
        let mut s = [0u8; 20];
        for n in [0i64, 7, -7, 10, 12345, i64::MAX, i64::MIN, -1] {
            assert_eq!(format_i64(n, &mut s), n.to_string().as_bytes());
        }
    }

    #[test]
    fn scalars_are_the_same_in_both_protocols() {
        let (r2, r3) = both(|r| {
            r.ok();
            r.simple("PONG");
            r.integer(-42);
            r.bulk(b"a\r\nb");
            r.bulk(b"");
            r.array(2);
        });
        let want = b"+OK\r\n+PONG\r\n:-42\r\n$4\r\na\r\nb\r\n$0\r\n\r\n*2\r\n".to_vec();
        assert_eq!(r2, want);
        assert_eq!(r3, want);
    }

    #[test]
    fn null_map_set_verbatim_differ() {
        let (r2, r3) = both(|r| r.null());
        assert_eq!((r2, r3), (b"$-1\r\n".to_vec(), b"_\r\n".to_vec()));
        let (r2, r3) = both(|r| {
            r.map(2);
            r.set(3);
        });
        assert_eq!(
            (r2, r3),
            (b"*4\r\n*3\r\n".to_vec(), b"%2\r\n~3\r\n".to_vec())
        );
        let (r2, r3) = both(|r| r.verbatim(b"a:1\r\n"));
        assert_eq!(r2, b"$5\r\na:1\r\n\r\n".to_vec());
        assert_eq!(r3, b"=9\r\ntxt:a:1\r\n\r\n".to_vec());
    }

    #[test]
    fn errors_cannot_break_the_framing() {
        let (r2, r3) = both(|r| r.error("ERR unknown command 'a\r\nb'"));
        assert_eq!(r2, b"-ERR unknown command 'a  b'\r\n".to_vec());
        assert_eq!(r2, r3);
    }
}
