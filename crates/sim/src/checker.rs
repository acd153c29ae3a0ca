//! The history of a run and the checker's three properties.
//!
//! - **(a) No acknowledged write is lost.** After the run converged, each acknowledged write
//!   (value or delete) is in the final set of its key (its dot is there), or was causally
//!   superseded: some write that was applied (durably, at its coordinator) with a context
//!   covering its dot is itself not lost, recursively. And no acknowledged write's context is
//!   undone: a version it superseded never comes back (a deleted key stays deleted).
//! - **(b) Convergence** is checked by the run itself ([`crate::Simulation`]): every replica of
//!   every key holds the same set, and no hints are left, within a bounded time of the heal.
//! - **(c) R + W > N reads the latest acknowledged write when nothing fails.** For reads that
//!   started and ended before the first fault, every write to the key acknowledged before the
//!   read started is covered by the read's clock (the read returned it, or something that
//!   supersedes it).
//!
//! Dots are what make the checks exact: a version's dot names one write, the coordinator's
//! counter for the key. The simulator records each write's dot when its coordinator's copy is
//! durable (the shell sees it; clients get it back with the ack).

use bytes::Bytes;
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
}

#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub client: usize,
    pub key: Bytes,
    pub invoked: u64,
    pub completed: Option<u64>,
    /// `None`: failed or no answer.
    pub result: Option<SiblingSet>,
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
}

/// What the checker counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_unknown: u64,
    pub acked_present: u64,
    pub acked_superseded: u64,
    pub reads_checked: u64,
    pub keys_with_siblings: u64,
}

fn covered(vv: &VersionVector, dot: &Dot) -> bool {
    vv.get(&dot.node) >= dot.counter
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
    /// acknowledged before they started.
    pub fn check_calm_reads(&self, calm_until: u64, checked: &mut Checked) -> Result<(), String> {
        for (op, r) in &self.reads {
            let (Some(done), Some(set)) = (r.completed, &r.result) else {
                continue;
            };
            if done >= calm_until {
                continue;
            }
            checked.reads_checked += 1;
            for (wop, w) in &self.writes {
                let (WriteOutcome::Acked(dot), Some(acked_at)) = (&w.outcome, w.completed) else {
                    continue;
                };
                if w.key == r.key && acked_at < r.invoked && !covered(set.clock(), dot) {
                    return Err(format!(
                        "stale read with no fault: read op {op} (client {}, started {} ms) of \
                         key {:?} missed write op {wop} (dot {}:{}) acknowledged at {} ms",
                        r.client,
                        r.invoked,
                        String::from_utf8_lossy(&r.key),
                        dot.node,
                        dot.counter,
                        acked_at
                    ));
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
        };
        // Started after b was acked (at 25) and saw it: fine. Started before: may miss it.
        h.reads.insert(10, read(set, 30));
        h.reads.insert(11, read(stale.clone(), 20));
        let mut c = Checked::default();
        h.check_calm_reads(1_000, &mut c).unwrap();
        assert_eq!(c.reads_checked, 2);
        h.reads.insert(12, read(stale.clone(), 40));
        let err = h
            .check_calm_reads(1_000, &mut Checked::default())
            .unwrap_err();
        assert!(err.contains("stale read"), "{err}");
        // After the calm phase the same read is not held to it.
        assert!(h.check_calm_reads(30, &mut Checked::default()).is_ok());
    }
}
