//! The history of a run and the checker's three properties.
//!
//! - **(a) No acknowledged write is lost.** After the run converged, each acknowledged write
//!   (value or delete) is in the final set of its key (its dot is there), or was causally
//!   superseded: some write that was applied (durably, at its coordinator) with a context
//!   covering its dot is itself not lost, recursively. And no acknowledged write's context is
//!   undone: a version it superseded never comes back (a deleted key stays deleted).
//! - **(b) Convergence** is checked by the run itself ([`crate::Simulation`]): every replica of
//!   every key holds the same set, and no hints are left, within a bounded time of the heal.
//! - **(c) Intersecting quorums read the latest acknowledged write when nothing fails.** For
//!   reads that started and ended before the first fault, every write to the key acknowledged
//!   before the read started *at a level whose quorum must intersect the read's* is covered by
//!   the read's clock (the read returned it, or something that supersedes it). For plain counts
//!   that is R + W > N. For the data-center levels it is what their majorities give
//!   ([`must_intersect`]): a `local_quorum` read in D sees a `local_quorum` or `each_quorum`
//!   write acknowledged before it, and a count write when W plus D's majority exceeds N; a
//!   `local_quorum` read in dc2 is *not* held to a `local_quorum` write acknowledged in dc1.
//! - **(d) Data-center cuts** (two-data-center runs, [`History::check_dc_cuts`]): a
//!   `local_quorum` read, or write reaching a replica of its key, in a data center whose every
//!   node is up, with its whole client window inside a cut without loss, is answered
//!   successfully; an `each_quorum` request started and answered inside a cut never is.
//!   Forwarded `local_quorum` writes there, and `local_quorum` writes in every cut (lossy ones
//!   too), are only measured.
//!
//! Dots are what make the checks exact: a version's dot names one write, the coordinator's
//! counter for the key. The simulator records each write's dot when its coordinator's copy is
//! durable (the shell sees it; clients get it back with the ack).

use bytes::Bytes;
use ringkv_core::coordinator::Need;
use ringkv_core::{Dot, SiblingSet, VersionVector};
use std::collections::{BTreeMap, BTreeSet};

/// How a client write ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Pending,
    Acked(Dot),
    /// The coordinator said W was not reached (the write may still be stored).
    Failed,
    /// No answer before the client gave up (the node crashed, a message was lost).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub client: usize,
    pub key: Bytes,
    pub tombstone: bool,
    pub with_context: bool,
    pub invoked: u64,
    pub completed: Option<u64>,
    pub outcome: WriteOutcome,
    /// The level asked for, as the checker reads it: `Count(w)`, or a data-center rule with
    /// the client's data center (clients only ever reach nodes of their own).
    pub level: Need,
    /// The node the client sent it to.
    pub node: usize,
}

#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub client: usize,
    pub key: Bytes,
    pub invoked: u64,
    pub completed: Option<u64>,
    /// `None`: failed or no answer.
    pub result: Option<SiblingSet>,
    pub level: Need,
    pub node: usize,
}

/// Every link between the two data centers cut, both ways, from `start` to `end`; `clean`
/// when its weather had no loss and delays of at most [`CLEAN_DELAY_MS`].
#[derive(Debug, Clone)]
pub struct DcCut {
    pub start: u64,
    pub end: u64,
    pub clean: bool,
}

/// The longest one-way delay of a clean cut's weather.
pub const CLEAN_DELAY_MS: u64 = 60;

/// A node crashed at `down` and restarted at `up`.
#[derive(Debug, Clone)]
pub struct Outage {
    pub node: usize,
    pub down: u64,
    pub up: u64,
}

/// A write that became durable at its coordinator: its dot, and the clock of everything it
/// supersedes (the client's context, or for a blind write the coordinator's own clock).
#[derive(Debug, Clone)]
pub struct Applied {
    pub key: Bytes,
    pub dot: Dot,
    pub covers: VersionVector,
}

#[derive(Debug, Clone, Default)]
pub struct History {
    pub writes: BTreeMap<u64, WriteRecord>,
    pub reads: BTreeMap<u64, ReadRecord>,
    pub applied: Vec<Applied>,
    pub dc_cuts: Vec<DcCut>,
    pub outages: Vec<Outage>,
}

/// Outcomes at one level.
#[derive(Debug, Clone, Copy, Default)]
pub struct LevelCounts {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_unknown: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
}

/// What the checker counted.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_unknown: u64,
    pub acked_present: u64,
    pub acked_superseded: u64,
    pub reads_checked: u64,
    pub keys_with_siblings: u64,
    /// Per level ([`level_name`]).
    pub by_level: BTreeMap<String, LevelCounts>,
    /// Calm (write, later read) pairs of one key held to "the read sees the write", by
    /// "write level -> read level".
    pub calm_pairs: BTreeMap<String, u64>,
    /// (d): `local_quorum` requests held to success in clean cuts; `each_quorum` requests held
    /// to failure in any cut.
    pub cut_local_checked: u64,
    pub cut_each_checked: u64,
    /// Measured: `local_quorum` writes in clean cuts, with their data center up, that the
    /// node the client reached forwarded (not held to success), and how many were acknowledged.
    pub cut_local_forwarded: u64,
    pub cut_local_forwarded_acked: u64,
    /// Measured over every cut: `local_quorum` writes started inside one, and how many of them
    /// were acknowledged.
    pub cut_local_writes: u64,
    pub cut_local_writes_acked: u64,
}

fn covered(vv: &VersionVector, dot: &Dot) -> bool {
    vv.get(&dot.node) >= dot.counter
}

/// A level as the summary names it.
pub fn level_name(level: &Need) -> String {
    match level {
        Need::Count(n) => format!("count {n}"),
        Need::LocalQuorum { dc } => format!("local_quorum {dc}"),
        Need::EachQuorum => "each_quorum".into(),
    }
}

/// The replicas of one key per data center (one entry with one data center).
pub type Layout = BTreeMap<String, usize>;

/// What a level guarantees about the replicas that answered it, on a key's `layout` with no
/// node down (so no stand-ins): at least `per_dc[d]` of data center d's replicas, and at least
/// `total` of all N. `None` when it cannot succeed (a `local_quorum` in a data center with no
/// replica of the key).
fn guarantee<'a>(level: &'a Need, layout: &'a Layout) -> Option<(BTreeMap<&'a str, usize>, usize)> {
    let majority = |n: usize| n / 2 + 1;
    match level {
        Need::Count(k) => Some((BTreeMap::new(), *k)),
        Need::LocalQuorum { dc } => {
            let n = *layout.get(dc).filter(|&&n| n > 0)?;
            Some((BTreeMap::from([(dc.as_str(), majority(n))]), majority(n)))
        }
        Need::EachQuorum => {
            let per: BTreeMap<&str, usize> = layout
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(d, &n)| (d.as_str(), majority(n)))
                .collect();
            let total = per.values().sum();
            Some((per, total))
        }
    }
}

/// True when every set of replicas that can acknowledge a write at `write` must share a node
/// with every set that can answer a read at `read`, on a key whose replicas are laid out as
/// `layout`, with no node down. Exact: two such sets can be disjoint iff, in every data center,
/// both minimums fit side by side, and both totals (each at least the sum of its minimums) fit
/// in N together. For plain counts this is R + W > N.
pub fn must_intersect(write: &Need, read: &Need, layout: &Layout) -> bool {
    let (Some((wa, wt)), Some((ra, rt))) = (guarantee(write, layout), guarantee(read, layout))
    else {
        return false;
    };
    let n: usize = layout.values().sum();
    let side_by_side = layout
        .iter()
        .all(|(d, &nd)| wa.get(d.as_str()).unwrap_or(&0) + ra.get(d.as_str()).unwrap_or(&0) <= nd);
    let wt = wt.max(wa.values().sum());
    let rt = rt.max(ra.values().sum());
    !(side_by_side && wt + rt <= n)
}

impl History {
    /// (a): every acknowledged write is in `final_sets` or superseded by a write that is not lost,
    /// and nothing an acknowledged write superseded is back.
    pub fn check_no_lost_writes(
        &self,
        final_sets: &BTreeMap<Bytes, SiblingSet>,
        checked: &mut Checked,
    ) -> Result<(), String> {
        let empty = SiblingSet::new();
        let mut by_key: BTreeMap<&Bytes, Vec<&Applied>> = BTreeMap::new();
        for a in &self.applied {
            by_key.entry(&a.key).or_default().push(a);
        }
        let present = |key: &Bytes, dot: &Dot| {
            final_sets
                .get(key)
                .unwrap_or(&empty)
                .versions()
                .iter()
                .any(|v| &v.dot == dot)
        };
        // Dots that survive: present, or superseded by a surviving applied write. Fixpoint over
        // the applied writes of each key (causality is acyclic, so this terminates).
        let mut surviving: BTreeSet<(Bytes, Dot)> = BTreeSet::new();
        for (key, applied) in &by_key {
            let mut alive: Vec<&Applied> = applied
                .iter()
                .copied()
                .filter(|a| present(key, &a.dot))
                .collect();
            let mut seen: BTreeSet<&Dot> = alive.iter().map(|a| &a.dot).collect();
            while let Some(a) = alive.pop() {
                surviving.insert(((*key).clone(), a.dot.clone()));
                for b in applied {
                    if !seen.contains(&b.dot) && b.dot != a.dot && covered(&a.covers, &b.dot) {
                        seen.insert(&b.dot);
                        alive.push(b);
                    }
                }
            }
        }
        for (op, w) in &self.writes {
            let at = checked.by_level.entry(level_name(&w.level)).or_default();
            match &w.outcome {
                WriteOutcome::Acked(_) => at.writes_acked += 1,
                WriteOutcome::Failed => at.writes_failed += 1,
                WriteOutcome::Unknown | WriteOutcome::Pending => at.writes_unknown += 1,
            }
            match &w.outcome {
                WriteOutcome::Acked(dot) => {
                    checked.writes_acked += 1;
                    if present(&w.key, dot) {
                        checked.acked_present += 1;
                    } else if surviving.contains(&(w.key.clone(), dot.clone())) {
                        checked.acked_superseded += 1;
                    } else {
                        return Err(format!(
                            "acknowledged write lost: op {op} by client {} on key {:?} \
                             (dot {}:{}, {}) is neither in the final set {:?} nor superseded by \
                             a surviving write",
                            w.client,
                            String::from_utf8_lossy(&w.key),
                            dot.node,
                            dot.counter,
                            if w.tombstone { "delete" } else { "value" },
                            final_sets.get(&w.key).map(|s| s.versions().to_vec()),
                        ));
                    }
                }
                WriteOutcome::Failed => checked.writes_failed += 1,
                WriteOutcome::Unknown | WriteOutcome::Pending => checked.writes_unknown += 1,
            }
        }
        // Nothing an acknowledged write superseded survives (deleted keys stay deleted).
        let acked: BTreeSet<&Dot> = self
            .writes
            .values()
            .filter_map(|w| match &w.outcome {
                WriteOutcome::Acked(d) => Some(d),
                _ => None,
            })
            .collect();
        for a in self.applied.iter().filter(|a| acked.contains(&a.dot)) {
            if let Some(set) = final_sets.get(&a.key) {
                for v in set.versions() {
                    if v.dot != a.dot && covered(&a.covers, &v.dot) {
                        return Err(format!(
                            "superseded version came back on key {:?}: {}:{} was superseded by \
                             acknowledged write {}:{}",
                            String::from_utf8_lossy(&a.key),
                            v.dot.node,
                            v.dot.counter,
                            a.dot.node,
                            a.dot.counter
                        ));
                    }
                }
            }
        }
        checked.keys_with_siblings = final_sets
            .values()
            .filter(|s| s.versions().len() > 1)
            .count() as u64;
        Ok(())
    }

    /// (c): reads that ran entirely before `calm_until` saw every write to their key that was
    /// acknowledged before they started at a level whose quorum must intersect theirs
    /// ([`must_intersect`] on the key's `layout`).
    pub fn check_calm_reads(
        &self,
        calm_until: u64,
        layout: &BTreeMap<Bytes, Layout>,
        checked: &mut Checked,
    ) -> Result<(), String> {
        for (op, r) in &self.reads {
            let at = checked.by_level.entry(level_name(&r.level)).or_default();
            match r.result {
                Some(_) => at.reads_ok += 1,
                None if r.completed.is_some() => at.reads_failed += 1,
                None => {}
            }
            let (Some(done), Some(set)) = (r.completed, &r.result) else {
                continue;
            };
            if done >= calm_until {
                continue;
            }
            checked.reads_checked += 1;
            let layout = layout.get(&r.key).expect("the layout of every key");
            for (wop, w) in &self.writes {
                let (WriteOutcome::Acked(dot), Some(acked_at)) = (&w.outcome, w.completed) else {
                    continue;
                };
                if w.key != r.key || acked_at >= r.invoked {
                    continue;
                }
                if !must_intersect(&w.level, &r.level, layout) {
                    continue;
                }
                let pair = format!("{} -> {}", level_name(&w.level), level_name(&r.level));
                *checked.calm_pairs.entry(pair).or_default() += 1;
                if !covered(set.clock(), dot) {
                    return Err(format!(
                        "stale read with no fault: read op {op} (client {}, {}, started {} ms) \
                         of key {:?} missed write op {wop} ({}, dot {}:{}) acknowledged at {} \
                         ms, although their quorums must intersect on replicas {layout:?}",
                        r.client,
                        level_name(&r.level),
                        r.invoked,
                        String::from_utf8_lossy(&r.key),
                        level_name(&w.level),
                        dot.node,
                        dot.counter,
                        acked_at
                    ));
                }
            }
        }
        Ok(())
    }

    /// (d): in data-center cuts. `node_dc` is each node's data center, `replicas` each key's
    /// replicas (node indices), `window_ms` how long a client waits for an answer.
    ///
    /// Why "held" is exact in the sim's fault model: inside a clean cut nothing is lost and
    /// nothing takes long, and with every node of D up, every node of D reaches every other.
    /// A `local_quorum` read asks only D's targets of its plan (stand-ins from D included), all
    /// reachable, whatever gossip thinks of them; so does a write coordinated by the node the
    /// client reached, when that node is a replica (`route_write` keeps it local, and a node
    /// never sees itself down). A write that node *forwards* goes where its gossip view says
    /// (healthy replicas first): right after an earlier fault heals it may still see D's
    /// replicas down and one across the cut up, and send it there, as the server would. Those
    /// are only counted.
    pub fn check_dc_cuts(
        &self,
        node_dc: &[String],
        replicas: &BTreeMap<Bytes, Vec<usize>>,
        window_ms: u64,
        checked: &mut Checked,
    ) -> Result<(), String> {
        let all_up = |dc: &str, from: u64, to: u64| {
            !self
                .outages
                .iter()
                .any(|o| node_dc[o.node] == dc && o.down <= to && o.up >= from)
        };
        let is_replica = |key: &Bytes, node: usize| {
            replicas
                .get(key)
                .expect("the replicas of every key")
                .contains(&node)
        };
        for cut in &self.dc_cuts {
            let inside = |invoked: u64| invoked >= cut.start && invoked < cut.end;
            // A local_quorum request in a clean cut, answered (or given up on) before it heals,
            // its data center up throughout.
            let whole = |level: &Need, invoked: u64| match level {
                Need::LocalQuorum { dc } => {
                    cut.clean
                        && inside(invoked)
                        && invoked + window_ms <= cut.end
                        && all_up(dc, invoked, invoked + window_ms)
                }
                _ => false,
            };
            // An each_quorum request started and answered inside the cut can never succeed.
            let doomed = |level: &Need, invoked: u64, completed: Option<u64>| {
                *level == Need::EachQuorum
                    && inside(invoked)
                    && completed.is_some_and(|c| c <= cut.end)
            };
            for (op, w) in &self.writes {
                let acked = matches!(w.outcome, WriteOutcome::Acked(_));
                if matches!(w.level, Need::LocalQuorum { .. }) && inside(w.invoked) {
                    checked.cut_local_writes += 1;
                    checked.cut_local_writes_acked += u64::from(acked);
                }
                let whole = whole(&w.level, w.invoked);
                if whole && !is_replica(&w.key, w.node) {
                    checked.cut_local_forwarded += 1;
                    checked.cut_local_forwarded_acked += u64::from(acked);
                }
                if whole && is_replica(&w.key, w.node) {
                    checked.cut_local_checked += 1;
                    if !acked {
                        return Err(format!(
                            "local_quorum write op {op} (client {}, key {:?}, {}) started at {} \
                             ms inside a data-center cut ({}..{} ms, no loss) with its data \
                             center up was not acknowledged: {:?}",
                            w.client,
                            String::from_utf8_lossy(&w.key),
                            level_name(&w.level),
                            w.invoked,
                            cut.start,
                            cut.end,
                            w.outcome
                        ));
                    }
                }
                if doomed(&w.level, w.invoked, w.completed) {
                    checked.cut_each_checked += 1;
                    if acked {
                        return Err(format!(
                            "each_quorum write op {op} (client {}, key {:?}) started at {} ms \
                             inside a data-center cut ({}..{} ms) was acknowledged before the \
                             heal",
                            w.client,
                            String::from_utf8_lossy(&w.key),
                            w.invoked,
                            cut.start,
                            cut.end
                        ));
                    }
                }
            }
            for (op, r) in &self.reads {
                if whole(&r.level, r.invoked) {
                    checked.cut_local_checked += 1;
                    if r.result.is_none() {
                        return Err(format!(
                            "local_quorum read op {op} (client {}, key {:?}, {}) started at {} \
                             ms inside a data-center cut ({}..{} ms, no loss) with its data \
                             center up failed",
                            r.client,
                            String::from_utf8_lossy(&r.key),
                            level_name(&r.level),
                            r.invoked,
                            cut.start,
                            cut.end
                        ));
                    }
                }
                if doomed(&r.level, r.invoked, r.completed) {
                    checked.cut_each_checked += 1;
                    if r.result.is_some() {
                        return Err(format!(
                            "each_quorum read op {op} (client {}, key {:?}) started at {} ms \
                             inside a data-center cut ({}..{} ms) succeeded before the heal",
                            r.client,
                            String::from_utf8_lossy(&r.key),
                            r.invoked,
                            cut.start,
                            cut.end
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{Context, NodeId};

    fn node(n: &str) -> NodeId {
        NodeId::new(n).unwrap()
    }

    /// A history of two writes of one key: `a` by n1, then `b` by n2 over a context that saw
    /// `a` when `b_saw_a`. Returns the history and both sets as the replicas would hold them.
    fn two_writes(b_saw_a: bool) -> (History, SiblingSet) {
        let key = Bytes::from("k");
        let mut set = SiblingSet::new();
        let a = set.write(&node("n1"), &Context::empty(), Some(Bytes::from("a")), 1);
        let ctx = if b_saw_a {
            set.context()
        } else {
            Context::empty()
        };
        let covers = ctx.clock().clone();
        let b = set.write(&node("n2"), &ctx, Some(Bytes::from("b")), 2);
        let mut h = History::default();
        for (op, dot, covers) in [(1, a, VersionVector::new()), (2, b, covers)] {
            h.applied.push(Applied {
                key: key.clone(),
                dot: dot.clone(),
                covers,
            });
            h.writes.insert(
                op,
                WriteRecord {
                    client: 0,
                    key: key.clone(),
                    tombstone: false,
                    with_context: true,
                    invoked: op * 10,
                    completed: Some(op * 10 + 5),
                    outcome: WriteOutcome::Acked(dot),
                    level: Need::Count(2),
                    node: 0,
                },
            );
        }
        (h, set)
    }

    #[test]
    fn a_superseded_write_is_not_lost_and_a_dropped_one_is() {
        let (h, set) = two_writes(true);
        let finals = BTreeMap::from([(Bytes::from("k"), set.clone())]);
        let mut c = Checked::default();
        h.check_no_lost_writes(&finals, &mut c).unwrap();
        assert_eq!((c.acked_present, c.acked_superseded), (1, 1));

        // Concurrent writes: both must survive as siblings; a final set with one is a loss.
        let (h, set) = two_writes(false);
        assert_eq!(set.versions().len(), 2);
        let mut only_b = SiblingSet::new();
        only_b.write(&node("n2"), &Context::empty(), Some(Bytes::from("b")), 2);
        let finals = BTreeMap::from([(Bytes::from("k"), only_b)]);
        let err = h
            .check_no_lost_writes(&finals, &mut Checked::default())
            .unwrap_err();
        assert!(err.contains("acknowledged write lost"), "{err}");
        // And nothing at all is a loss too.
        assert!(h
            .check_no_lost_writes(&BTreeMap::new(), &mut Checked::default())
            .is_err());
    }

    #[test]
    fn a_superseded_version_coming_back_is_caught() {
        let (h, _) = two_writes(true);
        // Both versions in the final set although b's context superseded a.
        let mut back = SiblingSet::new();
        back.write(&node("n1"), &Context::empty(), Some(Bytes::from("a")), 1);
        back.write(&node("n2"), &Context::empty(), Some(Bytes::from("b")), 2);
        let finals = BTreeMap::from([(Bytes::from("k"), back)]);
        let err = h
            .check_no_lost_writes(&finals, &mut Checked::default())
            .unwrap_err();
        assert!(err.contains("came back"), "{err}");
    }

    #[test]
    fn a_calm_read_that_misses_an_acknowledged_write_is_caught() {
        let (mut h, set) = two_writes(true);
        let stale = {
            let mut s = SiblingSet::new();
            s.write(&node("n1"), &Context::empty(), Some(Bytes::from("a")), 1);
            s
        };
        let read = |set: SiblingSet, invoked| ReadRecord {
            client: 1,
            key: Bytes::from("k"),
            invoked,
            completed: Some(invoked + 5),
            result: Some(set),
            level: Need::Count(2),
            node: 0,
        };
        let layout = BTreeMap::from([(Bytes::from("k"), Layout::from([("dc1".into(), 3)]))]);
        // Started after b was acked (at 25) and saw it: fine. Started before: may miss it.
        h.reads.insert(10, read(set, 30));
        h.reads.insert(11, read(stale.clone(), 20));
        let mut c = Checked::default();
        h.check_calm_reads(1_000, &layout, &mut c).unwrap();
        assert_eq!(c.reads_checked, 2);
        h.reads.insert(12, read(stale.clone(), 40));
        let err = h
            .check_calm_reads(1_000, &layout, &mut Checked::default())
            .unwrap_err();
        assert!(err.contains("stale read"), "{err}");
        // After the calm phase the same read is not held to it.
        assert!(h
            .check_calm_reads(30, &layout, &mut Checked::default())
            .is_ok());
        // Nor is a read whose quorum need not meet the write's (W = 1, R = 2 of N = 3).
        for w in h.writes.values_mut() {
            w.level = Need::Count(1);
        }
        assert!(h
            .check_calm_reads(1_000, &layout, &mut Checked::default())
            .is_ok());
    }

    fn local(dc: &str) -> Need {
        Need::LocalQuorum { dc: dc.into() }
    }

    #[test]
    fn quorums_must_intersect_exactly_when_their_majorities_do() {
        let one = Layout::from([("dc1".into(), 3)]);
        assert!(must_intersect(&Need::Count(2), &Need::Count(2), &one));
        assert!(!must_intersect(&Need::Count(1), &Need::Count(2), &one));
        assert!(must_intersect(&Need::Count(1), &Need::Count(3), &one));
        // {dc1: 2, dc2: 1}: local majorities 2 and 1.
        let l21 = Layout::from([("dc1".into(), 2), ("dc2".into(), 1)]);
        assert!(must_intersect(&local("dc1"), &local("dc1"), &l21));
        assert!(must_intersect(&local("dc2"), &local("dc2"), &l21));
        // Not promised: another data center's local quorum.
        assert!(!must_intersect(&local("dc1"), &local("dc2"), &l21));
        assert!(!must_intersect(&local("dc2"), &local("dc1"), &l21));
        // each_quorum meets every local quorum, both ways.
        for dc in ["dc1", "dc2"] {
            assert!(must_intersect(&Need::EachQuorum, &local(dc), &l21));
            assert!(must_intersect(&local(dc), &Need::EachQuorum, &l21));
        }
        // Counts against local majorities: W = 2 of 3 meets dc1's 2 of 2 but not dc2's 1 of 1.
        assert!(must_intersect(&Need::Count(2), &local("dc1"), &l21));
        assert!(!must_intersect(&Need::Count(2), &local("dc2"), &l21));
        assert!(must_intersect(&local("dc2"), &Need::Count(3), &l21));
        // {dc1: 2, dc2: 2}: W = 3, R = 2 of N = 4; dc2's local quorum is 2 of 2.
        let l22 = Layout::from([("dc1".into(), 2), ("dc2".into(), 2)]);
        assert!(must_intersect(&Need::Count(3), &Need::Count(2), &l22));
        assert!(!must_intersect(&Need::Count(2), &Need::Count(2), &l22));
        assert!(!must_intersect(&local("dc1"), &local("dc2"), &l22));
        assert!(!must_intersect(&Need::Count(2), &local("dc2"), &l22));
        assert!(must_intersect(&Need::Count(3), &local("dc2"), &l22));
        // A data center with no replica of the key promises nothing.
        assert!(!must_intersect(&local("dc3"), &local("dc3"), &l22));
    }

    #[test]
    fn a_failed_local_write_in_a_clean_cut_and_an_acked_each_quorum_are_caught() {
        // Nodes 0 and 1 in dc1, 2 and 3 in dc2; the key's replicas are 0 and 2.
        let node_dc: Vec<String> = ["dc1", "dc1", "dc2", "dc2"].map(String::from).to_vec();
        let replicas = BTreeMap::from([(Bytes::from("k"), vec![0, 2])]);
        let write = |level: Need, node: usize, invoked: u64, outcome: WriteOutcome| WriteRecord {
            client: 0,
            key: Bytes::from("k"),
            tombstone: false,
            with_context: false,
            invoked,
            completed: Some(invoked + 100),
            outcome,
            level,
            node,
        };
        let dot = Dot {
            node: node("n1"),
            counter: 1,
        };
        let check = |h: &History, c: &mut Checked| h.check_dc_cuts(&node_dc, &replicas, 2_000, c);
        let mut h = History::default();
        h.dc_cuts.push(DcCut {
            start: 10_000,
            end: 20_000,
            clean: true,
        });
        // Held: acked at a replica inside the cut. Not held: failed too close to the cut's end,
        // or failed after a forward (counted only).
        h.writes.insert(
            1,
            write(local("dc1"), 0, 14_000, WriteOutcome::Acked(dot.clone())),
        );
        h.writes
            .insert(2, write(local("dc1"), 0, 19_000, WriteOutcome::Failed));
        h.writes
            .insert(3, write(local("dc1"), 1, 12_000, WriteOutcome::Failed));
        h.writes
            .insert(4, write(Need::EachQuorum, 0, 12_000, WriteOutcome::Failed));
        let mut c = Checked::default();
        check(&h, &mut c).unwrap();
        assert_eq!((c.cut_local_checked, c.cut_each_checked), (1, 1));
        assert_eq!((c.cut_local_writes, c.cut_local_writes_acked), (3, 1));
        assert_eq!((c.cut_local_forwarded, c.cut_local_forwarded_acked), (1, 0));
        // A failed one at a replica inside the cut is caught...
        h.writes
            .insert(5, write(local("dc2"), 2, 15_000, WriteOutcome::Failed));
        let err = check(&h, &mut Checked::default()).unwrap_err();
        assert!(err.contains("was not acknowledged"), "{err}");
        // ...unless a node of its data center was down during it...
        h.outages.push(Outage {
            node: 3,
            down: 16_000,
            up: 18_000,
        });
        check(&h, &mut Checked::default()).unwrap();
        // ...or the cut was lossy.
        h.outages.clear();
        h.dc_cuts[0].clean = false;
        check(&h, &mut Checked::default()).unwrap();
        // An each_quorum acknowledged inside the cut is caught, lossy or not.
        h.writes.insert(
            6,
            write(Need::EachQuorum, 0, 16_000, WriteOutcome::Acked(dot)),
        );
        let err = check(&h, &mut Checked::default()).unwrap_err();
        assert!(err.contains("each_quorum write"), "{err}");
    }
}
