//! Logical time and the failure detector's knobs.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Logical time: a count of the shell's gossip ticks (one per [`GossipConfig`] period, one second
/// by default). The caller passes it in; it must never go backwards (a smaller value is treated as
/// the largest seen so far).
///
/// Why ticks and not wall milliseconds: a node whose own loop stalls (a long disk stall, a paused
/// VM) stops counting ticks too, so when it wakes it does not suspect every peer at once for a
/// silence that was its own.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Ticks(pub u64);

impl Ticks {
    /// Ticks elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Ticks) -> Ticks {
        Ticks(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Ticks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ticks", self.0)
    }
}

/// Largest member table a node keeps, and largest member list it reads from one digest. A digest
/// past it is read up to it and the rest ignored, so a buggy or hostile peer cannot grow a node's
/// memory (or the next digest it sends) without bound.
pub const MAX_MEMBERS: usize = 4096;

/// How the gossip and failure detector behave. Every field has its default in [`Default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipConfig {
    /// Live peers each tick gossips to (default 3). With push-pull exchanges a heartbeat reaches
    /// every node of a 100-node cluster in about 3 ticks at fanout 3.
    pub fanout: usize,
    /// A member whose heartbeat has not risen for this long is suspected locally (default 5).
    pub suspect_after: Ticks,
    /// Sources that must suspect a member before this node marks it down (default 2, the seed's
    /// rule). This node is one source (and must be one); each peer whose latest digest, received
    /// within `2 x suspect_after`, lists the member as suspected is another.
    pub down_after_sources: usize,
    /// A `Left` member is dropped from the table this long after this node learned it left
    /// (default 86,400: a day of one-second ticks); a tombstone of its generation stays behind.
    pub forget_left_after: Ticks,
    /// Table and digest cap (default [`MAX_MEMBERS`], which is also the most it can be).
    pub max_members: usize,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig {
            fanout: 3,
            suspect_after: Ticks(5),
            down_after_sources: 2,
            forget_left_after: Ticks(86_400),
            max_members: MAX_MEMBERS,
        }
    }
}

impl GossipConfig {
    /// Why this configuration cannot work, if it cannot.
    pub fn check(&self) -> Result<(), &'static str> {
        if self.fanout == 0 {
            return Err("fanout must be at least 1");
        }
        if self.suspect_after.0 == 0 {
            return Err("suspect_after must be at least 1 tick");
        }
        if self.down_after_sources == 0 {
            return Err("down_after_sources must be at least 1");
        }
        if self.max_members < 1 || self.max_members > MAX_MEMBERS {
            return Err("max_members must be from 1 to 4096");
        }
        Ok(())
    }

    /// How long a peer's list of suspects counts towards marking a member down.
    pub fn opinion_ttl(&self) -> Ticks {
        Ticks(self.suspect_after.0.saturating_mul(2))
    }
}
