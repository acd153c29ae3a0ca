//! [`FjallEngine`]: the [`Engine`] over fjall 3 (an LSM tree: journal -> memtable -> sorted
//! tables with bloom filters, block cache, leveled compaction). The only module that imports
//! fjall, so swapping the engine touches this module alone.
//!
//! Mapping: one fjall `Database` (one journal) holding three fjall keyspaces named after
//! [`Keyspace::name`]; a [`WriteBatch`] becomes one fjall batch, which is atomic across them
//! because they share the journal. Reads go through a fjall snapshot: a plain `Keyspace::get` or
//! `range` reads at "latest" and observes batches half applied to the memtables (the conformance
//! test `readers_never_see_half_a_batch` catches exactly that); a snapshot only sees whole
//! batches. `write` leaves the batch in the OS page cache (fjall's `PersistMode::Buffer`: safe
//! against a process crash, not a power loss); `sync` fdatasyncs the journal without holding
//! fjall's journal lock (submodule `journal` says why and why it is sound).
//!
//! IMPLEMENTATION CAVEATS (fjall 3.1 behaviour the rest of ringkv must know, each pinned by a
//! test):
//! - fjall is fail-stop. A failed journal write or fsync, and any error in a background flush or
//!   compaction (ENOSPC included), poisons the database: every later write fails with
//!   `Poisoned` until the process restarts; a restart recovers every acknowledged write
//!   (`disk_full.rs`). That is why [`crate::Store`] refuses writes below a free-space headroom.
//! - Journal recovery: a torn tail (the last batch half written) is dropped silently; a batch
//!   whose checksum fails (a flipped bit) makes `open` fail, here as `Corrupt { keyspace:
//!   "journal" }`: the node cannot start until the operator moves the data aside
//!   (`disk_corruption.rs`). fjall#311: damage that breaks entry framing mid-journal is treated
//!   like a torn tail, so later batches would be dropped silently.
//! - Sorted-table blocks carry checksums; a flipped bit there reads as `Corrupt`.
//! - fjall logs through the `log` crate, not `tracing`.

mod journal;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions, PersistMode, Readable};

use crate::engine::{key_hex, BatchOp, Engine, KeyValue, Keyspace, WriteBatch};
use crate::error::StorageError;

/// The fjall-backed engine.
pub struct FjallEngine {
    db: Database,
    /// fjall keyspace handles, indexed by [`Keyspace::index`].
    keyspaces: [fjall::Keyspace; 3],
    path: PathBuf,
    journal: journal::JournalFsync,
    /// Set once the journal could not be found and `sync` fell back to fjall's own persist.
    fell_back: std::sync::atomic::AtomicBool,
}

impl FjallEngine {
    /// Opens (creating if needed) a fjall database in `dir`, with a block cache of `cache_bytes`.
    /// Replays the journal, so this is also crash recovery.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<FjallEngine, StorageError> {
        std::fs::create_dir_all(dir)?;
        let db = Database::builder(dir)
            .cache_size(cache_bytes)
            .open()
            .map_err(|e| convert(e, None))?;
        let open = |ks: Keyspace| {
            db.keyspace(ks.name(), KeyspaceCreateOptions::default)
                .map_err(|e| convert(e, Some(ks)))
        };
        let keyspaces = [
            open(Keyspace::Data)?,
            open(Keyspace::Hints)?,
            open(Keyspace::Meta)?,
        ];
        Ok(FjallEngine {
            db,
            keyspaces,
            path: dir.to_path_buf(),
            journal: journal::JournalFsync::new(dir),
            fell_back: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Forces every memtable into a sorted table and waits (at most `timeout`) for it. For tests
    /// (to put data into table files) and for an orderly shutdown that wants a short journal
    /// replay. Not fjall's `rotate_memtable_and_wait`: that one sleeps forever if the flush
    /// fails (measured: after ENOSPC in a flush the worker dies and nothing ever flushes).
    pub fn flush_memtables(&self, timeout: Duration) -> Result<(), StorageError> {
        let deadline = Instant::now() + timeout;
        for ks in Keyspace::ALL {
            let handle = self.handle(ks);
            handle.rotate_memtable().map_err(|e| convert(e, Some(ks)))?;
            while handle.sealed_memtable_count() > 0 {
                if Instant::now() >= deadline {
                    return Err(StorageError::Engine(format!(
                        "memtable flush of {ks} did not finish within {timeout:?}; \
                         the engine may be poisoned (see its log)"
                    )));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(())
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn handle(&self, ks: Keyspace) -> &fjall::Keyspace {
        &self.keyspaces[ks.index()]
    }
}

impl Engine for FjallEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        // fjall asserts on empty keys; answer the way a write would.
        crate::engine::validate_key(key)?;
        self.db
            .snapshot()
            .get(self.handle(ks), key)
            .map(|value| value.map(|v| v.to_vec()))
            .map_err(|e| convert_read(e, ks, key))
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        // fjall panics on an empty or over-long key: refuse before building anything.
        batch.validate()?;
        let mut fjall_batch = self.db.batch();
        for op in batch.ops() {
            match op {
                BatchOp::Put { ks, key, value } => {
                    fjall_batch.insert(self.handle(*ks), key.as_slice(), value.as_slice())
                }
                BatchOp::Delete { ks, key } => fjall_batch.remove(self.handle(*ks), key.as_slice()),
            }
        }
        fjall_batch.commit().map_err(|e| convert(e, None))
    }

    fn sync(&self) -> Result<(), StorageError> {
        // fjall's buffered journal bytes go to the kernel (brief lock); fails if fjall is
        // poisoned.
        self.db
            .persist(PersistMode::Buffer)
            .map_err(|e| convert(e, None))?;
        if !self.journal.sync_active()? {
            if !self.fell_back.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path = %self.path.display(),
                    "no fjall journal file found: falling back to persist(SyncData), which \
                     blocks writers during fsync (did the fjall journal layout change?)"
                );
            }
            return self
                .db
                .persist(PersistMode::SyncData)
                .map_err(|e| convert(e, None));
        }
        // fjall poisons itself when one of its own journal fsyncs fails, which may have consumed
        // a writeback error before our descriptor could see it: ask again.
        self.db
            .persist(PersistMode::Buffer)
            .map_err(|e| convert(e, None))
    }

    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        if limit == 0 || end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let snapshot = self.db.snapshot();
        let mut out = Vec::new();
        for guard in snapshot
            .range::<&[u8], _>(self.handle(ks), (Bound::Included(start), upper))
            .take(limit)
        {
            let (key, value) = guard.into_inner().map_err(|e| convert_read(e, ks, start))?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    fn disk_bytes(&self) -> u64 {
        allocated_bytes(&self.path)
    }
}

/// Bytes actually allocated under `dir` (st_blocks, not file length: fjall preallocates 64 MiB
/// sparse journal files, so `Database::disk_space` over-reports by that much). Files that vanish
/// mid-walk (compaction) are skipped.
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => allocated_bytes(&entry.path()),
            Ok(meta) => meta.blocks().saturating_mul(512),
            Err(_) => 0,
        })
        .sum()
}

/// Maps a fjall error from a read of `key`: block-level corruption becomes `Corrupt`, named.
fn convert_read(err: fjall::Error, ks: Keyspace, key: &[u8]) -> StorageError {
    match convert(err, Some(ks)) {
        StorageError::Corrupt { keyspace, detail } => {
            tracing::error!(
                keyspace,
                key = %key_hex(key),
                %detail,
                "engine block checksum failed; the record is not served"
            );
            StorageError::Corrupt {
                keyspace,
                detail: format!("{detail} (reading key {})", key_hex(key)),
            }
        }
        other => other,
    }
}

fn convert(err: fjall::Error, ks: Option<Keyspace>) -> StorageError {
    use fjall::LsmError;
    let keyspace = ks.map_or("engine", Keyspace::name);
    match err {
        fjall::Error::Io(e) | fjall::Error::Storage(LsmError::Io(e)) => StorageError::Io(e),
        fjall::Error::Poisoned => StorageError::Poisoned,
        fjall::Error::Storage(
            e @ (LsmError::ChecksumMismatch { .. }
            | LsmError::Decompress(_)
            | LsmError::InvalidTrailer
            | LsmError::InvalidHeader(_)
            | LsmError::InvalidTag(_)),
        ) => StorageError::Corrupt {
            keyspace,
            detail: format!("checksum mismatch in an engine block: {e:?}"),
        },
        // A batch in the journal failed its checksum on open. fjall 3.1 refuses to open rather
        // than guess (a torn tail, by contrast, is truncated silently).
        fjall::Error::JournalRecovery(e) => StorageError::Corrupt {
            keyspace: "journal",
            detail: format!(
                "checksum mismatch in the commit log ({e}); the engine will not open it. Move \
                 the data directory aside and let the node re-sync from its replicas"
            ),
        },
        other => StorageError::Engine(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn journal_ids(dir: &Path) -> Vec<u64> {
        let mut ids: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".jnl")?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Pins the fjall layout the out-of-lock fsync relies on: if a fjall upgrade moves its
    /// journals, this fails instead of every sync silently taking the slow path.
    #[test]
    fn sync_fsyncs_the_journal_file_directly() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), 1 << 20).unwrap();
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Data, b"k".to_vec(), b"v".to_vec());
        engine.write(&batch).unwrap();
        engine.sync().unwrap();
        assert!(!engine.fell_back.load(Ordering::Relaxed));
        assert_eq!(
            engine.journal.open_id(),
            journal_ids(dir.path()).last().copied()
        );
    }

    /// Past 64 MB of journal, a flush makes fjall rotate to a new journal file; sync must follow
    /// it, and everything written before and after must survive a reopen.
    #[test]
    fn sync_follows_a_journal_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), 1 << 20).unwrap();
        // Incompressible (fjall LZ4-compresses journal entries), made once: generating 64 MB of
        // noise in a debug build would dominate the test.
        let base = noise(1, 256 * 1024);
        let value = |i: u64| {
            let mut v = base.clone();
            v[..8].copy_from_slice(&i.to_be_bytes());
            v
        };
        let mut n = 0u64;
        while journal_ids(dir.path()).len() < 2 {
            assert!(n < 600, "no journal rotation after {n} writes");
            let mut batch = WriteBatch::new();
            batch.put(Keyspace::Data, n.to_be_bytes().to_vec(), value(n));
            engine.write(&batch).unwrap();
            engine.sync().unwrap();
            n += 1;
        }
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Data, b"after".to_vec(), b"rotation".to_vec());
        engine.write(&batch).unwrap();
        engine.sync().unwrap();
        assert_eq!(
            engine.journal.open_id(),
            journal_ids(dir.path()).last().copied(),
            "sync did not move to the new journal"
        );
        drop(engine);

        let engine = FjallEngine::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            engine.get(Keyspace::Data, b"after").unwrap(),
            Some(b"rotation".to_vec())
        );
        for i in [0, n / 2, n - 1] {
            assert_eq!(
                engine.get(Keyspace::Data, &i.to_be_bytes()).unwrap(),
                Some(value(i)),
                "write {i} lost"
            );
        }
    }
}
