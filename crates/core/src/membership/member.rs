//! The gossiped record of one member, and its status lattice.

use crate::{NodeId, RingMember};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest address (peer, RESP or HTTP) a member record may carry, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Longest data center or rack name, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Largest weight a member may claim: far above any real ratio between machines, and small
/// enough that the ring's arithmetic over thousands of members cannot overflow.
pub const MAX_WEIGHT: u32 = 1 << 16;

/// An incarnation of a node. The shell picks a larger one at every start (wall-clock seconds at
/// start, or a persisted counter plus one); the record of a larger generation supersedes every
/// record of a smaller one, whatever their heartbeats.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Generation(pub u64);

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a member is in DESIGN.md's lifecycle: `Joining -> Up -> Leaving -> Left`.
///
/// Within one generation the status only moves forward, so the declaration order is a lattice
/// and merging two records takes the larger status: replicas agree whatever order they hear the
/// changes in. `Left` is the top, which is why an operator's `remove` (which writes `Left` for a
/// dead member on any node) wins over anything that member's own last gossip said. Going back
/// (a node rejoining after it left or was removed) takes a new [`Generation`].
///
/// Health is not a status: `down` is each node's local opinion (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberStatus {
    /// Announced, owns partitions in the ring, streaming in the data it now owns.
    Joining,
    /// A full member.
    Up,
    /// Handing its partitions off; still owns them in the ring until it is `Left`.
    Leaving,
    /// Gone: left on its own, or removed by an operator. Owns nothing; forgotten after a while.
    Left,
}

impl MemberStatus {
    /// Whether a member in this status owns partitions: `Joining` (so the ring gives it the
    /// partitions it is to stream in), `Up`, and `Leaving` (until its handoff is done).
    pub fn owns_partitions(self) -> bool {
        self != MemberStatus::Left
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Up => "up",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One member as gossip carries it. Everything but `heartbeat` and `status` is fixed for a
/// generation: a node that changes its address, place or weight restarts with a new generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    /// Peer (gossip and RPC) address, `host:port`.
    pub peer_addr: String,
    /// Client addresses, for `ringkv status` and clients that discover the cluster; empty when
    /// that listener is off.
    pub resp_addr: String,
    pub http_addr: String,
    /// Data center and rack, for replica placement.
    pub dc: String,
    pub rack: String,
    /// Relative capacity, 1 to [`MAX_WEIGHT`].
    pub weight: u32,
    pub generation: Generation,
    /// Bumped by the member itself at every tick; only ever compared within a generation.
    pub heartbeat: u64,
    pub status: MemberStatus,
}

/// A member record that cannot be used: it is refused from the local node and skipped in gossip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid member record for {id}: {reason}")]
pub struct InvalidMember {
    pub id: NodeId,
    pub reason: &'static str,
}

impl Member {
    /// A new incarnation: `Joining`, heartbeat 0, weight 1, in `dc1`/`rack1`, no client
    /// addresses. Set the public fields for anything else.
    pub fn new(id: NodeId, peer_addr: impl Into<String>, generation: Generation) -> Member {
        Member {
            id,
            peer_addr: peer_addr.into(),
            resp_addr: String::new(),
            http_addr: String::new(),
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            generation,
            heartbeat: 0,
            status: MemberStatus::Joining,
        }
    }

    /// What the ring takes of this member.
    pub fn ring_member(&self) -> RingMember {
        RingMember::new(self.id.clone(), self.weight, &self.dc, &self.rack)
    }

    /// Checks the bounds above. Ids are valid by construction (their deserializer checks them).
    pub fn validate(&self) -> Result<(), InvalidMember> {
        let bad = |reason| {
            Err(InvalidMember {
                id: self.id.clone(),
                reason,
            })
        };
        if self.peer_addr.is_empty() {
            return bad("empty peer address");
        }
        for addr in [&self.peer_addr, &self.resp_addr, &self.http_addr] {
            if !printable(addr, MAX_ADDR_LEN) {
                return bad("address too long or not printable");
            }
        }
        for label in [&self.dc, &self.rack] {
            if label.is_empty() || !printable(label, MAX_LABEL_LEN) {
                return bad("data center or rack empty, too long or not printable");
            }
        }
        if self.weight == 0 || self.weight > MAX_WEIGHT {
            return bad("weight outside 1..=65536");
        }
        Ok(())
    }
}

/// Short and free of control characters, so it prints safely in `ringkv status` and logs.
fn printable(s: &str, max: usize) -> bool {
    s.len() <= max && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_order_is_the_lifecycle() {
        use MemberStatus::*;
        assert!(Joining < Up && Up < Leaving && Leaving < Left);
        assert!(Joining.owns_partitions() && Leaving.owns_partitions());
        assert!(!Left.owns_partitions());
    }

    #[test]
    fn validation_rejects_out_of_bounds_records() {
        let ok = Member::new(NodeId::new("n1").unwrap(), "127.0.0.1:7000", Generation(1));
        assert!(ok.validate().is_ok());
        let mut m = ok.clone();
        m.weight = 0;
        assert!(m.validate().is_err());
        let mut m = ok.clone();
        m.peer_addr = "x".repeat(MAX_ADDR_LEN + 1);
        assert!(m.validate().is_err());
        let mut m = ok.clone();
        m.rack = "a\u{1b}[2J".into();
        assert!(m.validate().is_err());
        let mut m = ok;
        m.dc = String::new();
        assert!(m.validate().is_err());
    }
}
