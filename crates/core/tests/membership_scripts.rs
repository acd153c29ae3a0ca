//! Scripted tests of the gossip state machine (STYLE.md point 4): a few `Membership`s on a fake
//! network that can drop, cut, partition, crash and restart, one test per behaviour, plus a
//! property test that random loss, duplication and reordering still converge.

use proptest::prelude::*;
use ringkv_core::membership::{
    Envelope, Event, Generation, GossipConfig, GossipMessage, Member, MemberStatus, Membership,
    MembershipError, Target, Ticks, MAX_MEMBERS, MAX_PENDING_EVENTS,
};
use ringkv_core::NodeId;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

fn id(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn addr(name: &str) -> String {
    format!("{name}.test:7000")
}

fn member(name: &str, generation: u64, status: MemberStatus) -> Member {
    let mut m = Member::new(id(name), addr(name), Generation(generation));
    m.status = status;
    m.http_addr = format!("{name}.test:8080");
    m
}

/// A message in flight.
type Msg = (NodeId, NodeId, GossipMessage);

/// N membership state machines and the wires between them.
struct Net {
    now: Ticks,
    config: GossipConfig,
    nodes: BTreeMap<NodeId, Membership>,
    /// Peer address -> node, for the running nodes.
    addrs: BTreeMap<String, NodeId>,
    queue: VecDeque<Msg>,
    /// Cut links, both directions, as (smaller, larger).
    cut: BTreeSet<(NodeId, NodeId)>,
    seed: u64,
}

impl Net {
    fn new(config: GossipConfig) -> Net {
        Net {
            now: Ticks(0),
            config,
            nodes: BTreeMap::new(),
            addrs: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            seed: 1,
        }
    }

    /// A cluster of `names`, all `Up`, every one seeded with the first, gossiped until everybody
    /// knows everybody.
    fn cluster(names: &[&str]) -> Net {
        let mut net = Net::new(GossipConfig::default());
        for name in names {
            net.start(member(name, 1, MemberStatus::Up), &[names[0]]);
        }
        net.run(3);
        for n in names {
            assert_eq!(net.node(n).members().count(), names.len(), "{n} knows all");
        }
        net.drain_all_events();
        net
    }

    /// Starts (or restarts) a node with `me` as its record, seeded with `seeds`.
    fn start(&mut self, me: Member, seeds: &[&str]) {
        self.seed += 1;
        let name = me.id.clone();
        self.addrs.insert(me.peer_addr.clone(), name.clone());
        let mut node = Membership::new(me, self.config.clone(), self.seed).unwrap();
        let mut out = Vec::new();
        for s in seeds {
            out.extend(node.add_seed(addr(s)).unwrap());
        }
        self.nodes.insert(name, node);
        self.send(out);
    }

    /// Stops a node: it neither ticks nor receives.
    fn crash(&mut self, name: &str) {
        let node = self.nodes.remove(&id(name)).expect("running");
        self.addrs.remove(&node.me().peer_addr);
    }

    fn node(&self, name: &str) -> &Membership {
        &self.nodes[&id(name)]
    }

    fn node_mut(&mut self, name: &str) -> &mut Membership {
        self.nodes.get_mut(&id(name)).unwrap()
    }

    fn link(a: &NodeId, b: &NodeId) -> (NodeId, NodeId) {
        if a < b {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        }
    }

    /// Drops every message between `a` and `b`, both ways.
    fn cut_link(&mut self, a: &str, b: &str) {
        self.cut.insert(Self::link(&id(a), &id(b)));
    }

    /// Cuts every link between nodes of different groups.
    fn partition(&mut self, groups: &[&[&str]]) {
        for (i, g) in groups.iter().enumerate() {
            for h in &groups[i + 1..] {
                for a in g.iter() {
                    for b in h.iter() {
                        self.cut_link(a, b);
                    }
                }
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn reachable(&self, from: &NodeId, to: &NodeId) -> bool {
        self.nodes.contains_key(to) && !self.cut.contains(&Self::link(from, to))
    }

    /// Puts envelopes on the wire; those to an unknown address or over a cut link are lost.
    fn send(&mut self, envelopes: Vec<Envelope>) {
        for e in envelopes {
            let to = match &e.to {
                Target::Node { id, addr } => {
                    // The transport connects by address: it must be the node's own.
                    assert_eq!(self.addrs.get(addr).unwrap_or(id), id, "address of {id}");
                    id.clone()
                }
                Target::Addr(addr) => match self.addrs.get(addr) {
                    Some(id) => id.clone(),
                    None => continue,
                },
            };
            if self.reachable(&e.from, &to) {
                self.queue.push_back((e.from, to, e.msg));
            }
        }
    }

    /// Delivers one message (if its link still works), sending what the receiver answers.
    fn deliver(&mut self, (from, to, msg): Msg) {
        if !self.reachable(&from, &to) {
            return;
        }
        let now = self.now;
        let out = self.nodes.get_mut(&to).unwrap().step(now, &from, msg);
        self.send(out);
    }

    fn deliver_all(&mut self) {
        while let Some(m) = self.queue.pop_front() {
            self.deliver(m);
        }
    }

    /// One gossip period: every running node ticks, then everything in flight arrives.
    fn tick(&mut self) {
        self.now = Ticks(self.now.0 + 1);
        let now = self.now;
        let mut out = Vec::new();
        for node in self.nodes.values_mut() {
            out.extend(node.tick(now));
        }
        self.send(out);
        self.deliver_all();
    }

    fn run(&mut self, ticks: u64) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    /// Runs until `done` holds, at most `max` ticks; returns the ticks it took.
    fn run_until(&mut self, max: u64, mut done: impl FnMut(&Net) -> bool) -> u64 {
        for t in 0..=max {
            if done(self) {
                return t;
            }
            self.tick();
        }
        panic!("condition not reached in {max} ticks");
    }

    fn drain_all_events(&mut self) {
        for n in self.nodes.values_mut() {
            n.drain_events();
        }
    }

    /// (observer, member) pairs where the observer has the member down.
    fn downs(&self) -> Vec<(NodeId, NodeId)> {
        let mut out = Vec::new();
        for (obs, n) in &self.nodes {
            for m in n.members() {
                if n.is_down(&m.id) {
                    out.push((obs.clone(), m.id.clone()));
                }
            }
        }
        out
    }
}

#[test]
fn heartbeats_spread_to_all_members() {
    let mut net = Net::cluster(&["a", "b", "c", "d", "e", "f"]);
    for _ in 0..50 {
        net.tick();
        for (obs, n) in &net.nodes {
            for m in n.members() {
                let age = n.heartbeat_age(&m.id, net.now).unwrap();
                assert!(age.0 <= 2, "{obs} last heard {} {age} ago", m.id);
                assert!(!n.is_suspected(&m.id));
                // Everyone's copy is at most a couple of beats behind the owner's own count.
                let own = net.nodes[&m.id].me().heartbeat;
                assert!(
                    own - m.heartbeat <= 2,
                    "{obs} has {} at {}",
                    m.id,
                    m.heartbeat
                );
            }
        }
    }
    let ring = net.node("a").ring_members();
    assert_eq!(ring.len(), 6);
    assert!(net.nodes.values().all(|n| n.ring_members() == ring));
}

#[test]
fn single_flaky_link_marks_nobody_down() {
    // Five nodes: a and b never hear each other directly, but their heartbeats go around.
    let mut net = Net::cluster(&["a", "b", "c", "d", "e"]);
    net.cut_link("a", "b");
    for _ in 0..100 {
        net.tick();
        assert_eq!(net.downs(), vec![]);
    }
    assert!(!net.node("a").is_suspected(&id("b")));

    // Two nodes and the one link between them cut: each suspects the other, but one source is
    // not enough, so neither is marked down.
    let mut net = Net::cluster(&["a", "b"]);
    net.cut_link("a", "b");
    net.run(30);
    assert!(net.node("a").is_suspected(&id("b")));
    assert!(net.node("b").is_suspected(&id("a")));
    assert_eq!(net.downs(), vec![]);
}

#[test]
fn dead_node_marked_down_when_two_sources_agree() {
    let mut net = Net::cluster(&["a", "b", "c"]);
    net.run(5);
    net.crash("c");
    let suspect_after = net.config.suspect_after.0;
    // Not before the silence has lasted suspect_after.
    net.run(suspect_after - 1);
    assert_eq!(net.downs(), vec![]);
    let took = net.run_until(3, |net| net.downs().len() == 2);
    assert!(took <= 2, "down {took} ticks after suspicion");
    for obs in ["a", "b"] {
        let n = net.node_mut(obs);
        assert!(n.is_down(&id("c")));
        let view = n.view();
        let c = view.iter().find(|v| v.member.id == id("c")).unwrap();
        assert_eq!(c.suspected_by, 2, "{obs}: itself and the other survivor");
        assert!(n.drain_events().contains(&Event::Down { id: id("c") }));
        // Still in the ring: health is not membership.
        assert_eq!(n.ring_members().len(), 3);
        assert!(n.live_members().all(|m| m.id != id("c")));
    }

    // Requiring three sources where only two can exist: suspected, never down.
    let mut net = Net::new(GossipConfig {
        down_after_sources: 3,
        ..GossipConfig::default()
    });
    for n in ["a", "b", "c"] {
        net.start(member(n, 1, MemberStatus::Up), &["a"]);
    }
    net.run(3);
    net.crash("c");
    net.run(20);
    assert!(net.node("a").is_suspected(&id("c")));
    assert_eq!(net.downs(), vec![]);
}

#[test]
fn restarted_node_with_higher_generation_replaces_old_record() {
    let mut net = Net::cluster(&["a", "b", "c"]);
    net.run(30);
    let old = net.node("a").get(&id("c")).unwrap().clone();
    assert!(old.heartbeat > 25);
    net.crash("c");
    net.run(10);
    assert!(net.node("a").is_down(&id("c")));
    net.drain_all_events();

    // The new incarnation starts from heartbeat 0 under a larger generation, on a new port.
    let mut me = member("c", 2, MemberStatus::Up);
    me.peer_addr = "c.test:7001".into();
    net.start(me, &["a"]);
    net.run(3);
    for obs in ["a", "b"] {
        let n = net.node_mut(obs);
        let c = n.get(&id("c")).unwrap().clone();
        assert_eq!(c.generation, Generation(2));
        assert!(
            c.heartbeat < old.heartbeat,
            "a lower heartbeat of a newer generation wins"
        );
        assert_eq!(c.peer_addr, "c.test:7001");
        assert!(!n.is_down(&id("c")));
        let events = n.drain_events();
        assert!(events.contains(&Event::Restarted {
            id: id("c"),
            generation: Generation(2)
        }));
        assert!(events.contains(&Event::Recovered { id: id("c") }));
    }
    assert_eq!(net.node("c").members().count(), 3);

    // Stale gossip of the old incarnation changes nothing.
    let stale = GossipMessage::Digest {
        members: vec![old],
        suspects: vec![],
    };
    let now = net.now;
    net.node_mut("a").step(now, &id("b"), stale);
    assert_eq!(
        net.node("a").get(&id("c")).unwrap().generation,
        Generation(2)
    );

    // A node that restarts with too small a generation moves past the one gossip shows.
    net.crash("b");
    net.start(member("b", 0, MemberStatus::Up), &["a"]);
    net.run(2);
    let b = net.node_mut("b");
    assert_eq!(b.generation(), Generation(2));
    assert!(b.drain_events().contains(&Event::SelfGenerationBumped {
        generation: Generation(2)
    }));
    net.run(2);
    assert_eq!(
        net.node("a").get(&id("b")).unwrap().generation,
        Generation(2)
    );
}

#[test]
fn node_back_after_partition_clears_down() {
    let mut net = Net::cluster(&["a", "b", "c", "d"]);
    net.partition(&[&["a", "b"], &["c", "d"]]);
    net.run(10);
    let mut downs = net.downs();
    downs.sort();
    let expect: Vec<(NodeId, NodeId)> = [
        ("a", "c"),
        ("a", "d"),
        ("b", "c"),
        ("b", "d"),
        ("c", "a"),
        ("c", "b"),
        ("d", "a"),
        ("d", "b"),
    ]
    .iter()
    .map(|(x, y)| (id(x), id(y)))
    .collect();
    assert_eq!(
        downs, expect,
        "each side marks the other down: two sources on each side"
    );
    net.drain_all_events();
    let epoch = net.node("a").health_epoch();

    net.heal();
    // Down members are probed, so the sides find each other without any seed.
    net.run_until(5, |net| net.downs().is_empty());
    let a = net.node_mut("a");
    assert!(a.health_epoch() > epoch);
    let events = a.drain_events();
    assert!(events.contains(&Event::Recovered { id: id("c") }));
    assert!(events.contains(&Event::Recovered { id: id("d") }));
}

#[test]
fn leave_status_spreads() {
    let mut net = Net::cluster(&["a", "b", "c", "d"]);
    let epoch = net.node("a").epoch();
    let now = net.now;
    let out = net
        .node_mut("d")
        .set_status(now, MemberStatus::Leaving)
        .unwrap();
    assert!(!out.is_empty(), "a status change is gossiped at once");
    net.send(out);
    net.run(2);
    for n in net.nodes.values() {
        assert_eq!(n.get(&id("d")).unwrap().status, MemberStatus::Leaving);
        assert_eq!(
            n.ring_members().len(),
            4,
            "leaving still owns until handed off"
        );
    }
    assert_eq!(
        net.node_mut("d").set_status(now, MemberStatus::Up),
        Err(MembershipError::StatusGoesBack {
            from: MemberStatus::Leaving,
            to: MemberStatus::Up
        })
    );

    let out = net
        .node_mut("d")
        .set_status(now, MemberStatus::Left)
        .unwrap();
    net.send(out);
    net.run(2);
    for (obs, n) in &net.nodes {
        assert_eq!(n.get(&id("d")).unwrap().status, MemberStatus::Left, "{obs}");
        assert!(n.ring_members().iter().all(|m| m.id != id("d")));
    }
    let a = net.node_mut("a");
    assert!(a.epoch() > epoch, "the ring changed");
    assert!(a.drain_events().contains(&Event::StatusChanged {
        id: id("d"),
        from: MemberStatus::Leaving,
        to: MemberStatus::Left
    }));
    // A left node that stops is not marked down: it is gone, not failed.
    net.crash("d");
    net.run(20);
    assert_eq!(net.downs(), vec![]);
}

#[test]
fn operator_remove_marks_left() {
    let mut net = Net::new(GossipConfig {
        forget_left_after: Ticks(20),
        ..GossipConfig::default()
    });
    for n in ["a", "b", "c"] {
        net.start(member(n, 1, MemberStatus::Up), &["a"]);
    }
    net.run(5);
    let stale = net.node("b").digest();
    net.crash("c");
    let now = net.now;
    assert_eq!(
        net.node_mut("a").remove(now, &id("c")),
        Err(MembershipError::NotDown(id("c"))),
        "not yet down"
    );
    net.run(8);
    assert_eq!(
        net.node_mut("a").remove(now, &id("b")),
        Err(MembershipError::NotDown(id("b")))
    );
    assert_eq!(
        net.node_mut("a").remove(now, &id("a")),
        Err(MembershipError::RemoveSelf)
    );

    let now = net.now;
    let out = net.node_mut("a").remove(now, &id("c")).unwrap();
    net.send(out);
    net.run(2);
    for obs in ["a", "b"] {
        let n = net.node(obs);
        assert_eq!(n.get(&id("c")).unwrap().status, MemberStatus::Left);
        assert!(!n.is_down(&id("c")));
        assert_eq!(n.ring_members().len(), 2);
    }
    // The removal wins over gossip of c's last own record, which has a higher heartbeat than
    // anything a had when it removed c.
    let now = net.now;
    net.node_mut("a").step(now, &id("b"), stale.clone());
    assert_eq!(
        net.node("a").get(&id("c")).unwrap().status,
        MemberStatus::Left
    );

    // Forgotten after forget_left_after; stale gossip cannot bring it back.
    net.run(20);
    for obs in ["a", "b"] {
        assert!(net.node(obs).get(&id("c")).is_none(), "{obs} forgot c");
    }
    let now = net.now;
    net.node_mut("a").step(now, &id("b"), stale);
    assert!(net.node("a").get(&id("c")).is_none());

    // Rejoining takes a new generation.
    net.start(member("c", 2, MemberStatus::Joining), &["b"]);
    net.run(3);
    for obs in ["a", "b"] {
        let c = net.node(obs).get(&id("c")).unwrap();
        assert_eq!(
            (c.generation, c.status),
            (Generation(2), MemberStatus::Joining)
        );
        assert_eq!(
            net.node(obs).ring_members().len(),
            3,
            "joining owns partitions"
        );
    }
}

#[test]
fn duplicated_and_reordered_digests_are_harmless() {
    let mut net = Net::cluster(&["a", "b", "c"]);
    let mut digests = Vec::new();
    for _ in 0..6 {
        net.run(2);
        digests.push(net.node("a").digest());
    }
    // A fresh observer that hears a's digests in order, and one that hears them backwards,
    // each twice over.
    let observer =
        || Membership::new(member("z", 1, MemberStatus::Up), GossipConfig::default(), 9).unwrap();
    let (mut in_order, mut shuffled) = (observer(), observer());
    let now = net.now;
    for d in digests.iter().chain(&digests) {
        in_order.step(now, &id("a"), d.clone());
    }
    for d in digests.iter().rev().chain(digests.iter().rev()) {
        shuffled.step(now, &id("a"), d.clone());
    }
    let table = |m: &Membership| m.members().cloned().collect::<Vec<_>>();
    assert_eq!(table(&in_order), table(&shuffled));
    assert_eq!(in_order.ring_members(), shuffled.ring_members());

    // Replaying everything again changes nothing, not even the epoch, and says nothing.
    let before = table(&shuffled);
    let epoch = shuffled.epoch();
    shuffled.drain_events();
    for d in &digests {
        let reply = shuffled.step(now, &id("a"), d.clone());
        assert_eq!(reply.len(), 1, "each digest is answered");
    }
    assert_eq!(table(&shuffled), before);
    assert_eq!(shuffled.epoch(), epoch);
    assert_eq!(shuffled.drain_events(), vec![]);

    // A reply is never answered, so gossip cannot loop.
    let GossipMessage::Digest { members, suspects } = digests[0].clone() else {
        unreachable!()
    };
    let reply = GossipMessage::DigestReply { members, suspects };
    assert_eq!(shuffled.step(now, &id("a"), reply), vec![]);

    // The wire form round-trips.
    let bytes = postcard::to_stdvec(&digests[5]).unwrap();
    assert_eq!(
        postcard::from_bytes::<GossipMessage>(&bytes).unwrap(),
        digests[5]
    );
}

#[test]
fn bogus_huge_digest_is_capped() {
    let mut a =
        Membership::new(member("a", 1, MemberStatus::Up), GossipConfig::default(), 1).unwrap();
    let mut members = vec![member("p", 1, MemberStatus::Up)];
    // Malformed records first: every one is skipped.
    let mut bad = member("bad-weight", 1, MemberStatus::Up);
    bad.weight = 0;
    members.push(bad);
    let mut bad = member("bad-addr", 1, MemberStatus::Up);
    bad.peer_addr = "x".repeat(10_000);
    members.push(bad);
    let mut bad = member("bad-rack", 1, MemberStatus::Up);
    bad.rack = "\u{1b}[2Jevil".into();
    members.push(bad);
    members.extend((0..10_000).map(|i| member(&format!("bogus-{i}"), 1, MemberStatus::Up)));
    let suspects = (0..10_000).map(|i| id(&format!("bogus-{i}"))).collect();
    let reply = a.step(
        Ticks(1),
        &id("p"),
        GossipMessage::Digest { members, suspects },
    );

    // At most MAX_MEMBERS records are read from one digest (the malformed ones among them).
    assert_eq!(a.members().count(), 1 + MAX_MEMBERS - 3);
    assert!(a.get(&id("p")).is_some());
    for bad in ["bad-weight", "bad-addr", "bad-rack"] {
        assert!(a.get(&id(bad)).is_none(), "{bad} skipped");
    }
    assert!(a.ignored_records() >= 3);
    assert!(a.drain_events().len() <= MAX_PENDING_EVENTS);
    assert!(a.events_dropped() > 0);
    let GossipMessage::DigestReply { members, .. } = &reply[0].msg else {
        panic!("a digest is answered with a reply")
    };
    assert!(members.len() <= MAX_MEMBERS);
    assert_eq!(members[0].id, id("a"), "own record first");
    // The node keeps working: its own record is intact and it still gossips.
    let out = a.tick(Ticks(2));
    assert_eq!(out.len(), 3);
    assert_eq!(a.me().status, MemberStatus::Up);
    assert_eq!(a.me().heartbeat, 1);

    // More bogus digests fill the table to its cap and no further.
    let more = (0..5_000)
        .map(|i| member(&format!("more-{i}"), 1, MemberStatus::Up))
        .collect();
    a.step(
        Ticks(3),
        &id("p"),
        GossipMessage::DigestReply {
            members: more,
            suspects: vec![],
        },
    );
    assert_eq!(a.members().count(), MAX_MEMBERS);
    assert_eq!(a.get(&id("a")).unwrap().heartbeat, 1);
}

#[test]
fn new_node_joins_through_a_seed() {
    let mut net = Net::cluster(&["a", "b", "c"]);
    let epoch = net.node("b").epoch();
    // e knows nothing but a's address; its first digest goes out as soon as the seed is added.
    net.start(member("e", 1, MemberStatus::Joining), &["a"]);
    assert_eq!(net.queue.len(), 1);
    net.deliver_all();
    assert_eq!(
        net.node("e").members().count(),
        4,
        "a's reply carries the cluster"
    );
    net.run(3);
    for n in net.nodes.values() {
        assert_eq!(n.members().count(), 4);
        assert_eq!(n.get(&id("e")).unwrap().status, MemberStatus::Joining);
        assert_eq!(n.ring_members(), net.node("a").ring_members());
    }
    assert!(net.node("b").epoch() > epoch);

    // A seed that does not answer is retried every tick while no peer is live.
    let mut lonely = Membership::new(
        member("x", 1, MemberStatus::Joining),
        GossipConfig::default(),
        3,
    )
    .unwrap();
    assert_eq!(lonely.add_seed("nowhere:1").unwrap().len(), 1);
    assert!(
        lonely.add_seed("x.test:7000").unwrap().is_empty(),
        "own address"
    );
    assert!(lonely.add_seed("").is_err());
    for t in 1..5 {
        let out = lonely.tick(Ticks(t));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].to, Target::Addr("nowhere:1".into()));
    }
}

/// One step of chaos: tick a node, deliver a random message in flight (out of order), drop one,
/// duplicate one, or move a node from `Joining` to `Up`.
#[derive(Debug, Clone)]
enum Op {
    Tick(usize),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Up(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => any::<usize>().prop_map(Op::Tick),
        4 => any::<usize>().prop_map(Op::Deliver),
        2 => any::<usize>().prop_map(Op::Drop),
        2 => any::<usize>().prop_map(Op::Duplicate),
        1 => any::<usize>().prop_map(Op::Up),
    ]
}

const NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gossip_converges_after_loss_duplication_and_reordering(
        n in 3usize..=5,
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 20..200),
    ) {
        let mut net = Net::new(GossipConfig::default());
        net.seed = seed;
        for name in &NAMES[..n] {
            net.start(member(name, 1, MemberStatus::Joining), &["n0"]);
        }
        for op in ops {
            let q = net.queue.len();
            match op {
                Op::Tick(i) => {
                    net.now = Ticks(net.now.0 + 1);
                    let now = net.now;
                    let out = net.node_mut(NAMES[i % n]).tick(now);
                    net.send(out);
                }
                Op::Deliver(i) if q > 0 => {
                    let m = net.queue.remove(i % q).unwrap();
                    net.deliver(m);
                }
                Op::Drop(i) if q > 0 => {
                    net.queue.remove(i % q);
                }
                Op::Duplicate(i) if q > 0 => {
                    let m = net.queue[i % q].clone();
                    net.queue.push_back(m);
                }
                Op::Up(i) => {
                    let now = net.now;
                    let out = net.node_mut(NAMES[i % n]).set_status(now, MemberStatus::Up).unwrap();
                    net.send(out);
                }
                _ => {}
            }
        }
        // Eventually every message gets through.
        net.run(10);
        let reference: Vec<(NodeId, Generation, MemberStatus)> = net
            .node("n0")
            .members()
            .map(|m| (m.id.clone(), m.generation, m.status))
            .collect();
        prop_assert_eq!(reference.len(), n);
        for node in net.nodes.values() {
            let table: Vec<_> = node.members().map(|m| (m.id.clone(), m.generation, m.status)).collect();
            prop_assert_eq!(&table, &reference);
            prop_assert_eq!(node.ring_members(), net.node("n0").ring_members());
        }
        prop_assert_eq!(net.downs(), vec![]);

        // Once heartbeats stop, one full exchange makes the tables identical, heartbeats too.
        let names: Vec<NodeId> = net.nodes.keys().cloned().collect();
        for _ in 0..2 {
            for x in &names {
                for y in &names {
                    if x != y {
                        let d = net.nodes[x].digest();
                        let now = net.now;
                        net.nodes.get_mut(y).unwrap().step(now, x, d);
                    }
                }
            }
        }
        let full: Vec<Member> = net.node("n0").members().cloned().collect();
        for node in net.nodes.values() {
            prop_assert_eq!(&node.members().cloned().collect::<Vec<_>>(), &full);
        }
    }
}
