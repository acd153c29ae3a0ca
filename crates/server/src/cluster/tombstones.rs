//! Tombstone purge over peer tag `TOMBSTONE`: the worker that forgets deleted keys once it is
//! safe, and the replica side of its two requests.
//!
//! The rule is pure and lives in `ringkv_core::tombstone` (why each condition is there: the
//! resurrection cases, and the write floor that keeps purged dots from being reused); this
//! module carries it out:
//!
//! 1. Every `tombstone_scan_interval_ms` the worker takes the next partition this node
//!    replicates (round robin, as anti-entropy does) and scans it for purge candidates: keys
//!    whose set is all tombstones, the newest older than `tombstone_grace_secs`
//!    ([`Replica::purge_candidates`](crate::replica::Replica::purge_candidates), at most
//!    [`MAX_PER_SCAN`] per round).
//! 2. With one replica per key (a single node, or `n = 1`) it purges them at once.
//! 3. Otherwise only when gossip shows every member of the partition's preference list healthy
//!    (neither down nor suspected): it asks each of them, itself included, which sets they hold
//!    for the candidates ([`TombstoneRequest::Holds`], [`BATCH`] keys per call, all members
//!    concurrently), and every key that [`all_hold`] approves goes to each of them in a
//!    [`TombstoneRequest::Purge`] with the candidate's clock; each replica (this node too)
//!    applies it with [`Replica::purge`](crate::replica::Replica::purge) under the key's
//!    stripe lock, where [`may_purge`](ringkv_core::tombstone::may_purge) decides again
//!    against what it holds by then. Any failure (a member silent, a transport error, a
//!    refusal) leaves the keys for a later scan; candidates left behind are counted in
//!    `tombstones_deferred`, each replica's own purges in `tombstones_purged`.
//!
//! Several replicas of a partition may purge the same key at once; the second finds nothing
//! to delete. Purges are not made durable before the answer: one lost in a crash leaves the
//! tombstone, which a later scan purges again.
//!
//! # Requests
//! Postcard after a format byte, call/response. A request names its sender and its partition;
//! the handler refuses, with a message saying why, a payload whose sender is not the
//! authenticated peer, a sender or a receiver that is not on the partition's preference list
//! (as this node's ring sees it: a transient disagreement only delays a purge), a key over the
//! key limit or outside the partition, more than [`MAX_KEYS`] keys, and anything it cannot
//! decode.

use crate::error::NodeError;
use crate::node::Node;
use crate::peer::versioned::{self, encode};
use crate::peer::{tags, HandlerFuture, PeerRequest};
use crate::replica::now_ms;
use bytes::Bytes;
use ringkv_core::tombstone::all_hold;
use ringkv_core::{KeyHash, NodeId, PartitionId, SiblingSet, VersionVector};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use super::anti_entropy::replicated_partitions;

/// Keys per `Holds` / `Purge` call the worker sends.
pub const BATCH: usize = 128;
/// Keys a request may carry; more is refused. Above [`BATCH`], so peers of another version with
/// a somewhat larger batch still get answers.
pub const MAX_KEYS: usize = 1024;
/// Purge candidates one scan takes from its partition; the rest wait for the partition's next
/// turn.
pub const MAX_PER_SCAN: usize = 4096;

/// What the worker asks a replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TombstoneRequest {
    /// "Which sets do you hold for these keys of `partition`?"
    Holds {
        from: NodeId,
        /// A `PartitionId`.
        partition: u32,
        keys: Vec<Bytes>,
    },
    /// "Purge these keys of `partition`; each purged tombstone had this clock."
    Purge {
        from: NodeId,
        /// A `PartitionId`.
        partition: u32,
        purges: Vec<(Bytes, VersionVector)>,
    },
}

/// A replica's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TombstoneReply {
    /// Per key, in request order: the set held, `None` when nothing is held.
    Holds(Vec<Option<SiblingSet>>),
    /// Records deleted (a key the rule refused, or already gone, is not counted).
    Purged(u32),
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    versioned::decode(bytes, "tombstone")
}

/// The handler for tag `TOMBSTONE`: the replica side.
pub fn handler(node: Node) -> impl Fn(PeerRequest) -> HandlerFuture + Send + Sync + 'static {
    move |req: PeerRequest| {
        let node = node.clone();
        Box::pin(async move {
            let request: TombstoneRequest = decode(&req.payload)?;
            let (from, partition, keys): (&NodeId, PartitionId, Vec<&Bytes>) = match &request {
                TombstoneRequest::Holds {
                    from,
                    partition,
                    keys,
                } => (from, PartitionId(*partition), keys.iter().collect()),
                TombstoneRequest::Purge {
                    from,
                    partition,
                    purges,
                } => (
                    from,
                    PartitionId(*partition),
                    purges.iter().map(|(k, _)| k).collect(),
                ),
            };
            check(&node, &req.from, from, partition, &keys)?;
            let reply = match request {
                TombstoneRequest::Holds { keys, .. } => {
                    TombstoneReply::Holds(holds(&node, &keys).map_err(|e| e.to_string())?)
                }
                TombstoneRequest::Purge { purges, .. } => {
                    TombstoneReply::Purged(purge_local(&node, purges).await? as u32)
                }
            };
            Ok(encode(&reply))
        }) as HandlerFuture
    }
}

/// Everything a request must satisfy before it touches the replica.
fn check(
    node: &Node,
    authenticated: &NodeId,
    claimed: &NodeId,
    partition: PartitionId,
    keys: &[&Bytes],
) -> Result<(), String> {
    // The transport proved who sent it; a payload that claims otherwise is refused.
    if claimed != authenticated {
        return Err(format!("sender {authenticated} claims to be {claimed}"));
    }
    if node.is_shutting_down() {
        return Err("shutting down".into());
    }
    if partition.0 >= node.replica().partitions() {
        return Err(format!("no partition {partition} here"));
    }
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys in one tombstone request, at most {MAX_KEYS}",
            keys.len()
        ));
    }
    let pref = replicas_of(node, partition);
    if !pref.contains(authenticated) {
        return Err(format!(
            "{authenticated} is not a replica of partition {partition} (preference list {pref:?})"
        ));
    }
    if !pref.contains(node.node_id()) {
        return Err(format!(
            "{} is not a replica of partition {partition}",
            node.node_id()
        ));
    }
    let limits = node.limits();
    let partitions = node.replica().partitions();
    for key in keys {
        limits.check_key(key).map_err(|e| e.to_string())?;
        if KeyHash::of(key).partition(partitions) != partition {
            return Err(format!("a key outside partition {partition}"));
        }
    }
    Ok(())
}

/// This replica's sets for `keys`, `None` where it holds nothing.
fn holds(node: &Node, keys: &[Bytes]) -> Result<Vec<Option<SiblingSet>>, NodeError> {
    keys.iter()
        .map(|key| {
            let set = node.replica().read(key)?;
            Ok((!set.versions().is_empty()).then(|| SiblingSet::clone(&set)))
        })
        .collect()
}

/// Applies purges to this replica (off the runtime threads: each is a store write, which fjall
/// may stall) and counts them. Returns how many records were deleted.
async fn purge_local(node: &Node, purges: Vec<(Bytes, VersionVector)>) -> Result<u64, String> {
    if purges.is_empty() {
        return Ok(0);
    }
    let worker = node.clone();
    let (purged, failure) = tokio::task::spawn_blocking(move || {
        let mut purged = 0u64;
        for (key, clock) in &purges {
            match worker.replica().purge(key, clock) {
                Ok(true) => purged += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "purge failed");
                    return (purged, Some(format!("purge failed: {e}")));
                }
            }
        }
        (purged, None)
    })
    .await
    .map_err(|e| format!("purge task failed: {e}"))?;
    // Counted even when a later key failed: those records are gone.
    node.metrics().tombstones_purged.inc_by(purged);
    match failure {
        Some(e) => Err(e),
        None => Ok(purged),
    }
}

/// What one scan of a partition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanOutcome {
    /// Purge candidates found (past grace, all tombstones).
    pub candidates: u64,
    /// Records this node deleted from its own replica.
    pub purged_here: u64,
    /// Candidates left for a later scan.
    pub deferred: u64,
}

/// Scans `partition` for tombstones past grace and purges those every replica holds.
pub async fn scan_partition(node: &Node, partition: PartitionId) -> Result<ScanOutcome, String> {
    let grace_ms = node.config().tombstone_grace_secs.saturating_mul(1000);
    let scanner = node.clone();
    let candidates = tokio::task::spawn_blocking(move || {
        scanner
            .replica()
            .purge_candidates(partition, now_ms(), grace_ms, MAX_PER_SCAN)
    })
    .await
    .map_err(|e| format!("scan task failed: {e}"))?
    .map_err(|e| format!("scan failed: {e}"))?;
    let mut outcome = ScanOutcome {
        candidates: candidates.len() as u64,
        ..Default::default()
    };
    if candidates.is_empty() {
        return Ok(outcome);
    }
    let cluster = node.cluster();
    let pref = replicas_of(node, partition);
    let others: Vec<NodeId> = pref
        .iter()
        .filter(|id| *id != node.node_id())
        .cloned()
        .collect();
    if others.is_empty() {
        // The only replica of these keys: nobody else can hold an older copy.
        let purges = candidates
            .into_iter()
            .map(|(key, set)| (key, set.clock().clone()))
            .collect();
        outcome.purged_here = purge_local(node, purges).await?;
        return Ok(outcome);
    }
    // A member gossip does not show healthy would not answer, or would answer and then miss
    // the purge: wait for it rather than spend a round on it.
    if let Some(sick) = others
        .iter()
        .find(|id| cluster.is_unhealthy(id) || cluster.peer_addr(id).is_none())
    {
        node.metrics()
            .tombstones_deferred
            .inc_by(outcome.candidates);
        outcome.deferred = outcome.candidates;
        tracing::debug!(%partition, replica = %sick, "tombstone purge waits for a replica");
        return Ok(outcome);
    }
    let mut left = candidates.len() as u64;
    let mut result = Ok(());
    for chunk in candidates.chunks(BATCH) {
        match purge_batch(node, partition, &pref, chunk).await {
            Ok((approved, purged_here)) => {
                outcome.purged_here += purged_here;
                left -= approved;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    outcome.deferred = left;
    node.metrics().tombstones_deferred.inc_by(left);
    result.map(|()| outcome)
}

/// One batch: asks every replica what it holds, then sends the approved purges to all.
/// Returns (keys approved, records deleted here).
async fn purge_batch(
    node: &Node,
    partition: PartitionId,
    pref: &[NodeId],
    chunk: &[(Bytes, SiblingSet)],
) -> Result<(u64, u64), String> {
    let me = node.node_id();
    let keys: Vec<Bytes> = chunk.iter().map(|(k, _)| k.clone()).collect();
    let ask = TombstoneRequest::Holds {
        from: me.clone(),
        partition: partition.0,
        keys: keys.clone(),
    };
    // Every replica's answer, in preference-list order; all must answer.
    let mut calls = tokio::task::JoinSet::new();
    for (i, member) in pref.iter().enumerate() {
        if member == me {
            continue;
        }
        let (node, member, payload) = (node.clone(), member.clone(), encode(&ask));
        calls.spawn(async move { (i, call(&node, &member, payload).await) });
    }
    let mut answers: Vec<Option<Vec<Option<SiblingSet>>>> = vec![None; pref.len()];
    if let Some(i) = pref.iter().position(|m| m == me) {
        answers[i] = Some(holds(node, &keys).map_err(|e| e.to_string())?);
    }
    while let Some(joined) = calls.join_next().await {
        let (i, reply) = joined.map_err(|e| format!("holds call failed: {e}"))?;
        match reply? {
            TombstoneReply::Holds(sets) if sets.len() == keys.len() => answers[i] = Some(sets),
            other => return Err(format!("{} answered holds with {other:?}", pref[i])),
        }
    }
    let answers: Vec<Vec<Option<SiblingSet>>> = answers
        .into_iter()
        .collect::<Option<_>>()
        .ok_or("a replica did not answer")?;
    let purges: Vec<(Bytes, VersionVector)> = chunk
        .iter()
        .enumerate()
        .filter(|(k, (_, candidate))| {
            let replies: Vec<Option<SiblingSet>> = answers.iter().map(|a| a[*k].clone()).collect();
            all_hold(candidate, &replies)
        })
        .map(|(_, (key, candidate))| (key.clone(), candidate.clock().clone()))
        .collect();
    if purges.is_empty() {
        return Ok((0, 0));
    }
    let approved = purges.len() as u64;
    let order = TombstoneRequest::Purge {
        from: me.clone(),
        partition: partition.0,
        purges: purges.clone(),
    };
    let mut calls = tokio::task::JoinSet::new();
    for member in pref.iter().filter(|m| *m != me) {
        let (node, member, payload) = (node.clone(), member.clone(), encode(&order));
        calls.spawn(async move {
            if let Err(e) = call(&node, &member, payload).await {
                // That replica keeps its tombstone; a later scan (its own or ours) retries.
                tracing::debug!(%member, error = %e, "purge not applied");
            }
        });
    }
    let purged_here = if pref.contains(me) {
        purge_local(node, purges).await?
    } else {
        0
    };
    while calls.join_next().await.is_some() {}
    Ok((approved, purged_here))
}

/// One call on tag `TOMBSTONE` to `member`, bounded by the request timeout.
async fn call(node: &Node, member: &NodeId, payload: Bytes) -> Result<TombstoneReply, String> {
    let cluster = node.cluster();
    let client = cluster.client().ok_or("no peer transport")?;
    let addr = cluster.peer_addr(member).ok_or("no peer address")?;
    let timeout = node.config().request_timeout();
    let (who, bytes) = client
        .call(&addr, tags::TOMBSTONE, payload, timeout)
        .await
        .map_err(|e| format!("{member}: {e}"))?;
    if &who != member {
        return Err(format!("{addr} is now node {who}, not {member}"));
    }
    decode(&bytes)
}

/// The purge worker of one node, until `shutdown`.
pub async fn run(node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let interval = Duration::from_millis(node.config().tombstone_scan_interval_ms);
    let mut cursor = 0usize;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        let mine = replicated_partitions(&node);
        if mine.is_empty() {
            continue;
        }
        let partition = mine[cursor % mine.len()];
        cursor = cursor.wrapping_add(1);
        let scan = scan_partition(&node, partition);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = scan => r,
        };
        match outcome {
            Ok(o) if o.purged_here > 0 || o.deferred > 0 => {
                tracing::info!(
                    %partition,
                    candidates = o.candidates,
                    purged = o.purged_here,
                    deferred = o.deferred,
                    "tombstone purge"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%partition, error = %e, "tombstone purge paused"),
        }
    }
    Ok(())
}

/// Every node that holds or is taking `partition`: its replicas in the read ring and the new
/// owners the write ring adds while a transfer runs. A joining node may hold an old value the
/// others deleted, so a purge must wait for it too.
fn replicas_of(node: &Node, partition: PartitionId) -> Vec<NodeId> {
    let cluster = node.cluster();
    let n = node.replicas_per_key();
    let mut all = cluster.ring().preference_list(partition, n);
    let write = cluster.write_ring();
    let n_write = node.config().n.min(write.members().len());
    for id in write.preference_list(partition, n_write) {
        if !all.contains(&id) {
            all.push(id);
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;
    use ringkv_core::Context;
    use ringkv_storage::{Store, StoreOptions};

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let mut set = SiblingSet::new();
        set.write(&n("a"), &Context::empty(), None, 7);
        let req = TombstoneRequest::Purge {
            from: n("a"),
            partition: 3,
            purges: vec![(Bytes::from_static(b"k"), set.clock().clone())],
        };
        let bytes = encode(&req);
        assert_eq!(decode::<TombstoneRequest>(&bytes).unwrap(), req);
        for cut in 0..bytes.len() {
            assert!(decode::<TombstoneRequest>(&bytes[..cut]).is_err());
        }
        let reply = TombstoneReply::Holds(vec![Some(set), None]);
        assert_eq!(decode::<TombstoneReply>(&encode(&reply)).unwrap(), reply);
        assert!(decode::<TombstoneRequest>(&[9, 0])
            .unwrap_err()
            .contains("format 9"));
    }

    async fn node(config: Config) -> Node {
        let store = Store::in_memory(StoreOptions::default());
        Node::with_store(&config, store).await.unwrap()
    }

    fn request(from: &str, payload: Bytes) -> PeerRequest {
        PeerRequest {
            from: n(from),
            tag: tags::TOMBSTONE,
            payload,
            one_way: false,
        }
    }

    /// Bad input of every kind gets a clear refusal, never a panic.
    #[tokio::test]
    async fn the_handler_refuses_what_it_must() {
        let config = Config {
            node_id: Some("n1".into()),
            partitions: 16,
            max_key_bytes: 8,
            ..Config::default()
        };
        let node = node(config).await;
        let h = handler(node.clone());
        let key = Bytes::from_static(b"k");
        let p = KeyHash::of(&key).partition(16);
        let holds = |from: &str, partition: PartitionId, keys: Vec<Bytes>| {
            encode(&TombstoneRequest::Holds {
                from: n(from),
                partition: partition.0,
                keys,
            })
        };
        // A lone node replicates everything: its own request is answered.
        let ok = h(request("n1", holds("n1", p, vec![key.clone()]))).await;
        assert_eq!(
            decode::<TombstoneReply>(&ok.unwrap()).unwrap(),
            TombstoneReply::Holds(vec![None])
        );
        let err = |r: Result<Bytes, String>| r.unwrap_err();
        assert!(
            err(h(request("n2", holds("n1", p, vec![key.clone()]))).await).contains("claims to be")
        );
        assert!(
            err(h(request("n9", holds("n9", p, vec![key.clone()]))).await)
                .contains("not a replica")
        );
        assert!(
            err(h(request("n1", holds("n1", PartitionId(99), vec![]))).await)
                .contains("no partition")
        );
        let long = Bytes::from_static(b"much too long");
        assert!(!err(h(request("n1", holds("n1", p, vec![long]))).await).is_empty());
        let other = (0..)
            .map(|i| Bytes::from(format!("o{i}")))
            .find(|k| KeyHash::of(k).partition(16) != p)
            .unwrap();
        assert!(
            err(h(request("n1", holds("n1", p, vec![other]))).await).contains("outside partition")
        );
        let many = vec![key.clone(); MAX_KEYS + 1];
        assert!(err(h(request("n1", holds("n1", p, many))).await).contains("at most"));
        assert!(
            err(h(request("n1", Bytes::from_static(&[1, 0xff, 0xff]))).await).contains("malformed")
        );
        assert!(err(h(request("n1", Bytes::new())).await).contains("empty"));
    }

    /// A single node purges a tombstone past grace on its own, and keeps live keys and
    /// tombstones still within grace.
    #[tokio::test]
    async fn a_single_node_purges_past_grace() {
        let config = Config {
            node_id: Some("n1".into()),
            partitions: 1,
            hint_window_secs: 0,
            tombstone_grace_secs: 1,
            ..Config::default()
        };
        let node = node(config).await;
        let w = crate::node::WriteOptions::default();
        for k in ["old", "live"] {
            node.put(Bytes::from(k), Bytes::from("v"), None, w)
                .await
                .unwrap();
        }
        node.delete(Bytes::from("old"), None, w).await.unwrap();
        let idle = scan_partition(&node, PartitionId(0)).await.unwrap();
        assert_eq!(idle, ScanOutcome::default(), "within grace");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        node.put(Bytes::from("fresh"), Bytes::from("v"), None, w)
            .await
            .unwrap();
        node.delete(Bytes::from("fresh"), None, w).await.unwrap();
        let done = scan_partition(&node, PartitionId(0)).await.unwrap();
        assert_eq!(
            (done.candidates, done.purged_here, done.deferred),
            (1, 1, 0)
        );
        assert_eq!(node.metrics().tombstones_purged.get(), 1);
        assert!(node.replica().read(b"old").unwrap().versions().is_empty());
        assert!(!node.replica().read(b"live").unwrap().is_deleted());
    }
}
