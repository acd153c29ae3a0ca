//! The coordinator: quorum bookkeeping of one client request, as sans-IO state machines.
//!
//! This is the seed's "Coordinator Node" (a proxy between the client and the replicas) and its
//! "Consistency / Quorum Consensus" (N, W, R), in the shape DESIGN.md "Replication and
//! consistency" gives them. Two per-request state machines, one per path, each driven by
//! `step(from, reply)` and `tick(now_ms)` and leaving the messages to send in an outbound queue
//! (`drain_outbound`); no sockets, no clocks (times are milliseconds from the caller and
//! deadlines are data), no disks. The peer messages are data in [`message`].
//!
//! # Write: [`PutCoordinator`]
//! 1. A client write reaches any node. [`route_write`] says whether this node is on the key's
//!    preference list (coordinate here) or must forward it ([`Message::ForwardPut`]) to a node
//!    that is. Writes are coordinated on the replicas so a key's clock holds about N entries.
//! 2. The coordinator applies the write to its own copy with [`SiblingSet::write`](crate::SiblingSet::write): a new dot
//!    over the client's context (or its own current context for a blind write), superseding
//!    exactly what the context covers. It stores the result and waits until it is durable.
//! 3. Only then does it start a [`PutCoordinator`] with that set: one [`Message::Replicate`]
//!    (the whole set) to each other replica. A replica merges it into its copy
//!    ([`apply_replicate`]), makes that durable and answers [`Message::ReplicateAck`].
//! 4. The outcome is [`PutOutcome::Acked`] as soon as `w` replicas, the coordinator included,
//!    hold the write durably. It is [`PutOutcome::Failed`] at the deadline, or earlier as soon as
//!    enough replicas refused that `w` can no longer be reached.
//!
//! # Read: [`GetCoordinator`]
//! 1. Any node coordinates a read: it sends [`Message::Read`] to the key's N replicas (itself
//!    too when it is one; the shell answers that one locally).
//! 2. Each reply is merged with [`SiblingSet::merge`](crate::SiblingSet::merge). Once `r` replicas replied the outcome is
//!    [`GetOutcome::Done`] with the merged set: every version no other supersedes (siblings if
//!    writes were concurrent) and, through [`SiblingSet::context`](crate::SiblingSet::context), the context that resolves
//!    them when written back. It is [`GetOutcome::Failed`] at the deadline with the count.
//! 3. **Read repair.** After the outcome the coordinator keeps listening until all N replied or
//!    a repair deadline passes. Then each replica whose reply lacks something of the merge of
//!    *all* replies gets that merge ([`Message::Repair`], [`GetCoordinator::repairs`]). The
//!    test is exact: a replica is stale iff merging the final set into its reply changes it
//!    ([`is_stale`]). Replicas that never answered get nothing: nobody knows what they hold.
//!
//! # Quorum semantics
//! - **W counts durable acks only.** A replica acks only once the merged set is durable (the
//!   commit log fsynced, or within the `periodic` window that the node's config declares). A
//!   message received, or a write sitting in a memtable, is not an ack.
//! - **The coordinator's own write counts as one.** The state machine starts after the local
//!   write is durable, so it starts with one ack: `w = 1` is acked at once, and with N = 3,
//!   W = 2 one other replica's ack is enough.
//! - **Requests in flight after the outcome keep going.** Deciding the outcome sends nothing
//!   and cancels nothing: the other replicates still arrive, are stored and are acked. Late acks
//!   are recorded ([`PutCoordinator::late_acks`], [`PutCoordinator::acked_by`]) and change
//!   nothing: the outcome is final the moment it is decided. A duplicated ack counts once. Late
//!   read replies still feed read repair, never the client's answer.
//! - **A failed write may still be stored.** There is no rollback in Dynamo, and none here:
//!   the coordinator holds the write durably, replicas whose ack was lost or late hold it, and
//!   replicates still in flight may store it later. So a `Failed` write answers "not enough
//!   replicas acknowledged: needed W, got K; the write may still have been stored on some
//!   replicas" ([`QuorumError::WriteUnavailable`]), and a later read may well return it. A
//!   client that retries writes with the context it read, so a retried value supersedes its
//!   first attempt or at worst stands beside it as a sibling with the same value.
//! - **R + W > N reads the latest write when nothing fails.** The W replicas that acked a write
//!   and any R replicas that answer a later read share at least one replica, which holds the
//!   write (or something that supersedes it), and a merge never drops a version that nothing
//!   supersedes. So a read started after a write was acked returns it, whatever order the
//!   messages arrive in (`tests/coordinator_scripts.rs`, `r_plus_w_over_n_reads_latest_write`).
//!   With failures that can break: sloppy quorum may put the write on a fallback node outside
//!   the read's N, and a replica that lost its disk loses its copy.
//! - **Concurrent writes through different coordinators** each get their own dot, so a read
//!   that meets both returns both as siblings with a context covering both; a write with that
//!   context, through any coordinator, supersedes both on every replica it reaches.
//!
//! # What the shell does
//! Per write (on a preference-list node): apply and durably store the write locally
//! (`Replica::apply_write`); build a [`PutCoordinator`]; send `drain_outbound()`; feed each
//! `ReplicateAck` to `step`; set one timer at `next_deadline()` and call `tick(now)` when it
//! fires; answer the client when `outcome()` becomes `Some`. Per read: build a
//! [`GetCoordinator`]; send `drain_outbound()` (answering the `Read` addressed to itself from
//! the local replica and feeding that reply straight back); feed each `ReadReply` to `step`;
//! `tick` at `next_deadline()` (the client deadline, then the repair deadline); answer the
//! client at the outcome; after every `step`/`tick` send `drain_outbound()` again, which holds
//! the `Repair`s once [`GetCoordinator::is_done`]. On a replica: `Replicate` -> merge, store,
//! wait durable, ack; `Read` -> reply with the local set; `Repair` -> merge and store, no answer.
//!
//! IMPLEMENTATION CAVEATS
//! - No resend: a lost `Replicate` or `Read` is not retried before the deadline. The peer
//!   transport is TCP, so a loss means a broken connection; the replica catches up through read
//!   repair, hinted handoff and anti-entropy.
//! - The state machines take the replicas to use; [`Plan`] computes them under sloppy quorum
//!   (stand-ins for down replicas). Hints (writes a stand-in takes for a down replica) belong
//!   to [`crate::handoff`].
//! - Merged sets are not pruned here. If a key's clock ever exceeds the prune threshold (more
//!   than ~10 coordinators), replicas prune after merging and the exact stale test can find
//!   the same replica stale on every read (a repair that it prunes away again). Writes are
//!   coordinated by the N replicas, so a clock holds about N entries and this does not arise.
//! - Stale detection compares whole sets, so a replica that differs only in the wall time of a
//!   clock entry (the coordinator witnessed a context entry at its own time) is repaired too.
//!   That costs one repair, after which the replicas agree.
//! - `ForwardPut` is not deduplicated: a duplicated or retried forward is applied twice, as two
//!   versions (same value) over the same context.

pub mod message;

mod get;
mod plan;
mod put;
mod quorum;
mod replica;
mod route;

pub use get::{is_stale, GetCoordinator, GetOutcome, GetRequest};
pub use message::{
    Envelope, ForwardPut, ForwardPutReply, ForwardedPut, Message, MessageDecodeError, Read,
    ReadReply, Repair, ReplicaError, Replicate, ReplicateAck, RequestId,
};
pub use plan::Plan;
pub use put::{PutCoordinator, PutOutcome, PutRequest};
pub use quorum::{DcQuorum, Need, Quorum, Verdict};
pub use replica::apply_replicate;
pub use route::{route_write, Route};

/// What a state machine did with a reply it was fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Counted toward the outcome.
    Counted,
    /// Arrived after the outcome was decided: recorded (late ack, read-repair input), changes
    /// nothing the client sees.
    Late,
    /// A second answer from a replica that already answered: ignored.
    Duplicate,
    /// For another request, or from a node that was not asked: ignored.
    Ignored,
}

/// A quorum that was not reached: what the APIs tell the client. Worth retrying. With `dc`,
/// the counts are those of that data center's quorum (`local_quorum`, `each_quorum`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error(
        "not enough replicas{} acknowledged: needed {needed}, got {got}; \
         the write may still have been stored on some replicas",
        in_dc(dc)
    )]
    WriteUnavailable {
        needed: usize,
        got: usize,
        dc: Option<String>,
    },
    #[error(
        "not enough replicas{} answered: needed {needed}, got {got}",
        in_dc(dc)
    )]
    ReadUnavailable {
        needed: usize,
        got: usize,
        dc: Option<String>,
    },
}

/// " in data center X", or nothing: how quorum errors name the data center that fell short.
fn in_dc(dc: &Option<String>) -> String {
    dc.as_ref()
        .map(|dc| format!(" in data center {dc}"))
        .unwrap_or_default()
}

impl QuorumError {
    /// Replicas required.
    pub fn needed(&self) -> usize {
        match *self {
            QuorumError::WriteUnavailable { needed, .. }
            | QuorumError::ReadUnavailable { needed, .. } => needed,
        }
    }

    /// Replicas that acknowledged or answered.
    pub fn got(&self) -> usize {
        match *self {
            QuorumError::WriteUnavailable { got, .. }
            | QuorumError::ReadUnavailable { got, .. } => got,
        }
    }

    /// The data center whose quorum fell short (`local_quorum`, `each_quorum`).
    pub fn dc(&self) -> Option<&str> {
        match self {
            QuorumError::WriteUnavailable { dc, .. } | QuorumError::ReadUnavailable { dc, .. } => {
                dc.as_deref()
            }
        }
    }

    /// Always true: a quorum may be reached later, or through another node.
    pub fn is_retryable(&self) -> bool {
        true
    }
}
