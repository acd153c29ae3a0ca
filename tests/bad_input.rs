//! BAD-INPUT.md against the real binary, over raw sockets: each row's bytes, the answer a client
//! gets, whether the connection stays open, and that afterwards the node is still alive, still
//! serves, and still holds every key written before the abuse began.
//!
//! | test | rows |
//! |---|---|
//! | `resp_protocol_errors_are_answered_then_closed` | 1-8 |
//! | `resp_command_errors_keep_the_connection_open` | 10, 11 (and the RESP side of 12, 13, 15) |
//! | `http_bad_keys_values_and_contexts` | 12-15 |
//! | `http_header_floods_and_smuggling` | 16, 19 |
//! | `connection_flood_is_capped` | 18 |
//!
//! Each test starts its own node in a tempdir; every socket read has a deadline, so a node that
//! hangs fails the test instead of hanging it.

mod common;

use common::NodeProc;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Longest any single read may wait.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// What a peer sent before it stopped, and whether it closed the connection (EOF or reset)
/// rather than leaving it open past the deadline.
struct Received {
    bytes: Vec<u8>,
    closed: bool,
}

impl Received {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

/// Reads until the peer closes, or until `quiet` passes with nothing new (then `closed` is false).
fn read_until_close(stream: &mut TcpStream, quiet: Duration) -> Received {
    stream.set_read_timeout(Some(quiet)).unwrap();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true, // reset: closed too
        }
    };
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    Received { bytes, closed }
}

/// Reads until a whole line arrived (`false`) or the peer closed (`true`), within [`IO_TIMEOUT`].
fn read_line_or_close(stream: &mut TcpStream) -> (String, bool) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        if bytes.ends_with(b"\r\n") {
            break false;
        }
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(_) => break true,
        }
    };
    (String::from_utf8_lossy(&bytes).into_owned(), closed)
}

/// Sends `request` on a fresh connection and reads everything until the server closes it.
fn exchange(addr: SocketAddr, request: &[u8]) -> Received {
    let mut stream = connect(addr);
    // The server may close before it took everything: that is its right.
    let _ = stream.write_all(request);
    read_until_close(&mut stream, IO_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// A minimal RESP reply reader for connections that must stay open.

#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    fn connect(addr: SocketAddr) -> Resp {
        Resp {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.send(&encode(args));
        self.read()
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("the server closed a connection that should stay open"),
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no reply within {IO_TIMEOUT:?}: {e}"),
        }
    }

    fn line(&mut self) -> String {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return line;
            }
            self.fill();
        }
    }

    fn read(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Bulk(None);
                }
                let len = len as usize;
                while self.buf.len() < len + 2 {
                    self.fill();
                }
                let value = self.buf[..len].to_vec();
                self.buf.drain(..len + 2);
                Reply::Bulk(Some(value))
            }
            "*" => {
                let n: i64 = rest.parse().unwrap();
                Reply::Array((0..n.max(0)).map(|_| self.read()).collect())
            }
            _ => panic!("not a RESP reply: {line:?}"),
        }
    }

    fn error(&mut self, args: &[&[u8]]) -> String {
        match self.call(args) {
            Reply::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    fn ping(&mut self) {
        assert_eq!(self.call(&[b"PING"]), Reply::Simple("PONG".into()));
    }
}

fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn bulk(value: &[u8]) -> Reply {
    Reply::Bulk(Some(value.to_vec()))
}

// ---------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client: one request per connection, exactly the bytes given.

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Reads one response (head, then a `Content-Length` body) from `stream`; `None` if the
/// connection ended before a whole head arrived.
fn read_response(stream: &mut TcpStream) -> Option<HttpResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let mut response = HttpResponse {
        status,
        head,
        body: buf[head_end..].to_vec(),
    };
    let len: usize = response
        .header("content-length")
        .map_or(0, |v| v.parse().unwrap());
    while response.body.len() < len {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => response.body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(response)
}

/// One request with `Connection: close`; the response.
fn http(
    node: &NodeProc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    let mut stream = connect(node.http);
    stream.write_all(&request).unwrap();
    read_response(&mut stream).unwrap_or_else(|| panic!("no response to {method} {path}"))
}

// ---------------------------------------------------------------------------------------------
// Before and after

/// Keys written before any abuse: `(key, value)`, binary values included.
fn write_keys(node: &NodeProc) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c = Resp::connect(node.resp);
    let keys: Vec<(Vec<u8>, Vec<u8>)> = (0..20)
        .map(|i| {
            (
                format!("k{i}").into_bytes(),
                format!("value-{i}\r\n\0\u{ff}").into_bytes(),
            )
        })
        .collect();
    for (k, v) in &keys {
        assert_eq!(c.call(&[b"SET", k, v]), Reply::Simple("OK".into()));
    }
    keys
}

/// The node process is alive (not a zombie), answers PING and `/healthz`, and every key written
/// at the start reads back unchanged, over RESP and over HTTP.
fn assert_intact(node: &NodeProc, keys: &[(Vec<u8>, Vec<u8>)]) {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", node.pid()))
        .expect("the node process is gone");
    let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
    assert_ne!(state, Some("Z"), "the node exited");
    let mut c = Resp::connect(node.resp);
    c.ping();
    for (k, v) in keys {
        assert_eq!(
            c.call(&[b"GET", k]),
            bulk(v),
            "{}",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(http(node, "GET", "/healthz", &[], b"").status, 200);
    let (k, v) = &keys[0];
    let got = http(node, "GET", &format!("/v1/kv/{}", escape(k)), &[], b"");
    assert_eq!((got.status, &got.body), (200, v));
}

/// Every byte that is not alphanumeric as `%XX`.
fn escape(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The sum of the `/metrics` samples named `name` whose labels include each of `labels`
/// (compared case-insensitively, e.g. `api="resp"`).
fn metric(node: &NodeProc, name: &str, labels: &[&str]) -> f64 {
    let scrape = http(node, "GET", "/metrics", &[], b"");
    assert_eq!(scrape.status, 200);
    String::from_utf8_lossy(&scrape.body)
        .lines()
        .filter(|l| {
            let lower = l.to_lowercase();
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|want| lower.contains(&want.to_lowercase()))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn start(dir: &tempfile::TempDir, extra: &[&str]) -> NodeProc {
    NodeProc::start(dir.path(), extra)
}

// ---------------------------------------------------------------------------------------------
// RESP

/// Rows 1-8: a protocol error is answered with Redis's text, then the connection is closed; what
/// followed the bad bytes is never executed.
#[test]
fn resp_protocol_errors_are_answered_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &[]);
    let keys = write_keys(&node);
    let started = Instant::now();

    let invalid_bulk = "-ERR Protocol error: invalid bulk length\r\n";
    let invalid_multibulk = "-ERR Protocol error: invalid multibulk length\r\n";
    let missing_crlf = "-ERR Protocol error: bulk payload not followed by CRLF";
    let long_digits = "1".repeat(64 * 1024);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "1: bulk length over the value limit",
            b"*3\r\n$3\r\nSET\r\n$2\r\nk0\r\n$600000000\r\n".to_vec(),
            invalid_bulk,
        ),
        (
            "2: array count over the limit",
            b"*2000000\r\n".to_vec(),
            invalid_multibulk,
        ),
        ("3: negative bulk", b"*1\r\n$-5\r\n".to_vec(), invalid_bulk),
        ("3: negative array", b"*-3\r\n".to_vec(), invalid_multibulk),
        (
            "4: overflowing length",
            b"*1\r\n$99999999999999999999\r\n".to_vec(),
            invalid_bulk,
        ),
        ("4: $12a", b"*1\r\n$12a\r\n".to_vec(), invalid_bulk),
        ("4: $+5", b"*1\r\n$+5\r\nhello\r\n".to_vec(), invalid_bulk),
        ("4: $ 5", b"*1\r\n$ 5\r\nhello\r\n".to_vec(), invalid_bulk),
        (
            "4: overflowing count",
            b"*99999999999999999999\r\n".to_vec(),
            invalid_multibulk,
        ),
        (
            "5: payload longer than declared",
            b"*3\r\n$3\r\nSET\r\n$2\r\nk0\r\n$3\r\nabcd\r\n".to_vec(),
            missing_crlf,
        ),
        (
            // Declared 10: `short\r\n*2\r` is taken as the payload, then `\n$` is not CRLF. The
            // DEL behind it must never run.
            "5: payload shorter than declared, a DEL behind it",
            b"*3\r\n$3\r\nSET\r\n$2\r\nk0\r\n$10\r\nshort\r\n*2\r\n$3\r\nDEL\r\n$2\r\nk0\r\n"
                .to_vec(),
            missing_crlf,
        ),
        (
            "5: no CRLF after the payload",
            b"*2\r\n$3\r\nGET\r\n$2\r\nk0XY".to_vec(),
            missing_crlf,
        ),
        (
            "6: an inline line that never ends",
            vec![b'a'; 64 * 1024],
            "-ERR Protocol error: too big inline request\r\n",
        ),
        (
            "6: a $ header that never ends",
            format!("*1\r\n${long_digits}").into_bytes(),
            "-ERR Protocol error: too big bulk count string\r\n",
        ),
        (
            "6: a * header that never ends",
            format!("*{long_digits}").into_bytes(),
            "-ERR Protocol error: too big mbulk count string\r\n",
        ),
        (
            "7: nested arrays",
            b"*1\r\n*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            "8: +OK where a bulk belongs",
            b"*2\r\n$3\r\nGET\r\n+OK\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
        (
            "8: :1 where a bulk belongs",
            b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec(),
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
    ];
    for (row, request, expected) in &cases {
        let got = exchange(node.resp, request);
        assert!(
            got.text().starts_with(expected),
            "row {row}: expected {expected:?}, got {:?}",
            got.text()
        );
        assert!(got.closed, "row {row}: the connection was left open");
        // One reply, the error: nothing after the bad bytes ran.
        assert_eq!(got.text().matches("\r\n").count(), 1, "row {row}");
    }

    // Row 3: `*0` and `*-1` are empty commands, ignored, and the connection stays open.
    let mut c = Resp::connect(node.resp);
    c.send(b"*0\r\n*-1\r\n");
    c.ping();
    // Row 5, the other way round: a value holding RESP is only a value.
    let smuggled = b"*2\r\n$3\r\nDEL\r\n$2\r\nk0\r\n";
    assert_eq!(
        c.call(&[b"SET", b"holds-resp", smuggled]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c.call(&[b"GET", b"holds-resp"]), bulk(smuggled));

    // Every refusal was counted.
    let counted = metric(
        &node,
        "ringkv_client_errors_total",
        &["api=\"resp\"", "kind=\"protocol\""],
    );
    assert!(
        counted >= cases.len() as f64,
        "{counted} protocol errors counted"
    );
    assert_intact(&node, &keys);
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Rows 10 and 11, and the RESP side of 12, 13 and 15: a refused command gets `-ERR` and the
/// connection goes on.
#[test]
fn resp_command_errors_keep_the_connection_open() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &[]);
    let keys = write_keys(&node);
    let mut c = Resp::connect(node.resp);

    // Row 10.
    assert_eq!(
        c.error(&[b"FOO", b"bar"]),
        "ERR unknown command 'FOO', with args beginning with: 'bar' "
    );
    let arity = c.error(&[b"GET"]);
    assert!(
        arity.starts_with("ERR wrong number of arguments for '") && arity.ends_with("' command"),
        "{arity}"
    );
    assert!(arity.to_lowercase().contains("'get'"), "{arity}");
    c.error(&[b"SET", b"k0"]);
    c.ping();

    // Row 11: past 10,000 keys is an error, the connection stays.
    let mut mget: Vec<Vec<u8>> = vec![b"MGET".to_vec()];
    mget.extend((0..10_001).map(|i| format!("k{i}").into_bytes()));
    let args: Vec<&[u8]> = mget.iter().map(Vec::as_slice).collect();
    let err = c.error(&args);
    assert!(err.starts_with("ERR too many keys"), "{err}");
    mget[0] = b"DEL".to_vec();
    let args: Vec<&[u8]> = mget.iter().map(Vec::as_slice).collect();
    let err = c.error(&args);
    assert!(err.starts_with("ERR too many keys"), "{err}");
    c.ping();
    // An MSET past the argument cap (16,384) is refused by the parser: a protocol error, closed.
    let got = exchange(node.resp, b"*20001\r\n$4\r\nMSET\r\n");
    assert!(got
        .text()
        .starts_with("-ERR Protocol error: invalid multibulk length"));
    assert!(got.closed);

    // Row 12: the empty key.
    let err = c.error(&[b"SET", b"", b"v"]);
    assert!(err.starts_with("ERR empty key"), "{err}");
    assert!(c.error(&[b"GET", b""]).starts_with("ERR empty key"));
    // Row 13: key and value over the limits; nothing written.
    let err = c.error(&[b"SET", &[b'k'; 1025], b"v"]);
    assert!(err.starts_with("ERR key too large"), "{err}");
    let err = c.error(&[b"SET", b"k0", &[b'v'; 10 * 1024 + 1]]);
    assert!(err.starts_with("ERR value too large"), "{err}");
    // Row 15: a context that is not one.
    for bad in [&b"!!!"[..], b"AAAA", &[b'A'; 9000]] {
        let err = c.error(&[b"RINGKV.PUT", b"k0", b"new", b"CONTEXT", bad]);
        assert!(err.starts_with("ERR invalid context"), "{err}");
    }
    c.ping();

    // 13 refusals above, each counted.
    let counted = metric(&node, "ringkv_client_errors_total", &["api=\"resp\""]);
    assert!(counted >= 13.0, "{counted} errors counted");
    assert_intact(&node, &keys);
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Rows 12-15 over HTTP: empty key 400, long key 414, long value 413 before its body is sent,
/// bad escapes 400, binary keys equal to the same bytes over RESP, bad contexts 400.
#[test]
fn http_bad_keys_values_and_contexts() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &[]);
    let keys = write_keys(&node);

    // Row 12: one rule on both APIs (RESP in the test above).
    assert_eq!(http(&node, "PUT", "/v1/kv/", &[], b"v").status, 400);
    assert_eq!(http(&node, "PUT", "/v1/kv", &[], b"v").status, 400);
    assert_eq!(http(&node, "GET", "/v1/kv/", &[], b"").status, 400);

    // Row 13: a key over the limit in the URI.
    let long = format!("/v1/kv/{}", "a".repeat(1025));
    assert_eq!(http(&node, "PUT", &long, &[], b"v").status, 414);
    assert_eq!(http(&node, "GET", &long, &[], b"").status, 414);
    // A value over the limit, refused on its Content-Length before any of it is sent.
    let mut stream = connect(node.http);
    stream
        .write_all(b"PUT /v1/kv/too-big HTTP/1.1\r\nHost: ringkv\r\nContent-Length: 20000\r\n\r\n")
        .unwrap();
    let asked = Instant::now();
    let refused = read_response(&mut stream).expect("an answer before the body");
    assert_eq!(refused.status, 413, "{}", refused.head);
    assert!(asked.elapsed() < Duration::from_secs(2));
    drop(stream);
    assert_eq!(http(&node, "GET", "/v1/kv/too-big", &[], b"").status, 404);

    // Row 14: bad escapes.
    for bad in ["/v1/kv/a%G1", "/v1/kv/a%", "/v1/kv/a%2", "/v1/kv/%%41"] {
        assert_eq!(http(&node, "PUT", bad, &[], b"v").status, 400, "{bad}");
    }
    // Keys are bytes, decoded once, the same on both APIs.
    let put = http(&node, "PUT", "/v1/kv/%00%FF%2Fz", &[], b"from-http");
    assert_eq!(put.status, 200);
    let mut c = Resp::connect(node.resp);
    assert_eq!(c.call(&[b"GET", b"\x00\xff/z"]), bulk(b"from-http"));
    assert_eq!(
        c.call(&[b"SET", b"sl/ash\x00", b"from-resp"]),
        Reply::Simple("OK".into())
    );
    for spelled in ["/v1/kv/sl%2Fash%00", "/v1/kv/sl/ash%00"] {
        let got = http(&node, "GET", spelled, &[], b"");
        assert_eq!((got.status, &got.body[..]), (200, &b"from-resp"[..]));
    }
    // `%252F` is the three bytes `%2F`, not a slash.
    assert_eq!(http(&node, "PUT", "/v1/kv/%252F", &[], b"pct").status, 200);
    assert_eq!(c.call(&[b"GET", b"%2F"]), bulk(b"pct"));
    // `..` is two dots in a key, never a path.
    assert_eq!(
        http(&node, "PUT", "/v1/kv/..%2F..%2Fescaped", &[], b"dots").status,
        200
    );
    assert_eq!(c.call(&[b"GET", b"../../escaped"]), bulk(b"dots"));
    assert!(!dir.path().parent().unwrap().join("escaped").exists());

    // Row 15: contexts that are not ones; nothing is written.
    let read = http(&node, "GET", "/v1/kv/k0", &[], b"");
    let good = read.header("x-ringkv-context").unwrap().to_string();
    let mut forged = good.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let too_many = many_entries(300);
    let too_long = many_entries(2000);
    assert!(too_long.len() > 8192 && too_long.len() < 30 * 1024);
    let oversized = "A".repeat(9000);
    for (what, context) in [
        ("bad base64", "!!!"),
        ("truncated", &good[..good.len() - 2]),
        ("forged", forged.as_str()),
        ("300 entries", too_many.as_str()),
        ("2000 entries", too_long.as_str()),
        ("9000 characters", oversized.as_str()),
    ] {
        let got = http(
            &node,
            "PUT",
            "/v1/kv/k0",
            &[("X-Ringkv-Context", context)],
            b"overwritten",
        );
        assert_eq!(
            got.status,
            400,
            "{what}: {}",
            String::from_utf8_lossy(&got.body)
        );
        assert!(
            String::from_utf8_lossy(&got.body).contains("invalid context"),
            "{what}"
        );
    }
    // The genuine one still works (on another key, so the set stays intact).
    let ok = http(
        &node,
        "PUT",
        "/v1/kv/k-ctx",
        &[("X-Ringkv-Context", &good)],
        b"fine",
    );
    assert_eq!(ok.status, 200);

    // 16 refusals above, each counted.
    let counted = metric(&node, "ringkv_client_errors_total", &["api=\"http\""]);
    assert!(counted >= 16.0, "{counted} errors counted");
    assert_intact(&node, &keys);
}

/// A syntactically valid context with `entries` node ids.
fn many_entries(entries: usize) -> String {
    let mut clock = ringkv_core::VersionVector::new();
    for i in 0..entries {
        let node = ringkv_core::NodeId::new(format!("n{i}")).unwrap();
        clock.witness(&node, 1, 0);
    }
    ringkv_core::Context::from_clock(&clock).encode()
}

/// Rows 16 and 19: header floods and giant headers get 431 (or 400) and a close; a request
/// smuggled behind `Content-Length` + `Transfer-Encoding` or conflicting lengths never runs.
#[test]
fn http_header_floods_and_smuggling() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &[]);
    let keys = write_keys(&node);

    // Row 16: too many headers, and one giant header.
    let mut flood = String::from("GET /healthz HTTP/1.1\r\nHost: ringkv\r\n");
    for i in 0..100 {
        flood.push_str(&format!("X-Flood-{i}: {i}\r\n"));
    }
    flood.push_str("\r\n");
    let giant = format!(
        "GET /healthz HTTP/1.1\r\nHost: ringkv\r\nX-Giant: {}\r\n\r\n",
        "g".repeat(40 * 1024)
    );
    for (what, request) in [("100 headers", flood), ("a 40 KiB header", giant)] {
        let got = exchange(node.http, request.as_bytes());
        let status = got.text().split(' ').nth(1).map(str::to_string);
        assert!(
            matches!(status.as_deref(), Some("431") | Some("400")),
            "{what}: {:?}",
            got.text().lines().next()
        );
        assert!(got.closed, "{what}: left open");
    }

    // Row 19: both Content-Length and Transfer-Encoding. The chunked body is empty; what follows
    // is a DELETE that a front end framing by Content-Length would pass along. It must not run.
    let smuggle = b"PUT /v1/kv/smuggle-carrier HTTP/1.1\r\nHost: ringkv\r\n\
Content-Length: 60\r\nTransfer-Encoding: chunked\r\n\r\n\
0\r\n\r\n\
DELETE /v1/kv/k0 HTTP/1.1\r\nHost: ringkv\r\n\r\n";
    let got = exchange(node.http, smuggle);
    assert!(got.closed, "left open after CL + TE");
    let answers = got.text().matches("HTTP/1.1 ").count();
    assert!(answers <= 1, "{answers} answers: {}", got.text());
    // Conflicting lengths: 400, and the request behind them never runs.
    let conflicting = b"PUT /v1/kv/k2 HTTP/1.1\r\nHost: ringkv\r\n\
Content-Length: 5\r\nContent-Length: 6\r\n\r\n\
abcdeDELETE /v1/kv/k3 HTTP/1.1\r\nHost: ringkv\r\n\r\n";
    let got = exchange(node.http, conflicting);
    assert!(got.text().starts_with("HTTP/1.1 400"), "{:?}", got.text());
    assert!(got.closed);
    // A final encoding other than chunked: 400.
    let gzip = b"PUT /v1/kv/k2 HTTP/1.1\r\nHost: ringkv\r\nTransfer-Encoding: gzip\r\n\r\nabc";
    let got = exchange(node.http, gzip);
    assert!(got.text().starts_with("HTTP/1.1 400"), "{:?}", got.text());
    assert!(got.closed);

    // k0..k3 untouched (checked with the rest).
    assert_intact(&node, &keys);
}

// ---------------------------------------------------------------------------------------------
// Connection flood

/// Row 18: with `--max-connections 20`, 40 connections on each API: 20 are served, 20 refused
/// and closed; the served ones keep working; once all are gone a fresh client is served.
#[test]
fn connection_flood_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &["--max-connections", "20"]);
    let keys = write_keys(&node);
    // Let the connections of the readiness probe and `write_keys` give back their slots.
    std::thread::sleep(Duration::from_millis(300));

    // RESP: the refused get Redis's text and a close.
    let mut conns: Vec<TcpStream> = (0..40).map(|_| connect(node.resp)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut served = Vec::new();
    let mut refused = 0;
    for (i, mut stream) in conns.drain(..).enumerate() {
        let _ = stream.write_all(b"PING\r\n");
        match read_line_or_close(&mut stream) {
            (line, false) if line == "+PONG\r\n" => served.push(stream),
            (line, closed) if line == "-ERR max number of clients reached\r\n" || closed => {
                // Closed right after the refusal (or before we read it).
                assert!(
                    closed || read_line_or_close(&mut stream).1,
                    "connection {i} open"
                );
                refused += 1;
            }
            (line, closed) => panic!("connection {i}: {line:?} (closed: {closed})"),
        }
    }
    assert_eq!((served.len(), refused), (20, 20));
    // The served ones are unaffected.
    for stream in served {
        let mut c = Resp {
            stream,
            buf: Vec::new(),
        };
        assert_eq!(c.call(&[b"GET", &keys[0].0]), bulk(&keys[0].1));
    }

    // HTTP: the refused get a 503 and a close.
    let mut conns: Vec<TcpStream> = (0..40).map(|_| connect(node.http)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (mut served, mut refused) = (0, 0);
    for (i, stream) in conns.iter_mut().enumerate() {
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: ringkv\r\n\r\n");
        match read_response(stream) {
            Some(r) if r.status == 200 => served += 1,
            Some(r) if r.status == 503 => refused += 1,
            None => refused += 1,
            Some(r) => panic!("connection {i}: {}", r.head),
        }
    }
    assert_eq!((served, refused), (20, 20));
    drop(conns);

    // Fresh clients are served once the slots are back (their release is asynchronous).
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut resp = connect(node.resp);
        let _ = resp.write_all(b"PING\r\n");
        let pong = read_line_or_close(&mut resp).0 == "+PONG\r\n";
        let mut http = connect(node.http);
        let _ =
            http.write_all(b"GET /healthz HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n\r\n");
        let healthy = read_response(&mut http).is_some_and(|r| r.status == 200);
        if pong && healthy {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not served again (RESP {pong}, HTTP {healthy})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for api in ["api=\"resp\"", "api=\"http\""] {
        let counted = metric(&node, "ringkv_connections_refused_total", &[api]);
        assert!(counted >= 20.0, "{api}: {counted} refusals counted");
    }
    assert_intact(&node, &keys);
}

// ---------------------------------------------------------------------------------------------
// Bugs found while writing these tests, kept as regression tests.

/// Row 15, "forged": a well-formed context (anyone can compute its checksum) whose entry for
/// the coordinating node is `u64::MAX`. `SiblingSet::write` computes the new dot as
/// `max(set, context) + 1`: in a debug build that panics (the request's connection dies with no
/// answer), in a release build it wraps to a dot of counter 0, which every later context
/// covers. It should be refused like any other bad context (400 / `-ERR invalid context`).
/// Fixed: contexts with counters above `MAX_CONTEXT_COUNTER` are refused at decode.
#[test]
fn forged_context_at_counter_max_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(&dir, &[]);
    let keys = write_keys(&node);
    // The node names itself in every context it hands out.
    let read = http(&node, "GET", "/v1/kv/k0", &[], b"");
    let context = ringkv_core::Context::decode(read.header("x-ringkv-context").unwrap()).unwrap();
    let (me, _) = context.clock().iter().next().unwrap();
    let mut clock = ringkv_core::VersionVector::new();
    clock.witness(me, u64::MAX, 0);
    let forged = ringkv_core::Context::from_clock(&clock).encode();

    let mut c = Resp::connect(node.resp);
    let reply = c.call(&[
        b"RINGKV.PUT",
        b"k-forged",
        b"v",
        b"CONTEXT",
        forged.as_bytes(),
    ]);
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ERR invalid context")),
        "RESP: {reply:?}"
    );
    let mut stream = connect(node.http);
    let request = format!(
        "PUT /v1/kv/k0 HTTP/1.1\r\nHost: ringkv\r\nConnection: close\r\n\
X-Ringkv-Context: {forged}\r\nContent-Length: 1\r\n\r\nv"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let answer = read_response(&mut stream).map(|r| r.status);
    assert_eq!(
        answer,
        Some(400),
        "HTTP: no answer means the handler panicked"
    );
    assert_intact(&node, &keys);
}
