//! Everything membership puts on the wire, as data (STYLE.md point 3).
//!
//! The shell encodes a [`GossipMessage`] with postcard inside its authenticated peer frame and
//! hands what arrives to [`super::Membership::step`] with the id the transport authenticated.
//! Every message is a whole state, never a delta: applying one is an idempotent, commutative
//! merge, so loss, duplication and reordering cost at most a little freshness.

use super::Member;
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// Where an outbound message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// A known member, at the peer address its record carries.
    Node { id: NodeId, addr: String },
    /// A seed: an address from the configuration (or `ringkv join`) whose node id is not known
    /// yet. The transport learns the id in its handshake.
    Addr(String),
}

impl Target {
    /// The address to connect to.
    pub fn addr(&self) -> &str {
        match self {
            Target::Node { addr, .. } | Target::Addr(addr) => addr,
        }
    }

    /// The node id, when it is known.
    pub fn id(&self) -> Option<&NodeId> {
        match self {
            Target::Node { id, .. } => Some(id),
            Target::Addr(_) => None,
        }
    }
}

/// One outbound message: the shell sends `msg` to `to` and forgets it (no acks, no retries:
/// the next tick sends fresher state anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub from: NodeId,
    pub to: Target,
    pub msg: GossipMessage,
}

/// The gossip protocol: one push-pull exchange of whole member tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipMessage {
    /// **Push.** Sent by every node at every tick to `fanout` random live peers, now and then to
    /// one down member or one seed (so partitions heal and new nodes find the cluster), to a seed
    /// as soon as it is added, and right after a status change or an operator `remove`.
    /// `members` is the sender's whole table, its own record first (with its fresh heartbeat);
    /// `suspects` are the members the sender itself suspects right now (its own opinion only:
    /// opinions are never relayed, so each counts as one source).
    ///
    /// The receiver merges the table, keeps `suspects` as the sender's latest opinion, and
    /// answers with a [`GossipMessage::DigestReply`].
    ///
    /// Lost: the next tick pushes fresher state, and other peers relay the same heartbeats, so a
    /// member is suspected only after `suspect_after` ticks without *any* path delivering news.
    /// Duplicated or reordered: the merge keeps the larger (generation, heartbeat) and the larger
    /// status, so an old copy changes nothing; an opinion older than the one already held (by the
    /// sender's own heartbeat) is ignored. The duplicate's reply is as harmless.
    Digest {
        members: Vec<Member>,
        suspects: Vec<NodeId>,
    },
    /// **Pull answer.** Sent in reply to every `Digest`: the receiver's whole table and its own
    /// suspects, so one exchange updates both sides (and a new node learns the whole cluster from
    /// its first seed). Never answered, so gossip cannot loop. Lost, duplicated or reordered:
    /// as for `Digest`.
    DigestReply {
        members: Vec<Member>,
        suspects: Vec<NodeId>,
    },
}
