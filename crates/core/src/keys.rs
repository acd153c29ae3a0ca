//! Key hashing, partitions, and the storage key layout.
//!
//! Keys hash with xxh3-64 onto a 64-bit ring cut into Q equal partitions (Q a power of two). The
//! partition of a hash is its top log2(Q) bits, so partition order is ring order. In the `data`
//! keyspace a record's key is `partition (u32 BE) ++ key hash (u64 BE) ++ key`: a partition is
//! one contiguous range, which is what streaming, handoff and anti-entropy scan.

use std::fmt;

/// DESIGN.md's default number of partitions.
pub const DEFAULT_PARTITIONS: u32 = 1024;

/// Bytes in front of the user key in a `data` record key.
pub const DATA_KEY_PREFIX_LEN: usize = 4 + 8;

/// xxh3-64 of a user key: its position on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyHash(pub u64);

impl KeyHash {
    pub fn of(key: &[u8]) -> KeyHash {
        KeyHash(xxhash_rust::xxh3::xxh3_64(key))
    }

    /// The partition holding this hash among `partitions` (a power of two).
    pub fn partition(self, partitions: u32) -> PartitionId {
        debug_assert!(partitions.is_power_of_two());
        let bits = partitions.trailing_zeros();
        if bits == 0 {
            PartitionId(0)
        } else {
            PartitionId((self.0 >> (64 - bits)) as u32)
        }
    }
}

/// One of the ring's Q equal partitions: the unit of ownership, handoff and anti-entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// The `data` keyspace key of a user key.
pub fn data_key(key: &[u8], partitions: u32) -> Vec<u8> {
    let hash = KeyHash::of(key);
    let mut out = Vec::with_capacity(DATA_KEY_PREFIX_LEN + key.len());
    out.extend_from_slice(&hash.partition(partitions).0.to_be_bytes());
    out.extend_from_slice(&hash.0.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits a `data` keyspace key back into its parts; `None` if it is too short to be one.
pub fn split_data_key(record_key: &[u8]) -> Option<(PartitionId, KeyHash, &[u8])> {
    if record_key.len() < DATA_KEY_PREFIX_LEN {
        return None;
    }
    let partition = u32::from_be_bytes(record_key[0..4].try_into().ok()?);
    let hash = u64::from_be_bytes(record_key[4..12].try_into().ok()?);
    Some((
        PartitionId(partition),
        KeyHash(hash),
        &record_key[DATA_KEY_PREFIX_LEN..],
    ))
}

/// The `[start, end)` range of `data` keys in a partition; `end` is `None` for the last one.
pub fn partition_range(partition: PartitionId) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = partition.0.to_be_bytes().to_vec();
    let end = partition.0.checked_add(1).map(|n| n.to_be_bytes().to_vec());
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_the_top_bits_of_the_hash() {
        assert_eq!(KeyHash(u64::MAX).partition(1024), PartitionId(1023));
        assert_eq!(KeyHash(0).partition(1024), PartitionId(0));
        assert_eq!(KeyHash(1 << 54).partition(1024), PartitionId(1));
        assert_eq!(KeyHash(u64::MAX).partition(1), PartitionId(0));
    }

    #[test]
    fn data_keys_round_trip_and_sort_by_partition() {
        let k = data_key(b"user:\x00\xff", 1024);
        let (p, h, key) = split_data_key(&k).unwrap();
        assert_eq!(key, b"user:\x00\xff");
        assert_eq!(h, KeyHash::of(b"user:\x00\xff"));
        assert_eq!(p, h.partition(1024));
        let (start, end) = partition_range(p);
        assert!(k >= start && end.is_none_or(|e| k < e));
        assert!(split_data_key(b"short").is_none());
    }
}
