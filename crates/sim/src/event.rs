//! What travels through the simulation's event queue: messages between nodes, client requests
//! and replies, timers, and scheduled faults.

use bytes::Bytes;
use ringkv_core::anti_entropy::AntiEntropyMessage;
use ringkv_core::coordinator::{Message, Need, Replicate, RequestId};
use ringkv_core::{Context, Dot, GossipMessage, NodeId, SiblingSet};

/// A message between two nodes. The core's own messages travel as they are; the rest is what
/// the server's shell sends on its other peer tags (`HANDOFF`, the forward of `REPLICA`).
#[derive(Debug, Clone)]
pub enum Payload {
    Gossip(GossipMessage),
    /// Replicate, ReplicateAck, Read, ReadReply, Repair.
    Core(Message),
    /// A coordinator's replicate to a stand-in, for the down node `intended` (tag `HANDOFF`).
    Hinted {
        intended: NodeId,
        replicate: Replicate,
    },
    /// A client write forwarded to a replica of its key, with the level it needs as the
    /// forwarding node resolved it (`ForwardPut::need`: a data-center level carries the
    /// forwarding node's own data center).
    Forward {
        fwd: RequestId,
        key: Bytes,
        value: Option<Bytes>,
        context: Option<Context>,
        need: Need,
    },
    /// The forwarded write's outcome: the dot of the write when W acked it.
    ForwardReply {
        fwd: RequestId,
        acked: Option<Dot>,
    },
    /// A batch of hints for the receiver.
    Deliver {
        batch: u64,
        hints: Vec<(Bytes, SiblingSet)>,
    },
    /// Every hint of the batch is merged durably.
    Delivered {
        batch: u64,
    },
    AntiEntropy(AntiEntropyMessage),
}

/// The consistency level a client asks for, as a client names it (the server's
/// `Option<Consistency>`); the node it reaches resolves it into a `Need`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// The configured W or R (a plain count).
    Default,
    /// A majority of the key's replicas in the receiving node's data center.
    LocalQuorum,
    /// A majority of the key's replicas in every data center that holds some.
    EachQuorum,
}

#[derive(Debug, Clone)]
pub enum ClientRequest {
    Put {
        op: u64,
        key: Bytes,
        value: Option<Bytes>,
        context: Option<Context>,
        level: Level,
    },
    Get {
        op: u64,
        key: Bytes,
        level: Level,
    },
}

#[derive(Debug, Clone)]
pub enum ClientReply {
    Put { op: u64, acked: Option<Dot> },
    Get { op: u64, set: Option<SiblingSet> },
}

/// Timers of one node. Each carries the node's incarnation, so a crash cancels them all.
#[derive(Debug, Clone, Copy)]
pub enum Timer {
    Gossip,
    Flush,
    PutDeadline(RequestId),
    GetDeadline(RequestId),
    ForwardDeadline(RequestId),
    HandoffSweep,
    HandoffDeadline(u64),
    AntiEntropy,
    AntiEntropyTick,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// Cut these links (from, to).
    Cut(Vec<(usize, usize)>, &'static str),
    Heal,
    Crash(usize),
    Restart(usize),
    /// Loss and duplication per mille, and the delay range.
    Weather {
        loss_permille: u64,
        dup_permille: u64,
        delay_ms: (u64, u64),
    },
}

#[derive(Debug, Clone)]
pub enum Event {
    Packet {
        from: usize,
        to: usize,
        payload: Payload,
    },
    Timer {
        node: usize,
        life: u32,
        timer: Timer,
    },
    ToNode {
        node: usize,
        client: usize,
        req: ClientRequest,
    },
    ToClient {
        client: usize,
        reply: ClientReply,
    },
    ClientWake {
        client: usize,
    },
    ClientGiveUp {
        client: usize,
        op: u64,
    },
    Fault(Fault),
}
