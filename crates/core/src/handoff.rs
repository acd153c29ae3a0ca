//! Hinted handoff: the pure rules of the writes a stand-in takes for a down replica.
//!
//! This is the seed's "handling temporary failures" (Dynamo section 4.6) in the shape DESIGN.md
//! "Replication and consistency" gives it. The server keeps hints in its `hints` keyspace
//! (`cluster::hints`) and streams them from a tokio task (`cluster::handoff`); the simulator keeps
//! them in a [`MemoryHints`]. Both follow the rules here:
//!
//! - **One hint per (target, key).** A second write of the key for the same target merges into
//!   the hint ([`SiblingSet::merge`]), so concurrent siblings are all kept, and refreshes its
//!   time: the [`HintWindow`] counts from the last update.
//! - **Delivered in batches** of at most [`BATCH`], to a target gossip shows healthy again. The
//!   target merges each set into its replica durably before it answers.
//! - **Deleted only when unchanged.** After the target acked a batch, a hint is deleted only if
//!   it still holds the set that was sent; a write that updated it meanwhile goes in a later
//!   round (compare-and-delete).
//! - **Dropped past the window.** A hint not updated for longer than the window is dropped (and
//!   counted): anti-entropy between the replicas repairs the key. That bound is also why a
//!   tombstone's grace period must exceed the window: a hint older than a delete must not be
//!   delivered after the tombstone is purged.

use crate::{NodeId, SiblingSet};
use bytes::Bytes;
use std::collections::BTreeMap;

/// Most hints in one delivery.
pub const BATCH: usize = 100;

/// How long an undelivered hint is kept after its last update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintWindow {
    pub window_ms: u64,
}

impl HintWindow {
    /// True when a hint last updated at `updated_at_ms` is past the window at `now_ms`. A clock
    /// that went backwards keeps the hint (never drop on a negative age).
    pub fn is_expired(&self, updated_at_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(updated_at_ms) > self.window_ms
    }

    /// Splits a batch into (expired, live) at `now_ms`, keeping the order.
    pub fn split<H>(
        &self,
        batch: Vec<H>,
        now_ms: u64,
        updated_at_ms: impl Fn(&H) -> u64,
    ) -> (Vec<H>, Vec<H>) {
        batch
            .into_iter()
            .partition(|h| self.is_expired(updated_at_ms(h), now_ms))
    }
}

/// One hint: the set a stand-in holds for a down replica's key, and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHint {
    pub set: SiblingSet,
    pub updated_at_ms: u64,
}

/// Hints in memory, by target then key: the reference model of the server's `hints` keyspace,
/// used by the deterministic simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryHints {
    hints: BTreeMap<NodeId, BTreeMap<Bytes, StoredHint>>,
}

impl MemoryHints {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `set` as a hint of `key` for `target`, merged into an existing one.
    pub fn store(&mut self, target: &NodeId, key: Bytes, set: &SiblingSet, now_ms: u64) {
        let hint = self
            .hints
            .entry(target.clone())
            .or_default()
            .entry(key)
            .or_insert_with(|| StoredHint {
                set: SiblingSet::new(),
                updated_at_ms: now_ms,
            });
        hint.set.merge(set);
        hint.updated_at_ms = now_ms;
    }

    /// Targets with pending hints, with their counts.
    pub fn pending(&self) -> BTreeMap<NodeId, u64> {
        self.hints
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(t, h)| (t.clone(), h.len() as u64))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.hints.values().map(|h| h.len() as u64).sum()
    }

    /// Up to `limit` hints for `target` in key order, after `after` (exclusive) when given.
    pub fn load(
        &self,
        target: &NodeId,
        after: Option<&Bytes>,
        limit: usize,
    ) -> Vec<(Bytes, StoredHint)> {
        let Some(h) = self.hints.get(target) else {
            return Vec::new();
        };
        let range = match after {
            Some(a) => {
                h.range::<Bytes, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))
            }
            None => h.range::<Bytes, _>(..),
        };
        range
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Deletes those of `sent` (hints of `target`) that still hold the set they were read
    /// with. Returns how many were deleted.
    pub fn remove_unchanged(&mut self, target: &NodeId, sent: &[(Bytes, StoredHint)]) -> u64 {
        let Some(h) = self.hints.get_mut(target) else {
            return 0;
        };
        let mut n = 0;
        for (key, hint) in sent {
            if h.get(key) == Some(hint) {
                h.remove(key);
                n += 1;
            }
        }
        if h.is_empty() {
            self.hints.remove(target);
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(node: &str, value: &str) -> SiblingSet {
        let mut s = SiblingSet::new();
        s.overwrite(
            &NodeId::new(node).unwrap(),
            Some(Bytes::from(value.to_string())),
            1,
        );
        s
    }

    #[test]
    fn window_splits_by_age_and_never_drops_on_a_clock_going_back() {
        let w = HintWindow { window_ms: 100 };
        assert!(!w.is_expired(1000, 1100));
        assert!(w.is_expired(1000, 1101));
        assert!(!w.is_expired(2000, 1000));
        let (old, live) = w.split(vec![10u64, 950, 20, 990], 1000, |h| *h);
        assert_eq!(old, vec![10, 20]);
        assert_eq!(live, vec![950, 990]);
    }

    #[test]
    fn hints_merge_per_key_and_are_removed_only_when_unchanged() {
        let (a, b) = (NodeId::new("a").unwrap(), NodeId::new("b").unwrap());
        let mut h = MemoryHints::new();
        for i in 0..5 {
            h.store(&a, Bytes::from(format!("k{i}")), &set("x", "1"), 10);
        }
        h.store(&a, Bytes::from("k0"), &set("y", "2"), 20);
        h.store(&b, Bytes::from("k0"), &set("x", "1"), 10);
        assert_eq!(h.pending()[&a], 5);
        assert_eq!(h.total(), 6);
        let first = h.load(&a, None, 3);
        assert_eq!(first.len(), 3);
        assert_eq!(first[0].1.set.versions().len(), 2);
        assert_eq!(first[0].1.updated_at_ms, 20);
        let rest = h.load(&a, Some(&first[2].0), 100);
        assert_eq!(rest.len(), 2);
        h.store(&a, first[0].0.clone(), &set("z", "3"), 30);
        assert_eq!(h.remove_unchanged(&a, &first), 2);
        assert_eq!(h.remove_unchanged(&a, &rest), 2);
        assert_eq!(h.pending()[&a], 1);
        assert_eq!(h.total(), 2);
    }
}
