//! Where a client write is coordinated.

use crate::NodeId;

/// Where a node sends a client write for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node is on the key's preference list: coordinate the write here.
    Local,
    /// This node is not: forward the write ([`super::Message::ForwardPut`]) to this replica,
    /// the first of the list.
    Forward(NodeId),
    /// The list is empty (every replica is down, or the ring has no members): the write is
    /// unavailable.
    NoReplica,
}

/// Routes a client write (DESIGN.md "Replication and consistency": a write is coordinated by a
/// node of the key's preference list, and a node outside it forwards). Keeping coordination on
/// the N replicas is what keeps a key's clock at about N entries, each replica's dot counter
/// advancing only on itself.
///
/// `preference_list` is the key's replicas as the caller wants them tried, usually
/// [`crate::Ring::preference_list_for_key`] with the nodes gossip marks down left out. The
/// forward goes to the first: the partition's owner when it is healthy, so one key's writes
/// mostly share one coordinator. If that forward fails the caller may try the next in the list
/// (the write has then maybe been applied twice; see `ForwardPut`).
pub fn route_write(preference_list: &[NodeId], me: &NodeId) -> Route {
    if preference_list.contains(me) {
        Route::Local
    } else {
        match preference_list.first() {
            Some(first) => Route::Forward(first.clone()),
            None => Route::NoReplica,
        }
    }
}
