//! Sibling sets: the versions of one key that nothing supersedes, and the clock that summarises
//! them (a dotted version vector set).

use super::{Context, VersionVector, MAX_STORED_COUNTER};
use crate::NodeId;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The name of one version: the node that coordinated the write and that node's counter for the
/// key at the time. Dots are unique per key, which is what lets a merge tell "the same version"
/// from "a different version with the same clock".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

/// One version of a key: a value, or a tombstone when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub dot: Dot,
    pub value: Option<Bytes>,
    /// Coordinator's wall time of the write, for display and for the single-value winner only.
    pub timestamp_ms: u64,
}

impl Version {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Error decoding a stored sibling set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown sibling set format {0}")]
    UnknownFormat(u8),
    #[error("malformed sibling set: {0}")]
    Malformed(String),
}

/// Format byte in front of every encoded sibling set, so the layout can evolve.
const FORMAT_V1: u8 = 1;

/// All surviving versions of a key, sorted by dot, and the clock of everything seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingSet {
    clock: VersionVector,
    versions: Vec<Version>,
}

impl SiblingSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The merged clock of everything this set has seen: what a read hands back as its context.
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    pub fn context(&self) -> Context {
        Context::from_clock(&self.clock)
    }

    /// Every surviving version, values and tombstones, in dot order.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Versions that hold a value.
    pub fn live(&self) -> impl Iterator<Item = &Version> {
        self.versions.iter().filter(|v| !v.is_tombstone())
    }

    /// True when no version holds a value: the key reads as missing.
    pub fn is_deleted(&self) -> bool {
        self.live().next().is_none()
    }

    /// The single value a plain `GET` returns: the live sibling with the latest timestamp, ties
    /// broken by dot so every node picks the same one.
    pub fn winner(&self) -> Option<&Version> {
        self.live()
            .max_by(|a, b| (a.timestamp_ms, &a.dot).cmp(&(b.timestamp_ms, &b.dot)))
    }

    /// Applies a client write coordinated by `node`: the new version (a value, or a tombstone when
    /// `value` is `None`) supersedes exactly the versions whose dots `context` covers; the rest
    /// stay as siblings. Returns the new version's dot.
    ///
    /// The counter is one past both what this set and what the context have seen of `node`, so a
    /// dot is never reused even if the context knows of writes this replica lost.
    pub fn write(
        &mut self,
        node: &NodeId,
        context: &Context,
        value: Option<Bytes>,
        now_ms: u64,
    ) -> Dot {
        let seen = context.clock();
        self.versions.retain(|v| !seen_covers(seen, &v.dot));
        // Decoding bounds every counter far below u64::MAX; saturating keeps even a hand-built
        // set from panicking.
        let counter = self.clock.get(node).max(seen.get(node)).saturating_add(1);
        for (n, e) in seen.iter() {
            self.clock.witness(n, e.counter, now_ms);
        }
        self.clock.witness(node, counter, now_ms);
        let dot = Dot {
            node: node.clone(),
            counter,
        };
        let version = Version {
            dot: dot.clone(),
            value,
            timestamp_ms: now_ms,
        };
        let at = self
            .versions
            .binary_search_by(|v| v.dot.cmp(&version.dot))
            .unwrap_or_else(|i| i);
        self.versions.insert(at, version);
        dot
    }

    /// Marks `node`'s counters up to `floor` as used on this key, so the next dot `node` issues
    /// here is above them. The versions are untouched (nothing is superseded); only what this
    /// set's clock says of `node` rises. For the tombstone purge's dot floor (see
    /// [`crate::tombstone::reserve_dots`]).
    pub fn reserve_dots(&mut self, node: &NodeId, floor: u64, now_ms: u64) {
        if floor > self.clock.get(node) {
            self.clock.witness(node, floor, now_ms);
        }
    }

    /// A blind write (no client context, e.g. Redis `SET`): exactly `write` with this set's own
    /// clock as the context, so it supersedes every version here, without building that context.
    pub fn overwrite(&mut self, node: &NodeId, value: Option<Bytes>, now_ms: u64) -> Dot {
        self.versions.clear();
        let counter = self.clock.get(node).saturating_add(1);
        self.clock.witness(node, counter, now_ms);
        let dot = Dot {
            node: node.clone(),
            counter,
        };
        self.versions.push(Version {
            dot: dot.clone(),
            value,
            timestamp_ms: now_ms,
        });
        dot
    }

    /// Merges another replica's set into this one. A version survives when the other side holds
    /// it too or has not seen it (its clock does not cover the dot); a version the other side has
    /// seen and no longer holds was superseded there.
    pub fn merge(&mut self, other: &SiblingSet) {
        let mut merged: Vec<Version> =
            Vec::with_capacity(self.versions.len() + other.versions.len());
        for v in &self.versions {
            let in_other = other.versions.iter().any(|o| o.dot == v.dot);
            if in_other || !seen_covers(&other.clock, &v.dot) {
                merged.push(v.clone());
            }
        }
        for o in &other.versions {
            let in_self = self.versions.iter().any(|v| v.dot == o.dot);
            if !in_self && !seen_covers(&self.clock, &o.dot) {
                merged.push(o.clone());
            }
        }
        merged.sort_by(|a, b| a.dot.cmp(&b.dot));
        self.clock.merge(&other.clock);
        self.versions = merged;
    }

    /// Prunes the clock past `max_entries`, never dropping an entry a surviving version's dot
    /// needs (dropping it would let that version be superseded by a context that never saw it).
    pub fn prune(&mut self, max_entries: usize) {
        let versions = &self.versions;
        self.clock.prune(max_entries, |node| {
            versions.iter().any(|v| &v.dot.node == node)
        });
    }

    /// Stable on-disk and on-wire encoding: a format byte, then postcard.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V1];
        // Serializing plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("sibling set serializes"));
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SiblingSet, DecodeError> {
        match bytes.split_first() {
            Some((&FORMAT_V1, rest)) => {
                let set: SiblingSet = postcard::from_bytes(rest)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                // Counters near u64::MAX would overflow the next write's dot (found by the
                // `sibling_set` fuzz target); nothing honest comes near the bound.
                let dots = set
                    .versions
                    .iter()
                    .map(|v| v.dot.counter)
                    .max()
                    .unwrap_or(0);
                if set.clock.max_counter().max(dots) > MAX_STORED_COUNTER {
                    return Err(DecodeError::Malformed("counter out of range".into()));
                }
                Ok(set)
            }
            Some((&other, _)) => Err(DecodeError::UnknownFormat(other)),
            None => Err(DecodeError::Malformed("empty".into())),
        }
    }
}

fn seen_covers(clock: &VersionVector, dot: &Dot) -> bool {
    clock.get(&dot.node) >= dot.counter
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Causality;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn values(set: &SiblingSet) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = set.live().map(|v| v.value.as_deref().unwrap()).collect();
        v.sort();
        v
    }

    /// The seed's example, D1 -> D5: Sx writes twice, Sy and Sz each write over D2 concurrently,
    /// and a client reads both siblings and resolves them through Sx.
    #[test]
    fn seed_example_d1_to_d5() {
        let (sx, sy, sz) = (n("Sx"), n("Sy"), n("Sz"));
        // D1 = ([Sx,1]) at Sx.
        let mut at_sx = SiblingSet::new();
        at_sx.write(&sx, &Context::empty(), Some(Bytes::from("D1")), 1);
        assert_eq!(at_sx.clock().get(&sx), 1);
        // D2 = ([Sx,2]) overwrites D1 through Sx.
        let ctx = at_sx.context();
        at_sx.write(&sx, &ctx, Some(Bytes::from("D2")), 2);
        assert_eq!(values(&at_sx), vec![b"D2"]);
        let d2 = at_sx.clone();
        // D3 = ([Sx,2],[Sy,1]) written through Sy over D2.
        let mut at_sy = d2.clone();
        at_sy.write(&sy, &d2.context(), Some(Bytes::from("D3")), 3);
        // D4 = ([Sx,2],[Sz,1]) written through Sz over D2, concurrently.
        let mut at_sz = d2.clone();
        at_sz.write(&sz, &d2.context(), Some(Bytes::from("D4")), 4);
        assert_eq!(at_sy.clock().compare(at_sz.clock()), Causality::Concurrent);
        // A read that meets both gets two siblings and a context covering both.
        let mut read = at_sy.clone();
        read.merge(&at_sz);
        assert_eq!(values(&read), vec![&b"D3"[..], &b"D4"[..]]);
        let ctx = read.context();
        assert_eq!(ctx.clock().get(&sx), 2);
        assert_eq!(ctx.clock().get(&sy), 1);
        assert_eq!(ctx.clock().get(&sz), 1);
        // D5 = ([Sx,3],[Sy,1],[Sz,1]): the client resolves through Sx.
        at_sx.merge(&read);
        at_sx.write(&sx, &ctx, Some(Bytes::from("D5")), 5);
        assert_eq!(values(&at_sx), vec![b"D5"]);
        assert_eq!(at_sx.clock().get(&sx), 3);
        // D5 descends from D3 and D4: merging stale replicas back in changes nothing.
        let mut healed = at_sx.clone();
        healed.merge(&at_sy);
        healed.merge(&at_sz);
        assert_eq!(values(&healed), vec![b"D5"]);
    }

    /// Two clients read the same version and both write it back through the same node: a plain
    /// server-keyed vector clock would drop the first write; the dots keep both.
    #[test]
    fn same_node_concurrent_writes_stay_siblings() {
        let node = n("a");
        let mut set = SiblingSet::new();
        set.write(&node, &Context::empty(), Some(Bytes::from("v0")), 1);
        let read = set.context();
        set.write(&node, &read, Some(Bytes::from("client1")), 2);
        set.write(&node, &read, Some(Bytes::from("client2")), 3);
        assert_eq!(values(&set), vec![&b"client1"[..], &b"client2"[..]]);
        let resolve = set.context();
        set.write(&node, &resolve, Some(Bytes::from("merged")), 4);
        assert_eq!(values(&set), vec![b"merged"]);
    }

    #[test]
    fn blind_write_with_the_current_context_replaces() {
        let node = n("a");
        let mut set = SiblingSet::new();
        for i in 0..5u64 {
            let ctx = set.context();
            set.write(&node, &ctx, Some(Bytes::from(i.to_string())), i);
        }
        assert_eq!(values(&set), vec![b"4"]);
        assert_eq!(set.versions().len(), 1);
    }

    #[test]
    fn tombstones_supersede_and_read_as_deleted() {
        let node = n("a");
        let mut set = SiblingSet::new();
        set.write(&node, &Context::empty(), Some(Bytes::from("v")), 1);
        let ctx = set.context();
        set.write(&node, &ctx, None, 2);
        assert!(set.is_deleted());
        assert_eq!(set.versions().len(), 1);
        assert!(set.versions()[0].is_tombstone());
        // An old replica that still has the value does not resurrect it.
        let mut old = SiblingSet::new();
        old.write(&node, &Context::empty(), Some(Bytes::from("v")), 1);
        old.merge(&set);
        assert!(old.is_deleted());
    }

    #[test]
    fn winner_is_latest_timestamp() {
        let mut set = SiblingSet::new();
        set.write(&n("a"), &Context::empty(), Some(Bytes::from("late")), 9);
        set.write(&n("b"), &Context::empty(), Some(Bytes::from("early")), 5);
        assert_eq!(set.winner().unwrap().value.as_deref(), Some(&b"late"[..]));
    }

    #[test]
    fn encode_round_trips_and_rejects_garbage() {
        let mut set = SiblingSet::new();
        set.write(
            &n("a"),
            &Context::empty(),
            Some(Bytes::from(vec![0, 255, 10])),
            7,
        );
        set.write(&n("b"), &Context::empty(), None, 8);
        assert_eq!(SiblingSet::decode(&set.encode()).unwrap(), set);
        assert!(matches!(
            SiblingSet::decode(&[9, 1]),
            Err(DecodeError::UnknownFormat(9))
        ));
        assert!(SiblingSet::decode(&[]).is_err());
        assert!(SiblingSet::decode(&[1, 200, 200, 200]).is_err());
    }

    #[test]
    fn prune_keeps_entries_of_surviving_dots() {
        let mut set = SiblingSet::new();
        for i in 0..15u64 {
            let ctx = set.context();
            set.write(&n(&format!("n{i}")), &ctx, Some(Bytes::from("v")), i);
        }
        set.prune(10);
        assert_eq!(set.clock().len(), 10);
        let survivor = &set.versions()[0].dot;
        assert_eq!(survivor.node, n("n14"));
        assert_eq!(set.clock().get(&survivor.node), survivor.counter);
        assert_eq!(set.clock().get(&n("n0")), 0, "oldest entries go first");
    }
}
