//! What each fuzz target checks, in one place.
//!
//! Every `fuzz_targets/*.rs` is one line that hands libFuzzer's bytes to a function here, and the
//! stable test `crates/server/tests/decoders_never_panic.rs` includes this very file (with
//! `#[path]`) to replay `fuzz/corpus/<target>/` through the same functions. So CI exercises the
//! checks and the corpora on stable, and nightly only adds the search for new inputs.
//!
//! Each check feeds the raw input to one decoder through its public entry point and asserts what
//! must hold whatever the bytes are (BAD-INPUT.md): no panic, nothing consumed beyond what was
//! given, nothing over a limit, exact round trips, and agreement with a small, independent
//! reference where one is cheap to write (the RESP grammar, strict percent-decoding). Allocation
//! bounds are left to the harness: libFuzzer's `-malloc_limit_mb`, and a counting allocator in
//! the stable test.
//!
//! | target | decoder | input |
//! |---|---|---|
//! | `resp_frame` | `api::resp::frame::Parser` | a byte stream from a client, under three limit sets, fed whole, byte by byte and in chunks |
//! | `context` | `Context::decode` | a context string; also the bytes framed as a context body with a valid checksum, to get past it |
//! | `sibling_set` | `SiblingSet::decode` | an encoded sibling set (format byte + postcard) |
//! | `http_key_path` | `api::http::decode_key_path` | a raw request path, as is and behind `/v1/kv/` |
//! | `storage_record` | the `Store`'s record check (`record::decode`, private) via `Store::get`/`scan` over a `MemEngine` | byte 0 picks the key length (1..=32), then the key, then the stored record |
//!
//! The context and sibling-set checks also use what they decoded the way the node would (a write
//! over the context, a merge, a prune), since a decoded value that panics its first user is a
//! decoder bug too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use ringkv_core::version::{MAX_CONTEXT_ENTRIES, MAX_CONTEXT_LEN};
use ringkv_core::{Context, NodeId, SiblingSet};
use ringkv_server::api::resp::frame::{Limits, Parser, Span, Status};
use ringkv_storage::{Durability, Engine, Keyspace, MemEngine, StorageError, Store, StoreOptions};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// resp_frame

/// Small enough that a fuzz input of a few KiB reaches every bound (arguments, bulk, command,
/// line); the production limits need megabytes to reach.
pub const TINY_RESP_LIMITS: Limits = Limits {
    max_args: 4,
    max_bulk: 16,
    max_command: 64,
    max_line: 32,
};

/// The limit sets every RESP input is parsed under.
pub const RESP_LIMITS: [Limits; 3] = [Limits::DEFAULT, Limits::UNAUTHENTICATED, TINY_RESP_LIMITS];

/// One command as the parser reported it: its length and its arguments (relative to its start).
pub type Command = (usize, Vec<Span>);

/// Everything a parser made of one input: the commands, in order, and how it stopped (`Ok` =
/// waiting for more bytes, `Err` = a protocol error: the connection would close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub commands: Vec<Command>,
    pub end: Result<(), String>,
}

impl Parsed {
    /// Bytes taken by complete commands.
    pub fn consumed(&self) -> usize {
        self.commands.iter().map(|(n, _)| n).sum()
    }

    /// The arguments of every command, as bytes of `input`.
    pub fn args<'a>(&self, input: &'a [u8]) -> Vec<Vec<&'a [u8]>> {
        let mut at = 0;
        let mut out = Vec::new();
        for (n, spans) in &self.commands {
            out.push(
                spans
                    .iter()
                    .map(|s| &input[at + s.start..at + s.end])
                    .collect(),
            );
            at += n;
        }
        out
    }
}

/// The `resp_frame` target: parses `data` under each of [`RESP_LIMITS`], fed whole, one byte at
/// a time, and in chunks, and checks that all three agree with each other and with
/// [`resp_reference`].
pub fn resp_frame(data: &[u8]) {
    let chunk = 1 + data.len() % 13;
    for limits in RESP_LIMITS {
        let whole = resp_parse_fed(limits, data, &[data.len()]);
        let bytewise: Vec<usize> = (0..=data.len()).collect();
        assert_eq!(
            resp_parse_fed(limits, data, &bytewise),
            whole,
            "fed one byte at a time"
        );
        let chunked: Vec<usize> = (0..=data.len())
            .step_by(chunk)
            .chain([data.len()])
            .collect();
        assert_eq!(
            resp_parse_fed(limits, data, &chunked),
            whole,
            "fed in chunks of {chunk}"
        );
        let reference = resp_reference(limits, data);
        assert_eq!(whole.commands, reference.commands, "parser vs reference");
        assert_eq!(
            whole.end.is_ok(),
            reference.end.is_ok(),
            "parser vs reference: {:?} vs {:?}",
            whole.end,
            reference.end
        );
    }
}

/// Parses `input` the way a connection does: bytes become available at each of `arrivals`
/// (increasing offsets; the last is taken to be the whole input), every complete command is
/// taken off the front, and the parser is called again with the rest. Checks every answer
/// against the input it was given.
pub fn resp_parse_fed(limits: Limits, input: &[u8], arrivals: &[usize]) -> Parsed {
    let mut parser = Parser::new(limits);
    let mut arrivals = arrivals
        .iter()
        .map(|&a| a.min(input.len()))
        .chain([input.len()]);
    let mut avail = arrivals.next().unwrap_or(input.len());
    let mut at = 0;
    let mut commands = Vec::new();
    let end = loop {
        let buf = &input[at..avail];
        match parser.parse(buf) {
            Ok(Status::Complete(n)) => {
                check_complete(limits, buf, n, parser.args());
                commands.push((n, parser.args().to_vec()));
                at += n;
            }
            Ok(Status::Incomplete) => {
                // Arguments kept across calls stand for bulks actually received (each at least
                // `$0\r\n\r\n`), never for a count merely claimed.
                assert!(
                    parser.args().len() * 6 <= buf.len(),
                    "{} arguments held for {} bytes",
                    parser.args().len(),
                    buf.len()
                );
                if avail == input.len() {
                    break Ok(());
                }
                avail = arrivals.next().unwrap_or(input.len()).max(avail);
            }
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("Protocol error: "), "{text}");
                break Err(text);
            }
        }
    };
    Parsed { commands, end }
}

/// What must hold of every `Complete(n)` for the buffer `buf`.
fn check_complete(limits: Limits, buf: &[u8], n: usize, args: &[Span]) {
    assert!(n > 0, "a complete command of zero bytes would loop forever");
    assert!(n <= buf.len(), "consumed {n} bytes of {}", buf.len());
    assert!(
        n <= limits.max_command.max(limits.max_line + 2),
        "a command of {n} bytes passed {limits:?}"
    );
    assert!(args.len() <= limits.max_args, "{} arguments", args.len());
    let mut prev_end = 0;
    for s in args {
        assert!(
            prev_end <= s.start && s.start <= s.end && s.end <= n,
            "span {s:?} after {prev_end} in a command of {n} bytes"
        );
        prev_end = s.end;
        if buf[0] == b'*' {
            assert!(s.len() <= limits.max_bulk, "a bulk of {} bytes", s.len());
            assert_eq!(
                &buf[s.end..s.end + 2],
                b"\r\n",
                "a bulk not followed by CRLF"
            );
        } else {
            assert!(
                s.len() < limits.max_line,
                "an inline argument of {}",
                s.len()
            );
        }
    }
}

/// An independent, whole-buffer reading of the request grammar the parser implements (see
/// `frame.rs`): flat arrays of bulks with strict lengths, or inline lines, with the same limits.
/// It reports the same commands; its errors are only compared for being errors.
pub fn resp_reference(limits: Limits, input: &[u8]) -> Parsed {
    let mut commands = Vec::new();
    let mut at = 0;
    let end = loop {
        match reference_one(limits, &input[at..]) {
            Ok(Some((n, spans))) => {
                commands.push((n, spans));
                at += n;
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.to_string()),
        }
    };
    Parsed { commands, end }
}

type RefResult<T> = Result<Option<T>, &'static str>;

fn reference_one(limits: Limits, buf: &[u8]) -> RefResult<Command> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        let window = &buf[..buf.len().min(limits.max_line)];
        let Some(newline) = window.iter().position(|&b| b == b'\n') else {
            return if buf.len() >= limits.max_line {
                Err("inline line too long")
            } else {
                Ok(None)
            };
        };
        let mut spans = Vec::new();
        let mut start = None;
        for (i, &b) in buf[..newline].iter().chain([&b' ']).enumerate() {
            let space = matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c);
            match (space, start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    spans.push(Span { start: s, end: i });
                    start = None;
                }
                _ => {}
            }
        }
        if spans.len() > limits.max_args {
            return Err("too many inline arguments");
        }
        return Ok(Some((newline + 1, spans)));
    }
    let Some((count, mut pos)) = reference_line(limits, buf, 1)? else {
        return Ok(None);
    };
    let count = match count {
        Some(0) | Some(-1) => return Ok(Some((pos, Vec::new()))),
        Some(c) if c > 0 && c as u64 <= limits.max_args as u64 => c as usize,
        _ => return Err("bad array count"),
    };
    let mut spans = Vec::new();
    for _ in 0..count {
        match buf.get(pos) {
            None => return Ok(None),
            Some(b'$') => {}
            Some(_) => return Err("not a bulk"),
        }
        let Some((len, start)) = reference_line(limits, buf, pos + 1)? else {
            return Ok(None);
        };
        let len = match len {
            Some(l) if l >= 0 && l as u64 <= limits.max_bulk as u64 => l as usize,
            _ => return Err("bad bulk length"),
        };
        if start + len + 2 > limits.max_command {
            return Err("command too large");
        }
        let end = start + len;
        match (buf.get(end), buf.get(end + 1)) {
            (None, _) | (Some(b'\r'), None) => return Ok(None),
            (Some(b'\r'), Some(b'\n')) => {}
            _ => return Err("payload not followed by CRLF"),
        }
        spans.push(Span { start, end });
        pos = end + 2;
    }
    Ok(Some((pos, spans)))
}

/// A `*`/`$` header's number, from `from` to its CRLF: `(number or None if malformed, offset
/// past the LF)`. The number is only looked at once the whole line is there.
fn reference_line(limits: Limits, buf: &[u8], from: usize) -> RefResult<(Option<i64>, usize)> {
    let window = &buf[from.min(buf.len())..buf.len().min(from + limits.max_line)];
    let Some(cr) = window.iter().position(|&b| b == b'\r').map(|i| from + i) else {
        return if buf.len() - from >= limits.max_line {
            Err("header line too long")
        } else {
            Ok(None)
        };
    };
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((reference_number(&buf[from..cr]), cr + 2))),
        Some(_) => Err("header CR not followed by LF"),
    }
}

/// Redis's strict integers, written differently from `frame::parse_len` on purpose.
fn reference_number(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return None;
    }
    text.parse::<i64>().ok()
}

/// A command as a client library sends it: an array of bulks.
pub fn resp_encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// context

/// The `context` target: `data` as a context string, and `data` as the body of a context
/// (format byte + postcard pairs) framed with a valid checksum, so that mutations reach the
/// postcard decoding behind the checksum. The framing mirrors `version/context.rs`.
pub fn context(data: &[u8]) {
    check_context_text(&String::from_utf8_lossy(data));
    if data.len() <= MAX_CONTEXT_LEN {
        check_context_text(&frame_context_body(data));
    }
}

/// A context string whose checksum is right for `body` (everything before the checksum).
pub fn frame_context_body(body: &[u8]) -> String {
    let mut raw = body.to_vec();
    raw.extend_from_slice(&(xxhash_rust::xxh3::xxh3_64(body) as u32).to_le_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

fn check_context_text(text: &str) {
    match Context::decode(text) {
        Ok(ctx) => {
            assert!(text.trim().len() <= MAX_CONTEXT_LEN);
            assert!(ctx.clock().len() <= MAX_CONTEXT_ENTRIES);
            let encoded = ctx.encode();
            let again = Context::decode(&encoded).expect("a context we encoded decodes");
            assert_eq!(again, ctx);
            assert_eq!(again.encode(), encoded, "encoding is canonical");
            write_over(&SiblingSet::new(), &ctx);
        }
        Err(e) => assert!(e.to_string().starts_with("invalid context"), "{e}"),
    }
}

/// What a node does with a client's context: a write over it, coordinated by a node the context
/// names (the case that matters: the coordinator's own counter) and by a fresh one.
fn write_over(set: &SiblingSet, ctx: &Context) {
    let named = ctx.clock().iter().next().map(|(n, _)| n.clone());
    let fresh = NodeId::new("fuzz-coordinator").expect("valid id");
    for node in named.into_iter().chain([fresh]) {
        let mut set = set.clone();
        let dot = set.write(&node, ctx, Some(Bytes::from_static(b"v")), 1);
        assert!(
            dot.counter > ctx.clock().get(&node),
            "the new version's dot {dot:?} is not newer than the context it was written over"
        );
        assert!(
            set.versions().iter().any(|v| v.dot == dot),
            "the write is not a sibling"
        );
        set.prune(10);
        let decoded = SiblingSet::decode(&set.encode()).expect("an encoded set decodes");
        assert_eq!(decoded, set);
    }
}

// ---------------------------------------------------------------------------------------------
// sibling_set

/// The `sibling_set` target: decodes `data`; a set that decodes re-encodes to one that decodes
/// to itself, and survives what the node does with a stored set (read, merge, write, prune).
pub fn sibling_set(data: &[u8]) {
    match SiblingSet::decode(data) {
        Ok(set) => {
            // Every version and clock entry took bytes of the input: nothing was conjured from a
            // claimed length.
            assert!(set.versions().len() <= data.len());
            assert!(set.clock().len() <= data.len());
            let encoded = set.encode();
            let again = SiblingSet::decode(&encoded).expect("an encoded set decodes");
            assert_eq!(again, set);
            assert_eq!(again.encode(), encoded);
            let _ = (set.winner(), set.is_deleted(), set.live().count());
            let ctx = set.context();
            assert_eq!(Context::decode(&ctx.encode()).as_ref(), Ok(&ctx));
            let mut merged = set.clone();
            merged.merge(&set);
            merged.merge(&SiblingSet::new());
            write_over(&set, &ctx);
            write_over(&set, &Context::empty());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

// ---------------------------------------------------------------------------------------------
// http_key_path

/// Key limits the key-path check runs under: the default, and one small enough to reach `414`.
pub fn key_limits() -> [ringkv_core::Limits; 2] {
    [
        ringkv_core::Limits::default(),
        ringkv_core::Limits {
            max_key_bytes: 8,
            ..ringkv_core::Limits::default()
        },
    ]
}

/// The `http_key_path` target: `data` as a raw request path, and behind `/v1/kv/`. The decoder
/// must agree with a strict reference: the key is everything after `/v1/kv/`, percent-decoded
/// exactly once; a bad escape or an empty key is `400`, a key over the limit `414`.
pub fn http_key_path(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for limits in key_limits() {
        for path in [text.to_string(), format!("/v1/kv/{text}")] {
            let got = ringkv_server::api::http::decode_key_path(&path, &limits);
            assert_eq!(got, reference_key(&path, &limits), "path {path:?}");
            if let Ok(key) = got {
                // Each byte escaped, and only what must be escaped: the same key.
                let all = format!("/v1/kv/{}", escape_key(&key, |_| true));
                let some = format!(
                    "/v1/kv/{}",
                    escape_key(&key, |b| !b.is_ascii_alphanumeric() && b != b'/')
                );
                for spelled in [all, some] {
                    let again = ringkv_server::api::http::decode_key_path(&spelled, &limits);
                    assert_eq!(again.ok().as_ref(), Some(&key), "{spelled}");
                }
            }
        }
    }
}

/// The key a path names, or the status its refusal carries.
pub fn reference_key(path: &str, limits: &ringkv_core::Limits) -> Result<Vec<u8>, u16> {
    let raw = path.strip_prefix("/v1/kv/").unwrap_or("").as_bytes();
    if raw.len() > 3 * limits.max_key_bytes {
        return Err(414);
    }
    let mut key = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'%' {
            key.push(raw[i]);
            i += 1;
            continue;
        }
        let hex = raw.get(i + 1..i + 3).ok_or(400u16)?;
        if !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(400);
        }
        let hex = std::str::from_utf8(hex).map_err(|_| 400u16)?;
        key.push(u8::from_str_radix(hex, 16).map_err(|_| 400u16)?);
        i += 3;
    }
    match key.len() {
        0 => Err(400),
        n if n > limits.max_key_bytes => Err(414),
        _ => Ok(key),
    }
}

/// `key` with every byte `escape` picks written as `%XX` (and every `%` always).
pub fn escape_key(key: &[u8], escape: impl Fn(u8) -> bool) -> String {
    let mut out = String::new();
    for &b in key {
        if escape(b) || b == b'%' || !b.is_ascii_graphic() {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// storage_record

thread_local! {
    /// One store per thread over an engine the check can write raw bytes into. `Periodic` with a
    /// long interval: the syncer thread sleeps; the check syncs the engine itself.
    static RECORD_STORE: (Arc<MemEngine>, Store) = {
        let engine = Arc::new(MemEngine::new());
        let opts = StoreOptions {
            durability: Durability::Periodic { interval: Duration::from_secs(3600) },
            cache_bytes: 0,
            min_free_bytes: 0,
        };
        let store = Store::with_engine(engine.clone(), opts);
        (engine, store)
    };
}

/// The `storage_record` target: byte 0 picks a key length (1..=32), then come the key and the
/// raw stored record. The record is put straight into the engine (as rot or a torn write would
/// leave it) and read back through the `Store`, whose checksum framing (`record.rs`) must either
/// refuse it as `Corrupt` (and `scan` skip it) or return exactly the payload that framing would
/// have produced those bytes from.
pub fn storage_record(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let key_len = (usize::from(k) % 32 + 1).min(rest.len());
    if key_len == 0 {
        return;
    }
    let (key, raw) = rest.split_at(key_len);
    RECORD_STORE.with(|(engine, store)| {
        put_raw(engine, key, raw);
        match store.get(Keyspace::Data, key) {
            Ok(Some(payload)) => {
                assert!(raw.len() >= 5, "a {}-byte record was accepted", raw.len());
                assert_eq!(payload, &raw[5..]);
                // Accepted only if it is exactly what the store writes for this payload.
                store_put(store, key, &payload);
                let framed = engine.get(Keyspace::Data, key).unwrap().unwrap();
                assert_eq!(framed, raw, "an accepted record differs from its framing");
            }
            Ok(None) => panic!("a stored record read back as absent"),
            Err(StorageError::Corrupt { .. }) => {
                let mut after_key = key.to_vec();
                after_key.push(0);
                let page = store
                    .scan(Keyspace::Data, key, Some(&after_key), 1)
                    .unwrap();
                assert!(page.is_empty(), "scan served a corrupt record");
            }
            Err(e) => panic!("unexpected error for a corrupt record: {e}"),
        }
        // The store's own framing of these bytes reads back, and one flipped bit does not.
        store_put(store, key, raw);
        assert_eq!(
            store.get(Keyspace::Data, key).unwrap().as_deref(),
            Some(raw)
        );
        assert!(engine.corrupt(Keyspace::Data, key));
        assert!(store.get(Keyspace::Data, key).is_err());
        let mut batch = ringkv_storage::WriteBatch::new();
        batch.delete(Keyspace::Data, key);
        engine.write(&batch).unwrap();
        engine.sync().unwrap();
    });
}

fn put_raw(engine: &MemEngine, key: &[u8], raw: &[u8]) {
    let mut batch = ringkv_storage::WriteBatch::new();
    batch.put(Keyspace::Data, key, raw);
    engine.write(&batch).unwrap();
}

fn store_put(store: &Store, key: &[u8], value: &[u8]) {
    let mut batch = ringkv_storage::WriteBatch::new();
    batch.put(Keyspace::Data, key, value);
    store.write(&batch).unwrap();
}
