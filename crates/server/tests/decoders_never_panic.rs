//! Every decoder that takes untrusted bytes, on stable Rust (BAD-INPUT.md; DEPENDENCIES.md's
//! "Fuzzing" note): the fuzz targets' saved corpora replayed through the fuzz targets' own checks,
//! and property tests of the RESP parser.
//!
//! - `corpus_*`: every file under `fuzz/corpus/<target>/` through `fuzz/src/lib.rs` (included
//!   below with `#[path]`: the very functions `cargo fuzz` runs), one test per target. A corpus
//!   directory without a test here, or a target without seeds, fails `every_corpus_is_replayed`.
//! - `resp_*` properties: arbitrary bytes, valid pipelines cut at arbitrary points, and valid
//!   commands with random bytes flipped. The parser never panics, never consumes more than it was
//!   given, never reports an argument over its limit, agrees with itself whether fed whole or in
//!   pieces, and agrees with an independent reference of the grammar.
//! - Allocation: a counting global allocator (per thread, so parallel tests do not disturb it)
//!   shows that what the parser allocates follows the bytes received, never a length or count the
//!   peer merely claims (`*2000000`, `$600000000`, `*9223372036854775807`).
//!
//! Bugs the fuzzers found are kept as regression tests at the end of this file, one per bug.

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

use checks::{resp_encode, resp_parse_fed, Parsed, RESP_LIMITS, TINY_RESP_LIMITS};
use proptest::prelude::*;
use ringkv_server::api::resp::frame::{Limits, Parser, ProtocolError, Status};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// A counting allocator: bytes requested by this thread.

struct Counting;

thread_local! {
    /// Const-initialised with no destructor: safe to touch from inside the allocator.
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: usize) {
    let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes)));
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches no allocator state.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size.saturating_sub(layout.size()));
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes this thread allocated while `f` ran.
fn allocated_by<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

#[test]
fn the_counting_allocator_counts() {
    let (v, bytes) = allocated_by(|| vec![0u8; 1 << 20]);
    assert!(bytes >= 1 << 20, "{bytes}");
    let (_, grown) = allocated_by(|| {
        let mut v = v;
        v.reserve_exact(3 << 20);
        v
    });
    assert!(grown >= 3 << 20, "{grown}");
}

// ---------------------------------------------------------------------------------------------
// Corpus replay

/// A fuzz target's check: panics when the input breaks a rule.
type Check = fn(&[u8]);

/// The targets of `fuzz/Cargo.toml`, each with its check.
const TARGETS: [(&str, Check); 5] = [
    ("resp_frame", checks::resp_frame),
    ("context", checks::context),
    ("sibling_set", checks::sibling_set),
    ("http_key_path", checks::http_key_path),
    ("storage_record", checks::storage_record),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on every file of its corpus; reports every file that panicked.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, check)| *check)
        .unwrap();
    let files = corpus_files(target);
    assert!(files.len() >= 10, "{target}: only {} seeds", files.len());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let bytes = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&bytes)).is_err()
        })
        .map(|p| p.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target}: checks failed on {failed:#?}");
}

#[test]
fn corpus_resp_frame() {
    replay("resp_frame");
}

#[test]
fn corpus_context() {
    replay("context");
}

#[test]
fn corpus_sibling_set() {
    replay("sibling_set");
}

#[test]
fn corpus_http_key_path() {
    replay("http_key_path");
}

#[test]
fn corpus_storage_record() {
    replay("storage_record");
}

#[test]
fn every_corpus_is_replayed() {
    let mut dirs: Vec<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut targets: Vec<String> = TARGETS.iter().map(|(t, _)| t.to_string()).collect();
    targets.sort();
    assert_eq!(dirs, targets, "fuzz/corpus/ and this test's TARGETS differ");
    let manifest = std::fs::read_to_string(corpus_root().join("../Cargo.toml")).unwrap();
    for (target, _) in TARGETS {
        assert!(
            manifest.contains(&format!("fuzz_targets/{target}.rs")),
            "{target} is not a target of fuzz/Cargo.toml"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The RESP parser: what the seeds mean, checked by value

/// The whole-input parse of `input` under the default limits.
fn parse_all(input: &[u8]) -> Parsed {
    resp_parse_fed(Limits::DEFAULT, input, &[input.len()])
}

#[test]
fn resp_seeds_parse_as_named() {
    let dir = corpus_root().join("resp_frame");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let error = |name: &str| parse_all(&read(name)).end.unwrap_err();
    let invalid_bulk = ProtocolError::InvalidBulkLength.to_string();
    let invalid_multibulk = ProtocolError::InvalidMultibulkLength.to_string();
    assert_eq!(error("row01_bulk_length_over_limit"), invalid_bulk);
    assert_eq!(error("row02_array_count_over_limit"), invalid_multibulk);
    assert_eq!(error("row03_negative_bulk_length"), invalid_bulk);
    assert_eq!(error("row03_negative_array_count"), invalid_multibulk);
    for name in [
        "row04_overflowing_length",
        "row04_garbage_lengths",
        "row04_plus_length",
        "row04_space_length",
    ] {
        assert_eq!(error(name), invalid_bulk, "{name}");
    }
    let missing_crlf = ProtocolError::MissingCrlf.to_string();
    assert_eq!(error("row05_payload_longer"), missing_crlf);
    assert_eq!(error("row05_no_crlf_after_payload"), missing_crlf);
    // The shorter payload's following DEL is never read as a command.
    let shorter = parse_all(&read("row05_payload_shorter_then_command"));
    assert!(shorter.commands.is_empty());
    assert_eq!(shorter.end.unwrap_err(), missing_crlf);
    assert_eq!(
        parse_all(&read("row07_nested_arrays")).end.unwrap_err(),
        "Protocol error: expected '$', got '*'"
    );
    assert_eq!(
        error("row08_simple_string_for_bulk"),
        "Protocol error: expected '$', got '+'"
    );
    assert_eq!(
        error("row08_integer_for_bulk"),
        "Protocol error: expected '$', got ':'"
    );
    // Under the small limits the endless lines are refused.
    for name in ["row06_endless_inline_line", "row06_endless_bulk_header"] {
        let input = read(name);
        let parsed = resp_parse_fed(TINY_RESP_LIMITS, &input, &[input.len()]);
        assert!(parsed.end.unwrap_err().contains("too big"), "{name}");
    }
    // Valid ones.
    let input = read("set_then_get_pipelined");
    let parsed = parse_all(&input);
    assert_eq!(
        parsed.args(&input),
        vec![
            vec![&b"SET"[..], b"key", b"value"],
            vec![&b"GET"[..], b"key"]
        ]
    );
    assert_eq!((parsed.consumed(), parsed.end), (input.len(), Ok(())));
    let input = read("binary_safe_bulk");
    let parsed = parse_all(&input);
    assert_eq!(
        parsed.args(&input),
        vec![vec![&b"ECHO"[..], b"\r\n\x00\xff*1"]]
    );
    let input = read("empty_and_null_arrays");
    let parsed = parse_all(&input);
    assert_eq!(parsed.commands.len(), 3);
    assert_eq!(parsed.args(&input)[2], vec![&b"PING"[..]]);
}

// ---------------------------------------------------------------------------------------------
// The RESP parser: nothing allocated for a claimed size

#[test]
fn resp_claimed_sizes_allocate_nothing() {
    let cases: [&[u8]; 8] = [
        b"*2000000\r\n",
        b"*16384\r\n",
        b"*9223372036854775807\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$600000000\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1049600\r\n",
        b"*1\r\n$-9223372036854775808\r\n",
        b"*16384\r\n$1\r\na\r\n$1\r\nb\r\n",
        b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n",
    ];
    for input in cases {
        for limits in RESP_LIMITS {
            let mut parser = Parser::new(limits);
            let (result, bytes) = allocated_by(|| parser.parse(input));
            assert!(
                bytes <= 1024,
                "{:?} under {limits:?}: {result:?} after allocating {bytes} bytes",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn resp_allocation_follows_the_bytes_received() {
    // 2,000 real one-byte bulks of a command claiming 16,384: what is held grows with them.
    let mut input = b"*16384\r\n".to_vec();
    for _ in 0..2000 {
        input.extend_from_slice(b"$1\r\nx\r\n");
    }
    let mut parser = Parser::default();
    let (result, bytes) = allocated_by(|| parser.parse(&input));
    assert_eq!(result, Ok(Status::Incomplete));
    assert_eq!(parser.args().len(), 2000);
    assert!(
        bytes <= 8 * input.len(),
        "{bytes} bytes for {} received",
        input.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The RESP parser: properties

/// Arguments of a command: binary, sometimes empty, sometimes with CRLF and `*`/`$` inside.
fn arb_arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        "[A-Za-z]{1,8}".prop_map(String::into_bytes),
        Just(b"\r\n*1\r\n$4\r\nPING\r\n".to_vec()),
    ]
}

fn arb_command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(arb_arg(), 1..6)
}

/// Increasing cut points in `0..=len`, from arbitrary numbers.
fn cuts(len: usize, raw: &[usize]) -> Vec<usize> {
    let mut cuts: Vec<usize> = raw.iter().map(|c| c % (len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and arbitrary bytes behind a `*`: every check of the fuzz target.
    #[test]
    fn resp_arbitrary_bytes(
        star in any::<bool>(),
        mut bytes in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        if star {
            bytes.insert(0, b'*');
        }
        checks::resp_frame(&bytes);
    }

    /// A pipeline of valid commands parses to exactly those commands, whole or cut anywhere.
    #[test]
    fn resp_valid_pipeline_whole_or_in_pieces(
        commands in proptest::collection::vec(arb_command(), 1..4),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut input = Vec::new();
        for c in &commands {
            let args: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            input.extend(resp_encode(&args));
        }
        let whole = parse_all(&input);
        prop_assert_eq!(whole.end.clone(), Ok(()));
        prop_assert_eq!(whole.consumed(), input.len());
        let expected: Vec<Vec<&[u8]>> = commands
            .iter()
            .map(|c| c.iter().map(Vec::as_slice).collect())
            .collect();
        prop_assert_eq!(whole.args(&input), expected);
        let pieces = resp_parse_fed(Limits::DEFAULT, &input, &cuts(input.len(), &raw_cuts));
        prop_assert_eq!(&pieces, &whole);
        // And truncated anywhere: the complete commands before the cut, then a wait, no error.
        if let Some(&cut) = cuts(input.len(), &raw_cuts).first() {
            let truncated = parse_all(&input[..cut]);
            prop_assert_eq!(truncated.end, Ok(()));
            prop_assert!(truncated.commands.len() <= whole.commands.len());
            prop_assert_eq!(&truncated.commands[..], &whole.commands[..truncated.commands.len()]);
        }
    }

    /// Valid commands with bytes flipped: whatever it makes of them is consistent, and what it
    /// allocates follows the input.
    #[test]
    fn resp_valid_command_with_flipped_bytes(
        command in arb_command(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        raw_cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
        let mut input = resp_encode(&args);
        input.extend(resp_encode(&[b"PING"]));
        for (at, byte) in flips {
            let at = at % input.len();
            input[at] = byte;
        }
        checks::resp_frame(&input);
        for limits in RESP_LIMITS {
            let (whole, bytes) = allocated_by(|| resp_parse_fed(limits, &input, &[input.len()]));
            // The outcome's own vectors included: a few words per input byte at most.
            prop_assert!(bytes <= 64 * input.len() + 4096, "{} bytes for {}", bytes, input.len());
            let pieces = resp_parse_fed(limits, &input, &cuts(input.len(), &raw_cuts));
            prop_assert_eq!(pieces, whole);
        }
    }

    /// A header claiming any length at all: refused or waited on, with nothing allocated for it.
    #[test]
    fn resp_any_claimed_length(
        array in any::<bool>(),
        claimed in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), "[0-9]{1,30}"],
    ) {
        let input = if array {
            format!("*{claimed}\r\n")
        } else {
            format!("*1\r\n${claimed}\r\n")
        };
        for limits in RESP_LIMITS {
            let mut parser = Parser::new(limits);
            let (result, bytes) = allocated_by(|| parser.parse(input.as_bytes()));
            prop_assert!(bytes <= 1024, "{:?}: {:?} after {} bytes", input, result, bytes);
            if let Ok(Status::Complete(n)) = result {
                prop_assert!(array && (claimed == "0" || claimed == "-1"));
                prop_assert_eq!(n, input.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bugs the fuzzers found, each kept as a regression test.

/// Found by the `context` target in ~20 s. The body `[format 1][1 pair]["n1"][u64::MAX]`,
/// framed with its checksum, is a context `Context::decode` accepts; a write over it coordinated
/// by `n1` computes its dot as `u64::MAX + 1` in `SiblingSet::write`: a panic in debug builds,
/// in release a dot of counter 0, which every later context covers (so later writes silently
/// supersede it and each other). Since any client can compute the checksum, this is BAD-INPUT
/// row 15 ("forged context"); `tests/bad_input.rs` has the same over the real binary.
/// Fixed: `Context::decode` refuses counters above `MAX_CONTEXT_COUNTER`.
#[test]
fn bug_context_counter_at_u64_max() {
    let body = [
        1u8, 1, 2, b'n', b'1', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    ];
    assert_eq!(
        checks::frame_context_body(&body),
        "AQECbjH___________8B9Chp7A"
    );
    checks::context(&body);
    assert_eq!(
        ringkv_core::Context::decode("AQECbjH___________8B9Chp7A"),
        Err(ringkv_core::ContextError::CounterOutOfRange)
    );
}

/// The same overflow, found by the `sibling_set` target: a stored (or peer-sent) set whose clock
/// holds `u64::MAX` for a node, `[format 1][clock: 1 entry "a" = u64::MAX, wall 0][0 versions]`,
/// decodes, and the next write through `a` overflows. Such a set is what a release build stores
/// after one forged context (the context's entries are witnessed into the key's clock), so one
/// request leaves the key with `a`'s dots stuck at counter 0 for good, on every replica it reaches.
/// Fixed: `SiblingSet::decode` refuses counters above `MAX_STORED_COUNTER`.
#[test]
fn bug_sibling_set_counter_at_u64_max() {
    let set = [
        1u8, 1, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0,
    ];
    assert!(ringkv_core::SiblingSet::decode(&set).is_err());
    checks::sibling_set(&set);
}
