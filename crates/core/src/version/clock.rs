//! Vector clocks: node id -> (counter, wall time of the entry's last change).
//!
//! The wall time is never used to order events; it only decides which entries pruning drops first
//! and is shown to operators.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest counter a client context may carry. Honest counters count writes to one key through
/// one node and stay tiny; the bound leaves 2^62 increments of headroom below
/// [`MAX_STORED_COUNTER`], so a forged context can never push a key's clock to overflow.
pub const MAX_CONTEXT_COUNTER: u64 = 1 << 62;

/// Largest counter a decoded (stored or peer-sent) clock or dot may hold.
pub const MAX_STORED_COUNTER: u64 = 1 << 63;

/// One clock entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockEntry {
    pub counter: u64,
    /// Milliseconds since the Unix epoch when this entry last changed on the node that changed it.
    pub wall_ms: u64,
}

/// How two clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    Equal,
    /// `self` happened before `other`: `other` descends from it.
    Before,
    /// `self` descends from `other`.
    After,
    Concurrent,
}

/// A vector clock. Entries are kept sorted by node id so encodings are canonical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector {
    entries: BTreeMap<NodeId, ClockEntry>,
}

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `node`; 0 when the clock has no entry for it.
    pub fn get(&self, node: &NodeId) -> u64 {
        self.entries.get(node).map_or(0, |e| e.counter)
    }

    pub fn entry(&self, node: &NodeId) -> Option<&ClockEntry> {
        self.entries.get(node)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &ClockEntry)> {
        self.entries.iter()
    }

    /// Raises `node`'s entry to at least `counter`, stamping `wall_ms` if it changed.
    pub fn witness(&mut self, node: &NodeId, counter: u64, wall_ms: u64) {
        match self.entries.get_mut(node) {
            Some(e) if e.counter >= counter => {}
            Some(e) => {
                e.counter = counter;
                e.wall_ms = e.wall_ms.max(wall_ms);
            }
            None => {
                self.entries
                    .insert(node.clone(), ClockEntry { counter, wall_ms });
            }
        }
    }

    /// Increments `node`'s entry and returns the new counter.
    pub fn increment(&mut self, node: &NodeId, wall_ms: u64) -> u64 {
        let next = self.get(node) + 1;
        self.witness(node, next, wall_ms);
        next
    }

    /// Pointwise maximum. Equal counters keep the later wall time so that merging is
    /// commutative, associative and idempotent on whole entries, not just counters.
    pub fn merge(&mut self, other: &VersionVector) {
        for (node, theirs) in &other.entries {
            match self.entries.get_mut(node) {
                Some(mine) if mine.counter > theirs.counter => {}
                Some(mine) if mine.counter == theirs.counter => {
                    mine.wall_ms = mine.wall_ms.max(theirs.wall_ms);
                }
                Some(mine) => *mine = *theirs,
                None => {
                    self.entries.insert(node.clone(), *theirs);
                }
            }
        }
    }

    /// True when every event `other` has seen, `self` has seen too.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other
            .entries
            .iter()
            .all(|(node, e)| self.get(node) >= e.counter)
    }

    pub fn compare(&self, other: &VersionVector) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Drops entries, oldest wall time first (ties by node id, for determinism), until at most
    /// `max_entries` remain, skipping every entry for which `keep` is true.
    pub fn prune(&mut self, max_entries: usize, keep: impl Fn(&NodeId) -> bool) {
        if self.entries.len() <= max_entries {
            return;
        }
        let mut candidates: Vec<(u64, NodeId)> = self
            .entries
            .iter()
            .filter(|(n, _)| !keep(n))
            .map(|(n, e)| (e.wall_ms, n.clone()))
            .collect();
        candidates.sort();
        let excess = self.entries.len() - max_entries;
        for (_, node) in candidates.into_iter().take(excess) {
            self.entries.remove(&node);
        }
    }

    /// The largest counter in the clock (0 when empty).
    pub fn max_counter(&self) -> u64 {
        self.entries.values().map(|e| e.counter).max().unwrap_or(0)
    }

    /// Counters only, for the client-facing context.
    pub(crate) fn counters(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.entries.iter().map(|(n, e)| (n, e.counter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn vv(pairs: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (node, c) in pairs {
            v.witness(&n(node), *c, 0);
        }
        v
    }

    #[test]
    fn compare_covers_all_four_relations() {
        let a = vv(&[("x", 2), ("y", 1)]);
        assert_eq!(a.compare(&a.clone()), Causality::Equal);
        assert_eq!(vv(&[("x", 1)]).compare(&a), Causality::Before);
        assert_eq!(a.compare(&vv(&[("x", 1)])), Causality::After);
        assert_eq!(
            vv(&[("x", 2), ("y", 1)]).compare(&vv(&[("x", 2), ("z", 1)])),
            Causality::Concurrent
        );
        assert_eq!(VersionVector::new().compare(&a), Causality::Before);
    }

    #[test]
    fn merge_is_pointwise_max() {
        let mut a = vv(&[("x", 3), ("y", 1)]);
        a.merge(&vv(&[("x", 1), ("z", 2)]));
        assert_eq!(a, vv(&[("x", 3), ("y", 1), ("z", 2)]));
    }

    #[test]
    fn prune_drops_the_oldest_entries_first_and_keeps_what_is_pinned() {
        let mut v = VersionVector::new();
        for (i, node) in ["a", "b", "c", "d"].iter().enumerate() {
            v.witness(&n(node), 1, 100 + i as u64);
        }
        v.prune(2, |node| node.as_str() == "a");
        let left: Vec<_> = v.iter().map(|(n, _)| n.as_str().to_string()).collect();
        assert_eq!(left, vec!["a", "d"]);
    }
}
