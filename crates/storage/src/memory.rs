//! [`MemEngine`]: an in-memory [`Engine`] that can crash.
//!
//! Used by unit tests, by the deterministic simulation (fjall's background threads would escape
//! it) and anywhere a node needs no disk. Besides the engine contract it models the one thing a
//! real disk does to a crashing process: writes since the last `sync` may be lost. `crash()`
//! drops exactly those (the pessimistic case), so a test that survives it proves the code only
//! relied on synced writes. `corrupt()` flips a stored byte to model bit rot.
//!
//! How: one `BTreeMap` per keyspace plus an undo log of every write since the last `sync` (the
//! previous value of each touched key). `sync` clears the log; `crash` replays it backwards.
//! That keeps one copy of the data and makes `sync` O(1) amortised, unlike snapshotting the maps.
//!
//! One `parking_lot::RwLock` guards everything (a blocking lock, not tokio's: critical sections
//! are short and never span an await). A batch is applied under the write lock, which is what
//! makes it atomic across keyspaces for readers and for `crash`.

use std::collections::BTreeMap;
use std::ops::Bound;

use parking_lot::RwLock;

use crate::engine::{BatchOp, Engine, KeyValue, Keyspace, WriteBatch};
use crate::error::StorageError;

type Table = BTreeMap<Vec<u8>, Vec<u8>>;

/// One undone write: the key and what it held before (None = absent).
struct Undo {
    ks: Keyspace,
    key: Vec<u8>,
    previous: Option<Vec<u8>>,
}

#[derive(Default)]
struct State {
    tables: [Table; 3],
    /// Writes since the last sync, oldest first.
    unsynced: Vec<Undo>,
    syncs: u64,
}

/// An in-memory engine with crash and corruption injection.
#[derive(Default)]
pub struct MemEngine {
    state: RwLock<State>,
}

impl MemEngine {
    /// An empty engine.
    pub fn new() -> Self {
        MemEngine::default()
    }

    /// Simulates a crash: every write since the last [`Engine::sync`] is rolled back, as if the
    /// process died before its journal reached the disk. Synced writes are untouched.
    pub fn crash(&self) {
        let mut state = self.state.write();
        while let Some(undo) = state.unsynced.pop() {
            let table = &mut state.tables[undo.ks.index()];
            match undo.previous {
                Some(value) => table.insert(undo.key, value),
                None => table.remove(&undo.key),
            };
        }
    }

    /// Simulates bit rot: flips the low bit of the last byte of the raw stored value. Returns
    /// false if the key is absent or its value empty (nothing to flip).
    pub fn corrupt(&self, ks: Keyspace, key: &[u8]) -> bool {
        let mut state = self.state.write();
        match state.tables[ks.index()]
            .get_mut(key)
            .and_then(|v| v.last_mut())
        {
            Some(byte) => {
                *byte ^= 0x01;
                true
            }
            None => false,
        }
    }

    /// Number of `sync` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.state.read().syncs
    }

    /// Number of batch operations written since the last `sync` (what a crash would lose).
    pub fn unsynced_ops(&self) -> usize {
        self.state.read().unsynced.len()
    }
}

impl Engine for MemEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        crate::engine::validate_key(key)?;
        Ok(self.state.read().tables[ks.index()].get(key).cloned())
    }

    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        batch.validate()?;
        let mut state = self.state.write();
        for op in batch.ops() {
            let ks = op.keyspace();
            let previous = match op {
                BatchOp::Put { key, value, .. } => {
                    state.tables[ks.index()].insert(key.clone(), value.clone())
                }
                BatchOp::Delete { key, .. } => state.tables[ks.index()].remove(key),
            };
            state.unsynced.push(Undo {
                ks,
                key: op.key().to_vec(),
                previous,
            });
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StorageError> {
        let mut state = self.state.write();
        state.unsynced.clear();
        state.syncs += 1;
        Ok(())
    }

    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        // BTreeMap::range panics on an inverted range; an empty answer is the contract.
        if limit == 0 || end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let state = self.state.read();
        Ok(state.tables[ks.index()]
            .range::<[u8], _>((Bound::Included(start), upper))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(engine: &MemEngine, key: &[u8], value: &[u8]) {
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Data, key.to_vec(), value.to_vec());
        engine.write(&batch).unwrap();
    }

    #[test]
    fn crash_restores_overwritten_and_deleted_values() {
        let engine = MemEngine::new();
        put(&engine, b"a", b"1");
        put(&engine, b"b", b"1");
        engine.sync().unwrap();

        put(&engine, b"a", b"2");
        put(&engine, b"a", b"3");
        let mut batch = WriteBatch::new();
        batch.delete(Keyspace::Data, b"b".to_vec());
        batch.put(Keyspace::Data, b"c".to_vec(), b"new".to_vec());
        engine.write(&batch).unwrap();
        assert_eq!(engine.unsynced_ops(), 4);

        engine.crash();
        assert_eq!(
            engine.get(Keyspace::Data, b"a").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(
            engine.get(Keyspace::Data, b"b").unwrap(),
            Some(b"1".to_vec())
        );
        assert_eq!(engine.get(Keyspace::Data, b"c").unwrap(), None);
        assert_eq!(engine.unsynced_ops(), 0);
    }

    #[test]
    fn corrupt_flips_a_byte_and_reports_absent_keys() {
        let engine = MemEngine::new();
        put(&engine, b"k", b"ab");
        assert!(engine.corrupt(Keyspace::Data, b"k"));
        assert_eq!(
            engine.get(Keyspace::Data, b"k").unwrap(),
            Some(b"ac".to_vec())
        );
        assert!(!engine.corrupt(Keyspace::Data, b"missing"));
        assert!(!engine.corrupt(Keyspace::Hints, b"k"));
    }

    #[test]
    fn inverted_scan_range_is_empty_not_a_panic() {
        let engine = MemEngine::new();
        put(&engine, b"m", b"1");
        assert!(engine
            .scan(Keyspace::Data, b"z", Some(b"a"), 10)
            .unwrap()
            .is_empty());
    }
}
