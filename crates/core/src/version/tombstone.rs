//! Tombstone purge: when a deleted key's tombstone may be forgotten, as three pure decisions.
//!
//! A delete writes a tombstone (a version with no value) whose clock covers what the client saw,
//! so that merging it with an old replica's value supersedes that value. Kept forever, tombstones
//! cost disk and scans; forgotten too early, they let the old value come back ("resurrection"),
//! because a replica that still holds the value merges with nothing and keeps it. DESIGN.md's
//! rule: purge only after a grace period and once every replica holds the tombstone. This module
//! owns that rule; the server's purge worker (and the simulator) carry it out:
//!
//! 1. [`purge_candidate`]: a replica's set holds only tombstones, the newest written more than
//!    the grace period ago (by the coordinator's wall time, `Version::timestamp_ms`).
//! 2. [`all_hold`]: every replica of the key's preference list answered, and each holds exactly
//!    this tombstone (same clock, nothing live).
//! 3. [`may_purge`]: on each replica told to purge, delete the record only if it still holds
//!    nothing but tombstones that the purged clock covers.
//!
//! # Why each condition is there (the resurrection cases)
//! - **A replica still holding the old value** (it was down or partitioned during the delete):
//!   if the others forgot the tombstone, read repair or anti-entropy would copy its value back
//!   to them and the key would live again. [`all_hold`] asks *every* replica, so one that missed
//!   the delete blocks the purge until anti-entropy or read repair brings it the tombstone.
//! - **A hint created before the delete, delivered after the purge**: a stand-in that took the
//!   old value for a down replica delivers it when that replica returns; with the tombstone gone
//!   everywhere, the value would come back. Hints older than `hint_window_secs` are dropped
//!   undelivered, so the grace period must exceed the hint window (plus delivery time and clock
//!   skew between nodes: the hint's age and the tombstone's are measured by different clocks).
//!   The server refuses a configuration where it does not.
//! - **A write racing the purge**: a replica that took a newer write (or a concurrent one)
//!   between the check and the purge no longer satisfies [`may_purge`] (its clock is not covered
//!   by the purged one) and keeps its set; the others forget only the tombstone, which the newer
//!   version descends from or stands beside, so nothing acknowledged is lost.
//! - **Anti-entropy re-sending the tombstone** to a replica that already purged it (because a
//!   peer had not purged yet) is harmless: the tombstone reads as missing, and it is purged again
//!   once every replica holds it once more. It is harmless *because of the next rule*.
//!
//! # Dots are never reused: [`reserve_dots`]
//! A purge forgets the key's clock, so a node writing the key afresh would start its counter at 1
//! again and issue dots the purged history already used. Any copy of that history still alive
//! (a tombstone re-sent by anti-entropy before every replica purged, a replica whose purge was
//! lost in a crash or refused because a write raced it) has a clock that *covers* the new dot,
//! so merging with it drops the new version: an acknowledged write lost (Riak's "kv679"). So a
//! node that purges remembers the largest counter of its own the purged clocks held (per
//! partition), and before *every* write of a key in that partition it applies [`reserve_dots`]:
//! the set's clock entry for this node rises to that floor, so the new dot is above everything it
//! ever issued for a purged key. Not only for keys it holds no record of: after its purge the
//! node may receive another replica's newer version of the key (written over a context that
//! never saw the purged history), and that set's clock knows nothing of its old dots either
//! (found by `tests/tombstone_laws.rs`). Only the set's clock rises, never the write's context,
//! so nothing is superseded that the client did not see: a live version of this node's own with
//! a counter under the floor (the floor is per partition, not per key) stays a sibling, and
//! it cannot be one this set lacks, because a node records every dot it issues before anyone
//! else can hold it.
//!
//! IMPLEMENTATION CAVEATS: the rule covers the key's *preference list*. A copy of an old value
//! held by a node outside it (a sloppy-quorum stand-in's own copy of a hinted write, or a former
//! owner after a ring change) is not asked; if such a node later serves the key again (as a
//! stand-in for a read, or as an owner after another ring change), that value can come back
//! after a purge. Dropping stand-in copies once their hints are delivered, and streaming on
//! ring changes, close that gap.

use super::{SiblingSet, VersionVector};
use crate::NodeId;

/// True when `set` is non-empty, holds only tombstones, and its newest version's `timestamp_ms`
/// is more than `grace_ms` before `now_ms`.
///
/// A version stamped in the future (a coordinator clock ahead of ours) is never past grace
/// until our clock catches up: skew delays a purge, it never hastens one.
pub fn purge_candidate(set: &SiblingSet, now_ms: u64, grace_ms: u64) -> bool {
    let Some(newest) = set.versions().iter().map(|v| v.timestamp_ms).max() else {
        return false;
    };
    set.is_deleted() && now_ms.saturating_sub(newest) > grace_ms
}

/// True when every replica's answer shows it holds exactly this tombstone: `replies` is one
/// entry per replica of the key's preference list (all N must have answered; the caller passes
/// `None` for a replica that holds nothing), and each must be `Some(set)` with
/// `set.is_deleted()`, non-empty, and a clock equal to the candidate's (each descends the
/// other). Empty `replies` -> false.
///
/// A candidate that is not itself a non-empty, all-tombstone set is never held (false): there is
/// nothing to purge.
pub fn all_hold(candidate: &SiblingSet, replies: &[Option<SiblingSet>]) -> bool {
    if candidate.versions().is_empty() || !candidate.is_deleted() || replies.is_empty() {
        return false;
    }
    replies.iter().all(|reply| match reply {
        Some(set) => {
            !set.versions().is_empty()
                && set.is_deleted()
                && set.clock().descends(candidate.clock())
                && candidate.clock().descends(set.clock())
        }
        None => false,
    })
}

/// On a replica asked to purge a key whose purged tombstone had clock `purge_clock`: delete the
/// local record iff the local set is all tombstones and `purge_clock` descends the local clock
/// (the replica has seen nothing newer than what was purged).
///
/// An empty local set has no record to delete: false.
pub fn may_purge(local: &SiblingSet, purge_clock: &VersionVector) -> bool {
    !local.versions().is_empty() && local.is_deleted() && purge_clock.descends(local.clock())
}

/// Before `node` writes a key of a partition where it purged tombstones: raise what `set` has
/// seen of `node` to `floor` (the largest counter of `node`'s that any tombstone it purged there
/// held), so the write's dot is above every dot `node` issued for a purged key (see the module
/// doc). A `floor` of 0, or one the set has already passed, changes nothing.
pub fn reserve_dots(set: &mut SiblingSet, node: &NodeId, floor: u64, now_ms: u64) {
    set.reserve_dots(node, floor, now_ms);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;
    use bytes::Bytes;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// A key written at `t` through `a`, then deleted over what was read at `t + 1`.
    fn deleted_at(t: u64) -> SiblingSet {
        let mut set = SiblingSet::new();
        set.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), t);
        let ctx = set.context();
        set.write(&n("a"), &ctx, None, t + 1);
        set
    }

    #[test]
    fn candidates_are_old_all_tombstone_sets() {
        let set = deleted_at(1_000);
        // Newest version at 1_001: past a grace of 100 only after 1_101.
        assert!(!purge_candidate(&set, 1_101, 100), "exactly at grace");
        assert!(purge_candidate(&set, 1_102, 100));
        assert!(
            !purge_candidate(&set, 0, 100),
            "a clock behind the writer's"
        );
        assert!(!purge_candidate(&SiblingSet::new(), u64::MAX, 0), "empty");
        let mut live = SiblingSet::new();
        live.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), 1);
        assert!(!purge_candidate(&live, u64::MAX, 0), "a live value");
        // A tombstone beside a concurrent live sibling is not a deleted key.
        let mut mixed = deleted_at(1);
        mixed.write(&n("b"), &Context::empty(), Some(Bytes::from("w")), 2);
        assert!(!purge_candidate(&mixed, u64::MAX, 0));
    }

    #[test]
    fn the_newest_tombstone_decides() {
        // Two concurrent tombstones: the later one's age counts.
        let mut set = SiblingSet::new();
        set.write(&n("a"), &Context::empty(), None, 10);
        set.write(&n("b"), &Context::empty(), None, 500);
        assert_eq!(set.versions().len(), 2);
        assert!(!purge_candidate(&set, 550, 100));
        assert!(purge_candidate(&set, 601, 100));
    }

    #[test]
    fn all_must_hold_the_same_tombstone() {
        let t = deleted_at(1);
        assert!(all_hold(
            &t,
            &[Some(t.clone()), Some(t.clone()), Some(t.clone())]
        ));
        assert!(!all_hold(&t, &[]), "nobody answered");
        assert!(!all_hold(&t, &[Some(t.clone()), None]), "one holds nothing");
        // One replica missed the delete and still holds the value.
        let mut old = SiblingSet::new();
        old.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), 1);
        assert!(!all_hold(&t, &[Some(t.clone()), Some(old)]));
        // One replica has a newer tombstone: its clock is not the candidate's.
        let mut newer = t.clone();
        newer.overwrite(&n("b"), None, 9);
        assert!(!all_hold(&t, &[Some(t.clone()), Some(newer.clone())]));
        assert!(!all_hold(&newer, &[Some(t.clone()), Some(newer.clone())]));
        // A candidate that is not a tombstone set is never "held".
        let mut live = SiblingSet::new();
        live.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), 1);
        assert!(!all_hold(&live, &[Some(live.clone())]));
        assert!(!all_hold(&SiblingSet::new(), &[Some(SiblingSet::new())]));
    }

    #[test]
    fn a_replica_purges_only_what_the_purge_covers() {
        let t = deleted_at(1);
        assert!(may_purge(&t, t.clock()));
        assert!(!may_purge(&SiblingSet::new(), t.clock()), "no record");
        // A newer write arrived after the check: keep it.
        let mut rewritten = t.clone();
        let ctx = rewritten.context();
        rewritten.write(&n("a"), &ctx, Some(Bytes::from("again")), 5);
        assert!(!may_purge(&rewritten, t.clock()));
        // A newer tombstone the purge did not see: keep it (its own grace starts later).
        let mut newer = t.clone();
        newer.overwrite(&n("b"), None, 9);
        assert!(!may_purge(&newer, t.clock()));
        // An older tombstone the purged one covers (this replica missed the later delete
        // over it): it can go.
        let mut older = SiblingSet::new();
        older.write(&n("b"), &Context::empty(), None, 1);
        let mut later = older.clone();
        later.write(&n("a"), &older.context(), None, 2);
        assert!(may_purge(&older, later.clock()));
        assert!(!may_purge(&later, older.clock()));
        // A live value is never purged, whatever the clock.
        let mut live = SiblingSet::new();
        live.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), 1);
        assert!(!may_purge(&live, t.clock()));
    }

    /// A node writing afresh after a purge issues a dot the purged history never used, so a
    /// copy of that history (a re-sent tombstone) cannot swallow the new value.
    #[test]
    fn a_floored_write_survives_a_stale_tombstone() {
        let t = deleted_at(1);
        let a = n("a");
        // Without the floor: the fresh write's dot (a, 1) is covered by the tombstone's clock.
        let mut naive = SiblingSet::new();
        naive.write(&a, &Context::empty(), Some(Bytes::from("new")), 9);
        let mut merged = t.clone();
        merged.merge(&naive);
        assert!(merged.is_deleted(), "the lost write the floor prevents");
        // With it: the new value survives the merge, beside the old tombstone.
        let floor = t.clock().get(&a);
        let mut fresh = SiblingSet::new();
        reserve_dots(&mut fresh, &a, floor, 9);
        fresh.write(&a, &Context::empty(), Some(Bytes::from("new")), 9);
        let mut merged = t.clone();
        merged.merge(&fresh);
        assert_eq!(merged.winner().unwrap().value.as_deref(), Some(&b"new"[..]));
        // A set already past the floor is left as it is.
        let before = t.clone();
        let mut same = t.clone();
        reserve_dots(&mut same, &a, 1, 99);
        reserve_dots(&mut same, &a, 0, 99);
        assert_eq!(same, before);
    }

    /// The case the history test found: after its purge, a node receives another replica's newer
    /// version (whose clock never saw the purged history) and then coordinates a write. Its dot
    /// must still be above the floor, and the received version must stay a sibling.
    #[test]
    fn a_write_over_a_received_version_is_above_the_floor_too() {
        let t = deleted_at(1);
        let (a, b) = (n("a"), n("b"));
        let floor = t.clock().get(&a);
        // On b, after b purged: a fresh value.
        let mut on_b = SiblingSet::new();
        on_b.write(&b, &Context::empty(), Some(Bytes::from("from-b")), 10);
        // a purged too, then received b's set; a client that read only b's value writes via a.
        let mut on_a = on_b.clone();
        reserve_dots(&mut on_a, &a, floor, 11);
        let dot = on_a.write(&a, &on_b.context(), Some(Bytes::from("from-a")), 11);
        assert!(dot.counter > floor, "{dot:?} reuses a purged dot");
        // A stale copy of the purged tombstone cannot swallow the new value.
        let mut merged = t.clone();
        merged.merge(&on_a);
        assert_eq!(
            merged.winner().unwrap().value.as_deref(),
            Some(&b"from-a"[..])
        );
        // A concurrent version the client did not see is kept beside it.
        let mut on_a = on_b.clone();
        reserve_dots(&mut on_a, &a, floor, 11);
        on_a.write(&a, &Context::empty(), Some(Bytes::from("blind")), 11);
        assert_eq!(on_a.live().count(), 2);
    }
}
