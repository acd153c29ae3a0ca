//! Membership and failure detection: the gossip state machine.
//!
//! This is the seed's "Handling Failures" (gossip protocol, heartbeat counters, "at least two
//! independent sources must confirm a server's failure") and DESIGN.md's "Membership and failure
//! detection". It is sans-IO (STYLE.md point 1): the shell calls [`Membership::tick`] once per
//! gossip period and [`Membership::step`] for every gossip message a peer sends, and sends the
//! [`Envelope`]s they return. Time comes in as [`Ticks`], randomness from the seed given to
//! [`Membership::new`]. The same code runs in the server, in `tests/membership_scripts.rs` (a
//! fake network with drops, partitions and restarts) and in the simulator.
//!
//! # What each node keeps
//! A table of [`Member`] records, this node's own included, keyed by node id: peer and client
//! addresses, data center, rack, weight, [`Generation`], heartbeat counter and [`MemberStatus`].
//! Beside each record, local facts that are never gossiped: when its heartbeat last rose *by this
//! node's clock* (remote clocks are never trusted), whether it is suspected, whether it is down.
//!
//! # Rules
//! - **Heartbeats.** Every tick a node bumps its own heartbeat and pushes its whole table, plus
//!   the members it suspects, to `fanout` random live peers; each answers with its own table
//!   (push-pull), so news spreads both ways in one exchange.
//! - **Merge.** For each member keep the record of the larger generation; within a generation
//!   keep the larger heartbeat (with the address, place and weight it carries, fixed for a
//!   generation) and the larger status (statuses only move forward, see [`MemberStatus`]). The
//!   merge is commutative, associative and idempotent, so lost, duplicated and reordered messages
//!   are harmless and every node converges to the same table.
//! - **Suspect.** A member whose heartbeat has not risen here for `suspect_after` ticks is
//!   suspected by this node. Heartbeats travel through every path of the gossip graph, so a
//!   broken link between two nodes alone does not stop them seeing each other's heartbeats.
//! - **Down.** A suspected member is marked down only when at least `down_after_sources` sources
//!   agree: this node (which must suspect it itself) and each peer whose latest digest, received
//!   in the last `2 x suspect_after` ticks, listed it as suspected. Opinions are never relayed, so
//!   each source is one distinct node. Any heartbeat rise clears suspicion and down at once.
//!   `down` is a local health flag for routing (sloppy quorum, hinted handoff); it changes no
//!   status and no ring.
//! - **Generations.** A restarted node comes back with a larger generation, which supersedes the
//!   old record whatever its heartbeat (the new incarnation counts heartbeats from 0). A node that
//!   sees a record of itself with a larger generation than its own moves past it
//!   ([`Event::SelfGenerationBumped`]); one with its own generation and a larger heartbeat (a
//!   start that reused a generation) makes it continue from that heartbeat.
//! - **Status.** A member changes its own status ([`Membership::set_status`]); an operator may
//!   remove a dead member from any node ([`Membership::remove`]), which writes `Left` at that
//!   member's generation: the top of the lattice, so it wins every merge of that generation. A
//!   `Left` member is forgotten after `forget_left_after`, leaving a tombstone of its generation
//!   so that stale gossip cannot bring it back; to rejoin, it restarts with a larger generation.
//! - **Two rings during a transfer.** [`Membership::read_ring_members`] (`Up`, `Leaving`) is
//!   the ring reads go by; [`Membership::write_ring_members`] (`Joining`, `Up`) is the ring once
//!   every transfer is done. Writes go to the replicas of both, so a joining node receives the
//!   writes of the partitions it streams in, and a leaving one keeps serving until its new
//!   owners have its data and it says `Left`. Down or not does not matter to either ring.
//!   [`Membership::epoch`] rises whenever either list changes (a status change included):
//!   rebuild the rings then.
//!
//! # Trust and bounds
//! Authentication is the transport's job: only peers that proved the cluster secret reach
//! [`Membership::step`], and `from` is the id the transport authenticated. Inside the cluster
//! any member may announce any member (that is how gossip spreads), so the bounds here are
//! against bugs and garbage, not forgery: at most [`MAX_MEMBERS`] records are read from one
//! digest and kept in the table, records outside [`Member::validate`]'s bounds are skipped, and
//! ids are valid by construction.
//!
//! # Neighbours
//! [`crate::ring`] consumes `ring_members`; the coordinator reads `is_down` to pick the nodes of
//! a sloppy quorum; hinted handoff waits for [`Event::Recovered`]; the server shell drives
//! everything here and persists what [`Membership::members`] and [`Membership::generation`] say.
//!
//! IMPLEMENTATION CAVEATS
//! - Digests carry whole tables: about 150 bytes a member, so a 100-node cluster sends ~15 KB
//!   per exchange and a full 4096-member table ~600 KB (the peer frame limit must allow it). No
//!   Cassandra-style three-way digest of (id, generation, heartbeat) first.
//! - With `down_after_sources = 2`, a node with no peer left to agree with (a cluster of two, or
//!   the last survivor) never marks anyone down; requests still time out and route around.
//! - No phi-accrual detector: suspicion is a fixed silence of `suspect_after` ticks. In clusters
//!   of hundreds of nodes raise it, or the fanout, so heartbeats arrive in time.
//! - Tombstones of forgotten members are local and not persisted: a node restored from an old
//!   persisted table after everyone forgot a `Left` member can reintroduce that member's old
//!   record (it is then suspected, marked down, and can be removed again). Hence the long
//!   default `forget_left_after`.
//! - Two live nodes using one id fight: each bumps its generation past the other's. Node ids are
//!   the operator's to keep unique.
//! - A member's weight, place and addresses change only with a restart (a new generation).

mod config;
mod member;
mod message;
pub mod rng;

pub use config::{GossipConfig, Ticks, MAX_MEMBERS};
pub use member::{
    Generation, InvalidMember, Member, MemberStatus, MAX_ADDR_LEN, MAX_LABEL_LEN, MAX_WEIGHT,
};
pub use message::{Envelope, GossipMessage, Target};

use crate::{NodeId, RingMember};
use rng::SplitMix64;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Most seed addresses a node keeps.
pub const MAX_SEEDS: usize = 64;

/// Most events kept for [`Membership::drain_events`]; past it new events are counted, not kept.
pub const MAX_PENDING_EVENTS: usize = 1024;

/// Something that changed in the table, for the shell's logs and for the modules that act on it
/// (hinted handoff delivers when a member recovers). Drained with [`Membership::drain_events`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A member this node had not heard of (or had forgotten an older generation of).
    Discovered { id: NodeId, status: MemberStatus },
    /// A member restarted: its record now has this larger generation.
    Restarted { id: NodeId, generation: Generation },
    /// A member's status moved (its own change, an operator's `remove`, or a restart).
    StatusChanged {
        id: NodeId,
        from: MemberStatus,
        to: MemberStatus,
    },
    /// Marked down here: suspected by `down_after_sources` sources.
    Down { id: NodeId },
    /// A down member's heartbeat rose again (or it restarted).
    Recovered { id: NodeId },
    /// A `Left` member dropped from the table after `forget_left_after`.
    Forgotten { id: NodeId },
    /// Gossip carried a record of this node with a larger generation than its own (a
    /// start that picked too small a generation, or another node using the same id): this node
    /// moved to a larger generation, which the shell must persist.
    SelfGenerationBumped { generation: Generation },
}

/// Why a membership call was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("invalid gossip configuration: {0}")]
    InvalidConfig(&'static str),
    #[error(transparent)]
    InvalidMember(#[from] InvalidMember),
    #[error("invalid seed address {0:?}: use a printable host:port of at most 256 bytes")]
    InvalidSeed(String),
    #[error("too many seed addresses: the limit is {MAX_SEEDS}")]
    TooManySeeds,
    #[error("no member {0} in the table")]
    UnknownMember(NodeId),
    #[error(
        "member {0} is not down here: only a dead member can be removed; \
         a live one leaves with `ringkv leave`"
    )]
    NotDown(NodeId),
    #[error("a node cannot remove itself: use `ringkv leave`")]
    RemoveSelf,
    #[error("status only moves forward (joining -> up -> leaving -> left), not {from} -> {to}")]
    StatusGoesBack {
        from: MemberStatus,
        to: MemberStatus,
    },
}

/// One member with this node's local view of its health, for `ringkv status`, `/v1/cluster` and
/// the dashboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub member: Member,
    /// This node's own record.
    pub is_self: bool,
    /// Suspected by this node (heartbeat silent for `suspect_after`).
    pub suspected: bool,
    pub down: bool,
    /// Ticks since its heartbeat last rose here.
    pub heartbeat_age: Ticks,
    /// Sources that suspect it now: this node (if it does) plus peers with fresh opinions.
    pub suspected_by: usize,
}

/// A record plus what this node alone knows about it.
#[derive(Debug, Clone)]
struct Entry {
    member: Member,
    /// Local time its heartbeat (or generation) last rose.
    last_increase: Ticks,
    suspected: bool,
    down: bool,
    /// Local time this node learned it is `Left`.
    left_since: Option<Ticks>,
}

impl Entry {
    fn new(member: Member, now: Ticks) -> Entry {
        let left_since = (member.status == MemberStatus::Left).then_some(now);
        Entry {
            member,
            last_increase: now,
            suspected: false,
            down: false,
            left_since,
        }
    }
}

/// A peer's latest list of suspects.
#[derive(Debug, Clone)]
struct Opinion {
    /// The sender's (generation, heartbeat) when it sent the list: an older list arriving late
    /// (a duplicate, a reordering) is ignored.
    stamp: (Generation, u64),
    /// Local time it arrived; it counts for `opinion_ttl`.
    at: Ticks,
    suspects: BTreeSet<NodeId>,
}

/// The gossip and failure-detection state of one node. See the module doc.
#[derive(Debug, Clone)]
pub struct Membership {
    config: GossipConfig,
    id: NodeId,
    table: BTreeMap<NodeId, Entry>,
    opinions: BTreeMap<NodeId, Opinion>,
    seeds: BTreeSet<String>,
    /// Forgotten `Left` members: generation, and local time forgotten (oldest evicted first).
    tombstones: BTreeMap<NodeId, (Generation, Ticks)>,
    rng: SplitMix64,
    /// Latest time the caller passed.
    now: Ticks,
    epoch: u64,
    health_epoch: u64,
    /// `ring_members` as of the last change, sorted by id.
    ring: Vec<(RingMember, MemberStatus)>,
    events: VecDeque<Event>,
    events_dropped: u64,
    ignored_records: u64,
}

impl Membership {
    /// A node's membership, knowing only itself. `me` is this incarnation's record (a generation
    /// larger than any earlier start's; status `Joining` for a new node, or the persisted status
    /// for a restart); `rng_seed` makes peer choice reproducible.
    pub fn new(me: Member, config: GossipConfig, rng_seed: u64) -> Result<Self, MembershipError> {
        config.check().map_err(MembershipError::InvalidConfig)?;
        me.validate()?;
        let id = me.id.clone();
        let ring = if me.status.owns_partitions() {
            vec![(me.ring_member(), me.status)]
        } else {
            Vec::new()
        };
        let mut table = BTreeMap::new();
        table.insert(id.clone(), Entry::new(me, Ticks(0)));
        Ok(Membership {
            config,
            id,
            table,
            opinions: BTreeMap::new(),
            seeds: BTreeSet::new(),
            tombstones: BTreeMap::new(),
            rng: SplitMix64::new(rng_seed),
            now: Ticks(0),
            epoch: 0,
            health_epoch: 0,
            ring,
            events: VecDeque::new(),
            events_dropped: 0,
            ignored_records: 0,
        })
    }

    // ----- inputs -----

    /// One gossip period: bump the own heartbeat, re-evaluate suspicion, and gossip to `fanout`
    /// random live peers; with probability `down / (live + 1)` also to one down member, and with
    /// probability `1 / (live + 1)` to one seed (to every seed while no peer is live).
    pub fn tick(&mut self, now: Ticks) -> Vec<Envelope> {
        self.advance(now);
        let now = self.now;
        let me = self.own_entry_mut();
        me.member.heartbeat = me.member.heartbeat.saturating_add(1);
        me.last_increase = now;
        self.refresh();
        self.gossip_round()
    }

    /// A gossip message from peer `from` (the id the transport authenticated). Returns the reply
    /// to a [`GossipMessage::Digest`].
    pub fn step(&mut self, now: Ticks, from: &NodeId, msg: GossipMessage) -> Vec<Envelope> {
        self.advance(now);
        let (members, suspects, answer) = match msg {
            GossipMessage::Digest { members, suspects } => (members, suspects, true),
            GossipMessage::DigestReply { members, suspects } => (members, suspects, false),
        };
        let mut stamp = None;
        for m in members.into_iter().take(self.config.max_members) {
            if &m.id == from {
                stamp = Some((m.generation, m.heartbeat));
            }
            self.merge(m);
        }
        // Why only with the sender's own record: it dates the opinion, so a late duplicate
        // cannot overwrite a newer one. Every digest we build starts with that record.
        if let Some(stamp) = stamp {
            if from != &self.id && self.table.contains_key(from) {
                self.record_opinion(from, stamp, suspects);
            }
        }
        self.refresh();
        match self.table.get(from) {
            Some(e) if answer && from != &self.id => {
                let (members, suspects) = self.digest_parts();
                vec![Envelope {
                    from: self.id.clone(),
                    to: Target::Node {
                        id: from.clone(),
                        addr: e.member.peer_addr.clone(),
                    },
                    msg: GossipMessage::DigestReply { members, suspects },
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Adds a seed address (from the configuration, or `ringkv join ADDR`) and returns a digest
    /// for it at once. Seeds are gossiped to while this node knows no live peer, and now and then
    /// after, so that a partitioned cluster finds itself again. This node's own address is
    /// accepted and ignored.
    pub fn add_seed(&mut self, addr: impl Into<String>) -> Result<Vec<Envelope>, MembershipError> {
        let addr = addr.into();
        if addr.is_empty() || addr.len() > MAX_ADDR_LEN || addr.chars().any(char::is_control) {
            return Err(MembershipError::InvalidSeed(addr));
        }
        if addr == self.me().peer_addr {
            return Ok(Vec::new());
        }
        if !self.seeds.contains(&addr) && self.seeds.len() >= MAX_SEEDS {
            return Err(MembershipError::TooManySeeds);
        }
        self.seeds.insert(addr.clone());
        let to = self.target_for_addr(&addr);
        Ok(self.envelopes(vec![to]))
    }

    /// Moves this node's own status forward (`Up` once it has streamed in its partitions,
    /// `Leaving` on `ringkv leave`, `Left` once its handoff is done) and gossips it at once.
    /// Setting the current status again is a no-op.
    pub fn set_status(
        &mut self,
        now: Ticks,
        to: MemberStatus,
    ) -> Result<Vec<Envelope>, MembershipError> {
        self.advance(now);
        let now = self.now;
        let id = self.id.clone();
        let e = self.own_entry_mut();
        let from = e.member.status;
        if to == from {
            return Ok(Vec::new());
        }
        if to < from {
            return Err(MembershipError::StatusGoesBack { from, to });
        }
        e.member.status = to;
        if to == MemberStatus::Left {
            e.left_since = Some(now);
        }
        self.push_event(Event::StatusChanged { id, from, to });
        self.refresh();
        Ok(self.gossip_round())
    }

    /// `ringkv remove ID`: an operator takes a dead member out of the cluster from this node. It
    /// must be down here (a live member leaves by itself). Writes `Left` at the member's
    /// generation, which wins every merge of that generation, and gossips it at once. Removing a
    /// member already `Left` is a no-op. If the member was in fact alive, it learns it was removed
    /// and must restart with a new generation to rejoin.
    pub fn remove(&mut self, now: Ticks, id: &NodeId) -> Result<Vec<Envelope>, MembershipError> {
        self.advance(now);
        let now = self.now;
        if id == &self.id {
            return Err(MembershipError::RemoveSelf);
        }
        let e = self
            .table
            .get_mut(id)
            .ok_or_else(|| MembershipError::UnknownMember(id.clone()))?;
        let from = e.member.status;
        if from == MemberStatus::Left {
            return Ok(Vec::new());
        }
        if !e.down {
            return Err(MembershipError::NotDown(id.clone()));
        }
        e.member.status = MemberStatus::Left;
        e.left_since = Some(now);
        self.push_event(Event::StatusChanged {
            id: id.clone(),
            from,
            to: MemberStatus::Left,
        });
        self.refresh();
        Ok(self.gossip_round())
    }

    /// Merges a persisted member table at start, as if a peer had gossiped it (but with no
    /// opinion about anyone's health). Restored members count as heard from now: they are
    /// suspected only after `suspect_after` ticks of silence.
    pub fn restore(&mut self, now: Ticks, members: impl IntoIterator<Item = Member>) {
        self.advance(now);
        for m in members.into_iter().take(self.config.max_members) {
            self.merge(m);
        }
        self.refresh();
    }

    // ----- queries -----

    /// This node's id.
    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// This node's own record.
    pub fn me(&self) -> &Member {
        &self.table[&self.id].member
    }

    /// This node's current generation: persist it (or a larger start value) for the next start.
    pub fn generation(&self) -> Generation {
        self.me().generation
    }

    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Every member, this node and `Left` ones included, sorted by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table.values().map(|e| &e.member)
    }

    pub fn get(&self, id: &NodeId) -> Option<&Member> {
        self.table.get(id).map(|e| &e.member)
    }

    /// Marked down here (see the module doc). Unknown and `Left` members are not down.
    pub fn is_down(&self, id: &NodeId) -> bool {
        self.table.get(id).is_some_and(|e| e.down)
    }

    /// Suspected by this node: heartbeat silent for `suspect_after` (down or not).
    pub fn is_suspected(&self, id: &NodeId) -> bool {
        self.table.get(id).is_some_and(|e| e.suspected)
    }

    /// Members that are neither `Left` nor down, this node included, sorted by id.
    pub fn live_members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.table
            .values()
            .filter(|e| e.member.status != MemberStatus::Left && !e.down)
            .map(|e| &e.member)
    }

    /// The members that own partitions, for [`crate::Ring::build`]: `Joining` (so the ring gives
    /// them the partitions they stream in), `Up` and `Leaving`; not `Left`. Health does not
    /// matter: a down member keeps its partitions and sloppy quorum routes around it. Sorted by
    /// id; nodes with the same table get the same list.
    pub fn ring_members(&self) -> Vec<RingMember> {
        self.ring.iter().map(|(m, _)| m.clone()).collect()
    }

    /// The members that serve reads: `Up` and `Leaving` (a leaving member keeps its partitions
    /// until their new owners have them; a joining one has not got them yet). The ring of
    /// these is the one reads, anti-entropy and the W count of writes go by.
    pub fn read_ring_members(&self) -> Vec<RingMember> {
        self.ring_of(|s| matches!(s, MemberStatus::Up | MemberStatus::Leaving))
    }

    /// The members that will own partitions once every transfer is done: `Joining` and `Up`.
    /// Writes also go to the replicas this ring adds (the new owners, while they stream in), so
    /// nothing acknowledged during a transfer is missing when the ring switches.
    pub fn write_ring_members(&self) -> Vec<RingMember> {
        self.ring_of(|s| matches!(s, MemberStatus::Joining | MemberStatus::Up))
    }

    fn ring_of(&self, keep: impl Fn(MemberStatus) -> bool) -> Vec<RingMember> {
        self.ring
            .iter()
            .filter(|(_, s)| keep(*s))
            .map(|(m, _)| m.clone())
            .collect()
    }

    /// Ticks since `id`'s heartbeat last rose here, `None` for an unknown member.
    pub fn heartbeat_age(&self, id: &NodeId, now: Ticks) -> Option<Ticks> {
        let now = now.max(self.now);
        self.table.get(id).map(|e| now.since(e.last_increase))
    }

    /// Every member with this node's view of its health, sorted by id.
    pub fn view(&self) -> Vec<MemberView> {
        self.table
            .iter()
            .map(|(id, e)| MemberView {
                member: e.member.clone(),
                is_self: id == &self.id,
                suspected: e.suspected,
                down: e.down,
                heartbeat_age: self.now.since(e.last_increase),
                suspected_by: usize::from(e.suspected)
                    + peer_suspicions(&self.opinions, id, self.now, self.config.opinion_ttl()),
            })
            .collect()
    }

    /// Rises whenever the members owning partitions or their statuses change: the shell
    /// rebuilds its rings then.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Rises whenever a member is marked down or up again.
    pub fn health_epoch(&self) -> u64 {
        self.health_epoch
    }

    /// Events since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Events lost because nobody drained them (more than [`MAX_PENDING_EVENTS`] pending).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// Records skipped: invalid, or new members past `max_members`. A rising count means a
    /// buggy peer.
    pub fn ignored_records(&self) -> u64 {
        self.ignored_records
    }

    /// Seed addresses, sorted.
    pub fn seeds(&self) -> impl Iterator<Item = &str> + '_ {
        self.seeds.iter().map(String::as_str)
    }

    /// The digest this node would push now (without bumping its heartbeat).
    pub fn digest(&self) -> GossipMessage {
        let (members, suspects) = self.digest_parts();
        GossipMessage::Digest { members, suspects }
    }

    // ----- internals -----

    fn advance(&mut self, now: Ticks) {
        self.now = self.now.max(now);
    }

    fn own_entry_mut(&mut self) -> &mut Entry {
        self.table
            .get_mut(&self.id)
            .expect("the own record is never removed")
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events_dropped += 1;
        } else {
            self.events.push_back(event);
        }
    }

    /// Merges one gossiped record (see "Merge" in the module doc).
    fn merge(&mut self, remote: Member) {
        if remote.validate().is_err() {
            self.ignored_records += 1;
            return;
        }
        if remote.id == self.id {
            return self.merge_self(remote);
        }
        if let Some(&(generation, _)) = self.tombstones.get(&remote.id) {
            if remote.generation <= generation {
                return;
            }
            self.tombstones.remove(&remote.id);
        }
        let now = self.now;
        let Some(e) = self.table.get_mut(&remote.id) else {
            if self.table.len() >= self.config.max_members {
                self.ignored_records += 1;
                return;
            }
            self.push_event(Event::Discovered {
                id: remote.id.clone(),
                status: remote.status,
            });
            self.table
                .insert(remote.id.clone(), Entry::new(remote, now));
            return;
        };
        let mut events = Vec::new();
        let local = &mut e.member;
        let from = local.status;
        if remote.generation > local.generation {
            events.push(Event::Restarted {
                id: remote.id.clone(),
                generation: remote.generation,
            });
            *local = remote;
            e.last_increase = now;
        } else if remote.generation == local.generation {
            if remote.heartbeat > local.heartbeat {
                // The owner's newer record: heartbeat and the (per-generation fixed) fields.
                local.heartbeat = remote.heartbeat;
                local.peer_addr = remote.peer_addr;
                local.resp_addr = remote.resp_addr;
                local.http_addr = remote.http_addr;
                local.dc = remote.dc;
                local.rack = remote.rack;
                local.weight = remote.weight;
                e.last_increase = now;
            }
            local.status = local.status.max(remote.status);
        }
        let to = e.member.status;
        if to != from {
            e.left_since = (to == MemberStatus::Left).then_some(now);
            events.push(Event::StatusChanged {
                id: e.member.id.clone(),
                from,
                to,
            });
        }
        for event in events {
            self.push_event(event);
        }
    }

    /// A record of this node from elsewhere: this node's own state wins, except that it moves
    /// past a generation or heartbeat it sees of itself, and takes a larger status of its own
    /// generation (an operator's `remove`).
    fn merge_self(&mut self, remote: Member) {
        let me = &mut self.own_entry_mut().member;
        let from = me.status;
        let mut bumped = None;
        if remote.generation > me.generation {
            me.generation = Generation(remote.generation.0.saturating_add(1));
            me.heartbeat = 0;
            bumped = Some(me.generation);
        } else if remote.generation == me.generation {
            me.heartbeat = me.heartbeat.max(remote.heartbeat);
            me.status = me.status.max(remote.status);
        }
        let to = me.status;
        if let Some(generation) = bumped {
            self.push_event(Event::SelfGenerationBumped { generation });
        }
        if to != from {
            let now = self.now;
            self.own_entry_mut().left_since = (to == MemberStatus::Left).then_some(now);
            self.push_event(Event::StatusChanged {
                id: self.id.clone(),
                from,
                to,
            });
        }
    }

    fn record_opinion(&mut self, from: &NodeId, stamp: (Generation, u64), suspects: Vec<NodeId>) {
        if self.opinions.get(from).is_some_and(|o| o.stamp >= stamp) {
            return;
        }
        let suspects = suspects.into_iter().take(self.config.max_members).collect();
        self.opinions.insert(
            from.clone(),
            Opinion {
                stamp,
                at: self.now,
                suspects,
            },
        );
    }

    /// Re-evaluates everything that depends on time: stale opinions, forgotten members,
    /// suspicion and down, the ring epoch.
    fn refresh(&mut self) {
        let now = self.now;
        let ttl = self.config.opinion_ttl();
        self.opinions.retain(|_, o| now.since(o.at) <= ttl);

        let forget: Vec<NodeId> = self
            .table
            .iter()
            .filter(|(id, e)| {
                **id != self.id
                    && e.left_since
                        .is_some_and(|t| now.since(t) >= self.config.forget_left_after)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in forget {
            let e = self.table.remove(&id).expect("listed above");
            self.opinions.remove(&id);
            self.tombstones
                .insert(id.clone(), (e.member.generation, now));
            if self.tombstones.len() > self.config.max_members {
                let oldest = self
                    .tombstones
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(id, _)| id.clone());
                if let Some(oldest) = oldest {
                    self.tombstones.remove(&oldest);
                }
            }
            self.push_event(Event::Forgotten { id });
        }

        let mut events = Vec::new();
        let mut health_changed = false;
        let (me, config, opinions) = (&self.id, &self.config, &self.opinions);
        for (id, e) in self.table.iter_mut() {
            let (suspected, down) = if id == me || e.member.status == MemberStatus::Left {
                (false, false)
            } else {
                let suspected = now.since(e.last_increase) >= config.suspect_after;
                // This node must be one of the sources: two peers with broken links to a
                // member this node hears fine do not make it down here. Peers are counted only
                // for members suspected here, so a quiet cluster costs O(members) per message.
                let down = suspected
                    && 1 + peer_suspicions(opinions, id, now, ttl) >= config.down_after_sources;
                (suspected, down)
            };
            e.suspected = suspected;
            if down != e.down {
                e.down = down;
                health_changed = true;
                // A Left member stops being down silently: it is gone, not recovered.
                if down {
                    events.push(Event::Down { id: id.clone() });
                } else if e.member.status != MemberStatus::Left {
                    events.push(Event::Recovered { id: id.clone() });
                }
            }
        }
        for event in events {
            self.push_event(event);
        }
        if health_changed {
            self.health_epoch += 1;
        }

        if !self.ring_is_current() {
            self.ring = self
                .table
                .values()
                .filter(|e| e.member.status.owns_partitions())
                .map(|e| (e.member.ring_member(), e.member.status))
                .collect();
            self.epoch += 1;
        }
    }

    /// Whether the cached ring list still matches the table (without allocating).
    fn ring_is_current(&self) -> bool {
        let mut cached = self.ring.iter();
        for m in self
            .table
            .values()
            .map(|e| &e.member)
            .filter(|m| m.status.owns_partitions())
        {
            match cached.next() {
                Some((r, status))
                    if r.id == m.id
                        && r.weight == m.weight
                        && r.dc == m.dc
                        && r.rack == m.rack
                        && *status == m.status => {}
                _ => return false,
            }
        }
        cached.next().is_none()
    }

    /// The whole table, own record first, and this node's current suspects.
    fn digest_parts(&self) -> (Vec<Member>, Vec<NodeId>) {
        let mut members = Vec::with_capacity(self.table.len());
        members.push(self.me().clone());
        members.extend(
            self.table
                .iter()
                .filter(|(id, _)| **id != self.id)
                .map(|(_, e)| e.member.clone()),
        );
        members.truncate(self.config.max_members);
        let suspects = self
            .table
            .iter()
            .filter(|(_, e)| e.suspected)
            .map(|(id, _)| id.clone())
            .collect();
        (members, suspects)
    }

    /// A known member's target if some non-`Left` member has this peer address.
    fn target_for_addr(&self, addr: &str) -> Target {
        self.table
            .values()
            .find(|e| e.member.peer_addr == addr && e.member.status != MemberStatus::Left)
            .map(|e| Target::Node {
                id: e.member.id.clone(),
                addr: addr.to_string(),
            })
            .unwrap_or_else(|| Target::Addr(addr.to_string()))
    }

    /// Picks this tick's targets (see [`Membership::tick`]) and builds their digests.
    fn gossip_round(&mut self) -> Vec<Envelope> {
        let mut live = Vec::new();
        let mut down = Vec::new();
        for (id, e) in &self.table {
            if *id == self.id || e.member.status == MemberStatus::Left {
                continue;
            }
            let target = Target::Node {
                id: id.clone(),
                addr: e.member.peer_addr.clone(),
            };
            if e.down {
                down.push(target);
            } else {
                live.push(target);
            }
        }
        let live_count = live.len();
        let mut targets = self.rng.choose(live, self.config.fanout);
        // Why probe down members: a partition marks each side down on the other; without an
        // occasional probe neither side would ever hear the other again. Probability
        // down / (live + 1) keeps the probes per tick about constant as the cluster grows.
        if !down.is_empty() && self.rng.below(live_count + 1) < down.len() {
            let i = self.rng.below(down.len());
            targets.push(down.swap_remove(i));
        }
        let seeds: Vec<String> = self.seeds.iter().cloned().collect();
        if live_count == 0 {
            // Alone (a new node, or cut off): every seed, every tick, until someone answers.
            targets.extend(seeds.iter().map(|s| self.target_for_addr(s)));
        } else if !seeds.is_empty() && self.rng.below(live_count + 1) == 0 {
            let i = self.rng.below(seeds.len());
            targets.push(self.target_for_addr(&seeds[i]));
        }
        let mut seen = BTreeSet::new();
        targets.retain(|t| seen.insert(t.addr().to_string()));
        self.envelopes(targets)
    }

    fn envelopes(&self, targets: Vec<Target>) -> Vec<Envelope> {
        if targets.is_empty() {
            return Vec::new();
        }
        let (members, suspects) = self.digest_parts();
        targets
            .into_iter()
            .map(|to| Envelope {
                from: self.id.clone(),
                to,
                msg: GossipMessage::Digest {
                    members: members.clone(),
                    suspects: suspects.clone(),
                },
            })
            .collect()
    }
}

/// Peers whose opinion, at most `ttl` old, lists `id` as suspected.
fn peer_suspicions(
    opinions: &BTreeMap<NodeId, Opinion>,
    id: &NodeId,
    now: Ticks,
    ttl: Ticks,
) -> usize {
    opinions
        .iter()
        .filter(|(peer, o)| *peer != id && now.since(o.at) <= ttl && o.suspects.contains(id))
        .count()
}
