//! Versions: the seed's "inconsistency resolution" with vector clocks.
//!
//! Every key holds a [`SiblingSet`]: the versions no other version supersedes, each a value or a
//! tombstone, each named by its [`Dot`] (the node that wrote it and that node's counter), plus one
//! [`VersionVector`] that summarises everything the set has seen. This is the *dotted version
//! vector set* of Preguiça et al. and Riak 2.0. The seed's examples read as plain vector clocks
//! (D1 = (\[Sx,1\]) ... D5 = (\[Sx,3\],\[Sy,1\],\[Sz,1\])); the dot is what keeps them honest when two
//! clients write over the same version through the same node: a plain server-keyed vector clock
//! would make the second write look like a descendant of the first and drop it (a lost update).
//!
//! Rules (all pure, all in [`SiblingSet`]):
//! - a write carries the causal [`Context`] the client read; the new version supersedes exactly
//!   the versions whose dots that context covers, and anything else stays as a sibling;
//! - two replicas' sets merge by keeping each version the other side has not seen superseded; the
//!   merge is commutative, associative and idempotent (property-tested), so replicas converge
//!   whatever order repairs arrive in;
//! - clocks are pruned past [`crate::Limits::max_clock_entries`], oldest wall time first, never
//!   dropping an entry a live version's dot needs.
//!
//! IMPLEMENTATION CAVEATS: pruning can make an old, already-superseded version reappear as a
//! sibling after a merge with a replica that still holds it (Dynamo 4.4 accepts the same); it can
//! never drop a version. Tombstones are purged only by the rule of [`tombstone`] (after a grace
//! period, once every replica holds them).

mod clock;
mod context;
mod siblings;
pub mod tombstone;

pub use clock::{Causality, ClockEntry, VersionVector, MAX_CONTEXT_COUNTER, MAX_STORED_COUNTER};
pub use context::{Context, ContextError, MAX_CONTEXT_ENTRIES, MAX_CONTEXT_LEN};
pub use siblings::{DecodeError, Dot, SiblingSet, Version};
