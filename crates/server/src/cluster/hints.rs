//! The hint store: writes a stand-in took for a down replica, kept in the `hints` keyspace until
//! [`super::handoff`] delivers them.
//!
//! # Layout
//! - Key: `len (u8) ++ intended node id ++ partition (u32 BE) ++ key hash (u64 BE) ++ key`, i.e.
//!   the length-prefixed id of the node the write was meant for, then the key's `data` record key.
//!   One target's hints are one contiguous range (scanned in ring order), and one key has at most
//!   one hint per target.
//! - Value: `updated_at_ms (u64 BE) ++ SiblingSet::encode()`. A second write of the same key for
//!   the same target merges into the hint (so concurrent siblings are all kept) and refreshes the
//!   timestamp; the hint window counts from the last update.
//!
//! # Concurrency
//! Read-merge-write of a hint and the compare-and-delete after a delivery take the key's stripe
//! lock (never held across an await). A delivery deletes a hint only if its value is still the
//! one that was sent, so a write that updated the hint meanwhile is delivered in a later round.
//!
//! Pending hints per target are counted in memory: rebuilt by one scan of the keyspace at start,
//! then kept exact on every create and delete.

use crate::error::NodeError;
use parking_lot::Mutex;
use ringkv_core::keys::{data_key, split_data_key};
use ringkv_core::{KeyHash, NodeId, SiblingSet};
use ringkv_storage::{Keyspace, StorageError, Store, WriteBatch, WriteTicket};
use std::collections::BTreeMap;

const LOCK_STRIPES: usize = 256;
/// Bytes of the timestamp in front of a hint's encoded sibling set.
const STAMP_LEN: usize = 8;

/// One stored hint, as read for delivery.
#[derive(Debug, Clone)]
pub struct Hint {
    /// The `hints` keyspace key.
    pub record_key: Vec<u8>,
    /// The user key.
    pub key: Vec<u8>,
    /// The stored value, compared on delete.
    raw: Vec<u8>,
    pub updated_at_ms: u64,
    pub set: SiblingSet,
}

pub struct Hints {
    store: Store,
    partitions: u32,
    stripes: Vec<Mutex<()>>,
    pending: Mutex<BTreeMap<NodeId, u64>>,
}

/// The key prefix of every hint for `target`.
pub fn target_prefix(target: &NodeId) -> Vec<u8> {
    let id = target.as_str().as_bytes();
    let mut out = Vec::with_capacity(1 + id.len());
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Splits a hint key into the target and the user key.
fn split_hint_key(record_key: &[u8]) -> Option<(NodeId, &[u8])> {
    let (&len, rest) = record_key.split_first()?;
    let len = len as usize;
    if rest.len() < len {
        return None;
    }
    let id = std::str::from_utf8(&rest[..len]).ok()?;
    let id = NodeId::new(id.to_string()).ok()?;
    let (_, _, key) = split_data_key(&rest[len..])?;
    Some((id, key))
}

fn corrupt(detail: String) -> NodeError {
    NodeError::Storage(StorageError::Corrupt {
        keyspace: "hints",
        detail,
    })
}

fn decode_value(raw: &[u8]) -> Result<(u64, SiblingSet), NodeError> {
    if raw.len() < STAMP_LEN {
        return Err(corrupt("hint value too short".into()));
    }
    let stamp = u64::from_be_bytes(raw[..STAMP_LEN].try_into().expect("8 bytes"));
    let set = SiblingSet::decode(&raw[STAMP_LEN..]).map_err(|e| corrupt(e.to_string()))?;
    Ok((stamp, set))
}

impl Hints {
    /// Opens the hint store and counts the hints already pending per target.
    pub fn open(store: Store, partitions: u32) -> Result<Hints, NodeError> {
        let mut pending: BTreeMap<NodeId, u64> = BTreeMap::new();
        store.for_each(Keyspace::Hints, &[], None, |k, _| {
            match split_hint_key(&k) {
                Some((id, _)) => *pending.entry(id).or_default() += 1,
                None => tracing::error!("undecodable hint key while counting hints"),
            }
        })?;
        Ok(Hints {
            store,
            partitions,
            stripes: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            pending: Mutex::new(pending),
        })
    }

    fn stripe(&self, key: &[u8]) -> usize {
        (KeyHash::of(key).0 % LOCK_STRIPES as u64) as usize
    }

    fn record_key(&self, target: &NodeId, key: &[u8]) -> Vec<u8> {
        let mut out = target_prefix(target);
        out.extend_from_slice(&data_key(key, self.partitions));
        out
    }

    /// Stores (or merges into) the hint of `key` for `target`. Visible at once; durable once
    /// the returned ticket is (`Store::durable`), which the caller awaits before acking.
    pub fn store(
        &self,
        target: &NodeId,
        key: &[u8],
        set: &SiblingSet,
        now_ms: u64,
    ) -> Result<WriteTicket, NodeError> {
        let record_key = self.record_key(target, key);
        let _guard = self.stripes[self.stripe(key)].lock();
        let existing = self.store.get(Keyspace::Hints, &record_key)?;
        let created = existing.is_none();
        let mut merged = match existing.as_deref().map(decode_value) {
            Some(Ok((_, set))) => set,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "replacing an undecodable hint");
                SiblingSet::new()
            }
            None => SiblingSet::new(),
        };
        merged.merge(set);
        let mut value = now_ms.to_be_bytes().to_vec();
        value.extend_from_slice(&merged.encode());
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Hints, record_key, value);
        let ticket = self.store.write(&batch)?;
        if created {
            *self.pending.lock().entry(target.clone()).or_default() += 1;
        }
        Ok(ticket)
    }

    /// Up to `limit` hints for `target`, in key order, starting after `after` (exclusive) when
    /// given. Undecodable hints are logged and skipped (they stay, and stay counted).
    pub fn load(
        &self,
        target: &NodeId,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Hint>, NodeError> {
        let prefix = target_prefix(target);
        let end = prefix_end(&prefix);
        let start = match after {
            Some(k) => {
                let mut s = k.to_vec();
                s.push(0);
                s
            }
            None => prefix,
        };
        let page = self
            .store
            .scan(Keyspace::Hints, &start, end.as_deref(), limit)?;
        let mut out = Vec::with_capacity(page.len());
        for (record_key, raw) in page {
            let Some((_, key)) = split_hint_key(&record_key) else {
                tracing::error!("skipping an undecodable hint key");
                continue;
            };
            let key = key.to_vec();
            match decode_value(&raw) {
                Ok((updated_at_ms, set)) => out.push(Hint {
                    record_key,
                    key,
                    raw,
                    updated_at_ms,
                    set,
                }),
                Err(e) => tracing::error!(error = %e, "skipping an undecodable hint"),
            }
        }
        Ok(out)
    }

    /// Deletes, in one batch, those of `hints` (all for `target`) still holding the value they
    /// were read with; durable before it returns. Returns how many were deleted.
    pub async fn remove(&self, target: &NodeId, hints: &[Hint]) -> Result<u64, NodeError> {
        if hints.is_empty() {
            return Ok(0);
        }
        let ticket = {
            let mut idx: Vec<usize> = hints.iter().map(|h| self.stripe(&h.key)).collect();
            idx.sort_unstable();
            idx.dedup();
            let _guards: Vec<_> = idx.into_iter().map(|i| self.stripes[i].lock()).collect();
            let mut batch = WriteBatch::new();
            for h in hints {
                if self.store.get(Keyspace::Hints, &h.record_key)?.as_deref() == Some(&h.raw[..]) {
                    batch.delete(Keyspace::Hints, h.record_key.clone());
                }
            }
            if batch.is_empty() {
                return Ok(0);
            }
            let ticket = self.store.write(&batch)?;
            let n = batch.len() as u64;
            let mut pending = self.pending.lock();
            if let Some(c) = pending.get_mut(target) {
                *c = c.saturating_sub(n);
                if *c == 0 {
                    pending.remove(target);
                }
            }
            (ticket, n)
        };
        self.store.durable(ticket.0).await?;
        Ok(ticket.1)
    }

    /// Pending hints per target.
    pub fn pending(&self) -> BTreeMap<NodeId, u64> {
        self.pending.lock().clone()
    }

    pub fn pending_for(&self, target: &NodeId) -> u64 {
        self.pending.lock().get(target).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.pending.lock().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use ringkv_storage::StoreOptions;

    fn set(node: &str, value: &str) -> SiblingSet {
        let mut s = SiblingSet::new();
        s.overwrite(
            &NodeId::new(node).unwrap(),
            Some(Bytes::from(value.to_string())),
            1,
        );
        s
    }

    #[tokio::test]
    async fn hints_are_counted_merged_rebuilt_and_removed_only_when_unchanged() {
        let store = Store::in_memory(StoreOptions::default());
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("ab").unwrap());
        let hints = Hints::open(store.clone(), 1024).unwrap();
        for i in 0..5 {
            let t = hints
                .store(&a, format!("k{i}").as_bytes(), &set("x", "1"), 10)
                .unwrap();
            store.durable(t).await.unwrap();
        }
        // Same key again: merged, not counted twice; a concurrent sibling is kept.
        hints.store(&a, b"k0", &set("y", "2"), 20).unwrap();
        hints.store(&b, b"k0", &set("x", "1"), 10).unwrap();
        assert_eq!(hints.pending_for(&a), 5);
        assert_eq!(hints.pending_for(&b), 1);
        let again = Hints::open(store.clone(), 1024).unwrap();
        assert_eq!(again.pending(), hints.pending());

        let loaded = hints.load(&a, None, 3).unwrap();
        assert_eq!(loaded.len(), 3);
        let rest = hints
            .load(&a, Some(&loaded.last().unwrap().record_key), 100)
            .unwrap();
        assert_eq!(rest.len(), 2);
        let k0 = loaded.iter().chain(&rest).find(|h| h.key == b"k0").unwrap();
        assert_eq!(k0.set.versions().len(), 2);
        assert_eq!(k0.updated_at_ms, 20);

        // A hint updated after it was read stays.
        hints.store(&a, &loaded[0].key, &set("z", "3"), 30).unwrap();
        assert_eq!(hints.remove(&a, &loaded).await.unwrap(), 2);
        assert_eq!(hints.pending_for(&a), 3);
        assert_eq!(hints.remove(&a, &rest).await.unwrap(), 2);
        assert_eq!(hints.pending_for(&a), 1);
        assert_eq!(hints.pending_for(&b), 1);
        assert_eq!(hints.total(), 2);
    }
}
