//! The read coordinator: ask the N replicas, answer after `r`, then find the stale ones.

use super::message::{Envelope, Message, Read, ReadReply, Repair, ReplicaError, RequestId};
use super::quorum::{Quorum, Verdict};
use super::{Delivery, QuorumError};
use crate::{NodeId, SiblingSet};
use bytes::Bytes;
use std::collections::BTreeMap;

/// What starts a [`GetCoordinator`].
#[derive(Debug, Clone)]
pub struct GetRequest {
    pub request: RequestId,
    /// This node. It need not be a replica of the key: any node coordinates a read.
    pub coordinator: NodeId,
    pub key: Bytes,
    /// The replicas to ask: the key's N, the coordinator included when it is one (repeats are
    /// dropped), or for `local_quorum` the local data center's ([`Plan::read_targets`](super::Plan::read_targets)).
    pub replicas: Vec<NodeId>,
    /// Replies required: a count, or per data center ([`Plan::read_quorum`](super::Plan::read_quorum)).
    /// A total of 0 is taken as 1.
    pub quorum: Quorum,
    /// When the client gets its answer at the latest, in the caller's milliseconds.
    pub deadline_ms: u64,
    /// How long to keep listening for the slower replicas' replies, to repair them. Taken as at
    /// least `deadline_ms`.
    pub repair_deadline_ms: u64,
}

/// The answer a read gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetOutcome {
    /// `r` replicas replied; `set` is the merge of their replies (and of any that came in with
    /// them), in reply order in `replied`. An empty set, or one with only tombstones, means the
    /// key is missing.
    Done {
        set: SiblingSet,
        replied: Vec<NodeId>,
    },
    /// The deadline passed, or enough replicas failed that `r` was out of reach, with `got`
    /// replies of the `needed`; with `dc`, the counts of that data center's quorum.
    Failed {
        needed: usize,
        got: usize,
        dc: Option<String>,
    },
}

impl GetOutcome {
    /// The client-facing error of a failed read; `None` when done.
    pub fn error(&self) -> Option<QuorumError> {
        match self {
            GetOutcome::Done { .. } => None,
            GetOutcome::Failed { needed, got, dc } => Some(QuorumError::ReadUnavailable {
                needed: *needed,
                got: *got,
                dc: dc.clone(),
            }),
        }
    }
}

/// True when `reply` lacks something of `merged`: merging `merged` into it changes it (a
/// version it has not seen, a newer clock entry, or a later wall time of an entry). This is
/// exact, not a heuristic on clocks: a replica is repaired iff the repair would change it.
pub fn is_stale(reply: &SiblingSet, merged: &SiblingSet) -> bool {
    let mut after = reply.clone();
    after.merge(merged);
    after != *reply
}

/// Quorum bookkeeping and read repair of one read. See the [module doc](super).
#[derive(Debug, Clone)]
pub struct GetCoordinator {
    request: RequestId,
    coordinator: NodeId,
    key: Bytes,
    replicas: Vec<NodeId>,
    quorum: Quorum,
    deadline_ms: u64,
    repair_deadline_ms: u64,
    /// First reply of each replica, in arrival order.
    replies: Vec<(NodeId, SiblingSet)>,
    failed: BTreeMap<NodeId, ReplicaError>,
    /// The merge of every reply so far.
    merged: SiblingSet,
    outcome: Option<GetOutcome>,
    /// `Some` once the repair phase is over (all answered, or the repair deadline passed).
    repairs: Option<Vec<(NodeId, SiblingSet)>>,
    outbound: Vec<Envelope>,
}

impl GetCoordinator {
    /// Starts the read: queues one [`Message::Read`] per replica, the coordinator's own
    /// included (the shell answers that one locally). With `r` above the number of replicas the
    /// outcome is `Failed` at once, and the reads still go out, for repair.
    pub fn new(req: GetRequest) -> GetCoordinator {
        let mut replicas: Vec<NodeId> = Vec::with_capacity(req.replicas.len());
        for node in req.replicas {
            if !replicas.contains(&node) {
                replicas.push(node);
            }
        }
        let outbound = replicas
            .iter()
            .map(|to| Envelope {
                from: req.coordinator.clone(),
                to: to.clone(),
                msg: Message::Read(Read {
                    request: req.request,
                    key: req.key.clone(),
                }),
            })
            .collect();
        let mut get = GetCoordinator {
            request: req.request,
            coordinator: req.coordinator,
            key: req.key,
            replicas,
            quorum: Quorum {
                total: req.quorum.total.max(1),
                ..req.quorum
            },
            deadline_ms: req.deadline_ms,
            repair_deadline_ms: req.repair_deadline_ms.max(req.deadline_ms),
            replies: Vec::new(),
            failed: BTreeMap::new(),
            merged: SiblingSet::new(),
            outcome: None,
            repairs: None,
            outbound,
        };
        get.decide();
        get
    }

    pub fn request(&self) -> RequestId {
        self.request
    }

    /// This node.
    pub fn coordinator(&self) -> &NodeId {
        &self.coordinator
    }

    pub fn key(&self) -> &Bytes {
        &self.key
    }

    /// The replicas asked.
    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// Replies required in all.
    pub fn needed(&self) -> usize {
        self.quorum.total
    }

    /// Messages to send, in order; the queue is empty afterwards. Holds the reads at the start
    /// and the [`Message::Repair`]s when the repair phase ends.
    pub fn drain_outbound(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outbound)
    }

    /// Feeds a replica's reply. The first reply of each replica counts; replies from nodes
    /// that were not asked, or for another request, are ignored. Replies after the outcome are
    /// merged for read repair only (the client's answer is never changed).
    pub fn step(&mut self, from: &NodeId, reply: ReadReply) -> Delivery {
        if reply.request != self.request || !self.replicas.contains(from) {
            return Delivery::Ignored;
        }
        if self.answered(from) {
            return Delivery::Duplicate;
        }
        if self.repairs.is_some() {
            // Repairs were already computed and sent: too late even for read repair.
            return Delivery::Late;
        }
        let late = self.outcome.is_some();
        match reply.result {
            Ok(set) => {
                self.merged.merge(&set);
                self.replies.push((from.clone(), set));
            }
            Err(e) => {
                self.failed.insert(from.clone(), e);
            }
        }
        self.decide();
        if late {
            Delivery::Late
        } else {
            Delivery::Counted
        }
    }

    /// Advances time: at the deadline an undecided read fails; at the repair deadline the
    /// repairs are computed from the replies so far and queued.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms >= self.deadline_ms {
            self.judge(true);
        }
        if now_ms >= self.repair_deadline_ms && self.repairs.is_none() {
            self.finish_repair();
        }
    }

    /// The outcome, once decided. It never changes afterwards.
    pub fn outcome(&self) -> Option<&GetOutcome> {
        self.outcome.as_ref()
    }

    /// Every successful reply so far, in arrival order.
    pub fn replies(&self) -> &[(NodeId, SiblingSet)] {
        &self.replies
    }

    /// Replicas that answered with an error, and why.
    pub fn failed(&self) -> &BTreeMap<NodeId, ReplicaError> {
        &self.failed
    }

    /// The merge of every reply so far: after the outcome it can be newer than the set the
    /// client got.
    pub fn merged(&self) -> &SiblingSet {
        &self.merged
    }

    /// Replicas that have not answered yet.
    pub fn pending(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .filter(|n| !self.answered(n))
            .cloned()
            .collect()
    }

    /// Read repair: each replica whose reply lacks something of the merge of *all* replies,
    /// with that merge. Empty until [`is_done`](Self::is_done). Replicas that never answered,
    /// or answered with an error, get none: nobody knows what they hold. The same repairs are
    /// queued as [`Message::Repair`] in the outbound queue; this is for tests and metrics.
    pub fn repairs(&self) -> Vec<(NodeId, SiblingSet)> {
        self.repairs.clone().unwrap_or_default()
    }

    /// True once the repair phase is over: every replica answered, or the repair deadline
    /// passed. The outcome is always decided by then.
    pub fn is_done(&self) -> bool {
        self.repairs.is_some()
    }

    /// When the shell should next call [`tick`](Self::tick); `None` once done.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.is_done() {
            None
        } else if self.outcome.is_none() {
            Some(self.deadline_ms)
        } else {
            Some(self.repair_deadline_ms)
        }
    }

    fn answered(&self, node: &NodeId) -> bool {
        self.failed.contains_key(node) || self.replies.iter().any(|(n, _)| n == node)
    }

    fn decide(&mut self) {
        self.judge(false);
        if self.repairs.is_none() && self.pending().is_empty() {
            self.finish_repair();
        }
    }

    /// Decides if the replies so far settle it; at the deadline (`final_call`) an unmet quorum
    /// fails.
    fn judge(&mut self, final_call: bool) {
        if self.outcome.is_some() {
            return;
        }
        let replied: Vec<NodeId> = self.replies.iter().map(|(n, _)| n.clone()).collect();
        self.outcome = match self.quorum.judge(&replied, &self.pending(), final_call) {
            Verdict::Open => None,
            Verdict::Met => Some(GetOutcome::Done {
                set: self.merged.clone(),
                replied,
            }),
            Verdict::Short { needed, got, dc } => Some(GetOutcome::Failed { needed, got, dc }),
        };
    }

    fn finish_repair(&mut self) {
        let repairs: Vec<(NodeId, SiblingSet)> = self
            .replies
            .iter()
            .filter(|(_, reply)| is_stale(reply, &self.merged))
            .map(|(node, _)| (node.clone(), self.merged.clone()))
            .collect();
        for (to, set) in &repairs {
            self.outbound.push(Envelope {
                from: self.coordinator.clone(),
                to: to.clone(),
                msg: Message::Repair(Repair {
                    request: self.request,
                    key: self.key.clone(),
                    set: set.clone(),
                }),
            });
        }
        self.repairs = Some(repairs);
    }
}
