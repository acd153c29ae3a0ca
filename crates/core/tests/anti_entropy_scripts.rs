//! Scripted tests of anti-entropy: two in-memory replicas of one partition, each with its Merkle
//! tree, and a network we deliver by hand. The harness plays the shell: it opens the sessions,
//! carries messages, and merges what each session hands out.

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_core::anti_entropy::{
    AntiEntropyMessage, AntiEntropySession, Body, MemoryPartition, MerkleTree, PartitionView,
    SessionConfig, SessionId, SessionOutcome,
};
use ringkv_core::{NodeId, PartitionId, SiblingSet};
use std::collections::VecDeque;

fn n(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn replica(buckets: u32) -> MemoryPartition {
    MemoryPartition::new(MerkleTree::new(PartitionId(0), 1, buckets).unwrap())
}

fn value_set(node: &str, value: &[u8], now: u64) -> SiblingSet {
    let mut s = SiblingSet::new();
    s.overwrite(&n(node), Some(Bytes::copy_from_slice(value)), now);
    s
}

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key:{i:06}"))
}

fn values(set: &SiblingSet) -> Vec<String> {
    let mut v: Vec<String> = set
        .live()
        .map(|v| String::from_utf8(v.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

fn contents(p: &MemoryPartition) -> Vec<(Bytes, SiblingSet)> {
    p.iter().map(|(k, s)| (k.clone(), s.clone())).collect()
}

/// What one exchange did.
struct Run {
    /// Message kinds in delivery order, `a>` from the initiator, `b>` from the responder.
    trace: Vec<String>,
    bytes: u64,
    outcome_a: Option<SessionOutcome>,
    outcome_b: Option<SessionOutcome>,
    merges: usize,
}

/// Runs one session between `a` (initiator) and `b`, delivering every message in order unless
/// `drop` says to lose it (by delivery index).
fn exchange_with(
    a: &mut MemoryPartition,
    b: &mut MemoryPartition,
    config: SessionConfig,
    drop: impl Fn(usize, &AntiEntropyMessage) -> bool,
) -> Run {
    let now = 1_000;
    let mut sa = AntiEntropySession::start(SessionId(7), config, now, a);
    let mut sb: Option<AntiEntropySession> = None;
    let mut net: VecDeque<(bool, AntiEntropyMessage)> =
        sa.drain_outbound().into_iter().map(|m| (true, m)).collect();
    let mut trace = Vec::new();
    let mut merges = 0;
    let mut delivered = 0;
    while let Some((from_a, msg)) = net.pop_front() {
        delivered += 1;
        if drop(delivered, &msg) {
            trace.push(format!("lost {}", msg.body.kind()));
            continue;
        }
        trace.push(format!(
            "{}{}",
            if from_a { "a>" } else { "b>" },
            msg.body.kind()
        ));
        // Everything goes over the wire as bytes.
        let msg = AntiEntropyMessage::decode(&msg.encode()).unwrap();
        let (session, part) = if from_a {
            let s = match sb.as_mut() {
                Some(s) => {
                    s.step(&msg, now, b);
                    s
                }
                None => sb.insert(AntiEntropySession::accept(&msg, config, now, b)),
            };
            (s, &mut *b)
        } else {
            sa.step(&msg, now, a);
            (&mut sa, &mut *a)
        };
        for (k, set) in session.drain_merges() {
            merges += 1;
            part.merge(k, &set);
        }
        for m in session.drain_outbound() {
            net.push_back((!from_a, m));
        }
    }
    // Whatever is still open times out.
    let later = now + config.idle_timeout_ms;
    sa.tick(later);
    if let Some(s) = sb.as_mut() {
        s.tick(later);
    }
    Run {
        trace,
        bytes: sa.bytes_sent() + sb.as_ref().map_or(0, |s| s.bytes_sent()),
        outcome_a: sa.outcome().cloned(),
        outcome_b: sb.as_ref().and_then(|s| s.outcome().cloned()),
        merges,
    }
}

fn exchange(a: &mut MemoryPartition, b: &mut MemoryPartition) -> Run {
    exchange_with(a, b, SessionConfig::default(), |_, _| false)
}

fn assert_identical(a: &MemoryPartition, b: &MemoryPartition) {
    assert_eq!(a.tree().root(), b.tree().root());
    assert_eq!(contents(a), contents(b));
}

fn filled(keys: usize, buckets: u32) -> MemoryPartition {
    let mut p = replica(buckets);
    for i in 0..keys {
        p.put(key(i), value_set("n1", format!("v{i}").as_bytes(), 1));
    }
    p
}

#[test]
fn identical_replicas_exchange_only_roots() {
    let mut a = filled(300, 64);
    let mut b = a.clone();
    let run = exchange(&mut a, &mut b);
    assert_eq!(run.trace, ["a>start", "b>in-sync"]);
    assert_eq!(run.outcome_a, Some(SessionOutcome::InSync));
    assert_eq!(run.outcome_b, Some(SessionOutcome::InSync));
    assert!(run.bytes < 64, "{} bytes", run.bytes);
}

#[test]
fn empty_replicas_are_in_sync() {
    let run = exchange(&mut replica(1024), &mut replica(1024));
    assert_eq!(run.trace, ["a>start", "b>in-sync"]);
}

#[test]
fn one_differing_key_converges() {
    let mut a = filled(300, 64);
    let mut b = a.clone();
    let mut newer = a.get(&key(42)).unwrap().clone();
    newer.overwrite(&n("n2"), Some(Bytes::from_static(b"newer")), 2);
    b.put(key(42), newer);
    let run = exchange(&mut a, &mut b);
    assert_identical(&a, &b);
    assert_eq!(values(a.get(&key(42)).unwrap()), ["newer"]);
    assert_eq!(run.outcome_a, Some(SessionOutcome::Repaired));
    assert_eq!(run.outcome_b, Some(SessionOutcome::Repaired));
    // 64 buckets: depths 1..=6 descended one path each, then one bucket's keys.
    let kinds: Vec<&str> = run.trace.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "a>start",
            "b>nodes",
            "a>nodes",
            "b>nodes",
            "a>nodes",
            "b>nodes",
            "a>nodes",
            "b>key-digests",
            "a>sets",
            "b>wanted"
        ]
    );
    assert!(run.merges <= 2);
}

#[test]
fn a_key_on_one_side_only_is_copied_both_ways() {
    let mut a = filled(100, 16);
    let mut b = a.clone();
    a.put(key(1000), value_set("n1", b"only-a", 2));
    b.put(key(2000), value_set("n2", b"only-b", 2));
    exchange(&mut a, &mut b);
    assert_identical(&a, &b);
    assert_eq!(values(b.get(&key(1000)).unwrap()), ["only-a"]);
    assert_eq!(values(a.get(&key(2000)).unwrap()), ["only-b"]);
}

#[test]
fn a_tombstone_deletes_the_value_and_never_resurrects() {
    let mut a = filled(100, 16);
    let mut b = a.clone();
    let mut deleted = b.get(&key(7)).unwrap().clone();
    deleted.overwrite(&n("n2"), None, 2);
    b.put(key(7), deleted);
    // Either side may start the round.
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    exchange(&mut a, &mut b);
    exchange(&mut b2, &mut a2);
    for p in [&a, &b, &a2, &b2] {
        let set = p.get(&key(7)).unwrap();
        assert!(set.is_deleted(), "the value came back");
        assert_eq!(set.versions().len(), 1);
    }
    assert_identical(&a, &b);
    assert_identical(&a2, &b2);
    // Another round changes nothing.
    let run = exchange(&mut a, &mut b);
    assert_eq!(run.outcome_a, Some(SessionOutcome::InSync));
}

#[test]
fn concurrent_versions_end_as_siblings_on_both() {
    let mut a = filled(100, 16);
    let mut b = a.clone();
    let mut on_a = a.get(&key(3)).unwrap().clone();
    on_a.overwrite(&n("n1"), Some(Bytes::from_static(b"left")), 2);
    a.put(key(3), on_a);
    let mut on_b = b.get(&key(3)).unwrap().clone();
    on_b.overwrite(&n("n2"), Some(Bytes::from_static(b"right")), 2);
    b.put(key(3), on_b);
    exchange(&mut a, &mut b);
    assert_identical(&a, &b);
    assert_eq!(values(a.get(&key(3)).unwrap()), ["left", "right"]);
}

#[test]
fn a_lost_message_ends_the_round_and_the_next_round_repairs() {
    let mut a = filled(200, 64);
    let mut b = a.clone();
    // (Writes go through the key's current set, so each gets a fresh dot.)
    write(&mut b, "n2", 5, Some(b"x"), 2);
    write(&mut a, "n1", 6, Some(b"y"), 2);
    // Lose the responder's key list.
    let run = exchange_with(&mut a, &mut b, SessionConfig::default(), |_, m| {
        matches!(m.body, Body::KeyDigests { .. })
    });
    assert_eq!(run.outcome_a, Some(SessionOutcome::TimedOut));
    assert_eq!(run.outcome_b, Some(SessionOutcome::TimedOut));
    assert_ne!(a.tree().root(), b.tree().root());
    let run = exchange(&mut a, &mut b);
    assert_eq!(run.outcome_a, Some(SessionOutcome::Repaired));
    assert_identical(&a, &b);
}

#[test]
fn duplicated_messages_are_harmless() {
    let mut a = filled(200, 8);
    let mut b = a.clone();
    for i in 0..20 {
        b.put(key(i), value_set("n2", b"b", 2));
    }
    // Deliver every message twice by running the harness over a doubling network.
    let config = SessionConfig::default();
    let mut sa = AntiEntropySession::start(SessionId(1), config, 0, &a);
    let mut sb: Option<AntiEntropySession> = None;
    let mut net: VecDeque<(bool, AntiEntropyMessage)> = VecDeque::new();
    for m in sa.drain_outbound() {
        net.push_back((true, m.clone()));
        net.push_back((true, m));
    }
    while let Some((from_a, msg)) = net.pop_front() {
        let (s, p) = if from_a {
            let s = match sb.as_mut() {
                Some(s) => {
                    s.step(&msg, 0, &b);
                    s
                }
                None => sb.insert(AntiEntropySession::accept(&msg, config, 0, &b)),
            };
            (s, &mut b)
        } else {
            sa.step(&msg, 0, &a);
            (&mut sa, &mut a)
        };
        for (k, set) in s.drain_merges() {
            p.merge(k, &set);
        }
        for m in s.drain_outbound() {
            net.push_back((!from_a, m.clone()));
            net.push_back((!from_a, m));
        }
    }
    assert_eq!(sa.outcome(), Some(&SessionOutcome::Repaired));
    assert_identical(&a, &b);
}

#[test]
fn a_bucket_over_the_message_limit_is_split_into_spans() {
    // One bucket, four keys a message: spans cut the bucket at hash boundaries.
    let config = SessionConfig {
        max_keys_per_message: 4,
        window: 2,
        ..SessionConfig::default()
    };
    let mut a = replica(1);
    let mut b = filled(50, 1);
    // b compares the leaf (depth 0) and sends 50 keys in 13 chunks; a wants them all.
    let run = exchange_with(&mut a, &mut b, config, |_, _| false);
    assert_eq!(
        run.trace.iter().filter(|t| *t == "b>key-digests").count(),
        13
    );
    assert_eq!(run.outcome_a, Some(SessionOutcome::Repaired));
    assert_eq!(run.outcome_b, Some(SessionOutcome::Repaired));
    assert_identical(&a, &b);
}

#[test]
fn over_budget_differences_converge_over_rounds() {
    let config = SessionConfig {
        max_keys_per_message: 4,
        ..SessionConfig::default()
    };
    // Here the leaf comparer (b) is the empty side: a's sets come back 4 at a time.
    let mut a = filled(30, 1);
    let mut b = replica(1);
    let mut rounds = 0;
    while a.tree().root() != b.tree().root() {
        exchange_with(&mut a, &mut b, config, |_, _| false);
        rounds += 1;
        assert!(rounds <= 10);
    }
    assert_identical(&a, &b);
    assert_eq!(rounds, 8);
}

#[test]
fn a_malformed_peer_is_refused() {
    let a = filled(10, 16);
    let start = |body| AntiEntropyMessage {
        session: SessionId(1),
        partition: PartitionId(0),
        body,
    };
    // Wrong shape.
    let mut s = AntiEntropySession::accept(
        &start(Body::Start {
            buckets: 32,
            root: 0,
        }),
        SessionConfig::default(),
        0,
        &a,
    );
    assert!(matches!(s.outcome(), Some(SessionOutcome::Aborted(_))));
    assert_eq!(s.drain_outbound()[0].body.kind(), "abort");
    // A node list wider than the level.
    let mut s = AntiEntropySession::start(SessionId(1), SessionConfig::default(), 0, &a);
    s.step(
        &start(Body::Nodes {
            depth: 1,
            nodes: vec![(0, 1), (1, 2), (2, 3)],
        }),
        0,
        &a,
    );
    assert!(matches!(s.outcome(), Some(SessionOutcome::Aborted(_))));
    // Keys outside their span.
    let mut b = replica(1);
    b.put(key(1), value_set("n1", b"v", 1));
    let mut s = AntiEntropySession::start(SessionId(1), SessionConfig::default(), 0, &b);
    s.step(
        &start(Body::KeyDigests {
            seq: 0,
            last: true,
            spans: vec![ringkv_core::anti_entropy::KeySpan {
                first: 0,
                last: 0,
                keys: vec![(key(1), 5)],
            }],
        }),
        0,
        &b,
    );
    assert!(matches!(s.outcome(), Some(SessionOutcome::Aborted(_))));
}

/// The figure: 100,000 keys of ~100 bytes, 100 of them different.
#[test]
fn hundred_differing_keys_of_100k_move_under_5_percent_of_a_copy() {
    const KEYS: usize = 100_000;
    const DIFFERING: usize = 100;
    let mut a = replica(1024);
    let value = vec![b'x'; 100];
    for i in 0..KEYS {
        a.put(key(i), value_set("n1", &value, 1_700_000_000_000));
    }
    let mut b = a.clone();
    for i in (0..KEYS).step_by(KEYS / DIFFERING) {
        let mut set = b.get(&key(i)).unwrap().clone();
        set.overwrite(
            &n("n2"),
            Some(Bytes::from(vec![b'y'; 100])),
            1_700_000_000_001,
        );
        b.put(key(i), set);
    }
    let copy_bytes: usize = a.iter().map(|(k, s)| k.len() + s.encode().len()).sum();
    let run = exchange(&mut a, &mut b);
    assert_identical(&a, &b);
    let ratio = run.bytes as f64 / copy_bytes as f64;
    println!(
        "anti-entropy, {KEYS} keys, {DIFFERING} differing: {} bytes exchanged in {} messages, \
         copying the partition: {copy_bytes} bytes ({:.2}%)",
        run.bytes,
        run.trace.len(),
        ratio * 100.0
    );
    assert!(ratio <= 0.05, "{ratio}");
    assert_eq!(run.merges, 2 * DIFFERING);
}

#[derive(Debug, Clone)]
enum Op {
    /// A newer write on one side (`true` = a).
    Update(bool, usize),
    /// A delete on one side.
    Delete(bool, usize),
    /// Concurrent writes on both sides.
    Concurrent(usize),
    /// A new key on one side only.
    Insert(bool, usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<bool>(), 0..200usize).prop_map(|(s, k)| Op::Update(s, k)),
        (any::<bool>(), 0..200usize).prop_map(|(s, k)| Op::Delete(s, k)),
        (0..200usize).prop_map(Op::Concurrent),
        (any::<bool>(), 200..260usize).prop_map(|(s, k)| Op::Insert(s, k)),
    ]
}

fn write(p: &mut MemoryPartition, node: &str, k: usize, value: Option<&[u8]>, now: u64) {
    let mut set = p.get(&key(k)).cloned().unwrap_or_default();
    set.overwrite(&n(node), value.map(Bytes::copy_from_slice), now);
    p.put(key(k), set);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Random divergences always converge after one session, to the merge of both sides.
    #[test]
    fn random_divergences_converge_in_one_session(
        ops in proptest::collection::vec(op(), 0..60),
        buckets_log in 0u32..7,
        a_starts in any::<bool>(),
    ) {
        let buckets = 1 << buckets_log;
        let mut a = filled(200, buckets);
        let mut b = a.clone();
        for (t, op) in ops.iter().enumerate() {
            let now = 10 + t as u64;
            match *op {
                Op::Update(true, k) => write(&mut a, "n1", k, Some(b"a"), now),
                Op::Update(false, k) => write(&mut b, "n2", k, Some(b"b"), now),
                Op::Delete(true, k) => write(&mut a, "n1", k, None, now),
                Op::Delete(false, k) => write(&mut b, "n2", k, None, now),
                Op::Concurrent(k) => {
                    write(&mut a, "n1", k, Some(b"ca"), now);
                    write(&mut b, "n2", k, Some(b"cb"), now);
                }
                Op::Insert(true, k) => write(&mut a, "n1", k, Some(b"new-a"), now),
                Op::Insert(false, k) => write(&mut b, "n2", k, Some(b"new-b"), now),
            }
        }
        // The expected result: every key's two sets merged.
        let mut expected = a.clone();
        for (k, s) in b.iter() {
            expected.merge(k.clone(), s);
        }
        let run = if a_starts { exchange(&mut a, &mut b) } else { exchange(&mut b, &mut a) };
        prop_assert!(matches!(run.outcome_a, Some(SessionOutcome::InSync | SessionOutcome::Repaired)));
        prop_assert_eq!(contents(&a), contents(&expected));
        prop_assert_eq!(contents(&b), contents(&expected));
        prop_assert_eq!(a.tree().root(), b.tree().root());
        // A second round finds nothing.
        let again = exchange(&mut a, &mut b);
        prop_assert_eq!(again.outcome_a, Some(SessionOutcome::InSync));
    }
}
