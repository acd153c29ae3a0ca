//! The raw engine contract: keyspaces, write batches, and the [`Engine`] trait.
//!
//! An engine stores bytes and knows nothing about checksums, durability modes or disk-space
//! policy; [`crate::Store`] adds those on top. Keeping the trait this small is what lets the same
//! conformance suite run against the in-memory engine (tests, simulation, crash injection) and the
//! fjall adapter (production), and lets tests wrap an engine to inject failures (a failing fsync).
//!
//! Contract every engine keeps (and the conformance suite in `tests/conformance.rs` checks):
//! - `write` is atomic across keyspaces: a reader sees all of a batch or none of it, and after a
//!   crash either all of it survives or none of it does.
//! - `write` is visible to `get`/`scan` on return, but is durable only after a later `sync`.
//! - Keys are 1..=[`MAX_KEY_LEN`] bytes; anything else is `InvalidInput`, never a panic.
//!
//! IMPLEMENTATION CAVEATS: no snapshots or iterators in the trait (a bounded `scan` with a limit
//! is what partition streaming and Merkle rebuilds need, and it keeps adapters trivial).

use crate::error::StorageError;

/// One `(key, value)` entry of a scan.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Longest key any engine accepts. fjall's limit (`u16`); ringkv's own key limit is far lower.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

/// The three keyspaces of a node (see DESIGN.md, "Storage").
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash, PartialOrd, Ord)]
pub enum Keyspace {
    /// partition id ++ key hash ++ key -> encoded sibling set.
    Data,
    /// Writes held for another node (hinted handoff).
    Hints,
    /// Node id, membership, ring.
    Meta,
}

impl Keyspace {
    /// Every keyspace, in index order.
    pub const ALL: [Keyspace; 3] = [Keyspace::Data, Keyspace::Hints, Keyspace::Meta];

    /// The keyspace's name on disk and in errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Keyspace::Data => "data",
            Keyspace::Hints => "hints",
            Keyspace::Meta => "meta",
        }
    }

    /// Dense index (0..3), for engines that keep one table per keyspace in an array.
    pub fn index(self) -> usize {
        match self {
            Keyspace::Data => 0,
            Keyspace::Hints => 1,
            Keyspace::Meta => 2,
        }
    }
}

impl std::fmt::Display for Keyspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One operation of a [`WriteBatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value`.
    Put {
        /// Target keyspace.
        ks: Keyspace,
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove `key` (a no-op if absent).
    Delete {
        /// Target keyspace.
        ks: Keyspace,
        /// Key bytes.
        key: Vec<u8>,
    },
}

impl BatchOp {
    /// The operation's keyspace.
    pub fn keyspace(&self) -> Keyspace {
        match self {
            BatchOp::Put { ks, .. } | BatchOp::Delete { ks, .. } => *ks,
        }
    }

    /// The operation's key.
    pub fn key(&self) -> &[u8] {
        match self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }
}

/// Per-operation overhead assumed when estimating a batch's journal footprint (sequence number,
/// keyspace id, lengths, checksums). An over-estimate on purpose: it feeds the disk-full guard.
const OP_OVERHEAD_BYTES: u64 = 64;

/// Puts and deletes applied atomically, in order, across keyspaces. Later ops on the same key
/// win.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Adds a put.
    pub fn put(&mut self, ks: Keyspace, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put {
            ks,
            key: key.into(),
            value: value.into(),
        });
    }

    /// Adds a delete.
    pub fn delete(&mut self, ks: Keyspace, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete {
            ks,
            key: key.into(),
        });
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True if the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// An upper estimate of the bytes this batch adds to the commit log.
    pub fn approximate_bytes(&self) -> u64 {
        self.ops
            .iter()
            .map(|op| {
                let payload = match op {
                    BatchOp::Put { key, value, .. } => key.len() + value.len(),
                    BatchOp::Delete { key, .. } => key.len(),
                };
                payload as u64 + OP_OVERHEAD_BYTES
            })
            .sum()
    }

    /// Checks every key against the limits all engines share, so that a bad key is a clear
    /// error before anything is applied (fjall would panic on it).
    pub fn validate(&self) -> Result<(), StorageError> {
        self.ops.iter().try_for_each(|op| validate_key(op.key()))
    }
}

/// The key rule every engine applies: 1..=[`MAX_KEY_LEN`] bytes.
pub fn validate_key(key: &[u8]) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::InvalidInput("empty key".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(StorageError::InvalidInput(format!(
            "key of {} bytes is over the {MAX_KEY_LEN}-byte limit",
            key.len()
        )));
    }
    Ok(())
}

/// The raw engine: bytes in, bytes out. The only implementations that touch a real disk live in
/// [`crate::fjall_engine`]; tests wrap engines to inject faults.
pub trait Engine: Send + Sync + 'static {
    /// The value stored under `key`, if any.
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Applies the batch atomically across keyspaces; visible to reads on return; not
    /// necessarily durable.
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError>;

    /// Makes everything written so far durable (fsync the journal).
    fn sync(&self) -> Result<(), StorageError>;

    /// Key-ordered entries with `start <= key < end` (`end` None = to the end of the keyspace),
    /// at most `limit` of them.
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError>;

    /// Bytes the engine uses on disk (0 for memory).
    fn disk_bytes(&self) -> u64;
}

/// A shared engine is an engine, so wrappers (fault injectors) can hold an `Arc` that the test
/// keeps a clone of.
impl<E: Engine + ?Sized> Engine for std::sync::Arc<E> {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        (**self).get(ks, key)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        (**self).write(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        (**self).sync()
    }
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        (**self).scan(ks, start, end, limit)
    }
    fn disk_bytes(&self) -> u64 {
        (**self).disk_bytes()
    }
}

/// Hex of at most the first 32 bytes of a key, for logs and error details.
pub(crate) fn key_hex(key: &[u8]) -> String {
    use std::fmt::Write;
    const SHOWN: usize = 32;
    let mut out = String::with_capacity(SHOWN * 2 + 3);
    for byte in key.iter().take(SHOWN) {
        let _ = write!(out, "{byte:02x}");
    }
    if key.len() > SHOWN {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_empty_and_oversized_keys() {
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Data, b"ok".to_vec(), b"v".to_vec());
        assert!(batch.validate().is_ok());

        batch.delete(Keyspace::Hints, Vec::new());
        assert!(matches!(
            batch.validate(),
            Err(StorageError::InvalidInput(_))
        ));

        let mut big = WriteBatch::new();
        big.put(Keyspace::Meta, vec![1u8; MAX_KEY_LEN + 1], b"v".to_vec());
        assert!(matches!(big.validate(), Err(StorageError::InvalidInput(_))));

        let mut max = WriteBatch::new();
        max.put(Keyspace::Meta, vec![1u8; MAX_KEY_LEN], b"v".to_vec());
        assert!(max.validate().is_ok());
    }

    #[test]
    fn approximate_bytes_counts_keys_values_and_overhead() {
        let mut batch = WriteBatch::new();
        assert_eq!(batch.approximate_bytes(), 0);
        batch.put(Keyspace::Data, vec![0u8; 10], vec![0u8; 100]);
        batch.delete(Keyspace::Data, vec![0u8; 5]);
        assert_eq!(batch.approximate_bytes(), 110 + 5 + 2 * OP_OVERHEAD_BYTES);
    }

    #[test]
    fn key_hex_truncates_long_keys() {
        assert_eq!(key_hex(b"\x00\xff"), "00ff");
        assert!(key_hex(&[7u8; 40]).ends_with("..."));
    }

    #[test]
    fn keyspace_names_and_indexes_are_distinct() {
        let names: std::collections::HashSet<_> = Keyspace::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), 3);
        for (i, ks) in Keyspace::ALL.iter().enumerate() {
            assert_eq!(ks.index(), i);
        }
    }
}
