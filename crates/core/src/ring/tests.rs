use super::*;

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn member(name: &str, weight: u32, dc: &str, rack: &str) -> RingMember {
    RingMember::new(id(name), weight, dc, rack)
}

/// `n` nodes of weight 1 in one data center and rack.
fn flat(n: usize) -> Vec<RingMember> {
    (1..=n)
        .map(|i| member(&format!("n{i}"), 1, "dc", "r"))
        .collect()
}

#[test]
fn rejects_what_it_cannot_build() {
    assert_eq!(Ring::build(&[], 1024), Err(RingError::NoMembers));
    for q in [0, 3, 1000, MAX_PARTITIONS * 2] {
        assert_eq!(
            Ring::build(&flat(3), q),
            Err(RingError::BadPartitionCount(q))
        );
    }
    let mut m = flat(3);
    m[1].weight = 0;
    assert_eq!(Ring::build(&m, 64), Err(RingError::ZeroWeight(id("n2"))));
    let mut m = flat(3);
    m.push(m[0].clone());
    assert_eq!(
        Ring::build(&m, 64),
        Err(RingError::DuplicateMember(id("n1")))
    );
    assert!(matches!(
        Ring::build(&flat(300), MAX_PARTITIONS),
        Err(RingError::TooLarge { members: 300, .. })
    ));
    let ring = Ring::build(&flat(3), 64).unwrap();
    assert!(ring.check_partition(PartitionId(63)).is_ok());
    assert_eq!(
        ring.check_partition(PartitionId(64)),
        Err(RingError::NoSuchPartition {
            partition: 64,
            partitions: 64
        })
    );
}

#[test]
#[should_panic(expected = "out of range")]
fn an_unchecked_partition_out_of_range_panics() {
    Ring::build(&flat(3), 64).unwrap().owner(PartitionId(64));
}

#[test]
fn the_same_members_in_any_order_give_the_same_ring() {
    let members: Vec<RingMember> = (1..=12)
        .map(|i| {
            member(
                &format!("node-{i}"),
                1 + i % 4,
                &format!("dc{}", i % 3),
                "r",
            )
        })
        .collect();
    let ring = Ring::build(&members, 1024).unwrap();
    let mut shuffled = members.clone();
    for step in [5, 7, 11] {
        // A few deterministic permutations: reverse, rotate, interleave.
        shuffled.reverse();
        shuffled.rotate_left(step);
        let (even, odd): (Vec<_>, Vec<_>) = shuffled
            .iter()
            .cloned()
            .enumerate()
            .partition(|(i, _)| i % 2 == 0);
        shuffled = odd.into_iter().chain(even).map(|(_, m)| m).collect();
        let again = Ring::build(&shuffled, 1024).unwrap();
        assert_eq!(again, ring);
        assert_eq!(
            again.preference_list(PartitionId(9), 3),
            ring.preference_list(PartitionId(9), 3)
        );
    }
}

#[test]
fn the_ring_is_pinned() {
    // Every node must compute this exact ring from this membership, on every platform and in
    // every version with the same RING_ALGORITHM_VERSION. If this fails, the algorithm changed:
    // bump the version (and expect a full reshuffle on upgrade).
    let ring = Ring::build(&flat(5), 1024).unwrap();
    let first: Vec<&str> = (0..16)
        .map(|p| ring.owner(PartitionId(p)).as_str())
        .collect();
    let expected = [
        "n2", "n5", "n4", "n2", "n5", "n1", "n2", "n3", "n3", "n4", "n5", "n1", "n1", "n3", "n1",
        "n3",
    ];
    assert_eq!(first, expected);
    let counts: Vec<usize> = ring
        .members()
        .iter()
        .map(|m| ring.partitions_of(&m.id).len())
        .collect();
    assert_eq!(counts, [208, 195, 205, 218, 198]);
    assert_eq!(RING_ALGORITHM_VERSION, 1);
}

#[test]
fn shares_follow_weights_within_the_band() {
    let members = vec![
        member("a", 1, "dc", "r"),
        member("b", 2, "dc", "r"),
        member("c", 3, "dc", "r"),
        member("d", 4, "dc", "r"),
    ];
    let ring = Ring::build(&members, 4096).unwrap();
    for m in &members {
        let target = m.weight as f64 / 10.0;
        let share = ring.share(&m.id);
        assert!(
            (share / target - 1.0).abs() <= 0.08,
            "{}: {share} vs {target}",
            m.id
        );
        assert_eq!(share, ring.partitions_of(&m.id).len() as f64 / 4096.0);
    }
    let total: usize = members
        .iter()
        .map(|m| ring.partitions_of(&m.id).len())
        .sum();
    assert_eq!(total, 4096);
    assert_eq!(ring.share(&id("stranger")), 0.0);
    assert!(ring.partitions_of(&id("stranger")).is_empty());
    assert!(ring.contains(&id("a")) && !ring.contains(&id("stranger")));
}

#[test]
fn partitions_of_and_owner_agree() {
    let ring = Ring::build(&flat(7), 256).unwrap();
    for m in ring.members() {
        for p in ring.partitions_of(&m.id) {
            assert_eq!(ring.owner(p), &m.id);
        }
    }
}

#[test]
fn a_single_node_owns_everything() {
    let ring = Ring::build(&flat(1), 1).unwrap();
    assert_eq!(ring.owner(PartitionId(0)), &id("n1"));
    assert_eq!(ring.preference_list(PartitionId(0), 3), vec![id("n1")]);
    let ring = Ring::build(&flat(1), 1024).unwrap();
    assert_eq!(ring.partitions_of(&id("n1")).len(), 1024);
}

#[test]
fn replicas_are_distinct_physical_nodes_owner_first() {
    let ring = Ring::build(&flat(6), 512).unwrap();
    for p in (0..512).map(PartitionId) {
        let list = ring.preference_list(p, 3);
        assert_eq!(list.len(), 3);
        assert_eq!(&list[0], ring.owner(p));
        assert_eq!(
            list.iter().collect::<BTreeSet<_>>().len(),
            3,
            "{p}: {list:?}"
        );
    }
}

#[test]
fn without_topology_the_list_is_the_clockwise_walk() {
    // The seed's rule: the first N distinct nodes met walking clockwise from the partition.
    let ring = Ring::build(&flat(5), 128).unwrap();
    for p in 0..128u32 {
        let mut walk: Vec<NodeId> = Vec::new();
        for step in 0..128 {
            let owner = ring.owner(PartitionId((p + step) % 128)).clone();
            if !walk.contains(&owner) {
                walk.push(owner);
            }
        }
        assert_eq!(ring.preference_list(PartitionId(p), 3), walk[..3].to_vec());
        assert_eq!(ring.preference_list(PartitionId(p), 5), walk);
    }
}

#[test]
fn with_n_data_centers_no_two_replicas_share_one() {
    let members: Vec<RingMember> = (0..9)
        .map(|i| member(&format!("n{i}"), 1 + i % 2, &format!("dc{}", i % 3), "r"))
        .collect();
    let ring = Ring::build(&members, 1024).unwrap();
    let dc = |n: &NodeId| &members.iter().find(|m| &m.id == n).unwrap().dc;
    for p in (0..1024).map(PartitionId) {
        for n in [2, 3] {
            let list = ring.preference_list(p, n);
            let dcs: BTreeSet<_> = list.iter().map(dc).collect();
            assert_eq!(dcs.len(), n, "{p}: {list:?}");
        }
    }
}

#[test]
fn with_one_data_center_replicas_spread_over_racks() {
    let members: Vec<RingMember> = (0..8)
        .map(|i| member(&format!("n{i}"), 1, "dc", &format!("rack{}", i % 3)))
        .collect();
    let ring = Ring::build(&members, 512).unwrap();
    let rack = |n: &NodeId| &members.iter().find(|m| &m.id == n).unwrap().rack;
    for p in (0..512).map(PartitionId) {
        let list = ring.preference_list(p, 3);
        assert_eq!(list.iter().map(rack).collect::<BTreeSet<_>>().len(), 3);
        // A fourth replica has to share a rack, but still goes to a distinct node.
        let list = ring.preference_list(p, 4);
        assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), 4);
        assert_eq!(list.iter().map(rack).collect::<BTreeSet<_>>().len(), 3);
    }
}

#[test]
fn with_fewer_data_centers_than_replicas_both_centers_and_racks_are_used() {
    // Two data centers, N = 3: both centers hold a replica, and the three replicas are in three
    // distinct racks (dc-a has two racks, dc-b one).
    let members = vec![
        member("a1", 1, "dc-a", "r1"),
        member("a2", 1, "dc-a", "r1"),
        member("a3", 1, "dc-a", "r2"),
        member("b1", 1, "dc-b", "r1"),
        member("b2", 1, "dc-b", "r1"),
    ];
    let ring = Ring::build(&members, 256).unwrap();
    let place = |n: &NodeId| {
        let m = members.iter().find(|m| &m.id == n).unwrap();
        (m.dc.clone(), m.rack.clone())
    };
    for p in (0..256).map(PartitionId) {
        let list = ring.preference_list(p, 3);
        let places: BTreeSet<_> = list.iter().map(place).collect();
        assert_eq!(places.len(), 3, "{p}: {list:?}");
        let dcs: BTreeSet<_> = places.iter().map(|(dc, _)| dc).collect();
        assert_eq!(dcs.len(), 2);
    }
}

#[test]
fn asking_for_more_replicas_than_nodes_gives_every_node() {
    let ring = Ring::build(&flat(4), 64).unwrap();
    let list = ring.preference_list(PartitionId(3), 10);
    assert_eq!(list.len(), 4);
    assert_eq!(list.iter().collect::<BTreeSet<_>>().len(), 4);
    // More nodes than partitions: some own nothing, and still appear in long lists.
    let ring = Ring::build(&flat(8), 4).unwrap();
    let owners: BTreeSet<_> = (0..4).map(|p| ring.owner(PartitionId(p)).clone()).collect();
    assert!(owners.len() <= 4);
    assert_eq!(ring.preference_list(PartitionId(0), 8).len(), 8);
    assert!(ring.preference_list(PartitionId(0), 0).is_empty());
}

#[test]
fn longer_lists_extend_shorter_ones() {
    let members: Vec<RingMember> = (0..10)
        .map(|i| {
            member(
                &format!("n{i}"),
                1 + i % 3,
                &format!("dc{}", i % 2),
                &format!("r{}", i % 3),
            )
        })
        .collect();
    let ring = Ring::build(&members, 256).unwrap();
    for p in (0..256).map(PartitionId) {
        let all = ring.preference_list(p, 10);
        for k in 0..=10 {
            assert_eq!(ring.preference_list(p, k), all[..k].to_vec());
        }
    }
}

#[test]
fn keys_map_to_their_partition() {
    let ring = Ring::build(&flat(3), 1024).unwrap();
    let p = KeyHash::of(b"user:42").partition(1024);
    assert_eq!(ring.partition_of_key(b"user:42"), p);
    assert_eq!(
        ring.preference_list_for_key(b"user:42", 2),
        ring.preference_list(p, 2)
    );
}

#[test]
fn a_join_moves_partitions_only_to_the_new_node_when_none_is_pinned() {
    // With plenty of partitions per node every count stays inside its band, so the ring is plain
    // rendezvous and a join is exactly optimal.
    let before = Ring::build(&flat(4), 16384).unwrap();
    let after = Ring::build(&flat(5), 16384).unwrap();
    let newcomer = id("n5");
    for p in (0..16384).map(PartitionId) {
        if before.owner(p) != after.owner(p) {
            assert_eq!(after.owner(p), &newcomer);
        }
    }
    assert_eq!(
        before.moves_between(&after),
        after.partitions_of(&newcomer).len()
    );
    assert_eq!(before.moves_between(&before), 0);
}

#[test]
fn moves_between_rings_of_different_sizes_count_everything() {
    let a = Ring::build(&flat(3), 64).unwrap();
    let b = Ring::build(&flat(3), 128).unwrap();
    assert_eq!(a.moves_between(&b), 128);
    assert_eq!(a.replica_moves_between(&b, 2), 256);
    assert_eq!(a.replica_moves_between(&a, 2), 0);
}

#[test]
fn summary_counts_primaries_and_replicas() {
    let members = vec![
        member("a", 1, "dc1", "r"),
        member("b", 1, "dc2", "r"),
        member("c", 2, "dc3", "r"),
    ];
    let ring = Ring::build(&members, 256).unwrap();
    let summary = ring.summary(2);
    assert_eq!(summary.iter().map(|s| s.primary).sum::<u32>(), 256);
    assert_eq!(summary.iter().map(|s| s.replica).sum::<u32>(), 512);
    let c = summary.iter().find(|s| s.id == id("c")).unwrap();
    assert_eq!(c.target_share, 0.5);
    assert_eq!(c.share, ring.share(&id("c")));
    assert_eq!((c.weight, c.dc.as_str()), (2, "dc3"));
    // With n = 3 every node holds every partition.
    assert!(ring.summary(3).iter().all(|s| s.replica == 256));
}

/// dc1: 3 nodes on racks a, b, c; dc2: 3 nodes on racks a, b, c; dc3: 2 nodes.
fn two_dcs_and_an_unnamed_one() -> Vec<RingMember> {
    let mut m = Vec::new();
    for (dc, count) in [("dc1", 3), ("dc2", 3), ("dc3", 2)] {
        for (i, rack) in ["a", "b", "c"].iter().take(count).enumerate() {
            m.push(member(&format!("{dc}-n{i}"), 1, dc, rack));
        }
    }
    m
}

fn replication(pairs: &[(&str, usize)]) -> DcReplication {
    pairs.iter().map(|(dc, n)| (dc.to_string(), *n)).collect()
}

#[test]
fn per_dc_replication_gives_each_data_center_its_count_over_distinct_racks() {
    let members = two_dcs_and_an_unnamed_one();
    let q = 1024;
    let ring = Ring::build_with(&members, q, &replication(&[("dc1", 3), ("dc2", 2)])).unwrap();
    assert!(ring.has_dc_replication());
    let rack = |id: &NodeId| {
        let m = members.iter().find(|m| &m.id == id).unwrap();
        (m.dc.clone(), m.rack.clone())
    };
    for p in 0..q {
        let list = ring.preference_list(PartitionId(p), 5);
        let in_dc = |dc: &str| list.iter().filter(|id| ring.dc_of(id) == Some(dc)).count();
        assert_eq!(
            (in_dc("dc1"), in_dc("dc2"), in_dc("dc3")),
            (3, 2, 0),
            "p{p}"
        );
        let racks: BTreeSet<_> = list.iter().map(rack).collect();
        assert_eq!(
            racks.len(),
            5,
            "replicas of a data center on distinct racks"
        );
        // The list goes on with fallbacks, and a longer list extends a shorter one.
        let longer = ring.preference_list(PartitionId(p), 8);
        assert_eq!(&longer[..5], &list[..]);
        assert_eq!(&ring.preference_list(PartitionId(p), 3)[..], &list[..3]);
    }
    // Every dc1 node replicates everything; dc2's 2 x Q copies are spread over its three nodes
    // by the walk (within 10% of a third here; 15% is the test's margin).
    let summary = ring.summary(5);
    let even = 2 * q / 3;
    for load in &summary {
        match load.dc.as_str() {
            "dc1" => assert_eq!(load.replica, q),
            "dc2" => assert!(load.replica.abs_diff(even) * 100 <= even * 15, "{load:?}"),
            _ => assert_eq!(load.replica, 0),
        }
    }
}

#[test]
fn a_data_center_short_of_nodes_still_leaves_n_copies() {
    let members = two_dcs_and_an_unnamed_one();
    let ring = Ring::build_with(&members, 64, &replication(&[("dc1", 2), ("dc3", 3)])).unwrap();
    for p in 0..64 {
        let list = ring.preference_list(PartitionId(p), 5);
        let in_dc = |dc: &str| list.iter().filter(|id| ring.dc_of(id) == Some(dc)).count();
        assert_eq!(in_dc("dc3"), 2, "both dc3 nodes");
        assert!(in_dc("dc1") >= 2);
        assert_eq!(
            list.len(),
            5,
            "the missing copy goes to the next node of the walk"
        );
    }
}

#[test]
fn without_per_dc_replication_build_with_is_build() {
    let members = two_dcs_and_an_unnamed_one();
    let plain = Ring::build(&members, 128).unwrap();
    assert_eq!(
        plain,
        Ring::build_with(&members, 128, &DcReplication::new()).unwrap()
    );
    assert!(!plain.has_dc_replication());
    assert_eq!(plain.dc_of(&id("dc2-n1")), Some("dc2"));
    assert_eq!(plain.dc_of(&id("nobody")), None);
}
