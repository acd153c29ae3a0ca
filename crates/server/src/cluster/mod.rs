//! The cluster as this node sees it: the gossip membership, the ring built from it, and the peer
//! client that reaches the other members. The pure state machines live in `ringkv_core`
//! (`membership`, `ring`, `coordinator`); this module owns the shared state the IO shell needs
//! around them, and its submodules are the tasks that drive them:
//!
//! - [`gossip`]: ticks [`Membership`] every `gossip_interval_ms`, sends its envelopes on tag
//!   `GOSSIP`, feeds received ones to `step`, persists generation and member list in `meta`.
//! - [`replication`]: the coordinator shell of client reads and writes (preference lists,
//!   `PutCoordinator`, `GetCoordinator`, forwarding, read repair) and the replica side of tag
//!   `REPLICA`, with sloppy quorum: a down replica's place goes to the next healthy node past
//!   the preference list.
//! - [`hints`]: the `hints` keyspace, where a stand-in keeps what it took for a down node.
//! - [`handoff`]: tag `HANDOFF` (a stand-in's hinted writes, hint delivery) and the worker that
//!   streams hints to their node once gossip shows it up again.
//! - [`streaming`]: tag `STREAMING` (partition chunks, transfer confirmations) and the worker
//!   that pulls the partitions this node newly owns and moves it `Joining -> Up` and
//!   `Leaving -> Left`.
//! - [`anti_entropy`]: tag `ANTI_ENTROPY` (Merkle tree exchanges, call/response) and the worker
//!   that compares one replicated partition with one other replica every
//!   `anti_entropy_interval_ms`.
//!
//! # Locks
//! `Membership` sits behind a `parking_lot::Mutex`, held only for one pure call (never across an
//! await): the gossip task, the gossip handler and the HTTP status pages all take it briefly.
//! The ring is an `Arc<Ring>` behind an `RwLock`, swapped whole when the membership epoch
//! changes, so a request clones the `Arc` once and routes on a stable ring.
//!
//! IMPLEMENTATION CAVEATS
//! - Two rings while partitions move: [`Cluster::ring`] (members `Up` and `Leaving`: reads,
//!   anti-entropy, the W count) and [`Cluster::write_ring`] (`Joining` and `Up`: writes also go
//!   to its new owners). [`streaming`] moves the data and the statuses along.
//! - Advertised addresses are the configured listener addresses: a node listening on
//!   `0.0.0.0` advertises that, which peers cannot dial. Configure routable addresses.

pub mod anti_entropy;
pub mod gossip;
pub mod handoff;
pub mod hints;
pub mod replication;
pub mod streaming;
pub mod tombstones;

use crate::peer::PeerClient;
use parking_lot::{Mutex, RwLock};
use ringkv_core::membership::{GossipConfig, Ticks};
use ringkv_core::{DcReplication, Member, Membership, NodeId, Ring};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Shared cluster state. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    membership: Mutex<Membership>,
    /// (epoch, read ring, write ring): the same `Arc` when no transfer is in progress.
    ring: RwLock<(u64, Arc<Ring>, Arc<Ring>)>,
    partitions: u32,
    /// Per-data-center replication (empty: N spread over every data center).
    replication: DcReplication,
    /// Gossip ticks so far: the logical clock `Membership` runs on.
    ticks: AtomicU64,
    /// Set when the member table changed in a way worth persisting (epoch, status, generation).
    dirty: AtomicBool,
    /// Set by `server::start` once the peer listener runs; `None` in in-process API tests.
    client: OnceLock<PeerClient>,
    /// The peer listener's counters, for `/metrics`; set with the client.
    server_stats: OnceLock<Arc<crate::peer::PeerStats>>,
    next_request: AtomicU64,
    /// Wakes the handoff worker when gossip shows a member up again.
    handoff_wake: Arc<tokio::sync::Notify>,
}

impl Cluster {
    /// Wraps a membership (already holding this node's record and any persisted members).
    pub fn new(membership: Membership, partitions: u32, replication: DcReplication) -> Cluster {
        let (read, write) = Self::build_rings(&membership, partitions, &replication);
        let epoch = membership.epoch();
        Cluster {
            inner: Arc::new(Inner {
                membership: Mutex::new(membership),
                ring: RwLock::new((epoch, read, write)),
                partitions,
                replication,
                ticks: AtomicU64::new(0),
                dirty: AtomicBool::new(true),
                client: OnceLock::new(),
                server_stats: OnceLock::new(),
                next_request: AtomicU64::new(1),
                handoff_wake: Arc::new(tokio::sync::Notify::new()),
            }),
        }
    }

    /// The read ring (`Up` and `Leaving` members) and the write ring (`Joining` and `Up`), the
    /// same `Arc` when they hold the same members.
    fn build_rings(
        m: &Membership,
        partitions: u32,
        replication: &DcReplication,
    ) -> (Arc<Ring>, Arc<Ring>) {
        let build = |mut members: Vec<ringkv_core::RingMember>| {
            if members.is_empty() {
                // Only while nobody is up yet (a new cluster's first seconds) or this node is
                // `Left`: keep routing to itself rather than to nobody.
                members.push(m.me().ring_member());
            }
            Arc::new(
                Ring::build_with(&members, partitions, replication)
                    .expect("ring of valid members builds"),
            )
        };
        let (read_members, write_members) = (m.read_ring_members(), m.write_ring_members());
        let read = build(read_members.clone());
        let write = if write_members == read_members || write_members.is_empty() {
            read.clone()
        } else {
            build(write_members)
        };
        (read, write)
    }

    /// The ring as of the latest membership epoch: the read ring (reads, anti-entropy, the
    /// W count of writes).
    pub fn ring(&self) -> Arc<Ring> {
        self.inner.ring.read().1.clone()
    }

    /// The ring once the transfers in progress are done (joining members in, leaving ones out);
    /// the same `Arc` as [`Cluster::ring`] when none is.
    pub fn write_ring(&self) -> Arc<Ring> {
        self.inner.ring.read().2.clone()
    }

    /// Runs `f` on the membership, then rebuilds the ring if the epoch moved.
    pub fn with_membership<T>(&self, f: impl FnOnce(&mut Membership, Ticks) -> T) -> T {
        let now = self.now();
        let mut m = self.inner.membership.lock();
        let out = f(&mut m, now);
        let epoch = m.epoch();
        if epoch != self.inner.ring.read().0 {
            let (read, write) =
                Self::build_rings(&m, self.inner.partitions, &self.inner.replication);
            *self.inner.ring.write() = (epoch, read, write);
            self.inner.dirty.store(true, Ordering::Release);
            tracing::info!(epoch, members = m.read_ring_members().len(), "ring rebuilt");
        }
        out
    }

    /// The current logical time.
    pub fn now(&self) -> Ticks {
        Ticks(self.inner.ticks.load(Ordering::Acquire))
    }

    /// Advances the logical clock by one tick and returns the new time.
    pub(crate) fn advance(&self) -> Ticks {
        Ticks(self.inner.ticks.fetch_add(1, Ordering::AcqRel) + 1)
    }

    pub(crate) fn mark_dirty(&self) {
        self.inner.dirty.store(true, Ordering::Release);
    }

    pub(crate) fn take_dirty(&self) -> bool {
        self.inner.dirty.swap(false, Ordering::AcqRel)
    }

    /// A member's peer address, when it is in the table.
    pub fn peer_addr(&self, id: &NodeId) -> Option<String> {
        self.inner
            .membership
            .lock()
            .get(id)
            .map(|m| m.peer_addr.clone())
    }

    /// True when gossip marks `id` down or this node suspects it.
    pub fn is_unhealthy(&self, id: &NodeId) -> bool {
        let m = self.inner.membership.lock();
        m.is_down(id) || m.is_suspected(id)
    }

    /// True when gossip marks `id` down (at least two sources agree): sloppy quorum routes
    /// around it.
    pub fn is_down(&self, id: &NodeId) -> bool {
        self.inner.membership.lock().is_down(id)
    }

    /// The handoff worker's wake-up.
    pub(crate) fn handoff_wake(&self) -> Arc<tokio::sync::Notify> {
        self.inner.handoff_wake.clone()
    }

    /// Members with this node's view of their health.
    pub fn view(&self) -> Vec<ringkv_core::membership::MemberView> {
        self.inner.membership.lock().view()
    }

    pub fn me(&self) -> Member {
        self.inner.membership.lock().me().clone()
    }

    pub fn gossip_config(&self) -> GossipConfig {
        self.inner.membership.lock().config().clone()
    }

    pub(crate) fn set_client(&self, client: PeerClient) {
        let _ = self.inner.client.set(client);
    }

    pub(crate) fn set_server_stats(&self, stats: Arc<crate::peer::PeerStats>) {
        let _ = self.inner.server_stats.set(stats);
    }

    pub(crate) fn server_stats(&self) -> Option<&Arc<crate::peer::PeerStats>> {
        self.inner.server_stats.get()
    }

    pub(crate) fn client(&self) -> Option<&PeerClient> {
        self.inner.client.get()
    }

    pub(crate) fn next_request(&self) -> ringkv_core::coordinator::RequestId {
        ringkv_core::coordinator::RequestId(self.inner.next_request.fetch_add(1, Ordering::Relaxed))
    }
}
