//! Sloppy quorum: which nodes a request for one key goes to when some replicas are down.

use crate::{NodeId, PartitionId, Ring};

/// The replicas a request for one partition goes to under sloppy quorum (DESIGN.md: "when a
/// preference-list node is down, the first healthy node past the list takes its writes and
/// reads"): the partition's preference list of N, each member `is_down` says is down replaced by
/// the next healthy node past the list (walking the longer preference list, which extends the
/// first N in order), each used once. A down member with no healthy node left to stand in for it
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
        let mut fallbacks = rest.iter().filter(|id| !is_down(id));
        let mut plan = Plan::default();
        for id in primaries {
            match is_down(id).then(|| fallbacks.next()).flatten() {
                Some(stand_in) => {
                    plan.targets.push(stand_in.clone());
                    plan.stand_ins.push((stand_in.clone(), id.clone()));
                }
                None => plan.targets.push(id.clone()),
            }
        }
        plan
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
