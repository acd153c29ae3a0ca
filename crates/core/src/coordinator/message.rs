//! The peer messages of the write and read paths, as plain data.
//!
//! Every message travels in an [`Envelope`] (`from`, `to`, [`Message`]). The peer transport (the
//! tokio shell) frames, authenticates and multiplexes them; this file only says what they mean.
//! A message belongs to one client request, named by a [`RequestId`] that the *coordinating*
//! node allocated: replies carry it back so the coordinator's shell can hand them to the right
//! state machine. Request ids are unique per coordinating node only; `(coordinator, request)`
//! is unique in the cluster.
//!
//! Nothing here assumes a reliable network. Every message may be lost, duplicated or reordered;
//! each variant's doc says what that does. In short: sibling-set merges are idempotent and
//! commutative, so a duplicated or reordered `Replicate`/`Repair` is harmless, and a lost one is
//! a replica that stays stale until read repair or anti-entropy reaches it; a duplicated reply
//! counts once; a lost reply is a replica that did not answer.

use crate::{NodeId, SiblingSet};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

use super::{Need, PutOutcome};

/// One request's id, allocated by the node that coordinates it (a per-node counter is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// A message and its two ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: NodeId,
    pub msg: Message,
}

/// Why a replica could not do what it was asked. The coordinator only counts it as "this replica
/// will not answer yes"; the reason is for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// Storage failed, is full, or is poisoned after a failed fsync (fail-stop for writes).
    #[error("replica storage error: {0}")]
    Storage(String),
    /// The replica is shutting down.
    #[error("replica is shutting down")]
    ShuttingDown,
    /// The request was malformed or over a limit on the replica (e.g. too many siblings).
    #[error("replica rejected the request: {0}")]
    Rejected(String),
}

/// The peer messages of the read and write paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// **Coordinator -> each other replica of the key**, once, when a
    /// [`PutCoordinator`](super::PutCoordinator) starts (after the coordinator stored the write
    /// locally and durably). The replica merges `set` into its own copy
    /// ([`apply_replicate`](super::apply_replicate)), makes the result durable, then answers
    /// [`Message::ReplicateAck`].
    ///
    /// *Lost*: that replica never acks; the write may fail to reach `w` and the replica stays
    /// behind until read repair, hinted handoff or anti-entropy brings it the version.
    /// *Duplicated or reordered*: merging twice, or merging an older set after a newer one,
    /// changes nothing (the merge is idempotent and commutative); the second ack counts once.
    Replicate(Replicate),
    /// **Replica -> coordinator**, answering a `Replicate`, only *after* the merged set is
    /// durable (`ok`), or with the reason it could not store it.
    ///
    /// *Lost*: the coordinator counts that replica as not having acked, although it did store
    /// the write; this is one way a failed write is still stored. *Duplicated*: counts once.
    /// *After the outcome*: recorded as a late ack, changes nothing.
    ReplicateAck(ReplicateAck),
    /// **Read coordinator -> each of the key's N replicas**, once, when a
    /// [`GetCoordinator`](super::GetCoordinator) starts. Includes the coordinator itself when it
    /// is a replica; its shell answers that one locally without the network. The replica answers
    /// [`Message::ReadReply`] with its current set (empty if it has never seen the key). Reads
    /// change nothing, so a duplicate is answered twice and the second answer is ignored.
    ///
    /// *Lost*: that replica does not answer; the read may miss `r`, and read repair skips it.
    Read(Read),
    /// **Replica -> read coordinator**, answering a `Read`: the replica's whole sibling set for
    /// the key (what it holds now, durable or not), or why it could not read it.
    ///
    /// *Lost*: as if the replica did not answer. *Duplicated*: the first copy counts. *After
    /// the outcome*: still used, to find stale replicas for read repair.
    ReadReply(ReadReply),
    /// **Read coordinator -> a stale replica**, after the read: the merge of every reply, for a
    /// replica whose own reply lacked some of it. Fire and forget: the replica merges it like a
    /// `Replicate` and sends no answer.
    ///
    /// *Lost*: the replica stays stale until a later read or anti-entropy repairs it.
    /// *Duplicated or reordered*: harmless, for the same reason as `Replicate`.
    Repair(Repair),
    /// **A node outside the key's preference list -> a node on it** ([`super::route_write`]):
    /// a client write, to be coordinated there. The receiver coordinates it as its own client
    /// write (local write with a new dot, then a `PutCoordinator`) and answers
    /// [`Message::ForwardPutReply`]. It never forwards again, even if its ring view says it is
    /// not a replica: views converge through gossip, and a second hop could loop.
    ///
    /// *Lost*: the forwarder times out and tells its client the write may or may not have been
    /// stored (it was not, in this case). *Duplicated*: the write is applied twice, as two
    /// versions over the same context: two siblings with the same value, resolved by the next
    /// write with a context. Transports should not duplicate it; no dedup is kept here.
    ForwardPut(ForwardPut),
    /// **Coordinator -> forwarder**, once the forwarded write's outcome is decided: the key's
    /// set on the coordinator after the write (its context is what the client gets back) and
    /// the quorum outcome.
    ///
    /// *Lost*: the forwarder times out; its client is told the write may have been stored.
    /// *Duplicated*: the forwarder answers its client once and ignores the rest.
    ForwardPutReply(ForwardPutReply),
}

/// See [`Message::Replicate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicate {
    pub request: RequestId,
    pub key: Bytes,
    /// The coordinator's whole set for the key after the write, not just the new version: the
    /// replica may have missed earlier writes too.
    pub set: SiblingSet,
}

/// See [`Message::ReplicateAck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateAck {
    pub request: RequestId,
    /// `Ok` only once the merged set is durable on the replica.
    pub result: Result<(), ReplicaError>,
}

/// See [`Message::Read`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    pub request: RequestId,
    pub key: Bytes,
}

/// See [`Message::ReadReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    pub request: RequestId,
    /// The replica's set for the key; empty when it has never seen it.
    pub result: Result<SiblingSet, ReplicaError>,
}

/// See [`Message::Repair`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub request: RequestId,
    pub key: Bytes,
    pub set: SiblingSet,
}

/// See [`Message::ForwardPut`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPut {
    /// The forwarder's request id, echoed in the reply.
    pub request: RequestId,
    pub key: Bytes,
    /// The value, or `None` for a delete (a tombstone).
    pub value: Option<Bytes>,
    /// The client's causal context, encoded as the client sent it ([`crate::Context::encode`]);
    /// the coordinator decodes (and so re-validates) it. `None` is a blind write: the
    /// coordinator uses its own current context for the key.
    pub context: Option<String>,
    /// What the write needs, resolved from the client's level by the forwarder: a count, or a
    /// data-center rule (for `local_quorum`, the forwarder's data center, where the client is).
    pub need: Need,
    /// What is left of the client's time budget, in milliseconds: the coordinator's deadline is
    /// its own `now + timeout_ms` (clocks are not compared across nodes).
    pub timeout_ms: u64,
}

/// See [`Message::ForwardPutReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardPutReply {
    pub request: RequestId,
    pub result: Result<ForwardedPut, ReplicaError>,
}

/// What a forwarded write did on its coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedPut {
    /// The key's set on the coordinator right after the local write.
    pub set: SiblingSet,
    pub outcome: PutOutcome,
}

impl Message {
    /// The request this message belongs to.
    pub fn request(&self) -> RequestId {
        match self {
            Message::Replicate(m) => m.request,
            Message::ReplicateAck(m) => m.request,
            Message::Read(m) => m.request,
            Message::ReadReply(m) => m.request,
            Message::Repair(m) => m.request,
            Message::ForwardPut(m) => m.request,
            Message::ForwardPutReply(m) => m.request,
        }
    }

    /// True for the messages a coordinator's state machine consumes (the rest are handled by
    /// the receiving replica's shell).
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            Message::ReplicateAck(_) | Message::ReadReply(_) | Message::ForwardPutReply(_)
        )
    }
}

/// Error decoding an envelope from the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageDecodeError {
    #[error("unknown peer message format {0}")]
    UnknownFormat(u8),
    #[error("malformed peer message: {0}")]
    Malformed(String),
}

/// Format byte in front of every encoded envelope, so the layout can evolve. 2: forwarded
/// writes carry a [`Need`] (data-center levels), failed quorums name their data center.
const FORMAT_V2: u8 = 2;

impl Envelope {
    /// A format byte, then postcard. The transport adds framing and authentication.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_V2];
        // Serializing plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).expect("envelope serializes"));
        out
    }

    /// Decodes an envelope; node ids are validated on the way in. Postcard reads lengths from
    /// the slice lazily, so a claimed length beyond the input fails instead of allocating.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, MessageDecodeError> {
        match bytes.split_first() {
            Some((&FORMAT_V2, rest)) => {
                postcard::from_bytes(rest).map_err(|e| MessageDecodeError::Malformed(e.to_string()))
            }
            Some((&other, _)) => Err(MessageDecodeError::UnknownFormat(other)),
            None => Err(MessageDecodeError::Malformed("empty".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Context;

    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn every_message_round_trips_on_the_wire() {
        let mut set = SiblingSet::new();
        set.write(&n("a"), &Context::empty(), Some(Bytes::from("v")), 7);
        let request = RequestId(42);
        let key = Bytes::from_static(b"k\x00\xff");
        let messages = vec![
            Message::Replicate(Replicate {
                request,
                key: key.clone(),
                set: set.clone(),
            }),
            Message::ReplicateAck(ReplicateAck {
                request,
                result: Err(ReplicaError::Storage("poisoned".into())),
            }),
            Message::Read(Read {
                request,
                key: key.clone(),
            }),
            Message::ReadReply(ReadReply {
                request,
                result: Ok(set.clone()),
            }),
            Message::Repair(Repair {
                request,
                key: key.clone(),
                set: set.clone(),
            }),
            Message::ForwardPut(ForwardPut {
                request,
                key,
                value: None,
                context: Some(set.context().encode()),
                need: Need::LocalQuorum { dc: "dc1".into() },
                timeout_ms: 500,
            }),
            Message::ForwardPutReply(ForwardPutReply {
                request,
                result: Ok(ForwardedPut {
                    set,
                    outcome: PutOutcome::Failed {
                        needed: 2,
                        got: 1,
                        acked_by: vec![n("a")],
                        dc: Some("dc2".into()),
                    },
                }),
            }),
        ];
        for msg in messages {
            assert_eq!(msg.request(), request);
            let env = Envelope {
                from: n("a"),
                to: n("b"),
                msg,
            };
            let bytes = env.encode();
            assert_eq!(Envelope::decode(&bytes).unwrap(), env);
            // Every strict prefix is refused, never a panic.
            for cut in 0..bytes.len() {
                assert!(Envelope::decode(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn decode_refuses_unknown_formats_and_bad_node_ids() {
        assert_eq!(
            Envelope::decode(&[9, 0]),
            Err(MessageDecodeError::UnknownFormat(9))
        );
        let env = Envelope {
            from: n("a"),
            to: n("b"),
            msg: Message::Read(Read {
                request: RequestId(1),
                key: Bytes::from_static(b"k"),
            }),
        };
        let mut bytes = env.encode();
        // Format byte, length 1, then the sender's id: make it a space.
        assert_eq!(&bytes[..3], &[FORMAT_V2, 1, b'a']);
        bytes[2] = b' ';
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(MessageDecodeError::Malformed(_))
        ));
    }
}
