//! What a request must hear back before it answers: a plain count of replicas, or a count per
//! data center (`local_quorum`, `each_quorum`, DESIGN.md "Replication and consistency").
//!
//! A client's level is resolved in two steps. Before the key is known, [`Need`] says what was
//! asked (a count already checked against N, or a data-center rule with the coordinator's own
//! data center). Once the key's [`Plan`] is known, [`Plan::write_quorum`] and
//! [`Plan::read_quorum`] turn it into a [`Quorum`]: a total and, for the data-center levels,
//! one [`DcQuorum`] per data center that names the nodes that count there. The coordinators
//! ([`super::PutCoordinator`], [`super::GetCoordinator`]) then judge their answers with
//! [`Quorum::judge`], the one place where "met", "still open" and "out of reach" are decided.
//!
//! # Data-center quorums
//! - The size of a data center's share is counted on the *intended* replicas (the preference
//!   list before sloppy quorum), so a down replica does not shrink the majority: with three
//!   replicas in `dc1`, `local_quorum` needs two acks from `dc1` nodes whether or not one of
//!   them is down. The nodes that count are the plan's targets in that data center, stand-ins
//!   included (a stand-in in the same data center holds the write for its node).
//! - New owners still streaming the partition in ([`Plan::pending`]) count in their own data
//!   center on top of its majority, as they count on top of W for plain levels; for
//!   `local_quorum` only the local data center's pending owners do, so a remote data center's
//!   join never blocks local writes (the remote new owner catches up through its own stream
//!   and anti-entropy).
//! - A data center with no replica of the key cannot form a `local_quorum`: the request fails
//!   at once with that data center named, rather than quietly going remote.

use super::Plan;
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// A consistency level as the coordinator needs it before the key's replicas are known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Need {
    /// This many replicas, anywhere (already resolved from `one`, `quorum`, `all`, a number).
    Count(usize),
    /// A majority of the key's replicas in data center `dc` (the coordinator's own).
    LocalQuorum { dc: String },
    /// A majority of the key's replicas in every data center that holds some.
    EachQuorum,
}

/// One data center's part of a [`Quorum`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcQuorum {
    pub dc: String,
    /// The nodes whose answers count for this data center.
    pub nodes: Vec<NodeId>,
    /// How many of them must answer.
    pub needed: usize,
}

/// What one request must hear back: `total` answers, and each data center's own quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    pub total: usize,
    pub per_dc: Vec<DcQuorum>,
}

/// Where a request stands, given who answered yes and who may still answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    /// Still reachable: wait.
    Open,
    /// Cannot be met any more (or, at a deadline, was not): `needed`/`got` of the part that
    /// failed, `dc` when it was a data center's quorum.
    Short {
        needed: usize,
        got: usize,
        dc: Option<String>,
    },
}

impl Quorum {
    /// A plain count.
    pub fn count(total: usize) -> Quorum {
        Quorum {
            total,
            per_dc: Vec::new(),
        }
    }

    /// Judges the answers so far: `yes` answered in favour, `waiting` may still. With
    /// `final_call` (a deadline passed) an unmet quorum is `Short` even if reachable.
    pub fn judge(&self, yes: &[NodeId], waiting: &[NodeId], final_call: bool) -> Verdict {
        let mut open = false;
        let mut short = None;
        let mut check = |needed: usize, got: usize, may: usize, dc: Option<&String>| {
            if got >= needed {
                return;
            }
            if !final_call && got + may >= needed {
                open = true;
            } else if short.is_none() {
                short = Some(Verdict::Short {
                    needed,
                    got,
                    dc: dc.cloned(),
                });
            }
        };
        for q in &self.per_dc {
            let got = yes.iter().filter(|n| q.nodes.contains(n)).count();
            let may = waiting.iter().filter(|n| q.nodes.contains(n)).count();
            check(q.needed, got, may, Some(&q.dc));
        }
        check(self.total, yes.len(), waiting.len(), None);
        match short {
            Some(v) => v,
            None if open => Verdict::Open,
            None => Verdict::Met,
        }
    }
}

impl Plan {
    /// The quorum a write at `need` needs on this plan. Plain counts add one ack per pending
    /// new owner (see [`Plan::write_acks`]); data-center levels add each pending owner to its
    /// own data center (module doc). `dc_of` gives a node's data center (from the rings).
    pub fn write_quorum<'a>(
        &self,
        need: &Need,
        dc_of: impl Fn(&NodeId) -> Option<&'a str>,
    ) -> Quorum {
        match need {
            Need::Count(w) => Quorum::count(self.write_acks(*w)),
            _ => self.dc_quorum(need, &dc_of, true),
        }
    }

    /// The quorum a read at `need` needs on this plan (pending owners are never read).
    pub fn read_quorum<'a>(
        &self,
        need: &Need,
        dc_of: impl Fn(&NodeId) -> Option<&'a str>,
    ) -> Quorum {
        match need {
            Need::Count(r) => Quorum::count(*r),
            _ => self.dc_quorum(need, &dc_of, false),
        }
    }

    /// The targets a read at `need` asks: for `local_quorum` only the local data center's (a
    /// local read never waits on, nor loads, another data center); otherwise all of them, the
    /// local data center's first.
    pub fn read_targets<'a>(
        &self,
        need: &Need,
        local_dc: &str,
        dc_of: impl Fn(&NodeId) -> Option<&'a str>,
    ) -> Vec<NodeId> {
        let local = |id: &NodeId| dc_of(id) == Some(local_dc);
        let (mut near, far): (Vec<NodeId>, Vec<NodeId>) =
            self.targets.iter().cloned().partition(|id| local(id));
        if !matches!(need, Need::LocalQuorum { .. }) {
            near.extend(far);
        }
        near
    }

    fn dc_quorum<'a>(
        &self,
        need: &Need,
        dc_of: &impl Fn(&NodeId) -> Option<&'a str>,
        write: bool,
    ) -> Quorum {
        let dc = |id: &NodeId| dc_of(id).unwrap_or("").to_string();
        // Each data center's share of the intended replicas, in preference order.
        let mut per_dc: Vec<DcQuorum> = Vec::new();
        for target in &self.targets {
            let intended = self.intended_for(target).unwrap_or(target);
            let home = dc(intended);
            let at = match per_dc.iter().position(|q| q.dc == home) {
                Some(at) => at,
                None => {
                    per_dc.push(DcQuorum {
                        dc: home,
                        nodes: Vec::new(),
                        needed: 0,
                    });
                    per_dc.len() - 1
                }
            };
            per_dc[at].needed += 1;
        }
        for q in &mut per_dc {
            q.needed = q.needed / 2 + 1;
        }
        let extra: &[NodeId] = if write { &self.pending } else { &[] };
        for node in self.targets.iter().chain(extra) {
            let home = dc(node);
            let pending = self.pending.contains(node);
            match per_dc.iter_mut().find(|q| q.dc == home) {
                Some(q) => {
                    q.nodes.push(node.clone());
                    q.needed += usize::from(pending);
                }
                None if pending => per_dc.push(DcQuorum {
                    dc: home,
                    nodes: vec![node.clone()],
                    needed: 1,
                }),
                // A stand-in from another data center (only without per-DC replication):
                // it holds the write, but counts for no data center's majority.
                None => {}
            }
        }
        if let Need::LocalQuorum { dc: local } = need {
            let mine = per_dc.into_iter().find(|q| &q.dc == local);
            per_dc = vec![mine.unwrap_or(DcQuorum {
                dc: local.clone(),
                nodes: Vec::new(),
                needed: 1,
            })];
        }
        Quorum {
            total: per_dc.iter().map(|q| q.needed).sum(),
            per_dc,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    /// a1, a2, a3 in dc "a"; b1, b2 in dc "b".
    fn dc_of(node: &NodeId) -> Option<&'static str> {
        match node.as_str().as_bytes()[0] {
            b'a' => Some("a"),
            b'b' => Some("b"),
            _ => None,
        }
    }

    fn plan(targets: &[&str]) -> Plan {
        Plan {
            targets: targets.iter().map(|s| id(s)).collect(),
            ..Plan::default()
        }
    }

    fn ids(v: &[&str]) -> Vec<NodeId> {
        v.iter().map(|s| id(s)).collect()
    }

    #[test]
    fn local_quorum_counts_only_the_local_data_center() {
        let p = plan(&["a1", "b1", "a2", "b2", "a3"]);
        let q = p.write_quorum(&Need::LocalQuorum { dc: "a".into() }, dc_of);
        assert_eq!(q.total, 2);
        assert_eq!(q.per_dc.len(), 1);
        assert_eq!(q.per_dc[0].nodes, ids(&["a1", "a2", "a3"]));
        // Acks from dc b do not help.
        assert_eq!(
            q.judge(&ids(&["a1", "b1", "b2"]), &ids(&["a2", "a3"]), false),
            Verdict::Open
        );
        assert_eq!(
            q.judge(&ids(&["a1", "a3"]), &ids(&["b1", "b2", "a2"]), false),
            Verdict::Met
        );
        // With dc b unreachable, a local quorum is unaffected.
        assert_eq!(q.judge(&ids(&["a1", "a2"]), &[], false), Verdict::Met);
        assert_eq!(
            q.judge(&ids(&["a1", "b1", "b2"]), &[], false),
            Verdict::Short {
                needed: 2,
                got: 1,
                dc: Some("a".into())
            }
        );
    }

    #[test]
    fn each_quorum_needs_a_majority_everywhere() {
        let p = plan(&["a1", "b1", "a2", "b2", "a3"]);
        let q = p.write_quorum(&Need::EachQuorum, dc_of);
        assert_eq!(q.total, 4);
        assert_eq!(
            q.judge(&ids(&["a1", "a2", "a3"]), &ids(&["b1", "b2"]), false),
            Verdict::Open
        );
        assert_eq!(
            q.judge(&ids(&["a1", "a2", "a3"]), &[], false),
            Verdict::Short {
                needed: 2,
                got: 0,
                dc: Some("b".into())
            }
        );
        assert_eq!(
            q.judge(&ids(&["a1", "b2", "a2", "b1"]), &ids(&["a3"]), false),
            Verdict::Met
        );
    }

    #[test]
    fn a_down_replica_does_not_shrink_its_data_centers_majority() {
        // a2 is down; a3 stands in for it (same data center), b2 for b1... but only a3 here.
        let mut p = plan(&["a1", "a3", "b1"]);
        p.stand_ins = vec![(id("a3"), id("a2"))];
        let q = p.write_quorum(&Need::LocalQuorum { dc: "a".into() }, dc_of);
        assert_eq!(q.per_dc[0].needed, 2);
        assert_eq!(q.per_dc[0].nodes, ids(&["a1", "a3"]));
        // Without the stand-in, a1 alone of two intended dc-a replicas is not a majority.
        let p = plan(&["a1", "a2", "b1"]);
        let q = p.write_quorum(&Need::LocalQuorum { dc: "a".into() }, dc_of);
        assert_eq!(
            q.judge(&ids(&["a1", "b1"]), &[], false),
            Verdict::Short {
                needed: 2,
                got: 1,
                dc: Some("a".into())
            }
        );
    }

    #[test]
    fn pending_owners_count_in_their_own_data_center() {
        let mut p = plan(&["a1", "b1", "a2"]);
        p.pending = ids(&["a3", "b2"]);
        let local = p.write_quorum(&Need::LocalQuorum { dc: "a".into() }, dc_of);
        assert_eq!(local.total, 3, "a majority of 2 in a, plus pending a3");
        assert_eq!(local.per_dc[0].nodes, ids(&["a1", "a2", "a3"]));
        let each = p.write_quorum(&Need::EachQuorum, dc_of);
        assert_eq!(each.total, 3 + 2);
        // Reads never count pending owners.
        let read = p.read_quorum(&Need::LocalQuorum { dc: "a".into() }, dc_of);
        assert_eq!(read.total, 2);
        // Plain counts keep their rule: w plus one per pending owner.
        assert_eq!(p.write_quorum(&Need::Count(2), dc_of).total, 4);
    }

    #[test]
    fn a_data_center_without_replicas_cannot_form_a_local_quorum() {
        let p = plan(&["a1", "a2", "a3"]);
        let q = p.write_quorum(&Need::LocalQuorum { dc: "b".into() }, dc_of);
        assert_eq!(
            q.judge(&ids(&["a1", "a2", "a3"]), &[], false),
            Verdict::Short {
                needed: 1,
                got: 0,
                dc: Some("b".into())
            }
        );
    }

    #[test]
    fn local_reads_ask_the_local_data_center_first_or_only() {
        let p = plan(&["b1", "a1", "b2", "a2"]);
        let local = Need::LocalQuorum { dc: "a".into() };
        assert_eq!(p.read_targets(&local, "a", dc_of), ids(&["a1", "a2"]));
        assert_eq!(
            p.read_targets(&Need::Count(2), "a", dc_of),
            ids(&["a1", "a2", "b1", "b2"])
        );
    }

    #[test]
    fn a_deadline_turns_open_into_short() {
        let q = Quorum::count(2);
        assert_eq!(q.judge(&ids(&["a1"]), &ids(&["a2"]), false), Verdict::Open);
        assert_eq!(
            q.judge(&ids(&["a1"]), &ids(&["a2"]), true),
            Verdict::Short {
                needed: 2,
                got: 1,
                dc: None
            }
        );
    }
}
