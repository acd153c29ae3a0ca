//! The per-partition Merkle tree: a fixed number of leaf buckets over the partition's key-hash
//! range, each leaf the XOR of its entries' hashes, inner nodes hashing their two children.

use crate::{KeyHash, PartitionId};
use xxhash_rust::xxh3::xxh3_128;

/// Default leaf count: with Q = 1024 partitions, a partition of 100,000 keys has ~100 keys a leaf.
pub const DEFAULT_BUCKETS: u32 = 1024;

/// Most leaves a tree may have. It bounds every level a peer can make us compare
/// ([`super::SessionConfig`] checks node counts against it) and the tree's memory (2 x 16 bytes
/// a leaf: 2 MiB at the bound).
pub const MAX_BUCKETS: u32 = 1 << 16;

/// The digest of one key's stored sibling set: xxh3-128 of its encoding
/// ([`crate::SiblingSet::encode`], which is canonical: versions sorted by dot, clock entries by
/// node). Two replicas holding equal sets have equal digests.
pub fn value_digest(encoded_set: &[u8]) -> u128 {
    xxh3_128(encoded_set)
}

/// The hash one key contributes to its leaf: xxh3-128 of `key ++ digest`. The digest has a fixed
/// width at the end, so the concatenation is unambiguous.
pub fn entry_hash(key: &[u8], digest: u128) -> u128 {
    let mut buf = Vec::with_capacity(key.len() + 16);
    buf.extend_from_slice(key);
    buf.extend_from_slice(&digest.to_le_bytes());
    xxh3_128(&buf)
}

/// Why a tree shape was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TreeError {
    #[error("buckets must be a power of two in 1..={max}, got {got}")]
    BadBuckets { got: u32, max: u32 },
    #[error("partitions must be a power of two, got {0}")]
    BadPartitions(u32),
    #[error("partition {partition} is out of range for {partitions} partitions")]
    PartitionOutOfRange {
        partition: PartitionId,
        partitions: u32,
    },
}

/// The Merkle tree of one partition on one replica.
///
/// Layout: a complete binary tree in one array (heap order). Depth 0 is the root; depth `d` has
/// `2^d` nodes; the leaves, at depth `log2(buckets)`, are the buckets. A key's bucket is given by
/// the bits of its hash right *below* the partition bits, so a bucket is one contiguous range of
/// the `data` keyspace (`partition ++ hash ++ key`): the shell reads a bucket with one range scan
/// ([`MerkleTree::bucket_range`]).
///
/// **Fan-out 2.** Descending costs one round trip per level (10 for 1024 buckets) but each step
/// sends only the two children of each differing node; with fan-out 16 a sparse difference pays
/// for 15 equal siblings at every level, about twice the bytes. Anti-entropy is background work
/// where bytes matter and latency does not. An update rehashes `log2(buckets)` nodes.
///
/// Leaves are the XOR of [`entry_hash`] over their keys, so insert, update and remove are O(1) at
/// the leaf (XOR the old entry out, the new one in) plus the path to the root, without reading
/// the bucket's other keys. An empty bucket is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    partition: PartitionId,
    partition_bits: u32,
    bucket_bits: u32,
    /// Heap order: index 1 is the root, node `i` of depth `d` is at `2^d + i`; index 0 unused.
    nodes: Vec<u128>,
    keys: u64,
}

impl MerkleTree {
    /// An empty tree of `buckets` leaves for `partition` of a ring of `partitions`.
    pub fn new(partition: PartitionId, partitions: u32, buckets: u32) -> Result<Self, TreeError> {
        if !partitions.is_power_of_two() {
            return Err(TreeError::BadPartitions(partitions));
        }
        if partition.0 >= partitions {
            return Err(TreeError::PartitionOutOfRange {
                partition,
                partitions,
            });
        }
        if !buckets.is_power_of_two() || buckets > MAX_BUCKETS {
            return Err(TreeError::BadBuckets {
                got: buckets,
                max: MAX_BUCKETS,
            });
        }
        let bucket_bits = buckets.trailing_zeros();
        let mut tree = MerkleTree {
            partition,
            partition_bits: partitions.trailing_zeros(),
            bucket_bits,
            nodes: vec![0; 2 * buckets as usize],
            keys: 0,
        };
        tree.rebuild_inner();
        Ok(tree)
    }

    /// Rebuilds a tree from a scan of the partition: `(key, encoded sibling set)` pairs in any
    /// order, each key once.
    pub fn from_entries<'a>(
        partition: PartitionId,
        partitions: u32,
        buckets: u32,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Self, TreeError> {
        let mut tree = Self::new(partition, partitions, buckets)?;
        let leaf0 = tree.buckets() as usize;
        for (key, encoded) in entries {
            let bucket = tree.bucket_of(KeyHash::of(key)) as usize;
            tree.nodes[leaf0 + bucket] ^= entry_hash(key, value_digest(encoded));
            tree.keys += 1;
        }
        tree.rebuild_inner();
        Ok(tree)
    }

    pub fn partition(&self) -> PartitionId {
        self.partition
    }

    pub fn partitions(&self) -> u32 {
        1 << self.partition_bits
    }

    pub fn buckets(&self) -> u32 {
        1 << self.bucket_bits
    }

    /// Depth of the leaves (`log2(buckets)`): the root is depth 0.
    pub fn leaf_depth(&self) -> u32 {
        self.bucket_bits
    }

    /// Keys currently counted in the tree (inserts minus removes).
    pub fn keys(&self) -> u64 {
        self.keys
    }

    pub fn root(&self) -> u128 {
        self.nodes[1]
    }

    /// The hashes of depth `depth`, left to right; `None` below the leaves.
    pub fn level(&self, depth: u32) -> Option<&[u128]> {
        if depth > self.bucket_bits {
            return None;
        }
        let start = 1usize << depth;
        Some(&self.nodes[start..2 * start])
    }

    /// Node `index` of depth `depth`; `None` when out of range.
    pub fn node(&self, depth: u32, index: u32) -> Option<u128> {
        self.level(depth)?.get(index as usize).copied()
    }

    /// The leaf of a key hash: the `log2(buckets)` bits right below the partition bits.
    pub fn bucket_of(&self, hash: KeyHash) -> u32 {
        if self.bucket_bits == 0 {
            return 0;
        }
        let below = hash.0.checked_shl(self.partition_bits).unwrap_or(0);
        (below >> (64 - self.bucket_bits)) as u32
    }

    /// The inclusive range of key hashes of `bucket` in this partition.
    pub fn bucket_range(&self, bucket: u32) -> (KeyHash, KeyHash) {
        // partition_bits <= 31 and bucket_bits <= 16, so the shift is >= 17.
        let low_bits = 64 - self.partition_bits - self.bucket_bits;
        let prefix = ((self.partition.0 as u64) << self.bucket_bits) | bucket as u64;
        let first = prefix.checked_shl(low_bits).unwrap_or(0);
        let last = first | (u64::MAX >> (64 - low_bits));
        (KeyHash(first), KeyHash(last))
    }

    /// True when `hash` falls in this tree's partition.
    pub fn contains(&self, hash: KeyHash) -> bool {
        hash.partition(self.partitions()) == self.partition
    }

    /// Records a change of one key: `old` is the digest of what was stored before (`None` if the
    /// key was absent), `new` what is stored now (`None` if the key is gone). O(log buckets).
    pub fn update(&mut self, key: &[u8], old: Option<u128>, new: Option<u128>) {
        if old == new {
            return;
        }
        let leaf = self.buckets() as usize + self.bucket_of(KeyHash::of(key)) as usize;
        if let Some(d) = old {
            self.nodes[leaf] ^= entry_hash(key, d);
            self.keys = self.keys.saturating_sub(1);
        }
        if let Some(d) = new {
            self.nodes[leaf] ^= entry_hash(key, d);
            self.keys += 1;
        }
        let mut i = leaf / 2;
        while i >= 1 {
            self.nodes[i] = inner_hash(self.nodes[2 * i], self.nodes[2 * i + 1]);
            i /= 2;
        }
    }

    /// `update(key, None, Some(digest))`.
    pub fn insert(&mut self, key: &[u8], digest: u128) {
        self.update(key, None, Some(digest));
    }

    /// `update(key, Some(digest), None)`.
    pub fn remove(&mut self, key: &[u8], digest: u128) {
        self.update(key, Some(digest), None);
    }

    fn rebuild_inner(&mut self) {
        for i in (1..self.buckets() as usize).rev() {
            self.nodes[i] = inner_hash(self.nodes[2 * i], self.nodes[2 * i + 1]);
        }
    }
}

/// An inner node: xxh3-128 of its children. Hashing (not XOR) keeps the position of a difference.
fn inner_hash(left: u128, right: u128) -> u128 {
    let mut buf = [0u8; 32];
    buf[..16].copy_from_slice(&left.to_le_bytes());
    buf[16..].copy_from_slice(&right.to_le_bytes());
    xxh3_128(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_updates_match_a_rebuild() {
        let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("k{i}").into_bytes()).collect();
        let mut tree = MerkleTree::new(PartitionId(0), 1, 64).unwrap();
        for k in &keys {
            tree.insert(k, value_digest(k));
        }
        // Update half, remove a tenth.
        for k in keys.iter().step_by(2) {
            tree.update(k, Some(value_digest(k)), Some(value_digest(b"new")));
        }
        for k in keys.iter().skip(1).step_by(10) {
            tree.remove(k, value_digest(k));
        }
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = keys
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0 || (i % 10) != 1)
            .map(|(i, k)| {
                let v = if i % 2 == 0 {
                    b"new".to_vec()
                } else {
                    k.clone()
                };
                (k.clone(), v)
            })
            .collect();
        let rebuilt = MerkleTree::from_entries(
            PartitionId(0),
            1,
            64,
            encoded.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .unwrap();
        assert_eq!(tree.root(), rebuilt.root());
        assert_eq!(tree.keys(), rebuilt.keys());
        assert_eq!(tree, rebuilt);
    }

    #[test]
    fn buckets_use_the_bits_below_the_partition() {
        let tree = MerkleTree::new(PartitionId(5), 16, 256).unwrap();
        let h = KeyHash((5u64 << 60) | (0xAB << 52) | 12345);
        assert!(tree.contains(h));
        assert_eq!(tree.bucket_of(h), 0xAB);
        let (first, last) = tree.bucket_range(0xAB);
        assert!(first <= h && h <= last);
        assert_eq!(first.partition(16), PartitionId(5));
        assert_eq!(tree.bucket_of(first), 0xAB);
        assert_eq!(tree.bucket_of(last), 0xAB);
        let one = MerkleTree::new(PartitionId(0), 1, 1).unwrap();
        assert_eq!(one.bucket_range(0), (KeyHash(0), KeyHash(u64::MAX)));
        assert_eq!(one.level(0).unwrap().len(), 1);
        assert!(MerkleTree::new(PartitionId(0), 1, 3).is_err());
        assert!(MerkleTree::new(PartitionId(2), 2, 4).is_err());
    }

    #[test]
    fn empty_trees_agree() {
        let a = MerkleTree::new(PartitionId(0), 1, 1024).unwrap();
        let b = MerkleTree::from_entries(PartitionId(0), 1, 1024, std::iter::empty()).unwrap();
        assert_eq!(a.root(), b.root());
    }
}
