//! Helpers shared by the integration tests: temp dirs on a real disk, deterministic bytes, and
//! engine wrappers that inject faults.

// Each test crate includes this module and uses a different subset of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use ringkv_storage::{Engine, KeyValue, Keyspace, StorageError, WriteBatch};

/// A temp dir under cargo's target dir: a real disk (fsync costs what it costs in production)
/// even where /tmp is a tmpfs.
pub fn disk_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ringkv-storage-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create temp dir under CARGO_TARGET_TMPDIR")
}

/// Deterministic, incompressible bytes (xorshift64*), so tests can find them on disk and LZ4
/// cannot shrink them.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

pub fn put(ks: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(ks, key, value);
    batch
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Offset of the first occurrence of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An engine whose `sync` can be made to fail: models an fsync returning EIO.
pub struct FailingSync<E> {
    pub inner: E,
    pub fail: AtomicBool,
    pub sync_calls: AtomicU64,
}

impl<E> FailingSync<E> {
    pub fn new(inner: E, fail_from_start: bool) -> Self {
        FailingSync {
            inner,
            fail: AtomicBool::new(fail_from_start),
            sync_calls: AtomicU64::new(0),
        }
    }
}

impl<E: Engine> Engine for FailingSync<E> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(ks, key)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        self.sync_calls.fetch_add(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Io(std::io::Error::other(
                "injected EIO on fsync",
            )));
        }
        self.inner.sync()
    }
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan(ks, start, end, limit)
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
}

/// An engine whose `sync` blocks until the test opens a gate, announcing each start: lets a test
/// write while an fsync is in progress.
pub struct GatedSync<E> {
    pub inner: E,
    started: Mutex<std::sync::mpsc::Sender<()>>,
    gate: Mutex<std::sync::mpsc::Receiver<()>>,
}

/// The test's ends of a [`GatedSync`]: `started` receives one message per sync start; each
/// message sent on `open` lets one sync proceed.
pub struct Gate {
    pub started: std::sync::mpsc::Receiver<()>,
    pub open: std::sync::mpsc::Sender<()>,
}

impl<E> GatedSync<E> {
    pub fn new(inner: E) -> (Self, Gate) {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (open_tx, open_rx) = std::sync::mpsc::channel();
        (
            GatedSync {
                inner,
                started: Mutex::new(started_tx),
                gate: Mutex::new(open_rx),
            },
            Gate {
                started: started_rx,
                open: open_tx,
            },
        )
    }
}

impl<E: Engine> Engine for GatedSync<E> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(ks, key)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        let _ = self.started.lock().unwrap().send(());
        // A closed gate (test over) lets everything through.
        let _ = self.gate.lock().unwrap().recv();
        self.inner.sync()
    }
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan(ks, start, end, limit)
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
}
