//! One simulated ringkv node: the shell the server's tokio tasks are, rewritten over the
//! simulation's queue, clock and disk, around the same core state machines.
//!
//! What is the server's code, called as the server calls it: `Membership` (gossip, failure
//! detection), `Ring` (`Ring::build_with`, per-data-center replication in two-data-center
//! runs), `Plan` (sloppy quorum; `write_quorum`, `read_quorum` and `read_targets` resolve a
//! level, `local_quorum` and `each_quorum` included), `route_write`, `PutCoordinator`,
//! `GetCoordinator` (read repair included), `SiblingSet::{write, overwrite, merge, prune}`,
//! `MemoryHints` and `HintWindow` (the handoff rules), `MerkleTree` via `MemoryPartition`, and
//! `AntiEntropySession`. What is modelled: the disk (writes are visible at once and durable at
//! the next group-commit flush, a few ms later; a crash loses what was not flushed), the peer
//! transport (see [`crate::net`]), timers, and the node's clock (an offset and a rate).
//!
//! The shell follows the server's rules: a coordinator's own write is durable before it
//! replicates; a replica acks a replicate or a hinted write only once durable; a stand-in stores
//! the hint with its own copy; a replicate that gets no answer by the write's deadline leaves a
//! coordinator hint for the node it was meant for (`replication.rs`, `HintOnFailure`); a
//! forward goes to a healthy replica, in the forwarding node's data center first
//! (`KeyPlan::forward_order`); a client's level resolves against the receiving node's own data
//! center; hints go to a target gossip shows healthy, in batches, and are
//! deleted only when unchanged after the target acked them; anti-entropy compares one
//! replicated partition with one healthy replica per interval and merges without a durability
//! wait; a restart rebuilds trees from disk and rejoins with a larger generation.

use crate::ctx::Ctx;
use crate::event::Level;
use crate::event::{ClientReply, ClientRequest, Event, Payload, Timer};
use bytes::Bytes;
use ringkv_core::anti_entropy::{
    AntiEntropyMessage, AntiEntropySession, Body, MemoryPartition, SessionConfig, SessionId,
};
use ringkv_core::coordinator::{
    route_write, Envelope, GetRequest, Message, Need, Plan, PutRequest, Quorum, ReadReply,
    ReplicaError, ReplicateAck, RequestId, Route,
};
use ringkv_core::handoff::{HintWindow, MemoryHints, StoredHint, BATCH};
use ringkv_core::membership::{Event as MemberEvent, Target, Ticks};
use ringkv_core::{
    Context, Dot, Generation, GetCoordinator, GetOutcome, GossipConfig, KeyHash, Member,
    MemberStatus, Membership, MerkleTree, NodeId, PartitionId, PutCoordinator, PutOutcome, Ring,
    SiblingSet, VersionVector,
};
use std::collections::{BTreeMap, BTreeSet};

mod anti_entropy;
mod handoff;
mod read;
mod replica;
mod storage;
mod write;

/// Where a coordinated write's outcome goes.
#[derive(Debug, Clone, Copy)]
enum ReplyTo {
    Client { client: usize, op: u64 },
    Forward { node: usize, fwd: RequestId },
}

/// Work that waits for the next flush (durability).
#[derive(Debug)]
enum AfterFlush {
    Ack { to: usize, ack: ReplicateAck },
    Delivered { to: usize, batch: u64 },
    StartPut(Box<PendingPut>),
}

#[derive(Debug)]
struct PendingPut {
    key: Bytes,
    set: SiblingSet,
    dot: Dot,
    covers: VersionVector,
    /// Resolved on the plan before the local write, as the server's `coordinate` does.
    quorum: Quorum,
    plan: Plan,
    reply_to: ReplyTo,
}

/// A write in flight on its coordinator, kept until every replica answered or the deadline
/// passed (after the client's answer too), so replicas that never answered get a hint.
struct PutState {
    put: PutCoordinator,
    dot: Dot,
    /// `None` once answered.
    reply_to: Option<ReplyTo>,
    t0: u64,
    key: Bytes,
    set: SiblingSet,
    plan: Plan,
}

struct GetState {
    get: GetCoordinator,
    reply_to: Option<(usize, u64)>,
    t0: u64,
}

struct Delivery {
    target: NodeId,
    sent: Vec<(Bytes, StoredHint)>,
}

/// What survives a crash: the flushed data and hints, the generation and the member list.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    pub data: BTreeMap<Bytes, SiblingSet>,
    pub hints: MemoryHints,
    pub generation: u64,
    pub members: Vec<Member>,
}

/// The volatile state of a running node.
pub struct Running {
    membership: Membership,
    ticks: u64,
    ring: (u64, Ring),
    data: BTreeMap<PartitionId, MemoryPartition>,
    hints: MemoryHints,
    dirty: BTreeSet<Bytes>,
    hints_dirty: bool,
    flush_scheduled: bool,
    waiting: Vec<AfterFlush>,
    next_request: u64,
    puts: BTreeMap<RequestId, PutState>,
    gets: BTreeMap<RequestId, GetState>,
    forwards: BTreeMap<RequestId, (usize, u64)>,
    deliveries: BTreeMap<u64, Delivery>,
    sessions: BTreeMap<(usize, SessionId), AntiEntropySession>,
    initiated: Option<(usize, SessionId)>,
    ae_cursor: usize,
    ae_turn: usize,
}

pub struct SimNode {
    pub idx: usize,
    pub id: NodeId,
    pub disk: Disk,
    /// `None` while crashed.
    pub run: Option<Running>,
    /// Incarnations so far: timers of an earlier one are ignored.
    life: u32,
    pub stats: NodeStats,
}

/// Counters of one node, summed into the run's report.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeStats {
    pub hints_stored: u64,
    /// Of those, hints a coordinator stored for a replica its replicate did not reach.
    pub coordinator_hints: u64,
    pub hints_delivered: u64,
    pub hints_dropped: u64,
    pub read_repairs: u64,
    pub ae_sessions: u64,
    pub ae_repaired_keys: u64,
    pub ae_bytes: u64,
}

pub fn node_id(idx: usize) -> NodeId {
    NodeId::new(format!("n{}", idx + 1)).expect("valid id")
}

pub fn node_addr(idx: usize) -> String {
    format!("n{}:7381", idx + 1)
}

fn idx_of(id: &NodeId) -> usize {
    id.as_str()[1..].parse::<usize>().expect("sim node id") - 1
}

fn idx_of_addr(addr: &str) -> Option<usize> {
    addr.strip_prefix('n')?
        .strip_suffix(":7381")?
        .parse::<usize>()
        .ok()
        .map(|i| i - 1)
}

impl SimNode {
    pub fn new(idx: usize) -> SimNode {
        SimNode {
            idx,
            id: node_id(idx),
            disk: Disk::default(),
            run: None,
            life: 0,
            stats: NodeStats::default(),
        }
    }

    pub fn is_up(&self) -> bool {
        self.run.is_some()
    }

    // ----- the node's clock -----

    /// The node's wall clock (ms) at real time `t`: skewed by an offset and a rate.
    fn wall(&self, ctx: &Ctx, t: u64) -> u64 {
        let c = &ctx.config;
        let local = t as i128 * c.clock_rate_ppm[self.idx] as i128 / 1_000_000
            + c.clock_offset_ms[self.idx] as i128
            + 1_000_000_000;
        local.max(0) as u64
    }

    fn now_wall(&self, ctx: &Ctx) -> u64 {
        self.wall(ctx, ctx.now)
    }

    /// Real time at which `local_ms` of this node's clock will have passed.
    fn after(&self, ctx: &Ctx, local_ms: u64) -> u64 {
        // Rounded up, and at least 1 ms: a timer must never fire at the instant it was set, or
        // a deadline that has not quite passed on the node's clock would re-arm forever.
        let rate = ctx.config.clock_rate_ppm[self.idx];
        ctx.now + (local_ms * 1_000_000).div_ceil(rate).max(1)
    }

    fn timer(&self, ctx: &mut Ctx, local_ms: u64, timer: Timer) {
        let at = self.after(ctx, local_ms);
        ctx.schedule(
            at,
            Event::Timer {
                node: self.idx,
                life: self.life,
                timer,
            },
        );
    }

    // ----- start, crash -----

    /// Starts (or restarts) the node from its disk: a larger generation, the persisted member
    /// list, trees rebuilt from the data, and every seed contacted.
    pub fn start(&mut self, ctx: &mut Ctx) {
        self.life += 1;
        self.disk.generation += 1;
        let config = &ctx.config;
        let mut me = Member::new(
            self.id.clone(),
            node_addr(self.idx),
            Generation(self.disk.generation),
        );
        me.status = MemberStatus::Up;
        me.dc = config.dc[self.idx].clone();
        me.rack = config.rack[self.idx].clone();
        let mut membership = Membership::new(
            me,
            GossipConfig::default(),
            config.seed ^ ((self.idx as u64) << 32) ^ self.life as u64,
        )
        .expect("valid membership");
        membership.restore(Ticks(0), self.disk.members.clone());
        let ring = build_ring(config, &membership);
        let mut data = BTreeMap::new();
        for (key, set) in &self.disk.data {
            let p = KeyHash::of(key).partition(config.partitions);
            data.entry(p)
                .or_insert_with(|| empty_partition(p, config.partitions, config.buckets))
                .put(key.clone(), set.clone());
        }
        let epoch = membership.epoch();
        self.run = Some(Running {
            membership,
            ticks: 0,
            ring: (epoch, ring),
            data,
            hints: self.disk.hints.clone(),
            dirty: BTreeSet::new(),
            hints_dirty: false,
            flush_scheduled: false,
            waiting: Vec::new(),
            next_request: (self.life as u64) << 40,
            puts: BTreeMap::new(),
            gets: BTreeMap::new(),
            forwards: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            sessions: BTreeMap::new(),
            initiated: None,
            ae_cursor: self.idx,
            ae_turn: 0,
        });
        // Every node knows every address as a seed, as `ringkv cluster up` configures them.
        for i in 0..ctx.config.nodes {
            let envs = self
                .run_mut()
                .membership
                .add_seed(node_addr(i))
                .expect("valid seed");
            self.send_gossip(ctx, envs);
        }
        self.after_membership(ctx);
        let first_tick = ctx.between(1, ctx.config.gossip_interval_ms);
        self.timer(ctx, first_tick, Timer::Gossip);
        let ae = ctx.between(1, ctx.config.anti_entropy_interval_ms);
        self.timer(ctx, ae, Timer::AntiEntropy);
        self.timer(ctx, 1000, Timer::AntiEntropyTick);
        let sweep = ctx.config.handoff_sweep_ms;
        self.timer(ctx, sweep, Timer::HandoffSweep);
    }

    /// SIGKILL: everything not flushed is gone, and so is every request in flight.
    pub fn crash(&mut self) {
        self.run = None;
        self.life += 1;
    }

    fn run_mut(&mut self) -> &mut Running {
        self.run.as_mut().expect("node is running")
    }

    fn run(&self) -> &Running {
        self.run.as_ref().expect("node is running")
    }

    fn next_request(&mut self) -> RequestId {
        let r = self.run_mut();
        r.next_request += 1;
        RequestId(r.next_request)
    }

    // ----- what the checker reads -----

    /// The ring as this node sees it.
    pub fn ring(&self) -> Option<&Ring> {
        self.run.as_ref().map(|r| &r.ring.1)
    }

    /// This node's current set of `key` (visible, flushed or not).
    pub fn set_of(&self, key: &[u8], partitions: u32) -> Option<SiblingSet> {
        let r = self.run.as_ref()?;
        let p = KeyHash::of(key).partition(partitions);
        r.data.get(&p)?.get(key).cloned()
    }

    pub fn hints_pending(&self) -> u64 {
        self.run.as_ref().map_or(0, |r| r.hints.total())
    }

    /// Members this node sees down or suspected.
    pub fn unhealthy_members(&self) -> usize {
        self.run.as_ref().map_or(0, |r| {
            r.membership
                .view()
                .iter()
                .filter(|v| v.down || v.suspected)
                .count()
        })
    }

    // ----- events -----

    pub fn on_timer(&mut self, ctx: &mut Ctx, life: u32, timer: Timer) {
        if life != self.life || self.run.is_none() {
            return;
        }
        match timer {
            Timer::Gossip => {
                let r = self.run_mut();
                r.ticks += 1;
                let envs = r.membership.tick(Ticks(r.ticks));
                self.send_gossip(ctx, envs);
                self.after_membership(ctx);
                let every = ctx.config.gossip_interval_ms;
                self.timer(ctx, every, Timer::Gossip);
            }
            Timer::Flush => self.flush(ctx),
            Timer::PutDeadline(req) => {
                let now = self.now_wall(ctx);
                if let Some(s) = self.run_mut().puts.get_mut(&req) {
                    s.put.tick(now.saturating_sub(s.t0));
                }
                self.finish_put(ctx, req);
            }
            Timer::GetDeadline(req) => {
                let now = self.now_wall(ctx);
                if let Some(s) = self.run_mut().gets.get_mut(&req) {
                    s.get.tick(now.saturating_sub(s.t0));
                }
                self.drive_get(ctx, req);
            }
            Timer::ForwardDeadline(fwd) => {
                // No answer from the replica: the client hears nothing either (outcome unknown),
                // as the server answers "may have been stored".
                if let Some((client, op)) = self.run_mut().forwards.remove(&fwd) {
                    reply(ctx, client, ClientReply::Put { op, acked: None });
                }
            }
            Timer::HandoffSweep => {
                self.handoff_sweep(ctx);
                let every = ctx.config.handoff_sweep_ms;
                self.timer(ctx, every, Timer::HandoffSweep);
            }
            Timer::HandoffDeadline(batch) => {
                self.run_mut().deliveries.remove(&batch);
            }
            Timer::AntiEntropy => {
                self.start_anti_entropy(ctx);
                let every = ctx.config.anti_entropy_interval_ms;
                self.timer(ctx, every, Timer::AntiEntropy);
            }
            Timer::AntiEntropyTick => {
                let now = self.now_wall(ctx);
                let r = self.run_mut();
                for s in r.sessions.values_mut() {
                    s.tick(now);
                }
                let done: Vec<_> = r
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.is_done())
                    .map(|(k, _)| *k)
                    .collect();
                for k in done {
                    self.end_session(k);
                }
                self.timer(ctx, 1000, Timer::AntiEntropyTick);
            }
        }
    }

    pub fn on_packet(&mut self, ctx: &mut Ctx, from: usize, payload: Payload) {
        if self.run.is_none() {
            return;
        }
        let from_id = node_id(from);
        match payload {
            Payload::Gossip(msg) => {
                let r = self.run_mut();
                let envs = r.membership.step(Ticks(r.ticks), &from_id, msg);
                self.send_gossip(ctx, envs);
                self.after_membership(ctx);
            }
            Payload::Core(msg) => self.on_core(ctx, from, msg),
            Payload::Hinted {
                intended,
                replicate,
            } => {
                if intended != self.id {
                    let now = self.now_wall(ctx);
                    let r = self.run_mut();
                    r.hints
                        .store(&intended, replicate.key.clone(), &replicate.set, now);
                    r.hints_dirty = true;
                    self.stats.hints_stored += 1;
                }
                self.merge(ctx, replicate.key.clone(), &replicate.set);
                self.after_flush(
                    ctx,
                    AfterFlush::Ack {
                        to: from,
                        ack: ReplicateAck {
                            request: replicate.request,
                            result: Ok(()),
                        },
                    },
                );
            }
            Payload::Forward {
                fwd,
                key,
                value,
                context,
                need,
            } => {
                // Coordinated here, never forwarded again (views converge through gossip).
                let plan = self.plan(ctx, &key);
                self.coordinate(
                    ctx,
                    key,
                    value,
                    context,
                    &need,
                    plan,
                    ReplyTo::Forward { node: from, fwd },
                );
            }
            Payload::ForwardReply { fwd, acked } => {
                if let Some((client, op)) = self.run_mut().forwards.remove(&fwd) {
                    reply(ctx, client, ClientReply::Put { op, acked });
                }
            }
            Payload::Deliver { batch, hints } => {
                for (key, set) in hints {
                    self.merge(ctx, key, &set);
                }
                self.after_flush(ctx, AfterFlush::Delivered { to: from, batch });
            }
            Payload::Delivered { batch } => {
                let Some(d) = self.run_mut().deliveries.remove(&batch) else {
                    return;
                };
                let r = self.run.as_mut().expect("running");
                let n = r.hints.remove_unchanged(&d.target, &d.sent);
                r.hints_dirty = true;
                self.stats.hints_delivered += n;
                self.schedule_flush(ctx);
                // More to send: the next batch at once.
                if self.run().hints.pending().contains_key(&d.target) {
                    self.deliver_to(ctx, &d.target);
                }
            }
            Payload::AntiEntropy(msg) => self.on_anti_entropy(ctx, from, msg),
        }
    }

    pub fn on_client(&mut self, ctx: &mut Ctx, client: usize, req: ClientRequest) {
        if self.run.is_none() {
            return;
        }
        match req {
            ClientRequest::Put {
                op,
                key,
                value,
                context,
                level,
            } => {
                let need = self.need(ctx, level, ctx.config.w);
                let plan = self.plan(ctx, &key);
                match route_write(&plan.targets, &self.id) {
                    Route::Local => self.coordinate(
                        ctx,
                        key,
                        value,
                        context,
                        &need,
                        plan,
                        ReplyTo::Client { client, op },
                    ),
                    Route::Forward(_) => {
                        // Healthy replicas first, this data center's first among them, as the
                        // server's `forward` does. The sim's transport never says "certainly
                        // not delivered" (a dead node is silent), so there is no second try.
                        let target = self.forward_order(ctx, &plan)[0].clone();
                        let fwd = self.next_request();
                        self.run_mut().forwards.insert(fwd, (client, op));
                        ctx.send(
                            self.idx,
                            idx_of(&target),
                            Payload::Forward {
                                fwd,
                                key,
                                value,
                                context,
                                need,
                            },
                        );
                        let t = ctx.config.request_timeout_ms;
                        self.timer(ctx, t, Timer::ForwardDeadline(fwd));
                    }
                    Route::NoReplica => reply(ctx, client, ClientReply::Put { op, acked: None }),
                }
            }
            ClientRequest::Get { op, key, level } => {
                let need = self.need(ctx, level, ctx.config.r);
                let plan = self.plan(ctx, &key);
                // As the server's `read`: the quorum and the replicas asked (`local_quorum`
                // only this data center's) both come from the plan.
                let ring = &self.run().ring.1;
                let dc_of = |id: &NodeId| ring.dc_of(id);
                let quorum = plan.read_quorum(&need, dc_of);
                let replicas = plan.read_targets(&need, &ctx.config.dc[self.idx], dc_of);
                let request = self.next_request();
                let t = ctx.config.request_timeout_ms;
                let get = GetCoordinator::new(GetRequest {
                    request,
                    coordinator: self.id.clone(),
                    key,
                    replicas,
                    quorum,
                    deadline_ms: t,
                    repair_deadline_ms: 2 * t,
                });
                let t0 = self.now_wall(ctx);
                self.run_mut().gets.insert(
                    request,
                    GetState {
                        get,
                        reply_to: Some((client, op)),
                        t0,
                    },
                );
                self.drive_get(ctx, request);
            }
        }
    }

    // ----- membership -----

    fn send_gossip(&mut self, ctx: &mut Ctx, envs: Vec<ringkv_core::membership::Envelope>) {
        for env in envs {
            let to = match &env.to {
                Target::Node { id, .. } => Some(idx_of(id)),
                Target::Addr(addr) => idx_of_addr(addr),
            };
            if let Some(to) = to {
                if to != self.idx {
                    ctx.send(self.idx, to, Payload::Gossip(env.msg));
                }
            }
        }
    }

    /// After every membership call: wake handoff on recoveries, rebuild the ring on a new
    /// epoch, persist the member list.
    fn after_membership(&mut self, ctx: &mut Ctx) {
        let r = self.run.as_mut().expect("node is running");
        let events = r.membership.drain_events();
        let epoch = r.membership.epoch();
        if epoch != r.ring.0 {
            let ring = build_ring(&ctx.config, &r.membership);
            r.ring = (epoch, ring);
        }
        self.disk.members = self.run().membership.members().cloned().collect();
        let wake = events.iter().any(|e| {
            matches!(
                e,
                MemberEvent::Recovered { .. } | MemberEvent::Restarted { .. }
            )
        });
        if wake {
            self.timer(ctx, 1, Timer::HandoffSweep);
        }
    }

    fn unhealthy(&self, id: &NodeId) -> bool {
        let m = &self.run().membership;
        m.is_down(id) || m.is_suspected(id)
    }

    fn plan(&self, ctx: &Ctx, key: &[u8]) -> Plan {
        let r = self.run();
        let ring = &r.ring.1;
        Plan::new(ring, ring.partition_of_key(key), ctx.config.n, |id| {
            r.membership.is_down(id)
        })
    }

    /// A client's level as this node resolves it (the server's `Node::required`): the
    /// configured count, or a data-center rule carrying this node's own data center.
    fn need(&self, ctx: &Ctx, level: Level, default: usize) -> Need {
        match level {
            Level::Default => Need::Count(default.min(ctx.config.n)),
            Level::LocalQuorum => Need::LocalQuorum {
                dc: ctx.config.dc[self.idx].clone(),
            },
            Level::EachQuorum => Need::EachQuorum,
        }
    }

    /// The replicas a forward may go to, best first: the server's `KeyPlan::forward_order`
    /// (healthy before unhealthy and, within each, this node's data center first).
    fn forward_order(&self, ctx: &Ctx, plan: &Plan) -> Vec<NodeId> {
        let ring = &self.run().ring.1;
        let local = ctx.config.dc[self.idx].as_str();
        let mut order = plan.targets.clone();
        order.sort_by_key(|id| (self.unhealthy(id), ring.dc_of(id) != Some(local)));
        order
    }
}

/// The ring of the members that own partitions, with the run's per-data-center replication
/// (none with one data center: `build_with` with an empty map is `Ring::build`).
fn build_ring(config: &crate::SimConfig, membership: &Membership) -> Ring {
    Ring::build_with(
        &membership.ring_members(),
        config.partitions,
        &config.replication,
    )
    .expect("ring")
}

fn empty_partition(p: PartitionId, partitions: u32, buckets: u32) -> MemoryPartition {
    MemoryPartition::new(MerkleTree::new(p, partitions, buckets).expect("tree shape"))
}

fn session_config() -> SessionConfig {
    SessionConfig {
        idle_timeout_ms: 3_000,
        ..SessionConfig::default()
    }
}

fn reply(ctx: &mut Ctx, client: usize, reply: ClientReply) {
    let d = ctx.between(1, 3);
    ctx.schedule(ctx.now + d, Event::ToClient { client, reply });
}
