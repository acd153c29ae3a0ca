//! The write coordinator: replicate one client write and count durable acks up to `w`.

use super::message::{Envelope, Message, ReplicaError, Replicate, ReplicateAck, RequestId};
use super::quorum::{Quorum, Verdict};
use super::{Delivery, QuorumError};
use crate::{NodeId, SiblingSet};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What starts a [`PutCoordinator`]: a client write already applied and stored durably on the
/// coordinating node.
#[derive(Debug, Clone)]
pub struct PutRequest {
    pub request: RequestId,
    /// This node: it coordinates the write and holds the first durable copy.
    pub coordinator: NodeId,
    pub key: Bytes,
    /// The key's set on the coordinator after `SiblingSet::write`, as stored: what the other
    /// replicas merge in.
    pub set: SiblingSet,
    /// The other replicas of the key's preference list (the coordinator itself and repeats are
    /// dropped).
    pub others: Vec<NodeId>,
    /// Durable acks required, the coordinator's own included: a count, or per data center
    /// ([`Plan::write_quorum`](super::Plan::write_quorum)). A total of 0 is taken as 1: the
    /// local write has already happened.
    pub quorum: Quorum,
    /// When the client gets its answer at the latest, in the caller's milliseconds.
    pub deadline_ms: u64,
}

/// The answer a write gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// `w` replicas (the coordinator first, then in ack order) hold the write durably.
    Acked { acked_by: Vec<NodeId> },
    /// The deadline passed, or enough replicas refused that `w` was out of reach, with `got`
    /// durable acks (from `acked_by`) of the `needed`; with `dc`, those are the counts of that
    /// data center's quorum, the part that failed. The write was not rolled back: it is
    /// durable on `acked_by` and may be on replicas whose ack was lost or late.
    Failed {
        needed: usize,
        got: usize,
        acked_by: Vec<NodeId>,
        dc: Option<String>,
    },
}

impl PutOutcome {
    pub fn is_acked(&self) -> bool {
        matches!(self, PutOutcome::Acked { .. })
    }

    /// Replicas that had acknowledged durably when the outcome was decided.
    pub fn acked_by(&self) -> &[NodeId] {
        match self {
            PutOutcome::Acked { acked_by } | PutOutcome::Failed { acked_by, .. } => acked_by,
        }
    }

    /// The client-facing error of a failed write; `None` when acked.
    pub fn error(&self) -> Option<QuorumError> {
        match self {
            PutOutcome::Acked { .. } => None,
            PutOutcome::Failed {
                needed, got, dc, ..
            } => Some(QuorumError::WriteUnavailable {
                needed: *needed,
                got: *got,
                dc: dc.clone(),
            }),
        }
    }
}

/// Quorum bookkeeping of one write. See the [module doc](super) for the semantics and for what
/// the shell does around it.
#[derive(Debug, Clone)]
pub struct PutCoordinator {
    request: RequestId,
    coordinator: NodeId,
    key: Bytes,
    set: SiblingSet,
    others: Vec<NodeId>,
    quorum: Quorum,
    deadline_ms: u64,
    /// Durable acks in arrival order, the coordinator's own first; late ones included.
    acked: Vec<NodeId>,
    refused: BTreeMap<NodeId, ReplicaError>,
    outcome: Option<PutOutcome>,
    late_acks: usize,
    expired: bool,
    outbound: Vec<Envelope>,
}

impl PutCoordinator {
    /// Starts the write: queues one [`Message::Replicate`] per other replica. With `w = 1` the
    /// outcome is `Acked` at once (the local write is durable); with `w` above the number of
    /// replicas it is `Failed` at once. Either way the replicates still go out.
    pub fn new(req: PutRequest) -> PutCoordinator {
        let mut others: Vec<NodeId> = Vec::with_capacity(req.others.len());
        for node in req.others {
            if node != req.coordinator && !others.contains(&node) {
                others.push(node);
            }
        }
        let outbound = others
            .iter()
            .map(|to| Envelope {
                from: req.coordinator.clone(),
                to: to.clone(),
                msg: Message::Replicate(Replicate {
                    request: req.request,
                    key: req.key.clone(),
                    set: req.set.clone(),
                }),
            })
            .collect();
        let mut put = PutCoordinator {
            request: req.request,
            acked: vec![req.coordinator.clone()],
            coordinator: req.coordinator,
            key: req.key,
            set: req.set,
            others,
            quorum: Quorum {
                total: req.quorum.total.max(1),
                ..req.quorum
            },
            deadline_ms: req.deadline_ms,
            refused: BTreeMap::new(),
            outcome: None,
            late_acks: 0,
            expired: false,
            outbound,
        };
        put.decide();
        put
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

    /// The other replicas the write goes to.
    pub fn others(&self) -> &[NodeId] {
        &self.others
    }

    /// The set being replicated.
    pub fn set(&self) -> &SiblingSet {
        &self.set
    }

    /// Durable acks required in all, the coordinator's own included.
    pub fn needed(&self) -> usize {
        self.quorum.total
    }

    /// What the write needs, per data center too.
    pub fn quorum(&self) -> &Quorum {
        &self.quorum
    }

    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }

    /// Messages to send, in order; the queue is empty afterwards.
    pub fn drain_outbound(&mut self) -> Vec<Envelope> {
        std::mem::take(&mut self.outbound)
    }

    /// Feeds a replica's answer. Counts each replica once; answers from nodes that were not
    /// asked, or for another request, are ignored. After the outcome an ack is still recorded
    /// (as late) and changes nothing.
    pub fn step(&mut self, from: &NodeId, ack: ReplicateAck) -> Delivery {
        if ack.request != self.request || !self.others.contains(from) {
            return Delivery::Ignored;
        }
        if self.acked.contains(from) || self.refused.contains_key(from) {
            return Delivery::Duplicate;
        }
        let late = self.outcome.is_some();
        match ack.result {
            Ok(()) => {
                self.acked.push(from.clone());
                if late {
                    self.late_acks += 1;
                }
            }
            Err(e) => {
                self.refused.insert(from.clone(), e);
            }
        }
        if late {
            return Delivery::Late;
        }
        self.decide();
        Delivery::Counted
    }

    /// Advances time. At or past the deadline an undecided write fails with the acks it has.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms < self.deadline_ms {
            return;
        }
        self.expired = true;
        self.judge(true);
    }

    /// The outcome, once decided. It never changes afterwards.
    pub fn outcome(&self) -> Option<&PutOutcome> {
        self.outcome.as_ref()
    }

    /// Every replica that acked durably so far, late acks included; the coordinator first.
    pub fn acked_by(&self) -> &[NodeId] {
        &self.acked
    }

    /// Durable acks that came after the outcome.
    pub fn late_acks(&self) -> usize {
        self.late_acks
    }

    /// Replicas that answered that they could not store the write, and why.
    pub fn refused(&self) -> &BTreeMap<NodeId, ReplicaError> {
        &self.refused
    }

    /// Other replicas that have not answered yet.
    pub fn pending(&self) -> Vec<NodeId> {
        self.others
            .iter()
            .filter(|n| !self.acked.contains(n) && !self.refused.contains_key(n))
            .cloned()
            .collect()
    }

    /// True once there is nothing left to learn: every replica answered or the deadline
    /// passed. The shell may drop the state machine earlier, right after the outcome, if it
    /// does not want late acks in its metrics.
    pub fn is_done(&self) -> bool {
        self.outcome.is_some() && (self.expired || self.pending().is_empty())
    }

    /// When the shell should next call [`tick`](Self::tick); `None` once done.
    pub fn next_deadline(&self) -> Option<u64> {
        (!self.is_done()).then_some(self.deadline_ms)
    }

    /// Decides once the quorum is met, or once it can no longer be met because too many
    /// refused.
    fn decide(&mut self) {
        self.judge(false);
    }

    /// Decides if the answers so far settle it; at a deadline (`final_call`) an unmet quorum
    /// fails.
    fn judge(&mut self, final_call: bool) {
        if self.outcome.is_some() {
            return;
        }
        self.outcome = match self.quorum.judge(&self.acked, &self.pending(), final_call) {
            Verdict::Open => None,
            Verdict::Met => Some(PutOutcome::Acked {
                acked_by: self.acked.clone(),
            }),
            Verdict::Short { needed, got, dc } => Some(PutOutcome::Failed {
                needed,
                got,
                acked_by: self.acked.clone(),
                dc,
            }),
        };
    }
}
