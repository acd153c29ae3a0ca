//! A cache of decoded sibling sets in front of the LSM, keyed by `data` record key.
//!
//! Profiling GET and SET under redis-benchmark showed half the node's CPU in the memtable's
//! skiplist search and the comparisons it makes; a hash lookup of the decoded set skips both the
//! search and the decode. This is the "row cache" of Cassandra and RocksDB, bounded in bytes
//! (S3-FIFO eviction from `quick_cache`, so one scan does not flush the hot set).
//!
//! Coherence: the cache only ever holds what storage holds. The replica updates it under the
//! key's stripe lock right after a storage write succeeds, and fills it on a miss while holding
//! the same lock, so a reader can never put back a set older than a concurrent writer's.

use ringkv_core::SiblingSet;
use std::sync::Arc;

/// Bytes charged per cached set beyond its values: the record key, the version and clock
/// entries, and the cache's own bookkeeping, roughly.
const OVERHEAD: u64 = 96;

#[derive(Clone)]
struct ByApproxSize;

impl quick_cache::Weighter<Vec<u8>, Arc<SiblingSet>> for ByApproxSize {
    fn weight(&self, key: &Vec<u8>, set: &Arc<SiblingSet>) -> u64 {
        let values: usize = set
            .versions()
            .iter()
            .map(|v| v.value.as_ref().map_or(0, |b| b.len()) + 48)
            .sum();
        OVERHEAD + key.len() as u64 + values as u64 + set.clock().len() as u64 * 48
    }
}

/// `None` inside when disabled (`row_cache_bytes = 0`).
pub struct RowCache {
    cache: Option<quick_cache::sync::Cache<Vec<u8>, Arc<SiblingSet>, ByApproxSize>>,
}

impl RowCache {
    pub fn new(capacity_bytes: u64) -> RowCache {
        let cache = (capacity_bytes > 0).then(|| {
            // The item estimate only sizes the hash tables up front: assume ~256-byte rows.
            let items = (capacity_bytes / 256).clamp(1024, 1 << 22) as usize;
            quick_cache::sync::Cache::with_weighter(items, capacity_bytes, ByApproxSize)
        });
        RowCache { cache }
    }

    pub fn get(&self, record_key: &[u8]) -> Option<Arc<SiblingSet>> {
        self.cache.as_ref()?.get(record_key)
    }

    /// Call only with the key's stripe lock held (see the module doc).
    pub fn insert(&self, record_key: Vec<u8>, set: Arc<SiblingSet>) {
        if let Some(cache) = &self.cache {
            cache.insert(record_key, set);
        }
    }

    /// Bytes currently charged, for metrics.
    pub fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| c.weight())
    }
}
