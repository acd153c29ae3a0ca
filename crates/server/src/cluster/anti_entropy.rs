//! Merkle anti-entropy over peer tag `ANTI_ENTROPY`: the worker that compares one partition
//! with one other replica at a time, and the responder side of those sessions.
//!
//! The pure exchange is `ringkv_core::anti_entropy::AntiEntropySession`; this module drives it.
//!
//! # Trees
//! Each partition's `MerkleTree` (`merkle_buckets` leaves, default 64: 2 KiB per partition, 2 MiB
//! for 1024) lives in the [`Replica`](crate::replica::Replica), which updates it under the same
//! critical section as every store write. A tree is built lazily from a scan of its partition
//! the first time anti-entropy uses it (on either side), in `spawn_blocking`; until then writes
//! skip it, so a node with data starts instantly and pays one partition scan per session.
//!
//! # Protocol over the transport: call/response
//! The session is reactive (a side only sends in answer to what it receives), so the initiator
//! drives it with calls: it sends every queued message as one [`AeRequest`] (a batch of
//! `AntiEntropyMessage`s) and the responder answers with the messages its session queued after
//! stepping them (and after merging what they carried). The initiator steps the answer and
//! repeats while it has something to send; a round with nothing to send before the session ends
//! is cancelled. Responder sessions are keyed by `(peer, session id)` and forgotten when done
//! or idle past the session timeout.
//!
//! # Worker
//! Every `anti_entropy_interval_ms` the worker takes the next partition (round robin) whose
//! preference list holds this node and one other replica that gossip does not show down or
//! suspected (rotating among them), and runs one session: one session at a time per node.
//! Merges go through `Replica::merge_counted`; keys whose set changed count as repairs.

use crate::error::NodeError;
use crate::node::Node;
use crate::peer::versioned::{self, encode};
use crate::peer::{tags, HandlerFuture, PeerRequest};
use crate::replica::{now_ms, Replica};
use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_core::anti_entropy::{
    AntiEntropyMessage, AntiEntropySession, Body, KeyDigest, MerkleTree, PartitionView,
    SessionConfig, SessionId, SessionOutcome,
};
use ringkv_core::{KeyHash, NodeId, PartitionId, SiblingSet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one call of a session may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The session bounds both sides use: a batch of `window` answers stays well under the
/// transport's 16 MiB frame.
pub fn session_config() -> SessionConfig {
    SessionConfig {
        max_set_bytes_per_message: 1 << 20,
        ..SessionConfig::default()
    }
}

/// One call: messages of one session, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct AeRequest {
    pub messages: Vec<AntiEntropyMessage>,
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    versioned::decode(bytes, "anti-entropy")
}

/// Anti-entropy state of one node: responder sessions, session ids, last exchanges.
pub struct AntiEntropyState {
    next_session: AtomicU64,
    responders: Mutex<HashMap<(NodeId, SessionId), AntiEntropySession>>,
    /// Per partition, wall-clock ms of the last session that ended InSync or Repaired (0 =
    /// never).
    last_exchange: Vec<AtomicU64>,
}

/// What `/v1/cluster`, INFO and `ringkv status` show.
#[derive(Debug, Clone, Copy, Default)]
pub struct AntiEntropySummary {
    /// Partitions this node replicates.
    pub partitions: u64,
    /// Of those, partitions with at least one successful exchange since start.
    pub exchanged_ever: u64,
    /// Age of the oldest last exchange among those exchanged; `None` when none was.
    pub oldest_exchange_age_ms: Option<u64>,
}

impl AntiEntropySummary {
    /// The summary of a per-partition list, so both views come from one clock reading.
    pub fn of(ages: &[PartitionExchange]) -> AntiEntropySummary {
        let mut s = AntiEntropySummary {
            partitions: ages.len() as u64,
            ..Default::default()
        };
        for age in ages.iter().filter_map(|e| e.age_ms) {
            s.exchanged_ever += 1;
            s.oldest_exchange_age_ms = Some(s.oldest_exchange_age_ms.map_or(age, |a| a.max(age)));
        }
        s
    }
}

/// One partition's last successful exchange (either side of the session), for the
/// per-partition list of `/v1/cluster` and `ringkv status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionExchange {
    pub partition: PartitionId,
    /// Milliseconds since its last session that ended InSync or Repaired; `None` when it had
    /// none since this node started (the times are not persisted).
    pub age_ms: Option<u64>,
}

impl AntiEntropyState {
    pub fn new(partitions: u32) -> AntiEntropyState {
        AntiEntropyState {
            // Distinct per process start, so a restarted node's ids do not collide with
            // sessions its peers still remember.
            next_session: AtomicU64::new(now_ms() << 16),
            responders: Mutex::new(HashMap::new()),
            last_exchange: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn note_exchange(&self, partition: PartitionId) {
        if let Some(slot) = self.last_exchange.get(partition.0 as usize) {
            slot.store(now_ms(), Ordering::Relaxed);
        }
    }

    /// Last successful exchange of `partition`, wall-clock ms (0 = never).
    pub fn last_exchange(&self, partition: PartitionId) -> u64 {
        self.last_exchange
            .get(partition.0 as usize)
            .map(|a| a.load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// Summary over the partitions `mine`.
    pub fn summary(&self, mine: &[PartitionId]) -> AntiEntropySummary {
        AntiEntropySummary::of(&self.exchange_ages(mine))
    }

    /// Per partition of `mine` (in that order), the age of its last successful exchange.
    pub fn exchange_ages(&self, mine: &[PartitionId]) -> Vec<PartitionExchange> {
        let now = now_ms();
        mine.iter()
            .map(|&partition| {
                let t = self.last_exchange(partition);
                PartitionExchange {
                    partition,
                    age_ms: (t > 0).then(|| now.saturating_sub(t)),
                }
            })
            .collect()
    }
}

/// Partitions whose preference list (at the node's effective N) holds this node.
pub fn replicated_partitions(node: &Node) -> Vec<PartitionId> {
    let ring = node.cluster().ring();
    let n = node.replicas_per_key();
    let me = node.node_id();
    (0..ring.partitions())
        .map(PartitionId)
        .filter(|&p| ring.preference_list(p, n).contains(me))
        .collect()
}

/// A [`PartitionView`] over storage: a snapshot of the tree, live scans and reads.
struct StoreView<'a> {
    tree: MerkleTree,
    replica: &'a Replica,
}

impl PartitionView for StoreView<'_> {
    fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    fn key_digests(&self, first: KeyHash, last: KeyHash) -> Vec<KeyDigest> {
        self.replica
            .key_digests(self.tree.partition(), first, last)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "anti-entropy scan failed");
                Vec::new()
            })
    }

    fn sibling_set(&self, key: &[u8]) -> Option<SiblingSet> {
        match self.replica.read(key) {
            Ok(set) if !set.versions().is_empty() => Some(SiblingSet::clone(&set)),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy read failed");
                None
            }
        }
    }
}

/// The partition's tree, built (blocking, off the runtime) when it never was.
async fn tree_of(node: &Node, partition: PartitionId) -> Result<MerkleTree, NodeError> {
    let node = node.clone();
    tokio::task::spawn_blocking(move || node.replica().tree(partition))
        .await
        .map_err(|e| NodeError::Rejected(e.to_string()))?
}

/// Merges a session's received sets; returns how many changed the stored set.
async fn merge_all(node: &Node, merges: Vec<(Bytes, SiblingSet)>) -> u64 {
    if merges.is_empty() {
        return 0;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (key, set) in merges {
        let node = node.clone();
        tasks.spawn(async move { node.replica().merge_counted(&key, &set).await });
    }
    let mut repaired = 0u64;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((_, true))) => repaired += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "anti-entropy merge failed"),
            Err(e) => tracing::warn!(error = %e, "anti-entropy merge panicked"),
        }
    }
    node.metrics().anti_entropy_repairs.inc_by(repaired);
    node.note_keys();
    repaired
}

/// Counts a finished session (its bytes were counted as they were sent).
fn finish(node: &Node, session: &AntiEntropySession) {
    if matches!(
        session.outcome(),
        Some(SessionOutcome::InSync | SessionOutcome::Repaired)
    ) {
        node.metrics().anti_entropy_exchanges.inc();
        node.anti_entropy().note_exchange(session.partition());
    }
}

/// The handler for tag `ANTI_ENTROPY`: the responder side.
pub fn handler(node: Node) -> impl Fn(PeerRequest) -> HandlerFuture + Send + Sync + 'static {
    move |req: PeerRequest| {
        let node = node.clone();
        Box::pin(async move {
            let batch: AeRequest = decode(&req.payload)?;
            let replies = respond(&node, &req.from, batch.messages).await;
            Ok(encode(&AeRequest { messages: replies }))
        }) as HandlerFuture
    }
}

async fn respond(
    node: &Node,
    from: &NodeId,
    messages: Vec<AntiEntropyMessage>,
) -> Vec<AntiEntropyMessage> {
    let now = now_ms();
    // Forget idle sessions of vanished initiators.
    node.anti_entropy().responders.lock().retain(|_, s| {
        s.tick(now);
        !s.is_done()
    });
    let mut out = Vec::new();
    for msg in messages {
        let key = (from.clone(), msg.session);
        let existing = node.anti_entropy().responders.lock().remove(&key);
        let partition = msg.partition;
        let abort = |reason: String| AntiEntropyMessage {
            session: msg.session,
            partition,
            body: Body::Abort { reason },
        };
        if partition.0 >= node.replica().partitions() {
            out.push(abort(format!("no partition {partition} here")));
            continue;
        }
        if node.is_shutting_down() {
            out.push(abort("shutting down".into()));
            continue;
        }
        let tree = match tree_of(node, partition).await {
            Ok(t) => t,
            Err(e) => {
                out.push(abort(format!("tree not available: {e}")));
                continue;
            }
        };
        let view = StoreView {
            tree,
            replica: node.replica(),
        };
        let mut before = 0;
        let mut session = match existing {
            Some(mut s) => {
                before = s.stats().bytes_sent;
                s.step(&msg, now_ms(), &view);
                s
            }
            None if matches!(msg.body, Body::Start { .. }) => {
                AntiEntropySession::accept(&msg, session_config(), now_ms(), &view)
            }
            // A message of a session we no longer know: tell the initiator to stop.
            None => {
                if !matches!(msg.body, Body::Abort { .. }) {
                    out.push(abort("unknown session".into()));
                }
                continue;
            }
        };
        out.extend(session.drain_outbound());
        node.metrics()
            .anti_entropy_bytes
            .inc_by(session.stats().bytes_sent.saturating_sub(before));
        merge_all(node, session.drain_merges()).await;
        if session.is_done() {
            finish(node, &session);
        } else {
            node.anti_entropy().responders.lock().insert(key, session);
        }
    }
    out
}

/// Initiates one session over `partition` with `peer`. Returns the outcome and repairs made
/// here.
pub async fn exchange(
    node: &Node,
    partition: PartitionId,
    peer: &NodeId,
) -> Result<(SessionOutcome, u64), String> {
    let cluster = node.cluster();
    let client = cluster.client().ok_or("no peer transport")?;
    let addr = cluster.peer_addr(peer).ok_or("no peer address")?;
    let id = SessionId(
        node.anti_entropy()
            .next_session
            .fetch_add(1, Ordering::Relaxed),
    );
    let tree = tree_of(node, partition).await.map_err(|e| e.to_string())?;
    let view = StoreView {
        tree,
        replica: node.replica(),
    };
    let mut session = AntiEntropySession::start(id, session_config(), now_ms(), &view);
    drop(view);
    let mut repaired = 0u64;
    let mut counted = 0u64;
    let result = loop {
        let outbound = session.drain_outbound();
        let sent = session.stats().bytes_sent;
        node.metrics()
            .anti_entropy_bytes
            .inc_by(sent.saturating_sub(counted));
        counted = sent;
        if outbound.is_empty() {
            if !session.is_done() {
                session.cancel("initiator has nothing to send");
            }
            break Ok(());
        }
        let payload = encode(&AeRequest { messages: outbound });
        let reply = match client
            .call(&addr, tags::ANTI_ENTROPY, payload, CALL_TIMEOUT)
            .await
        {
            Ok((who, _)) if &who != peer => break Err(format!("{addr} is now node {who}")),
            Ok((_, bytes)) => decode::<AeRequest>(&bytes)?,
            Err(e) => break Err(e.to_string()),
        };
        if session.is_done() {
            break Ok(());
        }
        let tree = tree_of(node, partition).await.map_err(|e| e.to_string())?;
        let view = StoreView {
            tree,
            replica: node.replica(),
        };
        for msg in &reply.messages {
            session.step(msg, now_ms(), &view);
        }
        drop(view);
        repaired += merge_all(node, session.drain_merges()).await;
    };
    finish(node, &session);
    result?;
    let outcome = session
        .outcome()
        .cloned()
        .unwrap_or(SessionOutcome::Aborted("unfinished".into()));
    Ok((outcome, repaired))
}

/// The anti-entropy worker of one node, until `shutdown`.
pub async fn run(node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let interval = Duration::from_millis(node.config().anti_entropy_interval_ms);
    let mut cursor = 0usize;
    let mut peer_turn = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let mine = replicated_partitions(&node);
        if mine.is_empty() || node.replicas_per_key() < 2 {
            continue;
        }
        let ring = node.cluster().ring();
        let n = node.replicas_per_key();
        // The next partition (round robin) that has a healthy other replica.
        let mut pick = None;
        for _ in 0..mine.len() {
            let p = mine[cursor % mine.len()];
            cursor = cursor.wrapping_add(1);
            let peers: Vec<NodeId> = ring
                .preference_list(p, n)
                .into_iter()
                .filter(|id| id != node.node_id())
                .filter(|id| !node.cluster().is_unhealthy(id))
                .collect();
            if !peers.is_empty() {
                peer_turn = peer_turn.wrapping_add(1);
                pick = Some((p, peers[peer_turn % peers.len()].clone()));
                break;
            }
        }
        let Some((partition, peer)) = pick else {
            continue;
        };
        let session = exchange(&node, partition, &peer);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = session => r,
        };
        match outcome {
            Ok((SessionOutcome::InSync, _)) => {}
            Ok((SessionOutcome::Repaired, repaired)) => {
                tracing::info!(%partition, %peer, repaired, "anti-entropy repaired")
            }
            Ok((other, _)) => {
                node.metrics().anti_entropy_failures.inc();
                tracing::debug!(%partition, %peer, outcome = ?other, "anti-entropy session ended")
            }
            Err(e) => {
                node.metrics().anti_entropy_failures.inc();
                tracing::debug!(%partition, %peer, error = %e, "anti-entropy session failed")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_partition_ages_start_unknown_and_follow_exchanges() {
        let state = AntiEntropyState::new(8);
        let mine = [PartitionId(1), PartitionId(5), PartitionId(6)];
        let ages = state.exchange_ages(&mine);
        assert_eq!(ages.len(), 3);
        assert!(ages.iter().all(|e| e.age_ms.is_none()), "{ages:?}");
        state.note_exchange(PartitionId(5));
        let ages = state.exchange_ages(&mine);
        let got: Vec<_> = ages
            .iter()
            .map(|e| (e.partition.0, e.age_ms.is_some()))
            .collect();
        assert_eq!(got, [(1, false), (5, true), (6, false)]);
        let s = AntiEntropySummary::of(&ages);
        assert_eq!((s.partitions, s.exchanged_ever), (3, 1));
        assert_eq!(s.oldest_exchange_age_ms, ages[1].age_ms);
        // A partition outside the ring is never exchanged, not a panic.
        assert_eq!(state.exchange_ages(&[PartitionId(99)])[0].age_ms, None);
    }
}
