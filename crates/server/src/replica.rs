//! The local replica: this node's copy of the keys it holds, as sibling sets in storage.
//!
//! It owns the read-modify-write of a key's sibling set. Writes to one key are serialised by a
//! striped lock held only while the set is read, changed and handed to storage (never across an
//! await); the caller then waits for durability outside the lock, so writers of different keys,
//! and of the same key, share group-commit fsyncs. A write is visible to readers as soon as it is
//! in the commit log, before it is durable; it is acknowledged only once durable.
//!
//! Later the coordinator will call [`Replica::apply_write`] on the key's coordinator and
//! [`Replica::merge`] on the other replicas (replication, read repair, hints, anti-entropy).
//!
//! Tombstone purge ([`Replica::purge`], driven by `cluster::tombstones`) deletes a key's record
//! under the same stripe lock and tree update as a write, and raises the partition's *write
//! floor* (kept in `meta`): every write of a key in that partition first raises the key's clock
//! entry for this node to it (`ringkv_core::tombstone::reserve_dots`), so a dot used by a purged
//! history is never issued again (see that module for the lost write it prevents).

use crate::error::NodeError;
use crate::row_cache::RowCache;
use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_core::anti_entropy::{value_digest, MerkleTree};
use ringkv_core::keys::{data_key, partition_range, split_data_key};
use ringkv_core::tombstone::{may_purge, purge_candidate, reserve_dots};
use ringkv_core::{Context, KeyHash, Limits, NodeId, PartitionId, SiblingSet, VersionVector};
use ringkv_storage::{Keyspace, StorageError, Store, WriteBatch};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Stripes of the per-key write lock. Collisions only serialise unrelated keys briefly.
const LOCK_STRIPES: usize = 1024;

/// `meta` key prefix of the per-partition write floors (then the partition, u32 big-endian;
/// value: the floor, u64 big-endian).
const META_PURGE_FLOOR: &[u8] = b"purge_floor/";

/// One write of a batch: a value, or a tombstone when `value` is `None`.
pub struct WriteOp {
    pub key: Bytes,
    pub value: Option<Bytes>,
    /// `None` = blind write: supersede whatever this replica holds now.
    pub context: Option<Context>,
}

/// What a write left behind.
#[derive(Debug, Clone)]
pub struct Written {
    /// The key's sibling set after the write (shared with the row cache, not copied).
    pub set: Arc<SiblingSet>,
}

pub struct Replica {
    node_id: NodeId,
    store: Store,
    limits: Limits,
    partitions: u32,
    stripes: Vec<Mutex<()>>,
    cache: RowCache,
    /// Keys holding at least one live value; exact, maintained on every write.
    live_keys: AtomicI64,
    /// Per partition, its anti-entropy Merkle tree, `None` until built (lazily, on first use by
    /// anti-entropy: [`Replica::tree`]). A built tree is updated under its mutex in the same
    /// critical section as the store write (the mutex is held across the write and the
    /// update, so a build, which holds it across its scan, sees every write either fully
    /// before or fully after). Memory: `2 * merkle_buckets * 16` bytes per built tree, 2 KiB
    /// at the default 64 buckets, so 2 MiB for all 1024 partitions.
    trees: Vec<Mutex<Option<MerkleTree>>>,
    merkle_buckets: u32,
    /// Per partition, the largest counter of this node's that a tombstone it purged there held
    /// (0 = none purged): a key with no record is written above it (see the module doc).
    /// Raised under the purged key's stripe lock, read under the written key's, persisted in
    /// the purge's own batch; loaded at open.
    purge_floors: Vec<AtomicU64>,
}

impl Replica {
    /// Opens the replica over a store and counts its live keys.
    pub fn open(
        node_id: NodeId,
        store: Store,
        limits: Limits,
        partitions: u32,
        row_cache_bytes: u64,
        merkle_buckets: u32,
    ) -> Result<Replica, NodeError> {
        // Checked by `Config::validate`; a bad count here is a programming error.
        MerkleTree::new(PartitionId(0), partitions, merkle_buckets)
            .map_err(|e| NodeError::Startup(e.to_string()))?;
        let replica = Replica {
            node_id,
            store,
            limits,
            partitions,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            cache: RowCache::new(row_cache_bytes),
            live_keys: AtomicI64::new(0),
            trees: (0..partitions).map(|_| Mutex::new(None)).collect(),
            merkle_buckets,
            purge_floors: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
        };
        replica.load_purge_floors()?;
        let live = replica.count_live_keys()?;
        replica.live_keys.store(live as i64, Ordering::Relaxed);
        Ok(replica)
    }

    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn live_keys(&self) -> u64 {
        self.live_keys.load(Ordering::Relaxed).max(0) as u64
    }

    /// The key's sibling set; empty when the key was never written.
    pub fn read(&self, key: &[u8]) -> Result<Arc<SiblingSet>, NodeError> {
        let record_key = data_key(key, self.partitions);
        if let Some(set) = self.cache.get(&record_key) {
            return Ok(set);
        }
        let _guard = self.lock_keys(std::iter::once(key));
        self.read_record(&record_key)
    }

    /// Bytes held by the row cache.
    pub fn cache_bytes(&self) -> u64 {
        self.cache.weight()
    }

    /// Applies client writes coordinated by this node, atomically and with one durability wait.
    /// Every op's limits are checked before anything is written; if any op would exceed the
    /// sibling limit, nothing is written.
    pub async fn apply_write(&self, ops: &[WriteOp]) -> Result<Vec<Written>, NodeError> {
        let now = now_ms();
        let (ticket, written) = {
            let _guards = self.lock_keys(ops.iter().map(|op| &op.key[..]));
            // Working sets by record key, in first-seen order: within one batch a key may repeat
            // (MSET a 1 a 2) and later ops must see earlier ones.
            let mut work: Vec<(Vec<u8>, bool, SiblingSet)> = Vec::new();
            // Per op: its key's slot in `work`, and a snapshot only when a later op of the batch
            // changes the same key again (otherwise the op's result is the slot's final set).
            let mut per_op: Vec<(usize, Option<Arc<SiblingSet>>)> = Vec::with_capacity(ops.len());
            for op in ops {
                let record_key = data_key(&op.key, self.partitions);
                let slot = match work.iter().position(|(k, _, _)| *k == record_key) {
                    Some(slot) => {
                        if let Some(prev) = per_op.iter_mut().rev().find(|(s, _)| *s == slot) {
                            prev.1 = Some(Arc::new(work[slot].2.clone()));
                        }
                        slot
                    }
                    None => {
                        let set = SiblingSet::clone(&*self.read_record(&record_key)?);
                        work.push((record_key, !set.is_deleted(), set));
                        work.len() - 1
                    }
                };
                let floor =
                    split_data_key(&work[slot].0).map_or(0, |(p, _, _)| self.purge_floor(p));
                let set = &mut work[slot].2;
                // Tombstones were purged in this partition: write above every dot this node
                // issued there, whatever the key's set holds now (`reserve_dots`).
                reserve_dots(set, &self.node_id, floor, now);
                match &op.context {
                    Some(context) => set.write(&self.node_id, context, op.value.clone(), now),
                    None => set.overwrite(&self.node_id, op.value.clone(), now),
                };
                set.prune(self.limits.max_clock_entries);
                let siblings = set.versions().len();
                if siblings > self.limits.max_siblings {
                    return Err(NodeError::TooManySiblings {
                        siblings,
                        max: self.limits.max_siblings,
                    });
                }
                if siblings >= self.limits.sibling_warn {
                    tracing::warn!(
                        key = %String::from_utf8_lossy(&op.key),
                        siblings,
                        "key has many siblings: a client is writing without contexts"
                    );
                }
                per_op.push((slot, None));
            }
            let mut batch = WriteBatch::new();
            let mut live_delta = 0i64;
            let mut digests = Vec::with_capacity(work.len());
            for (record_key, was_live, set) in &work {
                live_delta += !set.is_deleted() as i64 - *was_live as i64;
                let encoded = set.encode();
                digests.push(value_digest(&encoded));
                batch.put(Keyspace::Data, record_key.clone(), encoded);
            }
            // Old digests come from the stored (cached) sets, read before the batch lands.
            let mut tree_updates = Vec::with_capacity(work.len());
            for ((record_key, _, _), new) in work.iter().zip(&digests) {
                tree_updates.push((record_key.clone(), self.stored_digest(record_key)?, *new));
            }
            let mut trees = self.lock_trees(tree_updates.iter().map(|(k, _, _)| &k[..]));
            let ticket = self.store.write(&batch)?;
            for (record_key, old, new) in &tree_updates {
                self.update_tree(&mut trees, record_key, *old, Some(*new));
            }
            drop(trees);
            let finals: Vec<Arc<SiblingSet>> = work
                .into_iter()
                .map(|(record_key, _, set)| {
                    let set = Arc::new(set);
                    self.cache.insert(record_key, set.clone());
                    set
                })
                .collect();
            self.live_keys.fetch_add(live_delta, Ordering::Relaxed);
            let written = per_op
                .into_iter()
                .map(|(slot, snapshot)| Written {
                    set: snapshot.unwrap_or_else(|| finals[slot].clone()),
                })
                .collect::<Vec<_>>();
            (ticket, written)
        };
        self.store.durable(ticket).await?;
        Ok(written)
    }

    /// Merges another replica's sibling set for `key` into ours (replication, read repair).
    pub async fn merge(&self, key: &[u8], incoming: &SiblingSet) -> Result<SiblingSet, NodeError> {
        self.merge_counted(key, incoming).await.map(|(set, _)| set)
    }

    /// [`Replica::merge`], also saying whether the stored set changed (an anti-entropy repair).
    /// A merge that changes nothing writes nothing.
    pub async fn merge_counted(
        &self,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<(SiblingSet, bool), NodeError> {
        let record_key = data_key(key, self.partitions);
        let (ticket, merged) = {
            let _guards = self.lock_keys(std::iter::once(key));
            let current = self.read_record(&record_key)?;
            let mut set = SiblingSet::clone(&*current);
            let was_live = !set.is_deleted();
            set.merge(incoming);
            set.prune(self.limits.max_clock_entries);
            if set == *current {
                return Ok((set, false));
            }
            let old = self.stored_digest(&record_key)?;
            let encoded = set.encode();
            let new = value_digest(&encoded);
            let mut batch = WriteBatch::new();
            batch.put(Keyspace::Data, record_key.clone(), encoded);
            let mut trees = self.lock_trees(std::iter::once(&record_key[..]));
            let ticket = self.store.write(&batch)?;
            self.update_tree(&mut trees, &record_key, old, Some(new));
            drop(trees);
            self.cache.insert(record_key, Arc::new(set.clone()));
            let delta = !set.is_deleted() as i64 - was_live as i64;
            self.live_keys.fetch_add(delta, Ordering::Relaxed);
            (ticket, set)
        };
        self.store.durable(ticket).await?;
        Ok((merged, true))
    }

    /// Deletes `key`'s record when the tombstone rule allows it ([`may_purge`]: it holds only
    /// tombstones and `purge_clock`, the clock of the purged tombstone, covers everything it
    /// has seen). Returns whether a record was deleted. Done under the key's stripe lock with
    /// the partition's tree updated in the same critical section (the tree drops the key), and
    /// the partition's write floor raised in the same batch. Not waited on for durability: a
    /// purge lost in a crash leaves the tombstone, which is purged again on a later scan.
    pub fn purge(&self, key: &[u8], purge_clock: &VersionVector) -> Result<bool, NodeError> {
        let record_key = data_key(key, self.partitions);
        let Some((partition, _, _)) = split_data_key(&record_key) else {
            return Ok(false);
        };
        let _guard = self.lock_keys(std::iter::once(key));
        let current = self.read_record(&record_key)?;
        if !may_purge(&current, purge_clock) {
            return Ok(false);
        }
        let old = self.stored_digest(&record_key)?;
        let floor = self
            .purge_floor(partition)
            .max(purge_clock.get(&self.node_id));
        let mut batch = WriteBatch::new();
        batch.delete(Keyspace::Data, record_key.clone());
        batch.put(
            Keyspace::Meta,
            purge_floor_key(partition),
            floor.to_be_bytes().to_vec(),
        );
        let mut trees = self.lock_trees(std::iter::once(&record_key[..]));
        // The ticket is dropped: see above.
        self.store.write(&batch)?;
        self.update_tree(&mut trees, &record_key, old, None);
        drop(trees);
        if let Some(slot) = self.purge_floors.get(partition.0 as usize) {
            slot.fetch_max(floor, Ordering::AcqRel);
        }
        // The absent record reads as the empty set; caching it keeps the cache coherent.
        self.cache.insert(record_key, Arc::new(SiblingSet::new()));
        Ok(true)
    }

    /// Keys of `partition` whose stored set is a purge candidate at `now_ms` ([`purge_candidate`]:
    /// only tombstones, the newest older than `grace_ms`), with those sets, in key order; at most
    /// `limit` (the rest wait for the next scan). One paged range scan of the partition.
    /// Blocking: call from `spawn_blocking`.
    pub fn purge_candidates(
        &self,
        partition: PartitionId,
        now_ms: u64,
        grace_ms: u64,
        limit: usize,
    ) -> Result<Vec<(Bytes, SiblingSet)>, NodeError> {
        let (start, end) = partition_range(partition);
        let mut out = Vec::new();
        self.store
            .for_each(Keyspace::Data, &start, end.as_deref(), |k, v| {
                if out.len() >= limit {
                    return;
                }
                let Some((_, _, key)) = split_data_key(&k) else {
                    return;
                };
                match SiblingSet::decode(&v) {
                    Ok(set) if purge_candidate(&set, now_ms, grace_ms) => {
                        out.push((Bytes::copy_from_slice(key), set))
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(
                        key = %String::from_utf8_lossy(key),
                        error = %e,
                        "undecodable record skipped by the tombstone scan"
                    ),
                }
            })?;
        Ok(out)
    }

    /// The partition's write floor (0 when nothing was purged there, or no such partition).
    pub fn purge_floor(&self, partition: PartitionId) -> u64 {
        self.purge_floors
            .get(partition.0 as usize)
            .map_or(0, |f| f.load(Ordering::Acquire))
    }

    fn load_purge_floors(&self) -> Result<(), NodeError> {
        let mut end = META_PURGE_FLOOR.to_vec();
        // The prefix ends in '/'; '0' is the next byte, so this bounds exactly the prefix.
        *end.last_mut().expect("non-empty prefix") += 1;
        self.store
            .for_each(Keyspace::Meta, META_PURGE_FLOOR, Some(&end), |k, v| {
                let partition = k[META_PURGE_FLOOR.len()..]
                    .try_into()
                    .ok()
                    .map(u32::from_be_bytes);
                let floor = v[..].try_into().ok().map(u64::from_be_bytes);
                match (partition, floor) {
                    (Some(p), Some(floor)) if (p as usize) < self.purge_floors.len() => {
                        self.purge_floors[p as usize].fetch_max(floor, Ordering::AcqRel);
                    }
                    _ => tracing::warn!("malformed purge floor record ignored"),
                }
            })?;
        Ok(())
    }

    /// The anti-entropy tree bucket count.
    pub fn merkle_buckets(&self) -> u32 {
        self.merkle_buckets
    }

    /// Partitions of the ring this replica keys by.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// A copy of the partition's tree (2 KiB at 64 buckets), building it first from a scan of
    /// the partition when it was never built. Blocking: call from `spawn_blocking` or accept a
    /// short stall (a partition's scan).
    pub fn tree(&self, partition: PartitionId) -> Result<MerkleTree, NodeError> {
        let slot = self
            .trees
            .get(partition.0 as usize)
            .ok_or_else(|| NodeError::Rejected(format!("no partition {partition}")))?;
        let mut guard = slot.lock();
        if let Some(tree) = &*guard {
            return Ok(tree.clone());
        }
        // Held across the scan: writers of this partition wait (see `trees`).
        let (start, end) = partition_range(partition);
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        self.store
            .for_each(Keyspace::Data, &start, end.as_deref(), |k, v| {
                entries.push((k, v))
            })?;
        let tree = MerkleTree::from_entries(
            partition,
            self.partitions,
            self.merkle_buckets,
            entries
                .iter()
                .filter_map(|(k, v)| split_data_key(k).map(|(_, _, key)| (key, &v[..]))),
        )
        .map_err(|e| NodeError::Rejected(e.to_string()))?;
        *guard = Some(tree.clone());
        Ok(tree)
    }

    /// The partition's keys whose hash lies in `first..=last`, with the digests of their stored
    /// sets, sorted by `(hash, key)`: one range scan of the `data` keyspace.
    pub fn key_digests(
        &self,
        partition: PartitionId,
        first: KeyHash,
        last: KeyHash,
    ) -> Result<Vec<(Bytes, u128)>, NodeError> {
        let mut start = partition.0.to_be_bytes().to_vec();
        start.extend_from_slice(&first.0.to_be_bytes());
        let end = match last.0.checked_add(1) {
            Some(next) => {
                let mut e = partition.0.to_be_bytes().to_vec();
                e.extend_from_slice(&next.to_be_bytes());
                Some(e)
            }
            None => partition_range(partition).1,
        };
        let mut out = Vec::new();
        self.store
            .for_each(Keyspace::Data, &start, end.as_deref(), |k, v| {
                if let Some((_, _, key)) = split_data_key(&k) {
                    out.push((Bytes::copy_from_slice(key), value_digest(&v)));
                }
            })?;
        Ok(out)
    }

    /// The digest of the set stored under `record_key`, `None` when absent (an empty set is
    /// never stored: every write leaves a value or a tombstone, and a no-op merge writes
    /// nothing). Call with the key's stripe lock held.
    fn stored_digest(&self, record_key: &[u8]) -> Result<Option<u128>, NodeError> {
        let set = self.read_record(record_key)?;
        Ok((!set.versions().is_empty()).then(|| value_digest(&set.encode())))
    }

    /// Locks the tree slots of the partitions of `record_keys`, in index order.
    fn lock_trees<'a>(
        &self,
        record_keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<(u32, parking_lot::MutexGuard<'_, Option<MerkleTree>>)> {
        let mut idx: Vec<u32> = record_keys
            .filter_map(|k| split_data_key(k).map(|(p, _, _)| p.0))
            .filter(|&p| (p as usize) < self.trees.len())
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|p| (p, self.trees[p as usize].lock()))
            .collect()
    }

    fn update_tree(
        &self,
        trees: &mut [(u32, parking_lot::MutexGuard<'_, Option<MerkleTree>>)],
        record_key: &[u8],
        old: Option<u128>,
        new: Option<u128>,
    ) {
        let Some((p, _, key)) = split_data_key(record_key) else {
            return;
        };
        if let Some((_, guard)) = trees.iter_mut().find(|(q, _)| *q == p.0) {
            if let Some(tree) = guard.as_mut() {
                tree.update(key, old, new);
            }
        }
    }

    /// The set stored under `record_key`, through the row cache. Call with the key's stripe lock
    /// held, so a miss cannot put back a set older than a concurrent write's.
    fn read_record(&self, record_key: &[u8]) -> Result<Arc<SiblingSet>, NodeError> {
        if let Some(set) = self.cache.get(record_key) {
            return Ok(set);
        }
        let set = match self.store.get(Keyspace::Data, record_key)? {
            None => SiblingSet::new(),
            Some(bytes) => SiblingSet::decode(&bytes).map_err(|e| {
                NodeError::Storage(StorageError::Corrupt {
                    keyspace: "data",
                    detail: e.to_string(),
                })
            })?,
        };
        let set = Arc::new(set);
        self.cache.insert(record_key.to_vec(), set.clone());
        Ok(set)
    }

    /// Locks the stripes of `keys` in index order, so two multi-key writes cannot deadlock.
    fn lock_keys<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<parking_lot::MutexGuard<'_, ()>> {
        let mut idx: Vec<usize> = keys
            .map(|k| (KeyHash::of(k).0 % LOCK_STRIPES as u64) as usize)
            .collect();
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.stripes[i].lock()).collect()
    }

    fn count_live_keys(&self) -> Result<u64, NodeError> {
        let mut live = 0u64;
        self.store.for_each(Keyspace::Data, &[], None, |k, v| {
            match SiblingSet::decode(&v) {
                Ok(set) if !set.is_deleted() => live += 1,
                Ok(_) => {}
                Err(e) => {
                    let key = split_data_key(&k).map(|(_, _, key)| key).unwrap_or(&k);
                    tracing::error!(key = %String::from_utf8_lossy(key), error = %e, "undecodable record while counting keys");
                }
            }
        })?;
        Ok(live)
    }
}

fn purge_floor_key(partition: PartitionId) -> Vec<u8> {
    let mut key = META_PURGE_FLOOR.to_vec();
    key.extend_from_slice(&partition.0.to_be_bytes());
    key
}

/// Wall-clock milliseconds since the Unix epoch: version timestamps and clock entry ages only.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_storage::StoreOptions;

    fn replica(cache_bytes: u64) -> Arc<Replica> {
        let store = Store::in_memory(StoreOptions::default());
        Arc::new(
            Replica::open(
                NodeId::new("n1").unwrap(),
                store,
                Limits::default(),
                1024,
                cache_bytes,
                64,
            )
            .unwrap(),
        )
    }

    fn stored(r: &Replica, key: &[u8]) -> SiblingSet {
        match r.store.get(Keyspace::Data, &data_key(key, 1024)).unwrap() {
            Some(b) => SiblingSet::decode(&b).unwrap(),
            None => SiblingSet::new(),
        }
    }

    /// Readers racing writers on a few hot keys never leave the row cache holding anything but
    /// what storage holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_cache_stays_coherent_with_storage_under_concurrency() {
        let r = replica(1 << 20);
        let keys: Vec<Bytes> = (0..4).map(|i| Bytes::from(format!("hot{i}"))).collect();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let r = r.clone();
            let keys = keys.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    let key = keys[(t + i) % keys.len()].clone();
                    if (t + i) % 3 == 0 {
                        r.read(&key).unwrap();
                    } else {
                        let op = WriteOp {
                            key,
                            value: Some(Bytes::from(format!("{t}-{i}"))),
                            context: None,
                        };
                        r.apply_write(&[op]).await.unwrap();
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for key in &keys {
            assert_eq!(*r.read(key).unwrap(), stored(&r, key));
        }
    }

    #[tokio::test]
    async fn cache_off_and_on_give_the_same_answers() {
        for bytes in [0, 1 << 20] {
            let r = replica(bytes);
            let op = |v: Option<&str>| WriteOp {
                key: Bytes::from_static(b"k"),
                value: v.map(|v| Bytes::from(v.to_string())),
                context: None,
            };
            r.apply_write(&[op(Some("a")), op(Some("b"))])
                .await
                .unwrap();
            assert_eq!(
                r.read(b"k").unwrap().winner().unwrap().value.as_deref(),
                Some(&b"b"[..])
            );
            r.apply_write(&[op(None)]).await.unwrap();
            assert!(r.read(b"k").unwrap().is_deleted());
            assert_eq!(r.live_keys(), 0);
            assert_eq!(*r.read(b"k").unwrap(), stored(&r, b"k"));
        }
    }

    fn op(key: &str, value: Option<&str>) -> WriteOp {
        WriteOp {
            key: Bytes::from(key.to_string()),
            value: value.map(|v| Bytes::from(v.to_string())),
            context: None,
        }
    }

    /// A purge deletes the record and its tree entry (the tree equals one rebuilt from
    /// storage), and only when the rule allows it.
    #[tokio::test]
    async fn purge_deletes_the_record_and_its_tree_entry() {
        let r = replica(1 << 20);
        let p = KeyHash::of(b"gone").partition(1024);
        r.tree(p).unwrap();
        r.apply_write(&[op("gone", Some("v")), op("kept", Some("v"))])
            .await
            .unwrap();
        let live = r.read(b"gone").unwrap();
        assert!(!r.purge(b"gone", live.clock()).unwrap(), "a live value");
        r.apply_write(&[op("gone", None)]).await.unwrap();
        let tombstone = r.read(b"gone").unwrap();
        assert!(
            !r.purge(b"gone", live.clock()).unwrap(),
            "a clock older than the tombstone"
        );
        assert!(r.purge(b"gone", tombstone.clock()).unwrap());
        assert!(r.read(b"gone").unwrap().versions().is_empty());
        assert_eq!(stored(&r, b"gone"), SiblingSet::new());
        assert!(r
            .store
            .get(Keyspace::Data, &data_key(b"gone", 1024))
            .unwrap()
            .is_none());
        assert!(
            !r.purge(b"gone", tombstone.clock()).unwrap(),
            "nothing left"
        );
        assert_eq!(r.live_keys(), 1);
        let kept = r.tree(p).unwrap();
        *r.trees[p.0 as usize].lock() = None;
        assert_eq!(kept, r.tree(p).unwrap());
        let candidates = r.purge_candidates(p, u64::MAX, 0, 10).unwrap();
        assert!(
            candidates.iter().all(|(k, _)| k != "gone"),
            "purged keys are gone"
        );
    }

    /// After a purge, a fresh write of the key gets a dot above the purged history's, so a
    /// stale copy of the tombstone (anti-entropy re-sending it) cannot swallow it; the floor
    /// survives a restart.
    #[tokio::test]
    async fn a_write_after_a_purge_is_not_swallowed_by_the_old_tombstone() {
        let store = Store::in_memory(StoreOptions::default());
        let open = || {
            Replica::open(
                NodeId::new("n1").unwrap(),
                store.clone(),
                Limits::default(),
                1024,
                1 << 20,
                64,
            )
            .unwrap()
        };
        let r = open();
        for v in ["a", "b", "c"] {
            r.apply_write(&[op("k", Some(v))]).await.unwrap();
        }
        r.apply_write(&[op("k", None)]).await.unwrap();
        let tombstone = SiblingSet::clone(&r.read(b"k").unwrap());
        assert!(r.purge(b"k", tombstone.clock()).unwrap());
        let p = KeyHash::of(b"k").partition(1024);
        assert_eq!(r.purge_floor(p), 4);
        drop(r);
        let r = open();
        assert_eq!(r.purge_floor(p), 4, "the floor is persisted");
        r.apply_write(&[op("k", Some("new"))]).await.unwrap();
        let written = r.read(b"k").unwrap();
        assert_eq!(written.versions()[0].dot.counter, 5);
        let (merged, _) = r.merge_counted(b"k", &tombstone).await.unwrap();
        assert_eq!(
            merged.winner().unwrap().value.as_deref(),
            Some(&b"new"[..]),
            "the new value survives the re-sent tombstone"
        );
        // A key never purged in another partition is written as before.
        let other = (0..)
            .map(|i| format!("o{i}"))
            .find(|k| KeyHash::of(k.as_bytes()).partition(1024) != p)
            .unwrap();
        r.apply_write(&[op(&other, Some("v"))]).await.unwrap();
        assert_eq!(
            r.read(other.as_bytes()).unwrap().versions()[0].dot.counter,
            1
        );
    }

    /// A built tree kept current by writes and merges equals a tree rebuilt from storage.
    #[tokio::test]
    async fn trees_follow_writes_and_merges() {
        let r = replica(1 << 20);
        let p = KeyHash::of(b"k0").partition(1024);
        r.tree(p).unwrap();
        let other = replica(0);
        for i in 0..50 {
            let key = Bytes::from(format!("k{i}"));
            let op = WriteOp {
                key: key.clone(),
                value: Some(Bytes::from(format!("v{i}"))),
                context: None,
            };
            r.apply_write(&[op]).await.unwrap();
            let op = WriteOp {
                key: key.clone(),
                value: (i % 3 != 0).then(|| Bytes::from("w")),
                context: None,
            };
            other.apply_write(&[op]).await.unwrap();
            r.merge_counted(&key, &other.read(&key).unwrap())
                .await
                .unwrap();
            let (_, again) = r
                .merge_counted(&key, &other.read(&key).unwrap())
                .await
                .unwrap();
            assert!(!again, "a no-op merge changes nothing");
        }
        let kept = r.tree(p).unwrap();
        *r.trees[p.0 as usize].lock() = None;
        assert_eq!(kept, r.tree(p).unwrap());
    }
}
