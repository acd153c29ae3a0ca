//! An in-memory partition replica with its Merkle tree: the reference [`PartitionView`] for
//! tests and the simulator, and a model of what the shell's storage-backed one must do.

use super::message::KeyDigest;
use super::session::PartitionView;
use super::tree::{value_digest, MerkleTree};
use crate::{KeyHash, SiblingSet};
use bytes::Bytes;
use std::collections::BTreeMap;

/// One replica's copy of one partition: sets by `(key hash, key)` (the `data` keyspace's order
/// within a partition), each with its digest, and the tree kept current on every change.
#[derive(Debug, Clone)]
pub struct MemoryPartition {
    tree: MerkleTree,
    sets: BTreeMap<(u64, Bytes), (SiblingSet, u128)>,
}

impl MemoryPartition {
    /// An empty replica around an empty `tree`.
    pub fn new(tree: MerkleTree) -> Self {
        debug_assert_eq!(tree.keys(), 0);
        MemoryPartition {
            tree,
            sets: BTreeMap::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&SiblingSet> {
        self.sets
            .get(&(KeyHash::of(key).0, Bytes::copy_from_slice(key)))
            .map(|(s, _)| s)
    }

    /// Stores `set` as the key's set, replacing what was there, and updates the tree: what the
    /// shell does after a local write (`Replica::apply_write`).
    pub fn put(&mut self, key: Bytes, set: SiblingSet) {
        let digest = value_digest(&set.encode());
        let old = self
            .sets
            .insert((KeyHash::of(&key).0, key.clone()), (set, digest))
            .map(|(_, d)| d);
        self.tree.update(&key, old, Some(digest));
    }

    /// Removes the key outright (what a tombstone purge would do). Returns whether it was there.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        let removed = self
            .sets
            .remove(&(KeyHash::of(key).0, Bytes::copy_from_slice(key)));
        if let Some((_, d)) = &removed {
            self.tree.remove(key, *d);
        }
        removed.is_some()
    }

    /// Merges a peer's set into the key's set ([`SiblingSet::merge`]) and updates the tree: what
    /// the shell does with a replicate, a repair, a hint or an anti-entropy set
    /// (`Replica::merge`). Returns whether the stored set changed (a repair, for metrics).
    pub fn merge(&mut self, key: Bytes, incoming: &SiblingSet) -> bool {
        let mut set = self.get(&key).cloned().unwrap_or_default();
        let before = set.clone();
        set.merge(incoming);
        if set == before && self.get(&key).is_some() {
            return false;
        }
        self.put(key, set);
        true
    }

    /// Every key and set, in `(hash, key)` order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &SiblingSet)> {
        self.sets.iter().map(|((_, k), (s, _))| (k, s))
    }

    pub fn len(&self) -> usize {
        self.sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }
}

impl PartitionView for MemoryPartition {
    fn tree(&self) -> &MerkleTree {
        &self.tree
    }

    fn key_digests(&self, first: KeyHash, last: KeyHash) -> Vec<KeyDigest> {
        self.sets
            .range((first.0, Bytes::new())..)
            .take_while(|((h, _), _)| *h <= last.0)
            .map(|((_, k), (_, d))| (k.clone(), *d))
            .collect()
    }

    fn sibling_set(&self, key: &[u8]) -> Option<SiblingSet> {
        self.get(key).cloned()
    }
}
