//! Anti-entropy: per-partition Merkle trees and the exchange that repairs replicas with them.
//!
//! This is the seed's "permanent failure handling" (Dynamo section 4.7) in the shape DESIGN.md
//! "Replication and consistency" gives it: each replica keeps, per partition, a Merkle tree over
//! its keys, updated on every write and rebuilt from disk at start; replicas of a partition
//! compare roots periodically and descend only where hashes differ, so repair traffic grows with
//! the difference, not with the data.
//!
//! # The tree: [`MerkleTree`]
//! A fixed number of leaf buckets (default [`DEFAULT_BUCKETS`], a power of two up to
//! [`MAX_BUCKETS`]) over the partition's key-hash range, chosen by the hash bits right below the
//! partition bits, so a bucket is one contiguous range of the `data` keyspace
//! ([`MerkleTree::bucket_range`]). A key contributes `xxh3_128(key ++ value_digest)` where
//! [`value_digest`] is xxh3-128 of its encoded sibling set (128 bits, as DEPENDENCIES suggests:
//! a 64-bit digest would leave a missed repair at ~2^-64 per comparison per key, cheap to rule
//! out). A leaf is the XOR of its keys' contributions, so a write is an O(1) leaf change plus
//! `log2(buckets)` inner rehashes, never a bucket rescan. Inner nodes are xxh3-128 of their two
//! children (fan-out 2, see [`MerkleTree`] for why).
//!
//! # The exchange: [`AntiEntropySession`]
//! Between two replicas of one partition, both running a session (messages in [`message`]):
//! 1. The initiator sends its root (`Start`). The responder compares: equal ends the round
//!    (`InSync`, two small messages in all).
//! 2. Otherwise the two sides descend alternately: whoever compared depth `d` sends its hashes
//!    of the children of the nodes that differed (`Nodes` at `d + 1`); the other compares those
//!    and does the same one level down. Only nodes under a difference ever travel.
//! 3. The side that compares the leaves sends its `(key, digest)` lists of the differing buckets
//!    (`KeyDigests`, in chunks, a few in flight). The other side answers each chunk with its
//!    sibling sets of the keys that differ or that the first side lacks, and the keys it wants
//!    (`Sets`); the first side merges those and sends the wanted sets (`Wanted`).
//! 4. Each side hands what it received to the shell ([`AntiEntropySession::drain_merges`]),
//!    which merges it with [`SiblingSet::merge`](crate::SiblingSet::merge). Both sides end with
//!    the merge of both sets for every differing key, so one complete session converges the
//!    partition (up to the per-message budgets and writes landing meanwhile).
//!
//! Everything a peer sends is bounded before it is used: node lists by the level's width (at
//! most [`MAX_BUCKETS`]), key lists and set lists by `max_keys_per_message`, sets by a soft byte
//! budget, chunk numbers by a fixed cap; keys must hash inside the span and partition they claim.
//! The wire decoder itself is bounded by the transport's frame limit.
//!
//! # Tombstones
//! A deleted key is a sibling set of tombstones and travels like any other set: a tombstone's
//! dot supersedes the value it deleted in [`SiblingSet::merge`](crate::SiblingSet::merge), so a
//! replica that still holds the value ends with the tombstone, and anti-entropy never brings a
//! deleted key back. This holds as long as tombstones are kept: see the caveats.
//!
//! # What the shell does
//! - **Keep the tree current on every write.** Wherever a key's stored set changes
//!   (`Replica::apply_write`, `Replica::merge` for replicates, read repairs, hints and
//!   anti-entropy sets, and a future purge), call `tree.update(key, old_digest, new_digest)`
//!   with the [`value_digest`] of the encoded set before and after (`None` for absent), in the
//!   same critical section as the store so tree and storage agree. Trees live in memory only.
//! - **Rebuild at start** from a scan of each owned partition: [`MerkleTree::from_entries`] over
//!   `(key, encoded set)` (the encoded bytes are what storage holds; no decoding needed). A
//!   partition gained by handoff gets a fresh tree from its stream; a partition given away drops
//!   its tree.
//! - **Run sessions periodically, rate limited,** per owned partition with one other replica of
//!   it at a time (e.g. every partition once per few minutes, a few sessions in flight per node,
//!   each merge counted in metrics as a repair). Allocate [`SessionId`]s per node, route messages
//!   by `(peer, session)`, open the responder side with [`AntiEntropySession::accept`] on a
//!   `Start`, call `tick(now_ms)` on a timer, and send `drain_outbound()` after every call.
//! - **Where merges happen:** after every `step`, `drain_merges()` gives `(key, set)` pairs;
//!   merge each through `Replica::merge` (read, merge, prune, store, update the tree). No
//!   durability wait is needed: a lost repair is repeated next round.
//! - Report [`AntiEntropySession::stats`] (bytes sent, sets exchanged) and the time of each
//!   partition's last session that ended `InSync` or `Repaired` in `ringkv status`.
//!
//! IMPLEMENTATION CAVEATS
//! - **No tombstone purge yet.** Tombstones are kept forever. Purging after a grace period once
//!   every replica holds them is not here: a purge must also remove the key from the tree, and a
//!   replica that purged while another still holds the old value would get the value back from
//!   that replica (anti-entropy would see "one side lacks the key" and copy it). The purge needs
//!   the "every replica holds the tombstone" condition, which belongs to the purge worker.
//! - Sets over a message's key or byte budget wait for the next round, so a badly diverged
//!   partition (a replica that lost its disk) converges over several rounds. Streaming the
//!   partition is the better tool there.
//! - Writes landing during a session are not frozen out: the session compares current trees,
//!   so it may descend into a bucket both sides have just written, or miss one; the next round
//!   catches it.
//! - A key whose sets differ only in a clock entry's wall time has different digests and is
//!   exchanged once; after the merge both sides hold the same set.
//! - Key digests are sent by one side only; the other side's extra keys go back as sets in the
//!   same answer, so no second key list is needed.
//! - Both ends must use the same bucket count; a mismatch aborts the session.

pub mod message;

mod memory;
mod session;
mod tree;

pub use memory::MemoryPartition;
pub use message::{AntiEntropyMessage, Body, KeyDigest, KeySpan, NodeHash, SessionId};
pub use session::{
    AntiEntropySession, PartitionView, Role, SessionConfig, SessionOutcome, SessionStats,
};
pub use tree::{entry_hash, value_digest, MerkleTree, TreeError, DEFAULT_BUCKETS, MAX_BUCKETS};
