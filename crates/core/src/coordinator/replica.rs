//! The replica side of replication and read repair: what a node does with a set it is sent.

use crate::SiblingSet;

/// What a replica stores when it receives [`super::Message::Replicate`] or
/// [`super::Message::Repair`]: its own set merged with the incoming one. This is
/// [`SiblingSet::merge`], named here so the write path reads end to end; the merge is
/// commutative, associative and idempotent, which is why duplicated, reordered and late
/// replicates and repairs are harmless.
///
/// The shell does not call this directly in the server: its `Replica::merge` does the same merge
/// in place under the key's lock, prunes the clock, writes the result and waits for durability
/// before the replica answers [`super::Message::ReplicateAck`]. Read the key's local set (empty
/// when absent), merge, store, then ack; never ack before the store is durable.
pub fn apply_replicate(local: &SiblingSet, incoming: &SiblingSet) -> SiblingSet {
    let mut merged = local.clone();
    merged.merge(incoming);
    merged
}
