//! One anti-entropy exchange between two replicas of one partition, as a sans-IO state machine.

use super::message::{AntiEntropyMessage, Body, KeyDigest, KeySpan, NodeHash, SessionId};
use super::tree::MerkleTree;
use crate::{KeyHash, PartitionId, SiblingSet};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// What a session reads of the local replica. The shell implements it over storage (a bucket is
/// one range scan of the `data` keyspace); the tests implement it over a `BTreeMap`. Reads only:
/// what the session wants written comes out of [`AntiEntropySession::drain_merges`].
pub trait PartitionView {
    /// The partition's tree, kept current by the shell on every write.
    fn tree(&self) -> &MerkleTree;
    /// Every local key of the partition whose hash is in `first..=last`, with the digest of its
    /// stored set ([`super::value_digest`] of the encoded set), sorted by `(hash, key)`.
    fn key_digests(&self, first: KeyHash, last: KeyHash) -> Vec<KeyDigest>;
    /// The stored set of `key` (tombstones included), `None` when absent.
    fn sibling_set(&self, key: &[u8]) -> Option<SiblingSet>;
}

/// Bounds and pacing of a session. Both sides should use the same values, but nothing breaks if
/// they do not: each side checks what it receives against its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Most keys in one `KeyDigests`, `Sets` or `Wanted` (and most `want` entries). A bucket
    /// with more keys is cut into several spans.
    pub max_keys_per_message: usize,
    /// Soft budget of encoded sibling-set bytes in one `Sets` or `Wanted`: once passed, the
    /// remaining sets wait for the next round (a message always carries at least one set).
    pub max_set_bytes_per_message: usize,
    /// `KeyDigests` chunks in flight at once.
    pub window: usize,
    /// A session with no message for this long ends as [`SessionOutcome::TimedOut`].
    pub idle_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_keys_per_message: 1024,
            max_set_bytes_per_message: 4 << 20,
            window: 4,
            idle_timeout_ms: 30_000,
        }
    }
}

/// Most `KeyDigests` chunks one session accepts: far above any honest partition
/// (`MAX_BUCKETS` buckets of `max_keys_per_message` keys), it only caps what a peer can make us
/// remember.
const MAX_CHUNKS: u32 = 1 << 20;

/// Which end of the session this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionOutcome {
    /// Nothing differed.
    InSync,
    /// The leaves were exchanged to the end; `drain_merges` holds what to merge.
    Repaired,
    /// No message for `idle_timeout_ms`: a message was lost, or the peer died. Merges already
    /// handed out stay valid.
    TimedOut,
    /// Either side gave up; the reason is for logs.
    Aborted(String),
}

/// Counters of one session, for logs, metrics and `ringkv status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Sum of postcard-encoded sizes of the messages this side sent.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    /// Leaves found different (only on the side that compared the leaves).
    pub differing_buckets: u64,
    /// Sibling sets sent to the peer.
    pub sets_sent: u64,
    /// Sibling sets received and handed to the shell to merge.
    pub sets_received: u64,
}

#[derive(Debug)]
enum Phase {
    /// Expecting `Nodes` at `expect_depth` (or, one past the leaves, the peer's `KeyDigests`).
    Descending {
        expect_depth: u32,
    },
    /// This side compared the leaves and streams its keys of the differing buckets.
    Sending {
        buckets: VecDeque<u32>,
        spans: VecDeque<KeySpan>,
        next_seq: u32,
        /// Chunks sent and not yet answered: their hash ranges, to check the answer against.
        in_flight: BTreeMap<u32, Vec<(u64, u64)>>,
    },
    /// The peer compared the leaves; this side answers its chunks.
    Receiving {
        answered: BTreeSet<u32>,
        chunks: Option<u32>,
        /// Chunks whose `Wanted` has not come yet, with the keys asked for.
        awaiting: BTreeMap<u32, BTreeSet<Bytes>>,
    },
    Done(SessionOutcome),
}

/// One side of one anti-entropy exchange over one partition. Drive it with
/// [`step`](Self::step) (each peer message) and [`tick`](Self::tick) (time); send what
/// [`drain_outbound`](Self::drain_outbound) returns and merge what
/// [`drain_merges`](Self::drain_merges) returns. See the module docs for the protocol.
#[derive(Debug)]
pub struct AntiEntropySession {
    id: SessionId,
    partition: PartitionId,
    role: Role,
    config: SessionConfig,
    phase: Phase,
    deadline_ms: u64,
    outbound: Vec<AntiEntropyMessage>,
    merges: Vec<(Bytes, SiblingSet)>,
    stats: SessionStats,
}

impl AntiEntropySession {
    /// Opens a session as the initiator: queues `Start` with the local root.
    pub fn start(
        id: SessionId,
        config: SessionConfig,
        now_ms: u64,
        view: &impl PartitionView,
    ) -> Self {
        let tree = view.tree();
        let mut s = Self::new(id, tree.partition(), Role::Initiator, config, now_ms);
        s.phase = Phase::Descending { expect_depth: 1 };
        s.send(Body::Start {
            buckets: tree.buckets(),
            root: tree.root(),
        });
        s
    }

    /// Opens the responder's side from the initiator's `Start`. The shell calls this for a
    /// `Start` whose `(peer, session)` it has no session for, after checking it owns the
    /// partition (if not, it answers `Abort` itself or drops the message).
    pub fn accept(
        msg: &AntiEntropyMessage,
        config: SessionConfig,
        now_ms: u64,
        view: &impl PartitionView,
    ) -> Self {
        let tree = view.tree();
        let mut s = Self::new(msg.session, msg.partition, Role::Responder, config, now_ms);
        s.count_received(msg);
        match &msg.body {
            Body::Start { buckets, root } => {
                if msg.partition != tree.partition() {
                    s.abort(format!(
                        "partition {} is not this tree's {}",
                        msg.partition,
                        tree.partition()
                    ));
                } else if *buckets != tree.buckets() {
                    s.abort(format!(
                        "tree shape differs: {} buckets here, {buckets} there",
                        tree.buckets()
                    ));
                } else {
                    s.compare_nodes(0, &[(0, *root)], view);
                }
            }
            other => s.abort(format!("session opened by {}, not start", other.kind())),
        }
        s
    }

    fn new(
        id: SessionId,
        partition: PartitionId,
        role: Role,
        config: SessionConfig,
        now_ms: u64,
    ) -> Self {
        AntiEntropySession {
            id,
            partition,
            role,
            config,
            phase: Phase::Descending { expect_depth: 0 },
            deadline_ms: now_ms.saturating_add(config.idle_timeout_ms),
            outbound: Vec::new(),
            merges: Vec::new(),
            stats: SessionStats::default(),
        }
    }

    pub fn id(&self) -> SessionId {
        self.id
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// `Some` once the session is over; it then sends nothing more and ignores messages.
    pub fn outcome(&self) -> Option<&SessionOutcome> {
        match &self.phase {
            Phase::Done(o) => Some(o),
            _ => None,
        }
    }

    pub fn is_done(&self) -> bool {
        self.outcome().is_some()
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    /// Sum of postcard-encoded sizes of every message this side sent.
    pub fn bytes_sent(&self) -> u64 {
        self.stats.bytes_sent
    }

    /// Messages to send to the peer, in order.
    pub fn drain_outbound(&mut self) -> Vec<AntiEntropyMessage> {
        std::mem::take(&mut self.outbound)
    }

    /// Sets received from the peer: for each, the shell merges it into the local set of the key
    /// (`Replica::merge`: read, `SiblingSet::merge`, prune, write, update the tree). Order does
    /// not matter; a key may appear twice.
    pub fn drain_merges(&mut self) -> Vec<(Bytes, SiblingSet)> {
        std::mem::take(&mut self.merges)
    }

    /// Time passes: past the idle deadline the session ends as [`SessionOutcome::TimedOut`].
    pub fn tick(&mut self, now_ms: u64) {
        if !self.is_done() && now_ms >= self.deadline_ms {
            self.phase = Phase::Done(SessionOutcome::TimedOut);
        }
    }

    /// Ends the session from this side (shutdown, partition no longer owned), telling the peer.
    pub fn cancel(&mut self, reason: &str) {
        if !self.is_done() {
            self.abort(reason.to_string());
        }
    }

    /// A message from the peer. Messages of another session or partition, and messages the
    /// current phase does not expect, are ignored; a malformed one aborts the session.
    pub fn step(&mut self, msg: &AntiEntropyMessage, now_ms: u64, view: &impl PartitionView) {
        if msg.session != self.id || msg.partition != self.partition || self.is_done() {
            return;
        }
        self.count_received(msg);
        self.deadline_ms = now_ms.saturating_add(self.config.idle_timeout_ms);
        let leaf_depth = view.tree().leaf_depth();
        match (&msg.body, &self.phase) {
            (Body::Abort { reason }, _) => {
                self.phase = Phase::Done(SessionOutcome::Aborted(format!("peer: {reason}")));
            }
            (Body::InSync, Phase::Descending { .. }) => {
                self.phase = Phase::Done(SessionOutcome::InSync);
            }
            (Body::Nodes { depth, nodes }, Phase::Descending { expect_depth })
                if depth == expect_depth =>
            {
                self.compare_nodes(*depth, nodes, view);
            }
            (Body::KeyDigests { .. }, Phase::Descending { expect_depth })
                if *expect_depth == leaf_depth + 1 =>
            {
                self.phase = Phase::Receiving {
                    answered: BTreeSet::new(),
                    chunks: None,
                    awaiting: BTreeMap::new(),
                };
                self.on_key_digests(&msg.body, view);
            }
            (Body::KeyDigests { .. }, Phase::Receiving { .. }) => {
                self.on_key_digests(&msg.body, view)
            }
            (Body::Sets { .. }, Phase::Sending { .. }) => self.on_sets(&msg.body, view),
            (Body::Wanted { .. }, Phase::Receiving { .. }) => self.on_wanted(&msg.body),
            // Duplicates, stale depths, a second `Start`: nothing to do.
            _ => {}
        }
    }

    fn count_received(&mut self, msg: &AntiEntropyMessage) {
        self.stats.messages_received += 1;
        self.stats.bytes_received += msg.encode().len() as u64;
    }

    fn send(&mut self, body: Body) {
        let msg = AntiEntropyMessage {
            session: self.id,
            partition: self.partition,
            body,
        };
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += msg.encode().len() as u64;
        self.outbound.push(msg);
    }

    fn abort(&mut self, reason: String) {
        self.send(Body::Abort {
            reason: reason.clone(),
        });
        self.phase = Phase::Done(SessionOutcome::Aborted(reason));
    }

    /// Compares the peer's hashes at `depth` with ours and descends into the differing ones.
    fn compare_nodes(&mut self, depth: u32, nodes: &[NodeHash], view: &impl PartitionView) {
        let tree = view.tree();
        let Some(level) = tree.level(depth) else {
            return self.abort(format!("depth {depth} is below the leaves"));
        };
        // Bounded by the level's width, itself bounded by MAX_BUCKETS.
        if nodes.len() > level.len() || nodes.windows(2).any(|w| w[0].0 >= w[1].0) {
            return self.abort(format!("malformed node list at depth {depth}"));
        }
        let mut differing = Vec::new();
        for &(index, hash) in nodes {
            match level.get(index as usize) {
                Some(&mine) if mine != hash => differing.push(index),
                Some(_) => {}
                None => return self.abort(format!("node {index} out of range at depth {depth}")),
            }
        }
        if differing.is_empty() {
            self.send(Body::InSync);
            self.phase = Phase::Done(SessionOutcome::InSync);
            return;
        }
        if depth == tree.leaf_depth() {
            self.stats.differing_buckets = differing.len() as u64;
            self.phase = Phase::Sending {
                buckets: differing.into(),
                spans: VecDeque::new(),
                next_seq: 0,
                in_flight: BTreeMap::new(),
            };
            self.fill_window(view);
            return;
        }
        let below = tree.level(depth + 1).expect("depth is above the leaves");
        let children = differing
            .iter()
            .flat_map(|&i| [2 * i, 2 * i + 1])
            .map(|c| (c, below[c as usize]))
            .collect();
        self.send(Body::Nodes {
            depth: depth + 1,
            nodes: children,
        });
        self.phase = Phase::Descending {
            expect_depth: depth + 2,
        };
    }

    /// Sending side: sends key chunks until `window` are in flight; done when all are answered.
    fn fill_window(&mut self, view: &impl PartitionView) {
        let tree = view.tree();
        let max_keys = self.config.max_keys_per_message.max(1);
        loop {
            let Phase::Sending {
                buckets,
                spans,
                next_seq,
                in_flight,
            } = &mut self.phase
            else {
                return;
            };
            if in_flight.len() >= self.config.window.max(1) {
                return;
            }
            // Build the next chunk: whole spans, up to max_keys keys (at least one span).
            let mut chunk: Vec<KeySpan> = Vec::new();
            let mut keys = 0;
            loop {
                if spans.is_empty() {
                    let Some(bucket) = buckets.pop_front() else {
                        break;
                    };
                    spans.extend(bucket_spans(tree, bucket, max_keys, view));
                }
                let next_len = spans.front().map_or(0, |s| s.keys.len());
                if !chunk.is_empty() && keys + next_len > max_keys {
                    break;
                }
                let span = spans.pop_front().expect("spans is not empty");
                keys += span.keys.len();
                chunk.push(span);
            }
            if chunk.is_empty() {
                if in_flight.is_empty() {
                    self.phase = Phase::Done(SessionOutcome::Repaired);
                }
                return;
            }
            let seq = *next_seq;
            *next_seq += 1;
            let last = spans.is_empty() && buckets.is_empty();
            in_flight.insert(seq, chunk.iter().map(|s| (s.first, s.last)).collect());
            self.send(Body::KeyDigests {
                seq,
                last,
                spans: chunk,
            });
        }
    }

    /// Receiving side: compares a chunk with our keys, answers with our differing sets and the
    /// keys we want.
    fn on_key_digests(&mut self, body: &Body, view: &impl PartitionView) {
        let Body::KeyDigests { seq, last, spans } = body else {
            return;
        };
        let Phase::Receiving {
            answered, chunks, ..
        } = &self.phase
        else {
            return;
        };
        if answered.contains(seq) {
            return;
        }
        if *seq >= MAX_CHUNKS || chunks.is_some_and(|n| *seq >= n) {
            return self.abort(format!("chunk {seq} out of range"));
        }
        let tree = view.tree();
        let total: usize = spans.iter().map(|s| s.keys.len()).sum();
        if total > self.config.max_keys_per_message.max(1) {
            return self.abort(format!("chunk {seq} holds {total} keys"));
        }
        let mut sets = Vec::new();
        let mut set_bytes = 0usize;
        let mut want = Vec::new();
        for span in spans {
            let (first, last_hash) = (KeyHash(span.first), KeyHash(span.last));
            if first > last_hash || !tree.contains(first) || !tree.contains(last_hash) {
                return self.abort("span outside the partition".into());
            }
            let theirs: HashMap<&[u8], u128> =
                span.keys.iter().map(|(k, d)| (k.as_ref(), *d)).collect();
            if span.keys.iter().any(|(k, _)| {
                let h = KeyHash::of(k);
                h < first || h > last_hash
            }) {
                return self.abort("key outside its span".into());
            }
            let ours = view.key_digests(first, last_hash);
            let mine: HashMap<&[u8], u128> = ours.iter().map(|(k, d)| (k.as_ref(), *d)).collect();
            for (key, digest) in &ours {
                if theirs.get(key.as_ref()) == Some(digest) {
                    continue;
                }
                if sets.len() >= self.config.max_keys_per_message.max(1)
                    || (!sets.is_empty() && set_bytes >= self.config.max_set_bytes_per_message)
                {
                    // Over budget: the rest waits for the next round.
                    continue;
                }
                if let Some(set) = view.sibling_set(key) {
                    set_bytes += set.encode().len();
                    sets.push((key.clone(), set));
                }
            }
            for (key, digest) in &span.keys {
                if mine.get(key.as_ref()) != Some(digest) {
                    want.push(key.clone());
                }
            }
        }
        self.stats.sets_sent += sets.len() as u64;
        let Phase::Receiving {
            answered,
            chunks,
            awaiting,
        } = &mut self.phase
        else {
            return;
        };
        answered.insert(*seq);
        if *last {
            *chunks = Some(seq + 1);
        }
        awaiting.insert(*seq, want.iter().cloned().collect());
        self.send(Body::Sets {
            seq: *seq,
            sets,
            want,
        });
    }

    /// Sending side: merges the peer's sets, answers its `want`, sends the next chunk.
    fn on_sets(&mut self, body: &Body, view: &impl PartitionView) {
        let Body::Sets { seq, sets, want } = body else {
            return;
        };
        let Phase::Sending { in_flight, .. } = &mut self.phase else {
            return;
        };
        let Some(ranges) = in_flight.remove(seq) else {
            return;
        };
        let max_keys = self.config.max_keys_per_message.max(1);
        if sets.len() > max_keys || want.len() > max_keys {
            return self.abort(format!("answer to chunk {seq} is over the key limit"));
        }
        let in_chunk = |key: &[u8]| {
            let h = KeyHash::of(key).0;
            ranges.iter().any(|&(f, l)| f <= h && h <= l)
        };
        for (key, set) in sets {
            if in_chunk(key) {
                self.stats.sets_received += 1;
                self.merges.push((key.clone(), set.clone()));
            }
        }
        let mut answer = Vec::new();
        let mut bytes = 0usize;
        let wanted: BTreeSet<&Bytes> = want.iter().filter(|k| in_chunk(k)).collect();
        for key in wanted {
            if !answer.is_empty() && bytes >= self.config.max_set_bytes_per_message {
                break;
            }
            if let Some(set) = view.sibling_set(key) {
                bytes += set.encode().len();
                answer.push((key.clone(), set));
            }
        }
        self.stats.sets_sent += answer.len() as u64;
        self.send(Body::Wanted {
            seq: *seq,
            sets: answer,
        });
        self.fill_window(view);
    }

    /// Receiving side: merges what we asked for; done after the last chunk's answer.
    fn on_wanted(&mut self, body: &Body) {
        let Body::Wanted { seq, sets } = body else {
            return;
        };
        let Phase::Receiving {
            answered,
            chunks,
            awaiting,
        } = &mut self.phase
        else {
            return;
        };
        let Some(asked) = awaiting.remove(seq) else {
            return;
        };
        let done = awaiting.is_empty() && chunks.is_some_and(|n| answered.len() as u32 == n);
        for (key, set) in sets {
            if asked.contains(key) {
                self.stats.sets_received += 1;
                self.merges.push((key.clone(), set.clone()));
            }
        }
        if done {
            self.phase = Phase::Done(SessionOutcome::Repaired);
        }
    }
}

/// The spans covering one bucket: the whole bucket when its keys fit in a message, else cut at
/// hash boundaries into pieces of at most `max_keys` keys (a run of equal hashes is never cut).
fn bucket_spans(
    tree: &MerkleTree,
    bucket: u32,
    max_keys: usize,
    view: &impl PartitionView,
) -> Vec<KeySpan> {
    let (first, last) = tree.bucket_range(bucket);
    let keys = view.key_digests(first, last);
    if keys.len() <= max_keys {
        return vec![KeySpan {
            first: first.0,
            last: last.0,
            keys,
        }];
    }
    let mut spans = Vec::new();
    let mut start = first.0;
    let mut current: Vec<KeyDigest> = Vec::new();
    let mut iter = keys.into_iter().peekable();
    while let Some(entry) = iter.next() {
        let hash = KeyHash::of(&entry.0).0;
        current.push(entry);
        let next_hash = iter.peek().map(|(k, _)| KeyHash::of(k).0);
        if current.len() >= max_keys && next_hash.is_some_and(|n| n != hash) {
            let end = next_hash.expect("checked above") - 1;
            spans.push(KeySpan {
                first: start,
                last: end,
                keys: std::mem::take(&mut current),
            });
            start = end + 1;
        }
    }
    spans.push(KeySpan {
        first: start,
        last: last.0,
        keys: current,
    });
    spans
}
