//! [`Store`]: what the rest of ringkv uses. An [`Engine`] plus the policies every node needs:
//! a checksum on every value (module `record`), durability by group commit or periodic fsync
//! (module `group_commit`), refusal before the disk fills (module `free_space`), fail-stop
//! after a failed fsync, and counters for `/metrics` and `INFO`.
//!
//! Write path: validate keys -> refuse if closed, poisoned or short of disk -> frame values with
//! their checksum -> engine write (visible at once) -> fsync by the syncer -> acknowledged.
//! Read path: engine read -> checksum check -> payload, or `Corrupt` (logged, counted, never the
//! bytes).
//!
//! A `Store` is a cheap handle (`Arc` inside). Dropping the last handle shuts it down (final
//! fsync, syncer joined), as does [`Store::shutdown`], which reports errors.
//!
//! IMPLEMENTATION CAVEATS: `scan` skips corrupt records (logged and counted) rather than failing
//! the whole scan, so that a Merkle rebuild or a partition stream gets past one rotten record and
//! anti-entropy can repair it from a replica; `get` of that key still answers `Corrupt`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::engine::{key_hex, BatchOp, Engine, KeyValue, Keyspace, WriteBatch};
use crate::error::StorageError;
use crate::fjall_engine::FjallEngine;
use crate::free_space::FreeSpaceGuard;
use crate::group_commit::{Durability, Durable, GroupCommit, WriteTicket};
use crate::memory::MemEngine;
use crate::record;

/// Subdirectory of the data directory that holds the engine's files, so the node can keep its
/// own files (node id, config snapshots) beside it.
pub const ENGINE_SUBDIR: &str = "fjall";

/// How a store behaves. Defaults: sync durability, 64 MiB block cache, 64 MiB disk headroom.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreOptions {
    /// When a write counts as durable.
    pub durability: Durability,
    /// Block cache size of the on-disk engine.
    pub cache_bytes: u64,
    /// Writes are refused (`DiskFull`) while the disk has less than this free. It must cover
    /// what the engine writes by itself after the last accepted write (memtable flushes of up to
    /// 64 MiB per keyspace, compactions): ENOSPC there poisons fjall until the node restarts.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Sync,
            cache_bytes: 64 << 20,
            min_free_bytes: 64 << 20,
        }
    }
}

/// Counters since the store was opened, plus current state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches applied to the engine.
    pub writes: u64,
    /// fsyncs of the commit log (attempts, failed ones included).
    pub fsyncs: u64,
    /// Reads that found a record failing its checksum.
    pub corrupt_reads: u64,
    /// Writes refused because the disk was short of space.
    pub disk_full_refusals: u64,
    /// Bytes the engine occupies on disk.
    pub disk_bytes: u64,
    /// True after a failed fsync or journal write: no further writes are accepted.
    pub poisoned: bool,
}

struct Inner {
    engine: Arc<dyn Engine>,
    durability: Durability,
    commit: GroupCommit,
    /// Only for on-disk stores.
    free_space: Option<FreeSpaceGuard>,
    corrupt_reads: AtomicU64,
    disk_full_refusals: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the last handle is gone, nobody can be told about an error any more.
        if let Err(e) = self.commit.shutdown() {
            tracing::warn!(error = %e, "storage shutdown on drop failed");
        }
    }
}

/// The node's storage handle. Clone freely.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("durability", &self.inner.durability)
            .field("on_disk", &self.inner.free_space.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the on-disk store under `dir` (the engine lives in
    /// `dir/`[`ENGINE_SUBDIR`]). Replays the journal: what was synced before a crash is back.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, StorageError> {
        let engine_dir = dir.join(ENGINE_SUBDIR);
        let engine = FjallEngine::open(&engine_dir, opts.cache_bytes)?;
        let guard = FreeSpaceGuard::new(engine_dir, opts.min_free_bytes);
        Ok(Store::build(Arc::new(engine), opts, Some(guard)))
    }

    /// A store over a fresh [`MemEngine`] (nothing survives the process).
    pub fn in_memory(opts: StoreOptions) -> Store {
        Store::with_engine(Arc::new(MemEngine::new()), opts)
    }

    /// A store over any engine (tests wrap engines to inject faults). No free-space guard: the
    /// store cannot know where an arbitrary engine keeps its bytes.
    pub fn with_engine(engine: Arc<dyn Engine>, opts: StoreOptions) -> Store {
        Store::build(engine, opts, None)
    }

    fn build(engine: Arc<dyn Engine>, opts: StoreOptions, guard: Option<FreeSpaceGuard>) -> Store {
        let commit = GroupCommit::start(Arc::clone(&engine), opts.durability);
        Store {
            inner: Arc::new(Inner {
                engine,
                durability: opts.durability,
                commit,
                free_space: guard,
                corrupt_reads: AtomicU64::new(0),
                disk_full_refusals: AtomicU64::new(0),
            }),
        }
    }

    /// The value under `key`, checksum-verified. A record failing its checksum is an error
    /// (`Corrupt`, logged and counted), never returned.
    pub fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        match self.inner.engine.get(ks, key) {
            Ok(Some(raw)) => self.verify(ks, key, &raw).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.count_corrupt(e)),
        }
    }

    /// Key-ordered entries with `start <= key < end` (`end` None = to the end), at most `limit`,
    /// values checksum-verified. Corrupt records are skipped (logged and counted, see the module
    /// caveats); the scan still returns up to `limit` good entries if there are that many.
    pub fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        let mut out = Vec::new();
        let mut from = start.to_vec();
        while out.len() < limit {
            let want = limit - out.len();
            let page = self
                .inner
                .engine
                .scan(ks, &from, end, want)
                .map_err(|e| self.count_corrupt(e))?;
            let exhausted = page.len() < want;
            let Some(last_key) = page.last().map(|(k, _)| k.clone()) else {
                break;
            };
            for (key, raw) in page {
                if let Ok(payload) = self.verify(ks, &key, &raw) {
                    out.push((key, payload));
                }
            }
            if exhausted {
                break;
            }
            // Resume just after the last key seen: the smallest key greater than it.
            from = last_key;
            from.push(0);
        }
        Ok(out)
    }

    /// Visits every entry with `start <= key < end` in key order, [`Store::scan`]ning a page at a
    /// time so a large range (a partition, all hints) is never held in memory at once. Values are
    /// checksum-verified as in `scan`.
    pub fn for_each(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        mut visit: impl FnMut(Vec<u8>, Vec<u8>),
    ) -> Result<(), StorageError> {
        const PAGE: usize = 4096;
        let mut from = start.to_vec();
        loop {
            let page = self.scan(ks, &from, end, PAGE)?;
            let full = page.len() == PAGE;
            if let Some((last, _)) = page.last() {
                // Resume just after the last key seen: the smallest key greater than it.
                from = last.clone();
                from.push(0);
            }
            for (key, value) in page {
                visit(key, value);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Applies the batch; visible to reads at once, durable once [`Store::durable`] resolves.
    /// Refused with `DiskFull` (nothing written) below the free-space headroom, with `Poisoned`
    /// after a failed fsync, with `Closed` after shutdown.
    ///
    /// Blocking, briefly: a memtable insert and a `write(2)` to the journal (microseconds), never
    /// an fsync. But fjall stalls writers (sleeps of 10-100 ms) while its flushes or compactions
    /// fall behind; from async code [`Store::commit`] keeps that off the runtime threads.
    pub fn write(&self, batch: &WriteBatch) -> Result<WriteTicket, StorageError> {
        let framed = self.prepare(batch)?;
        self.inner.commit.apply(&framed)
    }

    /// Resolves once the write behind `ticket` is durable. Sync mode: after an fsync that started
    /// after the write finished (shared with every writer waiting at the time). Periodic mode: at
    /// once. `Poisoned` if the fsync failed; `Closed` if the store shut down first.
    pub async fn durable(&self, ticket: WriteTicket) -> Result<(), StorageError> {
        match self.inner.commit.durable(ticket) {
            Durable::Ready(result) => result,
            Durable::Pending(rx) => rx.await.unwrap_or(Err(StorageError::Closed)),
        }
    }

    /// Write + durable. In sync mode the batch is handed to the group-commit thread, which
    /// applies it with the others queued and fsyncs once, so the calling task never blocks a
    /// runtime thread. Either the batch is applied and durable, or it errs; a `DiskFull` or
    /// `InvalidInput` refusal guarantees nothing was written.
    pub async fn commit(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        let framed = self.prepare(batch)?;
        match self.inner.durability {
            Durability::Sync => {
                let rx = self.inner.commit.enqueue(framed)?;
                rx.await.unwrap_or(Err(StorageError::Closed))
            }
            Durability::Periodic { .. } => {
                let ticket = self.inner.commit.apply(&framed)?;
                self.durable(ticket).await
            }
        }
    }

    /// The durability mode this store runs in.
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Counters and state, for metrics and `INFO`.
    pub fn stats(&self) -> StoreStats {
        let inner = &self.inner;
        StoreStats {
            writes: inner.commit.writes(),
            fsyncs: inner.commit.fsyncs(),
            corrupt_reads: inner.corrupt_reads.load(Ordering::Relaxed),
            disk_full_refusals: inner.disk_full_refusals.load(Ordering::Relaxed),
            disk_bytes: inner.engine.disk_bytes(),
            poisoned: inner.commit.is_poisoned(),
        }
    }

    /// Final fsync and stop the syncer; later writes fail with `Closed` (reads keep working).
    /// Idempotent. Also done, best effort, when the last handle is dropped.
    pub fn shutdown(&self) -> Result<(), StorageError> {
        self.inner.commit.shutdown()
    }

    /// Every check a write passes before the engine sees it, then the framed batch.
    fn prepare(&self, batch: &WriteBatch) -> Result<WriteBatch, StorageError> {
        batch.validate()?;
        self.inner.commit.check_open()?;
        let framed = frame(batch);
        if let Some(guard) = &self.inner.free_space {
            if let Err(e) = guard.admit(framed.approximate_bytes()) {
                // Counted here; the guard logs on the transition only.
                self.inner
                    .disk_full_refusals
                    .fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(framed)
    }

    fn verify(&self, ks: Keyspace, key: &[u8], raw: &[u8]) -> Result<Vec<u8>, StorageError> {
        match record::decode(key, raw) {
            Ok(payload) => Ok(payload.to_vec()),
            Err(e) => {
                self.inner.corrupt_reads.fetch_add(1, Ordering::Relaxed);
                let detail = format!("{e} for key {}", key_hex(key));
                tracing::error!(
                    keyspace = ks.name(),
                    key = %key_hex(key),
                    error = %e,
                    "corrupt record not served; repair it from a replica"
                );
                Err(StorageError::Corrupt {
                    keyspace: ks.name(),
                    detail,
                })
            }
        }
    }

    /// Counts an engine-detected corruption (a bad block) like one of ours.
    fn count_corrupt(&self, e: StorageError) -> StorageError {
        if let StorageError::Corrupt { .. } = e {
            self.inner.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        }
        if let StorageError::Poisoned = e {
            self.inner
                .commit
                .poison("the engine reported poisoned on a read");
        }
        e
    }
}

/// The batch with every value framed with its checksum; deletes pass through.
fn frame(batch: &WriteBatch) -> WriteBatch {
    let mut framed = WriteBatch::new();
    for op in batch.ops() {
        match op {
            BatchOp::Put { ks, key, value } => {
                framed.put(*ks, key.clone(), record::encode(key, value))
            }
            BatchOp::Delete { ks, key } => framed.delete(*ks, key.clone()),
        }
    }
    framed
}
