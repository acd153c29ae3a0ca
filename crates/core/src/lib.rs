//! ringkv's pure core.
//!
//! Everything in this crate is deterministic code with no sockets, no clocks and no disks: callers
//! pass in the time (`now_ms`) and the node's identity, and get back data. That is what lets the
//! same code run in the server, in property tests and in the deterministic simulator
//! (`crates/sim`).
//!
//! - [`version`]: the seed's "inconsistency resolution": vector clocks kept as dotted version
//!   vectors, sibling sets, and the opaque causal context handed to clients.
//! - [`coordinator`]: quorum bookkeeping of one read or write (sans-IO state machines), read
//!   repair, and the peer messages of both paths.
//! - [`anti_entropy`]: per-partition Merkle trees and the sans-IO session that compares two
//!   replicas' trees and exchanges only the differing keys' sibling sets.
//! - [`consistency`]: per-request `r` and `w` levels.
//! - [`handoff`]: the rules of hinted handoff (one merged hint per target and key, batches,
//!   compare-and-delete, the hint window) and an in-memory hint store.
//! - [`keys`]: key hashing, partitions of the ring, and the storage key layout.
//! - [`limits`]: the data model's bounds (key and value size, siblings, clock entries).
//! - [`membership`]: the gossip member table and failure detector (heartbeats, two-source
//!   down), which gives the ring its members.
//! - [`node_id`]: the name of a node as it appears in clocks and membership.
//! - [`ring`]: partition ownership by weight, and preference lists over data centers and racks.

pub mod anti_entropy;
pub mod consistency;
pub mod coordinator;
pub mod handoff;
pub mod keys;
pub mod limits;
pub mod membership;
pub mod node_id;
pub mod ring;
pub mod version;

pub use anti_entropy::{AntiEntropySession, MerkleTree};
pub use consistency::{Consistency, ConsistencyError};
pub use coordinator::{GetCoordinator, GetOutcome, PutCoordinator, PutOutcome, QuorumError};
pub use keys::{KeyHash, PartitionId};
pub use limits::{LimitError, Limits};
pub use membership::{
    Generation, GossipConfig, GossipMessage, Member, MemberStatus, Membership, MembershipError,
};
pub use node_id::{InvalidNodeId, NodeId};
pub use ring::{DcReplication, NodeLoad, Ring, RingError, RingMember};
pub use version::tombstone;
pub use version::{
    Causality, ClockEntry, Context, ContextError, Dot, SiblingSet, Version, VersionVector,
};
