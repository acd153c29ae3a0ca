//! The anti-entropy messages between two replicas of one partition, as plain data.
//!
//! A session is named by a [`SessionId`] that the *initiator* allocated; `(initiator, session)`
//! is unique in the cluster, and the shell routes replies by it. Every message carries the
//! partition too, so a receiver checks it against the session and its own ownership.
//!
//! Nothing here assumes a reliable network. Merges are idempotent and commutative, so a
//! duplicated or reordered message can at worst repeat a merge; a message the session does not
//! expect any more (an old depth, a chunk already answered) is ignored. **A lost message ends the
//! round**: both sessions wait until their idle timeout and finish as
//! [`SessionOutcome::TimedOut`](super::SessionOutcome::TimedOut); whatever was merged so far
//! stays merged, and the next periodic round starts again from the roots.

use crate::{PartitionId, SiblingSet};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One session's id, allocated by the initiating node (a per-node counter is enough).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ae{}", self.0)
    }
}

/// A message of one anti-entropy session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyMessage {
    pub session: SessionId,
    #[serde(with = "partition_id")]
    pub partition: PartitionId,
    pub body: Body,
}

/// `PartitionId` on the wire as its `u32` (keys.rs keeps it free of serde).
mod partition_id {
    use crate::PartitionId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &PartitionId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(p.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PartitionId, D::Error> {
        u32::deserialize(d).map(PartitionId)
    }
}

/// One hash of the peer's tree: node `index` (left to right) at the message's depth.
pub type NodeHash = (u32, u128);

/// One key in a [`KeySpan`]: the key and the digest of its encoded sibling set
/// ([`super::value_digest`]).
pub type KeyDigest = (Bytes, u128);

/// All of the sender's keys whose hash lies in `first..=last`, with their digests, sorted by
/// `(hash, key)`. Spans tile the differing buckets: a bucket goes in one span unless it holds
/// more keys than a message may carry, then it is cut at hash boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpan {
    pub first: u64,
    pub last: u64,
    pub keys: Vec<KeyDigest>,
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// **Initiator -> responder**, once, to open a session: the initiator's tree shape and root.
    /// The responder compares the root with its own: equal ends the session ([`Body::InSync`]);
    /// different starts the descent ([`Body::Nodes`] at depth 1, or [`Body::KeyDigests`] when
    /// the tree is a single bucket). A shape that differs from the responder's is refused with
    /// [`Body::Abort`].
    ///
    /// *Lost*: no session on the responder; the initiator times out. *Duplicated*: the shell
    /// routes it to the session it already opened, which ignores it.
    Start { buckets: u32, root: u128 },
    /// **Either side -> the other**, alternating, while descending: the sender's hashes at
    /// `depth` of the children of every node that differed at `depth - 1` (and only those). The
    /// receiver compares them with its own, then sends the children of the nodes that differ
    /// (`Nodes` at `depth + 1`), or, at the leaves, the key lists of the differing buckets
    /// ([`Body::KeyDigests`]), or [`Body::InSync`] when nothing differs (writes landed on both
    /// sides since the parent was compared).
    ///
    /// At most `2^depth` entries (bounded by the tree's bucket count), indices strictly
    /// increasing. *Lost*: the round ends by timeout. *Duplicated or stale*: ignored (the session
    /// expects exactly one depth at a time).
    Nodes { depth: u32, nodes: Vec<NodeHash> },
    /// **Either side -> the other**: nothing differs (equal roots, or no differing node found).
    /// Both sessions end. *Lost*: the other side times out, which is harmless.
    InSync,
    /// **Leaf comparer ("sender") -> the other side ("receiver")**, after the leaves were
    /// compared: chunk `seq` of the sender's keys and digests in the differing buckets. `last` is
    /// set on the final chunk. A few chunks are in flight at once ([`super::SessionConfig`]'s
    /// `window`); each is answered with one [`Body::Sets`].
    ///
    /// At most `max_keys_per_message` keys in all. *Lost*: no `Sets` reply, the round times out.
    /// *Duplicated*: the receiver answers each `seq` once and ignores repeats.
    KeyDigests {
        seq: u32,
        last: bool,
        spans: Vec<KeySpan>,
    },
    /// **Receiver -> sender**, answering `KeyDigests` `seq`: the receiver's sibling sets of the
    /// keys in those spans that the sender lacks or holds with another digest, and `want`, the
    /// keys of the chunk the receiver lacks or holds with another digest. The sender merges
    /// `sets` and answers `want` with [`Body::Wanted`] (also when `want` is empty, so the
    /// receiver knows the chunk is done).
    ///
    /// Bounded by `max_keys_per_message` keys and, softly, `max_set_bytes_per_message`; sets
    /// over the byte budget wait for the next round. *Lost*: the round times out; the sets it
    /// carried come again next round. *Duplicated*: merged again (idempotent); `want` is
    /// answered once.
    Sets {
        seq: u32,
        sets: Vec<(Bytes, SiblingSet)>,
        want: Vec<Bytes>,
    },
    /// **Sender -> receiver**, answering the `want` of `Sets` `seq`: the sender's sets of those
    /// keys (tombstones included; a key deleted and purged meanwhile is simply left out). The
    /// receiver merges them. *Lost*: the round times out; the next round retries. *Duplicated*:
    /// merged again (idempotent).
    Wanted {
        seq: u32,
        sets: Vec<(Bytes, SiblingSet)>,
    },
    /// **Either side -> the other**: this side gives up (shape or partition mismatch, a protocol
    /// violation, shutting down). The other side ends the session as failed. *Lost*: the other
    /// side times out instead.
    Abort { reason: String },
}

impl Body {
    /// A short name for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Start { .. } => "start",
            Body::Nodes { .. } => "nodes",
            Body::InSync => "in-sync",
            Body::KeyDigests { .. } => "key-digests",
            Body::Sets { .. } => "sets",
            Body::Wanted { .. } => "wanted",
            Body::Abort { .. } => "abort",
        }
    }
}

impl AntiEntropyMessage {
    /// The postcard encoding: what [`super::AntiEntropySession::bytes_sent`] counts.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        postcard::to_stdvec(self).expect("anti-entropy message serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}
