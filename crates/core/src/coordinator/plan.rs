//! Sloppy quorum: which nodes a request for one key goes to when some replicas are down.

use crate::{NodeId, PartitionId, Ring};

/// The replicas a request for one partition goes to under sloppy quorum (DESIGN.md: "when a
/// preference-list node is down, the first healthy node past the list takes its writes and
/// reads"): the partition's preference list of N, each member `is_down` says is down replaced by
/// the next healthy node past the list (walking the longer preference list, which extends the
/// first N in order) in the down member's data center, or, without per-DC replication and
/// with none healthy there, in any; each used once. A down member with no healthy node left to stand in for it
/// stays in the list: it counts as a refusal, so W and R are met exactly while W (R) nodes are up.
///
/// `is_down` should be gossip's *down* (two sources agree), not mere suspicion: a stand-in's
/// writes become hints, and one flaky link should not scatter a key's writes over the ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// In preference order, stand-ins in the place of the member they stand in for.
    pub targets: Vec<NodeId>,
    /// (stand-in, the down member it takes writes for).
    pub stand_ins: Vec<(NodeId, NodeId)>,
    /// New owners of the partition that are still streaming it in (in the write ring's list,
    /// not in the read ring's): writes go to them too and each must ack on top of W, so a
    /// write acknowledged during the transfer is on the new owner when the ring switches
    /// (Cassandra counts pending replicas the same way). Reads never go to them.
    pub pending: Vec<NodeId>,
}

impl Plan {
    /// The plan for `partition` at `n` replicas on `ring`.
    pub fn new(
        ring: &Ring,
        partition: PartitionId,
        n: usize,
        is_down: impl Fn(&NodeId) -> bool,
    ) -> Plan {
        let all = ring.preference_list(partition, ring.members().len());
        let (primaries, rest) = all.split_at(n.min(all.len()));
        let mut fallbacks: Vec<&NodeId> = rest.iter().filter(|id| !is_down(id)).collect();
        let mut plan = Plan::default();
        for id in primaries {
            // A stand-in from the down node's own data center first, so per-data-center
            // quorums keep their meaning; with per-DC replication only from there (the other
            // data centers hold their own share already).
            let home = ring.dc_of(id);
            let pick = is_down(id)
                .then(|| {
                    fallbacks
                        .iter()
                        .position(|f| ring.dc_of(f) == home)
                        .or_else(|| {
                            (!ring.has_dc_replication() && !fallbacks.is_empty()).then_some(0)
                        })
                })
                .flatten();
            match pick {
                Some(at) => {
                    let stand_in = fallbacks.remove(at);
                    plan.targets.push(stand_in.clone());
                    plan.stand_ins.push((stand_in.clone(), id.clone()));
                }
                None => plan.targets.push(id.clone()),
            }
        }
        plan
    }

    /// [`Plan::new`] on the read ring, plus the write ring's new owners as
    /// [`Plan::pending`] (when both rings are the same, none).
    pub fn with_pending(
        read: &Ring,
        write: &Ring,
        partition: PartitionId,
        n: usize,
        is_down: impl Fn(&NodeId) -> bool,
    ) -> Plan {
        let mut plan = Plan::new(read, partition, n, &is_down);
        if !std::ptr::eq(read, write) {
            let current = read.preference_list(partition, n);
            plan.pending = write
                .preference_list(partition, n)
                .into_iter()
                .filter(|id| !current.contains(id) && !plan.targets.contains(id))
                .collect();
        }
        plan
    }

    /// Everything a write goes to: the targets, then the pending new owners.
    pub fn write_targets(&self) -> Vec<NodeId> {
        self.targets.iter().chain(&self.pending).cloned().collect()
    }

    /// Acks a write needs: `w` plus one per pending new owner (capped by the nodes written).
    pub fn write_acks(&self, w: usize) -> usize {
        (w + self.pending.len()).min(self.targets.len() + self.pending.len())
    }

    /// The down member `node` stands in for, when it is a stand-in.
    pub fn intended_for(&self, node: &NodeId) -> Option<&NodeId> {
        self.stand_ins
            .iter()
            .find(|(s, _)| s == node)
            .map(|(_, intended)| intended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RingMember;

    fn ring(n: usize) -> Ring {
        let members: Vec<RingMember> = (1..=n)
            .map(|i| RingMember::new(NodeId::new(format!("n{i}")).unwrap(), 1, "dc1", "rack1"))
            .collect();
        Ring::build(&members, 64).unwrap()
    }

    #[test]
    fn healthy_cluster_uses_the_preference_list() {
        let ring = ring(5);
        let p = PartitionId(7);
        let plan = Plan::new(&ring, p, 3, |_| false);
        assert_eq!(plan.targets, ring.preference_list(p, 3));
        assert!(plan.stand_ins.is_empty());
    }

    #[test]
    fn a_down_replica_is_replaced_in_place_by_the_next_healthy_node() {
        let ring = ring(5);
        let p = PartitionId(3);
        let all = ring.preference_list(p, 5);
        let down = all[1].clone();
        let plan = Plan::new(&ring, p, 3, |id| id == &down);
        assert_eq!(
            plan.targets,
            vec![all[0].clone(), all[3].clone(), all[2].clone()]
        );
        assert_eq!(plan.intended_for(&all[3]), Some(&down));
        assert_eq!(plan.intended_for(&all[0]), None);
    }

    #[test]
    fn a_joining_node_is_pending_for_writes_and_counted_on_top_of_w() {
        let read = ring(4);
        let write = ring(5);
        let n5 = NodeId::new("n5").unwrap();
        let mut seen = 0;
        for p in 0..64 {
            let p = PartitionId(p);
            let plan = Plan::with_pending(&read, &write, p, 3, |_| false);
            assert_eq!(plan.targets, read.preference_list(p, 3));
            assert!(!plan.targets.contains(&n5));
            // Every new owner is pending: the joining node, and any member the new ring moves
            // a replica to.
            let new_owners: Vec<NodeId> = write
                .preference_list(p, 3)
                .into_iter()
                .filter(|id| !plan.targets.contains(id))
                .collect();
            assert_eq!(plan.pending, new_owners);
            assert_eq!(plan.write_acks(2), 2 + new_owners.len());
            assert_eq!(plan.write_targets().len(), 3 + new_owners.len());
            if new_owners.contains(&n5) {
                seen += 1;
            }
        }
        assert!(seen > 0);
        let same = Plan::with_pending(&read, &read, PartitionId(1), 3, |_| false);
        assert!(same.pending.is_empty());
    }

    #[test]
    fn with_nobody_left_to_stand_in_the_down_replica_stays() {
        let ring = ring(3);
        let p = PartitionId(0);
        let all = ring.preference_list(p, 3);
        let down = all[2].clone();
        let plan = Plan::new(&ring, p, 3, |id| id == &down);
        assert_eq!(plan.targets, all);
        assert!(plan.stand_ins.is_empty());
    }
}

#[cfg(test)]
mod dc_tests {
    use super::*;
    use crate::RingMember;

    /// dc1: a1..a3, dc2: b1..b3, one rack each node.
    fn members() -> Vec<RingMember> {
        ["a", "b"]
            .iter()
            .flat_map(|p| {
                (1..=3).map(move |i| {
                    let dc = if *p == "a" { "dc1" } else { "dc2" };
                    RingMember::new(
                        NodeId::new(format!("{p}{i}")).unwrap(),
                        1,
                        dc,
                        format!("r{i}"),
                    )
                })
            })
            .collect()
    }

    #[test]
    fn a_stand_in_comes_from_the_down_nodes_data_center() {
        let ring = Ring::build(&members(), 64).unwrap();
        for p in 0..64 {
            let p = PartitionId(p);
            let list = ring.preference_list(p, 3);
            for down in &list {
                let plan = Plan::new(&ring, p, 3, |id| id == down);
                let (stand_in, intended) = &plan.stand_ins[0];
                assert_eq!(intended, down);
                assert_eq!(ring.dc_of(stand_in), ring.dc_of(down), "{plan:?}");
            }
        }
    }

    #[test]
    fn with_per_dc_replication_a_lost_data_center_gets_no_stand_ins_elsewhere() {
        let replication = [("dc1".to_string(), 2), ("dc2".to_string(), 2)].into();
        let ring = Ring::build_with(&members(), 64, &replication).unwrap();
        let dc2_down = |id: &NodeId| ring.dc_of(id) == Some("dc2");
        for p in 0..64 {
            let p = PartitionId(p);
            let plan = Plan::new(&ring, p, 4, dc2_down);
            assert!(plan.stand_ins.is_empty(), "{plan:?}");
            assert_eq!(plan.targets, ring.preference_list(p, 4));
        }
        // Without per-DC replication, the same loss borrows dc1's spare node.
        let plain = Ring::build(&members(), 64).unwrap();
        let plan = Plan::new(&plain, PartitionId(0), 4, |id| {
            plain.dc_of(id) == Some("dc2")
        });
        assert_eq!(plan.stand_ins.len(), 1);
    }
}
