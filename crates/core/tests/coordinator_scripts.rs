//! Scripted tests of the coordinator's state machines: a few replicas of one key, a network we
//! deliver, drop, duplicate and reorder by hand, and a clock we move. The harness plays the
//! tokio shell: it applies client writes locally, answers replicas' messages, and feeds replies
//! and ticks to the state machines.

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_core::coordinator::{
    route_write, Delivery, Envelope, GetCoordinator, GetOutcome, GetRequest, Message,
    PutCoordinator, PutOutcome, PutRequest, Quorum, ReadReply, ReplicaError, ReplicateAck,
    RequestId, Route,
};
use ringkv_core::{Context, Dot, NodeId, Ring, RingMember, SiblingSet};
use std::collections::{BTreeMap, BTreeSet};

const KEY: &[u8] = b"key";
/// Client deadline of every request, from its start.
const TIMEOUT_MS: u64 = 100;
/// Read-repair deadline of every read, from its start.
const REPAIR_TIMEOUT_MS: u64 = 200;

fn n(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

fn nodes(names: &[&str]) -> Vec<NodeId> {
    names.iter().map(|s| n(s)).collect()
}

/// The live values of a set, sorted.
fn values(set: &SiblingSet) -> Vec<String> {
    let mut v: Vec<String> = set
        .live()
        .map(|v| String::from_utf8(v.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    v.sort();
    v
}

fn kind(msg: &Message) -> &'static str {
    match msg {
        Message::Replicate(_) => "replicate",
        Message::ReplicateAck(_) => "ack",
        Message::Read(_) => "read",
        Message::ReadReply(_) => "reply",
        Message::Repair(_) => "repair",
        Message::ForwardPut(_) => "forward",
        Message::ForwardPutReply(_) => "forward-reply",
    }
}

/// N replicas of one key, the network between them, and the coordinators running on them.
#[derive(Clone)]
struct Sim {
    /// The key's replicas in preference-list order.
    pref: Vec<NodeId>,
    /// Each replica's durable copy of the key.
    replicas: BTreeMap<NodeId, SiblingSet>,
    /// Replicas that refuse every request (a poisoned disk, say).
    refusing: BTreeSet<NodeId>,
    /// Messages in flight.
    net: Vec<Envelope>,
    now: u64,
    next_request: u64,
    puts: BTreeMap<RequestId, PutCoordinator>,
    gets: BTreeMap<RequestId, GetCoordinator>,
    /// The dot each put's local write got.
    dots: BTreeMap<RequestId, Dot>,
}

impl Sim {
    fn new(replicas: usize) -> Sim {
        let pref: Vec<NodeId> = (1..=replicas).map(|i| n(&format!("n{i}"))).collect();
        Sim {
            replicas: pref
                .iter()
                .map(|p| (p.clone(), SiblingSet::new()))
                .collect(),
            pref,
            refusing: BTreeSet::new(),
            net: Vec::new(),
            now: 1_000,
            next_request: 1,
            puts: BTreeMap::new(),
            gets: BTreeMap::new(),
            dots: BTreeMap::new(),
        }
    }

    fn replica(&self, node: &str) -> &SiblingSet {
        &self.replicas[&n(node)]
    }

    fn request_id(&mut self) -> RequestId {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        id
    }

    /// A client write through `via`, as the shell does it: apply locally with a new dot over
    /// `context` (blind = the local context), store it, then start the coordinator.
    fn put(&mut self, via: &str, value: &str, context: Option<Context>, w: usize) -> RequestId {
        let me = n(via);
        let now = self.now;
        let request = self.request_id();
        let set = self.replicas.get_mut(&me).expect("writes go to a replica");
        let context = context.unwrap_or_else(|| set.context());
        let dot = set.write(&me, &context, Some(Bytes::from(value.to_string())), now);
        let mut put = PutCoordinator::new(PutRequest {
            request,
            coordinator: me.clone(),
            key: Bytes::from_static(KEY),
            set: set.clone(),
            others: self.pref.clone(),
            quorum: Quorum::count(w),
            deadline_ms: now + TIMEOUT_MS,
        });
        self.net.extend(put.drain_outbound());
        self.puts.insert(request, put);
        self.dots.insert(request, dot);
        request
    }

    /// A client read through `via` (a replica or not). The read addressed to `via` itself is
    /// answered locally at once, as the shell does.
    fn get(&mut self, via: &str, r: usize) -> RequestId {
        let request = self.request_id();
        let get = GetCoordinator::new(GetRequest {
            request,
            coordinator: n(via),
            key: Bytes::from_static(KEY),
            replicas: self.pref.clone(),
            quorum: Quorum::count(r),
            deadline_ms: self.now + TIMEOUT_MS,
            repair_deadline_ms: self.now + REPAIR_TIMEOUT_MS,
        });
        self.gets.insert(request, get);
        self.flush_get(request);
        request
    }

    fn put_sm(&self, id: RequestId) -> &PutCoordinator {
        &self.puts[&id]
    }

    fn get_sm(&self, id: RequestId) -> &GetCoordinator {
        &self.gets[&id]
    }

    fn put_outcome(&self, id: RequestId) -> Option<PutOutcome> {
        self.puts[&id].outcome().cloned()
    }

    fn get_outcome(&self, id: RequestId) -> Option<GetOutcome> {
        self.gets[&id].outcome().cloned()
    }

    /// The set a finished read returned.
    fn read_set(&self, id: RequestId) -> SiblingSet {
        match self.get_outcome(id) {
            Some(GetOutcome::Done { set, .. }) => set,
            other => panic!("read {id} not done: {other:?}"),
        }
    }

    /// Moves a read's outbound messages to the network, answering its own replica locally.
    fn flush_get(&mut self, id: RequestId) {
        loop {
            let get = self.gets.get_mut(&id).unwrap();
            let out = get.drain_outbound();
            if out.is_empty() {
                return;
            }
            for env in out {
                if env.from == env.to && self.replicas.contains_key(&env.to) {
                    self.handle(env);
                } else {
                    self.net.push(env);
                }
            }
        }
    }

    fn position(&self, kind_: &str, from: &str, to: &str) -> usize {
        self.net
            .iter()
            .position(|e| kind(&e.msg) == kind_ && e.from == n(from) && e.to == n(to))
            .unwrap_or_else(|| panic!("no {kind_} {from} -> {to} in flight: {:?}", self.net))
    }

    /// Delivers the first matching message; returns what the state machine made of a reply.
    fn deliver(&mut self, kind_: &str, from: &str, to: &str) -> Option<Delivery> {
        let at = self.position(kind_, from, to);
        let env = self.net.remove(at);
        self.handle(env)
    }

    /// Loses the first matching message.
    fn drop(&mut self, kind_: &str, from: &str, to: &str) {
        let at = self.position(kind_, from, to);
        self.net.remove(at);
    }

    /// Copies the first matching message: it will arrive twice.
    fn duplicate(&mut self, kind_: &str, from: &str, to: &str) {
        let at = self.position(kind_, from, to);
        let copy = self.net[at].clone();
        self.net.push(copy);
    }

    /// Delivers everything in flight, oldest first, until the network is empty.
    fn deliver_all(&mut self) {
        while !self.net.is_empty() {
            let env = self.net.remove(0);
            self.handle(env);
        }
    }

    fn in_flight(&self, kind_: &str) -> Vec<(NodeId, NodeId)> {
        self.net
            .iter()
            .filter(|e| kind(&e.msg) == kind_)
            .map(|e| (e.from.clone(), e.to.clone()))
            .collect()
    }

    /// Moves the clock and ticks every state machine.
    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        for put in self.puts.values_mut() {
            put.tick(now);
        }
        let ids: Vec<RequestId> = self.gets.keys().copied().collect();
        for id in ids {
            self.gets.get_mut(&id).unwrap().tick(now);
            self.flush_get(id);
        }
    }

    /// One message arrives at its destination: a replica's handler or a coordinator.
    fn handle(&mut self, env: Envelope) -> Option<Delivery> {
        let (from, to) = (env.from, env.to);
        let refuses = self.refusing.contains(&to);
        match env.msg {
            Message::Replicate(m) => {
                let result = if refuses {
                    Err(ReplicaError::Storage("disk poisoned".into()))
                } else {
                    let local = &self.replicas[&to];
                    let merged = ringkv_core::coordinator::apply_replicate(local, &m.set);
                    self.replicas.insert(to.clone(), merged);
                    Ok(())
                };
                self.net.push(Envelope {
                    from: to,
                    to: from,
                    msg: Message::ReplicateAck(ReplicateAck {
                        request: m.request,
                        result,
                    }),
                });
                None
            }
            Message::Read(m) => {
                let result = if refuses {
                    Err(ReplicaError::Storage("disk poisoned".into()))
                } else {
                    Ok(self.replicas[&to].clone())
                };
                let reply = Envelope {
                    from: to.clone(),
                    to: from.clone(),
                    msg: Message::ReadReply(ReadReply {
                        request: m.request,
                        result,
                    }),
                };
                if from == to {
                    self.handle(reply)
                } else {
                    self.net.push(reply);
                    None
                }
            }
            Message::Repair(m) => {
                if !refuses {
                    self.replicas.get_mut(&to).unwrap().merge(&m.set);
                }
                None
            }
            Message::ReplicateAck(ack) => {
                let put = self.puts.get_mut(&ack.request).expect("ack for a put");
                assert_eq!(put.coordinator(), &to);
                Some(put.step(&from, ack))
            }
            Message::ReadReply(reply) => {
                let id = reply.request;
                let get = self.gets.get_mut(&id).expect("reply for a get");
                assert_eq!(get.coordinator(), &to);
                let delivery = get.step(&from, reply);
                self.flush_get(id);
                Some(delivery)
            }
            Message::ForwardPut(_) | Message::ForwardPutReply(_) => {
                unreachable!("writes are not forwarded in these scripts")
            }
        }
    }
}

#[test]
fn put_acked_at_w_2_of_3() {
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 2);
    assert_eq!(
        sim.put_outcome(put),
        None,
        "the local write is one ack of two"
    );
    assert_eq!(
        sim.in_flight("replicate"),
        vec![(n("n1"), n("n2")), (n("n1"), n("n3"))]
    );

    sim.deliver("replicate", "n1", "n2");
    assert_eq!(sim.deliver("ack", "n2", "n1"), Some(Delivery::Counted));
    assert_eq!(
        sim.put_outcome(put),
        Some(PutOutcome::Acked {
            acked_by: nodes(&["n1", "n2"])
        })
    );
    assert_eq!(values(sim.replica("n2")), vec!["v1"]);
    assert!(!sim.put_sm(put).is_done(), "n3 has not answered yet");

    // The outcome cancels nothing: n3 still gets the write.
    sim.deliver_all();
    assert_eq!(values(sim.replica("n3")), vec!["v1"]);
    assert!(sim.put_sm(put).is_done());
    assert_eq!(sim.put_sm(put).next_deadline(), None);
}

#[test]
fn put_with_w_1_is_acked_by_the_local_write_alone() {
    let mut sim = Sim::new(3);
    let put = sim.put("n2", "v1", None, 1);
    assert_eq!(
        sim.put_outcome(put),
        Some(PutOutcome::Acked {
            acked_by: nodes(&["n2"])
        })
    );
    assert_eq!(sim.in_flight("replicate").len(), 2, "still replicated");
}

#[test]
fn put_fails_when_only_one_replica_answers_and_says_how_many() {
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 2);
    sim.drop("replicate", "n1", "n2");
    // n3 stores the write, but its ack is lost.
    sim.deliver("replicate", "n1", "n3");
    sim.drop("ack", "n3", "n1");

    sim.advance(TIMEOUT_MS - 1);
    assert_eq!(sim.put_outcome(put), None);
    assert_eq!(sim.put_sm(put).next_deadline(), Some(1_000 + TIMEOUT_MS));
    sim.advance(1);
    let outcome = sim.put_outcome(put).unwrap();
    assert_eq!(
        outcome,
        PutOutcome::Failed {
            needed: 2,
            got: 1,
            acked_by: nodes(&["n1"]),
            dc: None
        }
    );
    let error = outcome.error().unwrap();
    assert_eq!(
        error.to_string(),
        "not enough replicas acknowledged: needed 2, got 1; \
         the write may still have been stored on some replicas"
    );
    assert_eq!((error.needed(), error.got()), (2, 1));
    assert!(error.is_retryable());
    // No rollback: the "failed" write is on two replicas, and a read finds it.
    assert_eq!(values(sim.replica("n1")), vec!["v1"]);
    assert_eq!(values(sim.replica("n3")), vec!["v1"]);
    let get = sim.get("n2", 2);
    sim.deliver("read", "n2", "n3");
    sim.deliver("reply", "n3", "n2");
    assert_eq!(values(&sim.read_set(get)), vec!["v1"]);
}

#[test]
fn put_fails_early_when_refusals_put_w_out_of_reach() {
    let mut sim = Sim::new(3);
    sim.refusing.insert(n("n2"));
    let put = sim.put("n1", "v1", None, 3);
    sim.deliver("replicate", "n1", "n2");
    assert_eq!(sim.deliver("ack", "n2", "n1"), Some(Delivery::Counted));
    // 1 ack + 1 pending < 3: no need to wait for the deadline.
    assert_eq!(
        sim.put_outcome(put),
        Some(PutOutcome::Failed {
            needed: 3,
            got: 1,
            acked_by: nodes(&["n1"]),
            dc: None
        })
    );
    assert!(sim.put_sm(put).refused().contains_key(&n("n2")));
    sim.deliver("replicate", "n1", "n3");
    assert_eq!(sim.deliver("ack", "n3", "n1"), Some(Delivery::Late));
    assert_eq!(sim.put_outcome(put).unwrap().acked_by(), nodes(&["n1"]));
}

#[test]
fn put_with_w_above_the_replicas_fails_at_once() {
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 4);
    assert_eq!(
        sim.put_outcome(put),
        Some(PutOutcome::Failed {
            needed: 4,
            got: 1,
            acked_by: nodes(&["n1"]),
            dc: None
        })
    );
}

#[test]
fn duplicate_ack_counts_once() {
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 3);
    // The replicate itself arrives twice: merging twice changes nothing, n2 acks twice.
    sim.duplicate("replicate", "n1", "n2");
    sim.deliver("replicate", "n1", "n2");
    let after_one = sim.replica("n2").clone();
    sim.deliver("replicate", "n1", "n2");
    assert_eq!(sim.replica("n2"), &after_one);
    assert_eq!(sim.deliver("ack", "n2", "n1"), Some(Delivery::Counted));
    assert_eq!(sim.deliver("ack", "n2", "n1"), Some(Delivery::Duplicate));
    assert_eq!(sim.put_outcome(put), None, "two distinct acks of three");
    assert_eq!(sim.put_sm(put).acked_by(), nodes(&["n1", "n2"]));
    assert_eq!(sim.put_sm(put).pending(), nodes(&["n3"]));

    // An ack from a node that was not asked, or for another request, is ignored.
    let stray = ReplicateAck {
        request: put,
        result: Ok(()),
    };
    let sm = sim.puts.get_mut(&put).unwrap();
    assert_eq!(sm.step(&n("n9"), stray.clone()), Delivery::Ignored);
    assert_eq!(sm.step(&n("n1"), stray), Delivery::Ignored);
    let other = ReplicateAck {
        request: RequestId(999),
        result: Ok(()),
    };
    assert_eq!(sm.step(&n("n3"), other), Delivery::Ignored);
    assert_eq!(sim.put_outcome(put), None);

    sim.deliver("replicate", "n1", "n3");
    sim.deliver("ack", "n3", "n1");
    assert_eq!(
        sim.put_outcome(put),
        Some(PutOutcome::Acked {
            acked_by: nodes(&["n1", "n2", "n3"])
        })
    );
}

#[test]
fn late_ack_after_outcome_changes_nothing() {
    // After Acked.
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 2);
    sim.deliver("replicate", "n1", "n3");
    sim.deliver("ack", "n3", "n1");
    let acked = sim.put_outcome(put).unwrap();
    assert_eq!(acked.acked_by(), nodes(&["n1", "n3"]));
    sim.deliver("replicate", "n1", "n2");
    assert_eq!(sim.deliver("ack", "n2", "n1"), Some(Delivery::Late));
    assert_eq!(sim.put_outcome(put), Some(acked));
    assert_eq!(sim.put_sm(put).acked_by(), nodes(&["n1", "n3", "n2"]));
    assert_eq!(sim.put_sm(put).late_acks(), 1);
    assert!(sim.put_sm(put).is_done());

    // After Failed at the deadline: the acks that come later do not turn it into a success.
    let mut sim = Sim::new(3);
    let put = sim.put("n1", "v1", None, 2);
    sim.advance(TIMEOUT_MS);
    let failed = sim.put_outcome(put).unwrap();
    assert!(!failed.is_acked());
    sim.deliver_all();
    assert_eq!(sim.put_outcome(put), Some(failed));
    assert_eq!(sim.put_sm(put).late_acks(), 2);
    assert_eq!(values(sim.replica("n2")), vec!["v1"]);
}

/// n1 holds v1; n2 and n3 each hold a different write made over v1 that never replicated.
fn diverged() -> Sim {
    let mut sim = Sim::new(3);
    sim.put("n1", "v1", None, 3);
    sim.deliver_all();
    let v1 = sim.replica("n1").context();
    sim.put("n2", "a", Some(v1.clone()), 1);
    sim.put("n3", "b", Some(v1), 1);
    sim.net.clear();
    sim
}

#[test]
fn get_merges_r_replies() {
    let mut sim = diverged();
    let get = sim.get("n2", 2);
    assert_eq!(sim.get_outcome(get), None, "only the local reply so far");
    assert_eq!(sim.get_sm(get).replies().len(), 1);
    sim.deliver("read", "n2", "n3");
    assert_eq!(sim.deliver("reply", "n3", "n2"), Some(Delivery::Counted));
    let Some(GetOutcome::Done { set, replied }) = sim.get_outcome(get) else {
        panic!("read should be done");
    };
    assert_eq!(replied, nodes(&["n2", "n3"]));
    assert_eq!(
        values(&set),
        vec!["a", "b"],
        "concurrent writes are siblings"
    );
    // The context covers both siblings and v1.
    let ctx = set.context();
    for v in set.versions() {
        assert!(ctx.clock().get(&v.dot.node) >= v.dot.counter);
    }
    assert_eq!(ctx.clock().get(&n("n1")), 1);

    // n1's stale v1 comes in late: it is for read repair only, the answer stays.
    sim.deliver("read", "n2", "n1");
    assert_eq!(sim.deliver("reply", "n1", "n2"), Some(Delivery::Late));
    assert_eq!(sim.read_set(get), set);
}

#[test]
fn get_times_out_with_count() {
    let mut sim = diverged();
    let get = sim.get("n1", 2);
    sim.drop("read", "n1", "n2");
    sim.deliver("read", "n1", "n3");
    sim.drop("reply", "n3", "n1");
    sim.advance(TIMEOUT_MS - 1);
    assert_eq!(sim.get_outcome(get), None);
    sim.advance(1);
    let outcome = sim.get_outcome(get).unwrap();
    assert_eq!(
        outcome,
        GetOutcome::Failed {
            needed: 2,
            got: 1,
            dc: None
        }
    );
    assert_eq!(
        outcome.error().unwrap().to_string(),
        "not enough replicas answered: needed 2, got 1"
    );

    // A coordinator outside the preference list, with every read lost, got none.
    let get = sim.get("n9", 1);
    sim.net.clear();
    sim.advance(TIMEOUT_MS);
    assert_eq!(
        sim.get_outcome(get),
        Some(GetOutcome::Failed {
            needed: 1,
            got: 0,
            dc: None
        })
    );
}

#[test]
fn get_fails_early_when_errors_put_r_out_of_reach() {
    let mut sim = diverged();
    sim.refusing.insert(n("n2"));
    sim.refusing.insert(n("n3"));
    let get = sim.get("n1", 2);
    sim.deliver("read", "n1", "n2");
    sim.deliver("reply", "n2", "n1");
    assert_eq!(sim.get_outcome(get), None, "n3 may still answer");
    sim.deliver("read", "n1", "n3");
    sim.deliver("reply", "n3", "n1");
    assert_eq!(sim.get_sm(get).failed().len(), 2);
    assert_eq!(
        sim.get_outcome(get),
        Some(GetOutcome::Failed {
            needed: 2,
            got: 1,
            dc: None
        })
    );
}

#[test]
fn read_repair_sends_merged_set_only_to_stale_replicas() {
    let mut sim = Sim::new(5);
    // v1 reaches n1..n4; n5 never sees the key.
    sim.put("n1", "v1", None, 4);
    sim.drop("replicate", "n1", "n5");
    sim.deliver_all();
    // v2 over v1 reaches n1 and n2 only.
    sim.put("n1", "v2", None, 2);
    sim.deliver("replicate", "n1", "n2");
    sim.net.clear();
    assert_eq!(values(sim.replica("n3")), vec!["v1"]);
    assert!(sim.replica("n5").versions().is_empty());

    let get = sim.get("n2", 2);
    sim.drop("read", "n2", "n4"); // n4 never answers
    sim.deliver("read", "n2", "n3");
    sim.deliver("reply", "n3", "n2");
    assert_eq!(values(&sim.read_set(get)), vec!["v2"], "answered at r = 2");
    assert!(
        sim.in_flight("repair").is_empty(),
        "repair waits for the rest"
    );
    sim.deliver("read", "n2", "n1");
    sim.deliver("reply", "n1", "n2");
    sim.deliver("read", "n2", "n5");
    sim.deliver("reply", "n5", "n2");
    assert!(!sim.get_sm(get).is_done(), "n4 may still answer");
    assert_eq!(
        sim.get_sm(get).next_deadline(),
        Some(1_000 + REPAIR_TIMEOUT_MS)
    );

    sim.advance(REPAIR_TIMEOUT_MS);
    assert!(sim.get_sm(get).is_done());
    let merged = sim.replica("n1").clone();
    assert_eq!(
        sim.get_sm(get).repairs(),
        vec![(n("n3"), merged.clone()), (n("n5"), merged.clone())],
        "n3 is behind and n5 lacks the key; n1 and n2 are current; n4 never answered"
    );
    assert_eq!(
        sim.in_flight("repair"),
        vec![(n("n2"), n("n3")), (n("n2"), n("n5"))]
    );
    sim.deliver_all();
    for node in ["n1", "n2", "n3", "n5"] {
        assert_eq!(sim.replica(node), &merged, "{node} repaired");
    }
    assert_eq!(
        values(sim.replica("n4")),
        vec!["v1"],
        "no answer, no repair"
    );
}

#[test]
fn read_repair_ends_when_every_replica_answered_and_skips_agreeing_ones() {
    let mut sim = Sim::new(3);
    sim.put("n1", "v1", None, 3);
    sim.deliver_all();
    let get = sim.get("n3", 2);
    sim.deliver_all();
    assert!(sim.get_sm(get).is_done(), "all answered: no need to wait");
    assert!(sim.get_sm(get).repairs().is_empty());
    assert!(sim.in_flight("repair").is_empty());
    assert_eq!(sim.get_sm(get).next_deadline(), None);
}

#[test]
fn read_repair_uses_replies_that_came_after_the_outcome() {
    // The client got the two stale replies; the third is newer and repairs the other two.
    let mut sim = Sim::new(3);
    sim.put("n1", "v1", None, 3);
    sim.deliver_all();
    sim.put("n1", "v2", None, 1);
    sim.net.clear();
    let get = sim.get("n2", 2);
    sim.deliver("read", "n2", "n3");
    sim.deliver("reply", "n3", "n2");
    assert_eq!(
        values(&sim.read_set(get)),
        vec!["v1"],
        "r = 2 met by stale replicas"
    );
    sim.deliver("read", "n2", "n1");
    sim.deliver("reply", "n1", "n2");
    let repaired: Vec<NodeId> = sim
        .get_sm(get)
        .repairs()
        .into_iter()
        .map(|(node, set)| {
            assert_eq!(values(&set), vec!["v2"]);
            node
        })
        .collect();
    assert_eq!(repaired, nodes(&["n2", "n3"]));
    // The repair for the coordinator's own replica is addressed to itself; the shell applies it
    // locally.
    sim.deliver_all();
    assert_eq!(values(sim.replica("n2")), vec!["v2"]);
}

#[test]
fn concurrent_coordinators_produce_siblings_resolved_by_context() {
    let mut base = Sim::new(3);
    base.put("n1", "v0", None, 3);
    base.deliver_all();
    let read = base.get("n3", 2);
    base.deliver_all();
    let ctx = base.read_set(read).context();

    // Two clients write over the same read through two coordinators, concurrently.
    let a = base.put("n1", "a", Some(ctx.clone()), 2);
    let b = base.put("n2", "b", Some(ctx), 2);
    // Replication interleaved: each coordinator's replicate reaches the other before its own
    // ack comes back, and n3 gets b first.
    base.deliver("replicate", "n2", "n3");
    base.deliver("replicate", "n1", "n2");
    base.deliver("replicate", "n2", "n1");
    base.deliver("replicate", "n1", "n3");
    base.deliver("ack", "n3", "n2");
    base.deliver("ack", "n2", "n1");
    assert!(base.put_outcome(a).unwrap().is_acked());
    assert!(base.put_outcome(b).unwrap().is_acked());
    base.deliver_all();

    let read = base.get("n3", 2);
    base.deliver("read", "n3", "n1");
    base.deliver("reply", "n1", "n3");
    let siblings = base.read_set(read);
    assert_eq!(values(&siblings), vec!["a", "b"]);
    assert_eq!(siblings.versions().len(), 2, "v0 is superseded by both");
    let resolve = siblings.context();

    for via in ["n1", "n2"] {
        let mut sim = base.clone();
        let put = sim.put(via, "resolved", Some(resolve.clone()), 2);
        sim.deliver_all();
        assert!(sim.put_outcome(put).unwrap().is_acked());
        for node in ["n1", "n2", "n3"] {
            let set = sim.replica(node);
            assert_eq!(values(set), vec!["resolved"], "{node}, resolved via {via}");
            assert_eq!(
                set.versions().len(),
                1,
                "{node}: no siblings, no tombstones"
            );
        }
    }
}

#[test]
fn route_write_forwards_when_not_in_preference_list() {
    let members: Vec<RingMember> = (1..=5)
        .map(|i| RingMember::new(n(&format!("n{i}")), 1, "dc", "rack"))
        .collect();
    let ring = Ring::build(&members, 64).unwrap();
    let pref = ring.preference_list_for_key(KEY, 3);
    assert_eq!(pref.len(), 3);
    for m in &members {
        let route = route_write(&pref, &m.id);
        if pref.contains(&m.id) {
            assert_eq!(route, Route::Local, "{} is a replica", m.id);
        } else {
            assert_eq!(route, Route::Forward(pref[0].clone()), "{} is not", m.id);
        }
    }
    assert_eq!(route_write(&[], &n("n1")), Route::NoReplica);
}

/// A tiny deterministic generator for delivery order (the seed comes from proptest).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

impl Sim {
    /// Delivers one random message in flight.
    fn deliver_random(&mut self, rng: &mut XorShift) {
        let at = rng.below(self.net.len());
        let env = self.net.remove(at);
        self.handle(env);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// R + W > N, no failures, messages in any order: a read started after a write was acked
    /// returns that write, even with older writes' and reads' messages still in flight.
    #[test]
    fn r_plus_w_over_n_reads_latest_write(
        replicas in 3usize..=5,
        levels in any::<u16>(),
        ops in prop::collection::vec((0usize..5, any::<bool>(), 0usize..6, 0usize..4), 1..10),
        seed in any::<u64>(),
    ) {
        let w = 1 + levels as usize % replicas;
        // r in (n - w, n]: every choice with r + w > n.
        let r = replicas - w + 1 + (levels as usize / replicas) % w;
        prop_assert!(r + w > replicas && r <= replicas);
        let mut rng = XorShift(seed | 1);
        let mut sim = Sim::new(replicas);
        let mut last_read: Option<Context> = None;
        for (i, (via, with_context, reader, linger)) in ops.into_iter().enumerate() {
            let via = format!("n{}", 1 + via % replicas);
            let context = if with_context { last_read.clone() } else { None };
            let put = sim.put(&via, &format!("v{i}"), context, w);
            while sim.put_outcome(put).is_none() {
                sim.deliver_random(&mut rng);
            }
            prop_assert!(sim.put_outcome(put).unwrap().is_acked());
            let dot = sim.dots[&put].clone();
            // A few more deliveries; the rest stay in flight across the read.
            for _ in 0..linger {
                if !sim.net.is_empty() {
                    sim.deliver_random(&mut rng);
                }
            }
            // Any node reads, a replica or not (n0 is outside the preference list).
            let reader = if reader >= replicas { "n0".to_string() } else { format!("n{}", 1 + reader) };
            let get = sim.get(&reader, r);
            while sim.get_outcome(get).is_none() {
                sim.deliver_random(&mut rng);
            }
            let set = sim.read_set(get);
            let found = set.versions().iter().find(|v| v.dot == dot);
            prop_assert!(found.is_some(), "read at r={} after w={} of n={} missed {:?}: {:?}", r, w, replicas, dot, set);
            let expected = format!("v{i}");
            prop_assert_eq!(found.unwrap().value.as_deref(), Some(expected.as_bytes()));
            last_read = Some(set.context());
        }
        // Heal: deliver everything, then a read of all N repairs every replica to one set.
        sim.deliver_all();
        let get = sim.get("n1", replicas);
        sim.deliver_all();
        prop_assert!(sim.get_sm(get).is_done());
        let first = sim.replica("n1").clone();
        for set in sim.replicas.values() {
            prop_assert_eq!(set, &first);
        }
    }
}
