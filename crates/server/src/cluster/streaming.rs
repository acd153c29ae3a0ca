//! Partition streaming on join, leave and remove (peer tag `STREAMING`), and the worker that
//! moves this node's status along (`Joining -> Up`, `Leaving -> Left`).
//!
//! During a transfer the cluster has two rings (see `Cluster::ring` / `Cluster::write_ring`):
//! the read ring (`Up` and `Leaving` members) and the write ring (`Joining` and `Up`). A
//! partition is **pending** on this node when the write ring lists it among the partition's
//! replicas and the read ring does not: it is a new owner. Writes already reach it (as extra
//! acks on top of W, `Plan::pending`); the worker pulls what was written before.
//!
//! - **Pull** ([`StreamRequest::Pull`]): chunks of the partition's `data` range, in key order,
//!   from a cursor (persisted in `meta` after every chunk, so a restart resumes), at most
//!   [`CHUNK_KEYS`] keys or [`CHUNK_BYTES`] bytes each, paced to `stream_bytes_per_sec`. Each
//!   set is merged durably (`Replica::merge`) before the cursor moves. The pull reads from
//!   `n - w + 1` current replicas (2 of 3 by default), one after the other: every write
//!   acknowledged by W of them is then on this node whichever W they were.
//! - **Done** ([`StreamRequest::Done`]): once a pending partition is in, this node tells the
//!   replicas the new ring drops (a leaving node, or one a join displaces), and repeats it every
//!   round while the partition stays pending (so a restarted leaver hears it again).
//! - **Join:** a `Joining` node goes `Up` when none of its partitions is pending any more. A
//!   node that sees nobody `Up` for [`BOOTSTRAP_ROUNDS`] rounds is starting a new cluster and
//!   goes `Up` at once.
//! - **Leave:** `POST /v1/admin/leave` (`ringkv leave`) sets `Leaving`: the write ring drops the
//!   node, its partitions become pending on their new owners, who pull and confirm; once every
//!   new owner of every partition it holds confirmed, it goes `Left` (and stays running, owning
//!   nothing, until it is stopped).
//! - **Remove:** `ringkv remove NODE` marks a dead member `Left`. Nothing is pending (the node
//!   is in neither ring), so each node compares the read ring before and after every change:
//!   a partition it gained without having pulled it is queued (`meta`, survives restarts) and
//!   pulled the same way, which restores N copies.
//!
//! IMPLEMENTATION CAVEATS
//! - A node that stops replicating a partition keeps its data (and Merkle tree): nothing
//!   deletes it yet. It is never read (reads follow the read ring), so it costs only disk.
//! - A pending new owner that is down still counts as a needed ack, so writes to its
//!   partitions need W + 1 of the others while it is down (Cassandra behaves the same).

use crate::error::NodeError;
use crate::node::Node;
use crate::peer::versioned::{self, encode};
use crate::peer::{tags, HandlerFuture, PeerRequest};
use parking_lot::Mutex;
use ringkv_core::keys::{partition_range, split_data_key};
use ringkv_core::{MemberStatus, NodeId, PartitionId, Ring, SiblingSet};
use ringkv_storage::{Keyspace, WriteBatch};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most keys in one chunk.
pub const CHUNK_KEYS: usize = 512;
/// Soft budget of encoded sets in one chunk (a chunk holds at least one key).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Rounds of seeing nobody `Up` before a joining node starts a new cluster.
pub const BOOTSTRAP_ROUNDS: u32 = 3;
/// Pause between worker rounds.
const ROUND: Duration = Duration::from_millis(500);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const META_CURSOR: &[u8] = b"stream_cursor/";
const META_DONE: &[u8] = b"stream_done/";
const META_TODO: &[u8] = b"stream_todo/";

#[derive(Debug, Serialize, Deserialize)]
pub enum StreamRequest {
    /// The next chunk of `partition` after `after` (a `data` record key; `None` = from the start).
    Pull {
        partition: u32,
        after: Option<Vec<u8>>,
    },
    /// The sender has every key of `partition` it pulled: it is ready to own it.
    Done { partition: u32 },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum StreamReply {
    Chunk {
        items: Vec<(Vec<u8>, SiblingSet)>,
        /// The last record key sent: the next pull's `after`.
        last: Option<Vec<u8>>,
        done: bool,
    },
    Ok,
    Refused(String),
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    versioned::decode(bytes, "stream")
}

fn meta_key(prefix: &[u8], p: PartitionId) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&p.0.to_be_bytes());
    k
}

/// What the worker is doing, for `/v1/cluster`, `ringkv status` and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TransferStatus {
    /// Partitions this node is to pull (pending or gained), and how many are in.
    pub partitions_to_pull: u64,
    pub partitions_pulled: u64,
    /// The partition being pulled now.
    pub pulling: Option<u32>,
    pub keys_received: u64,
    pub bytes_received: u64,
    /// While leaving: partitions this node still holds, and how many of them every new owner
    /// has confirmed.
    pub handoff_partitions: u64,
    pub handoff_confirmed: u64,
}

/// Shared state of the streaming worker and handler.
#[derive(Default)]
pub struct StreamingState {
    status: Mutex<TransferStatus>,
    /// Per partition, the new owners that said `Done`.
    confirmations: Mutex<BTreeMap<PartitionId, BTreeSet<NodeId>>>,
    wake: tokio::sync::Notify,
}

impl StreamingState {
    pub fn status(&self) -> TransferStatus {
        self.status.lock().clone()
    }

    /// Wakes the worker (a status change from the admin API).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The handler for tag `STREAMING`.
pub fn handler(node: Node) -> impl Fn(PeerRequest) -> HandlerFuture + Send + Sync + 'static {
    move |req: PeerRequest| {
        let node = node.clone();
        Box::pin(async move {
            let msg: StreamRequest = decode(&req.payload)?;
            let partitions = node.cluster().ring().partitions();
            let reply = match msg {
                StreamRequest::Pull { partition, .. } | StreamRequest::Done { partition }
                    if partition >= partitions =>
                {
                    StreamReply::Refused(format!("no partition {partition}"))
                }
                StreamRequest::Pull { partition, after } => {
                    let node = node.clone();
                    tokio::task::spawn_blocking(move || chunk(&node, PartitionId(partition), after))
                        .await
                        .map_err(|e| e.to_string())?
                        .unwrap_or_else(|e| StreamReply::Refused(e.to_string()))
                }
                StreamRequest::Done { partition } => {
                    node.streaming()
                        .confirmations
                        .lock()
                        .entry(PartitionId(partition))
                        .or_default()
                        .insert(req.from.clone());
                    node.streaming().wake();
                    StreamReply::Ok
                }
            };
            Ok(encode(&reply))
        }) as HandlerFuture
    }
}

/// One chunk of `partition` after `after`.
fn chunk(node: &Node, p: PartitionId, after: Option<Vec<u8>>) -> Result<StreamReply, NodeError> {
    let (start, end) = partition_range(p);
    let from = match after {
        Some(mut k) if k >= start && end.as_ref().is_none_or(|e| &k < e) => {
            k.push(0);
            k
        }
        Some(_) => return Ok(StreamReply::Refused("cursor outside the partition".into())),
        None => start,
    };
    let page = node
        .store()
        .scan(Keyspace::Data, &from, end.as_deref(), CHUNK_KEYS + 1)?;
    let done = page.len() <= CHUNK_KEYS;
    let mut items = Vec::new();
    let mut bytes = 0usize;
    let mut last = None;
    let mut cut = false;
    for (record_key, raw) in page.into_iter().take(CHUNK_KEYS) {
        if !items.is_empty() && bytes >= CHUNK_BYTES {
            cut = true;
            break;
        }
        let Some((_, _, key)) = split_data_key(&record_key) else {
            continue;
        };
        match SiblingSet::decode(&raw) {
            Ok(set) => {
                bytes += raw.len() + key.len();
                items.push((key.to_vec(), set));
            }
            Err(e) => tracing::warn!(error = %e, "skipping an undecodable record while streaming"),
        }
        last = Some(record_key);
    }
    Ok(StreamReply::Chunk {
        items,
        last,
        done: done && !cut,
    })
}

/// Partitions `me` replicates in `ring` at `n`.
fn replicated(ring: &Ring, n: usize, me: &NodeId) -> BTreeSet<PartitionId> {
    (0..ring.partitions())
        .map(PartitionId)
        .filter(|&p| ring.preference_list(p, n).contains(me))
        .collect()
}

/// The streaming worker of one node, until `shutdown`.
pub async fn run(node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let mut worker = Worker {
        last_read: node.cluster().ring(),
        empty_rounds: 0,
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = node.streaming().wake.notified() => {}
            _ = tokio::time::sleep(ROUND) => {}
        }
        if let Err(e) = worker.round(&node, &shutdown).await {
            tracing::debug!(error = %e, "streaming round paused");
        }
    }
    Ok(())
}

struct Worker {
    last_read: Arc<Ring>,
    empty_rounds: u32,
}

impl Worker {
    async fn round(&mut self, node: &Node, shutdown: &CancellationToken) -> Result<(), String> {
        let cluster = node.cluster();
        let me = node.node_id().clone();
        let status = cluster.me().status;
        let (read_members, n_config) = (
            cluster.with_membership(|m, _| m.read_ring_members().len()),
            node.config().n,
        );
        // A new cluster: nobody is up, and this node has heard from the others (or has no
        // seeds). A joiner that has not reached its seeds yet keeps waiting instead: going up
        // alone would start a second cluster.
        let heard_of_others = cluster.with_membership(|m, _| m.members().count() > 1);
        if status == MemberStatus::Joining
            && read_members == 0
            && (heard_of_others || node.config().seeds.is_empty())
        {
            self.empty_rounds += 1;
            if self.empty_rounds >= BOOTSTRAP_ROUNDS {
                tracing::info!("nobody is up: starting a new cluster");
                set_status(node, MemberStatus::Up);
            }
            return Ok(());
        }
        self.empty_rounds = 0;
        let (read, write) = (cluster.ring(), cluster.write_ring());
        let n_read = n_config.min(read.members().len());
        let n_write = n_config.min(write.members().len());
        self.note_gains(node, &read, n_read).await?;

        // Pending (a new owner in the write ring) and gained (queued by a ring change).
        let mine_read = replicated(&read, n_read, &me);
        let mut to_pull: BTreeSet<PartitionId> = replicated(&write, n_write, &me)
            .difference(&mine_read)
            .copied()
            .collect();
        to_pull.extend(self.todo(node)?);
        let done = self.done_set(node, &to_pull)?;
        {
            let mut s = node.streaming().status.lock();
            s.partitions_to_pull = to_pull.len() as u64;
            s.partitions_pulled = done.len() as u64;
        }
        for &p in &to_pull {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            if !done.contains(&p) {
                self.pull(node, &read, n_read, p).await?;
                let mut batch = WriteBatch::new();
                batch.delete(Keyspace::Meta, meta_key(META_CURSOR, p));
                batch.delete(Keyspace::Meta, meta_key(META_TODO, p));
                if !mine_read.contains(&p) {
                    // Pending: remembered until the ring switches and this node gains it.
                    batch.put(Keyspace::Meta, meta_key(META_DONE, p), vec![1]);
                }
                node.store()
                    .commit(&batch)
                    .await
                    .map_err(|e| e.to_string())?;
                node.metrics().stream_partitions.inc();
                node.streaming().status.lock().partitions_pulled += 1;
            }
            // Tell the replicas the new ring drops that this node has the partition.
            let dropped: Vec<NodeId> = read
                .preference_list(p, n_read)
                .into_iter()
                .filter(|id| id != &me && !write.preference_list(p, n_write).contains(id))
                .collect();
            for id in dropped {
                let _ = call(node, &id, &StreamRequest::Done { partition: p.0 }).await;
            }
        }
        node.streaming().status.lock().pulling = None;

        match status {
            // Every pending partition of this round is in (a failed pull returned early).
            MemberStatus::Joining => {
                tracing::info!("every partition is in: up");
                set_status(node, MemberStatus::Up);
            }
            MemberStatus::Leaving => self.check_handoff(node, &read, &write, n_read, n_write),
            _ => {}
        }
        Ok(())
    }

    /// Queues the partitions this node gained in the read ring since the last round without
    /// having pulled them (a removed node's, or any after a ring change it did not stream for).
    async fn note_gains(
        &mut self,
        node: &Node,
        read: &Arc<Ring>,
        n_read: usize,
    ) -> Result<(), String> {
        if Arc::ptr_eq(read, &self.last_read) {
            return Ok(());
        }
        let me = node.node_id();
        // `n` of the old ring: a ring of one member (a new cluster's first node, or this node
        // alone while nobody was up) held every partition here, so nothing counts as gained.
        let n_before = node.config().n.min(self.last_read.members().len());
        let before = replicated(&self.last_read, n_before, me);
        let after = replicated(read, n_read, me);
        self.last_read = read.clone();
        let mut batch = WriteBatch::new();
        for &p in after.difference(&before) {
            let done_key = meta_key(META_DONE, p);
            let pulled = node
                .store()
                .get(Keyspace::Meta, &done_key)
                .map_err(|e| e.to_string())?
                .is_some();
            if pulled {
                batch.delete(Keyspace::Meta, done_key);
            } else {
                batch.put(Keyspace::Meta, meta_key(META_TODO, p), vec![1]);
            }
        }
        if !batch.is_empty() {
            node.store()
                .commit(&batch)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn todo(&self, node: &Node) -> Result<Vec<PartitionId>, String> {
        let mut out = Vec::new();
        let end = prefix_end(META_TODO);
        for (k, _) in node
            .store()
            .scan(Keyspace::Meta, META_TODO, Some(&end), usize::MAX)
            .map_err(|e| e.to_string())?
        {
            if let Ok(b) = <[u8; 4]>::try_from(&k[META_TODO.len()..]) {
                out.push(PartitionId(u32::from_be_bytes(b)));
            }
        }
        Ok(out)
    }

    fn done_set(
        &self,
        node: &Node,
        parts: &BTreeSet<PartitionId>,
    ) -> Result<BTreeSet<PartitionId>, String> {
        let mut out = BTreeSet::new();
        for &p in parts {
            if node
                .store()
                .get(Keyspace::Meta, &meta_key(META_DONE, p))
                .map_err(|e| e.to_string())?
                .is_some()
            {
                out.insert(p);
            }
        }
        Ok(out)
    }

    /// Pulls `p` from `n - w + 1` current replicas, resuming from the persisted cursor.
    async fn pull(
        &self,
        node: &Node,
        read: &Ring,
        n_read: usize,
        p: PartitionId,
    ) -> Result<(), String> {
        let me = node.node_id();
        let sources: Vec<NodeId> = read
            .preference_list(p, n_read)
            .into_iter()
            .filter(|id| id != me && !node.cluster().is_unhealthy(id))
            .collect();
        let need = (node.config().n + 1)
            .saturating_sub(node.config().w)
            .clamp(1, sources.len().max(1));
        if sources.is_empty() {
            return Err(format!("partition {p}: no healthy replica to pull from"));
        }
        node.streaming().status.lock().pulling = Some(p.0);
        let mut pulled = 0;
        for source in sources.iter().take(need) {
            self.pull_from(node, source, p).await?;
            pulled += 1;
        }
        tracing::info!(partition = %p, sources = pulled, "partition streamed in");
        Ok(())
    }

    async fn pull_from(&self, node: &Node, source: &NodeId, p: PartitionId) -> Result<(), String> {
        let cursor_key = meta_key(META_CURSOR, p);
        let mut after = node
            .store()
            .get(Keyspace::Meta, &cursor_key)
            .map_err(|e| e.to_string())?;
        let rate = node.config().stream_bytes_per_sec.max(1);
        loop {
            let started = Instant::now();
            let reply = call(
                node,
                source,
                &StreamRequest::Pull {
                    partition: p.0,
                    after: after.clone(),
                },
            )
            .await?;
            let StreamReply::Chunk { items, last, done } = reply else {
                return Err(format!(
                    "{source} refused to stream partition {p}: {reply:?}"
                ));
            };
            let mut bytes = 0u64;
            let mut tasks = tokio::task::JoinSet::new();
            for (key, set) in items {
                bytes += (key.len() + set.encode().len()) as u64;
                let node = node.clone();
                tasks.spawn(async move { node.replica().merge(&key, &set).await.map(|_| ()) });
            }
            let mut keys = 0u64;
            while let Some(r) = tasks.join_next().await {
                r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
                keys += 1;
            }
            node.note_keys();
            node.metrics().stream_keys.inc_by(keys);
            node.metrics().stream_bytes.inc_by(bytes);
            {
                let mut s = node.streaming().status.lock();
                s.keys_received += keys;
                s.bytes_received += bytes;
            }
            if done {
                // The next source starts from the beginning.
                let mut batch = WriteBatch::new();
                batch.delete(Keyspace::Meta, cursor_key.clone());
                node.store()
                    .commit(&batch)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            if let Some(last) = last {
                let mut batch = WriteBatch::new();
                batch.put(Keyspace::Meta, cursor_key.clone(), last.clone());
                node.store()
                    .commit(&batch)
                    .await
                    .map_err(|e| e.to_string())?;
                after = Some(last);
            }
            // Pace to `stream_bytes_per_sec`.
            let budget = Duration::from_secs_f64(bytes as f64 / rate as f64);
            if let Some(wait) = budget.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// While leaving: `Left` once every new owner of every partition this node holds confirmed.
    fn check_handoff(&self, node: &Node, read: &Ring, write: &Ring, n_read: usize, n_write: usize) {
        let me = node.node_id();
        let confirmations = node.streaming().confirmations.lock().clone();
        let mine = replicated(read, n_read, me);
        let mut confirmed = 0u64;
        for &p in &mine {
            let current = read.preference_list(p, n_read);
            let all = write
                .preference_list(p, n_write)
                .into_iter()
                .filter(|id| !current.contains(id))
                .all(|id| confirmations.get(&p).is_some_and(|c| c.contains(&id)));
            if all {
                confirmed += 1;
            }
        }
        {
            let mut s = node.streaming().status.lock();
            s.handoff_partitions = mine.len() as u64;
            s.handoff_confirmed = confirmed;
        }
        if confirmed == mine.len() as u64 {
            tracing::info!(partitions = mine.len(), "every partition handed off: left");
            set_status(node, MemberStatus::Left);
        }
    }
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// Moves this node's status forward and gossips it at once.
pub fn set_status(node: &Node, to: MemberStatus) {
    let cluster = node.cluster();
    let result = cluster.with_membership(|m, now| m.set_status(now, to));
    match result {
        Ok(envelopes) => {
            if let Some(client) = cluster.client() {
                super::gossip::send_all(client, envelopes);
            }
            cluster.mark_dirty();
        }
        Err(e) => tracing::warn!(error = %e, status = %to, "status change refused"),
    }
}

async fn call(node: &Node, to: &NodeId, req: &StreamRequest) -> Result<StreamReply, String> {
    let cluster = node.cluster();
    let client = cluster.client().ok_or("no peer transport")?;
    let addr = cluster.peer_addr(to).ok_or("no peer address")?;
    let (who, bytes) = client
        .call(&addr, tags::STREAMING, encode(req), CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if &who != to {
        return Err(format!("{addr} is now node {who}, not {to}"));
    }
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_formats_are_refused() {
        let req = StreamRequest::Pull {
            partition: 3,
            after: Some(vec![1, 2]),
        };
        match decode::<StreamRequest>(&encode(&req)).unwrap() {
            StreamRequest::Pull { partition, after } => {
                assert_eq!((partition, after), (3, Some(vec![1, 2])))
            }
            other => panic!("{other:?}"),
        }
        assert!(decode::<StreamRequest>(&[9, 1]).is_err());
        assert!(decode::<StreamRequest>(&[]).is_err());
        assert!(decode::<StreamRequest>(&[versioned::FORMAT_V1, 0xff, 0xff]).is_err());
    }
}
