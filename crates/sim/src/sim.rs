//! One simulated run: the cluster starts, clients run with no fault (phase A), then under a
//! schedule of faults drawn from the seed (phase B), then everything heals, clients stop, and
//! the run waits for every replica to converge (phase C) before the checker reads the history.

use crate::checker::{Checked, DcCut, Layout, Outage, CLEAN_DELAY_MS};
use crate::config::SimConfig;
use crate::ctx::Ctx;
use crate::event::{Event, Fault};
use crate::net::NetStats;
use crate::node::{NodeStats, SimNode};
use crate::workload::{key_name, Client};
use ringkv_core::SiblingSet;
use std::collections::BTreeMap;

/// Clients start this long after the nodes, once gossip has found everyone.
const BOOT_MS: u64 = 5_000;
/// How often phase C looks for convergence.
const CHECK_EVERY_MS: u64 = 100;

/// What a run did, for the test's summary.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    /// Two data centers (per-DC replication) rather than one.
    pub multi_dc: bool,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    pub checked: Checked,
    pub reads: u64,
    pub net: NetStats,
    pub nodes: NodeStats,
    /// From the heal to every replica of every key holding the same set, no hints left.
    pub convergence_ms: u64,
    /// Simulated time of the whole run.
    pub simulated_ms: u64,
}

/// A run that broke a property: what broke, and the seed that reproduces it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    pub at_ms: u64,
    pub what: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at {} ms of simulated time: {}\n  reproduce with: \
             RINGKV_SIM_SEED={} cargo test -p ringkv-sim --test simulation -- --nocapture",
            self.seed, self.at_ms, self.what, self.seed
        )
    }
}

/// Runs the simulation of `seed` to its end.
pub fn run(seed: u64) -> Result<Report, Failure> {
    Simulation::new(SimConfig::from_seed(seed)).run()
}

pub struct Simulation {
    ctx: Ctx,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    report: Report,
    calm_until: u64,
    heal_at: u64,
}

impl Simulation {
    pub fn new(config: SimConfig) -> Simulation {
        let calm_until = BOOT_MS + config.calm_ms;
        let heal_at = calm_until + config.faults_ms;
        let nodes = (0..config.nodes).map(SimNode::new).collect();
        let clients = (0..config.clients)
            .map(|i| Client::new(i, heal_at, config.client_dc[i].clone()))
            .collect();
        Simulation {
            report: Report {
                seed: config.seed,
                multi_dc: config.multi_dc(),
                ..Report::default()
            },
            ctx: Ctx::new(config),
            nodes,
            clients,
            calm_until,
            heal_at,
        }
    }

    fn fail(&self, what: String) -> Failure {
        Failure {
            seed: self.ctx.config.seed,
            at_ms: self.ctx.now,
            what,
        }
    }

    pub fn run(mut self) -> Result<Report, Failure> {
        // Phase A's network loses nothing but, with two data centers, some messages straggle,
        // so that a read can overtake the replicates of a write acknowledged just before it
        // (what makes the intersection checks bite there, where most local quorums are all of
        // a data center's replicas). The first fault episode's weather ends it.
        self.ctx.net.straggle_permille = self.ctx.config.calm_straggle_permille;
        self.ctx.net.straggle_ms = self.ctx.config.calm_straggle_ms;
        for node in &mut self.nodes {
            node.start(&mut self.ctx);
        }
        for c in 0..self.clients.len() {
            let at = BOOT_MS + self.ctx.between(0, 50);
            self.ctx.schedule(at, Event::ClientWake { client: c });
        }
        self.schedule_faults();
        let deadline = self.heal_at + self.ctx.config.converge_within_ms;
        let mut booted = false;
        let mut next_check = self.heal_at;
        while let Some((at, event)) = self.ctx.pop() {
            if !booted && at >= BOOT_MS {
                booted = true;
                if let Some(why) = self.unsettled() {
                    return Err(self.fail(format!("cluster did not form: {why}")));
                }
            }
            if at >= next_check {
                self.ctx.now = next_check;
                if self.clients.iter().all(Client::is_idle) && self.unsettled().is_none() {
                    self.report.convergence_ms = next_check - self.heal_at;
                    break;
                }
                next_check += CHECK_EVERY_MS;
                if next_check > deadline {
                    let why = self.unsettled().unwrap_or_default();
                    return Err(self.fail(format!(
                        "replicas did not converge within {} ms of the heal: {why}",
                        self.ctx.config.converge_within_ms
                    )));
                }
            }
            self.ctx.now = at;
            self.dispatch(event);
        }
        self.report.simulated_ms = self.ctx.now;
        self.check()
    }

    fn dispatch(&mut self, event: Event) {
        let ctx = &mut self.ctx;
        match event {
            Event::Packet { from, to, payload } => self.nodes[to].on_packet(ctx, from, payload),
            Event::Timer { node, life, timer } => self.nodes[node].on_timer(ctx, life, timer),
            Event::ToNode { node, client, req } => self.nodes[node].on_client(ctx, client, req),
            Event::ToClient { client, reply } => self.clients[client].on_reply(ctx, reply),
            Event::ClientWake { client } => self.clients[client].wake(ctx),
            Event::ClientGiveUp { client, op } => self.clients[client].on_give_up(ctx, op),
            Event::Fault(f) => self.apply(f),
        }
    }

    fn apply(&mut self, fault: Fault) {
        let ctx = &mut self.ctx;
        match fault {
            Fault::Cut(links, _) => {
                for (a, b) in links {
                    ctx.net.cut(a, b);
                }
            }
            Fault::Heal => {
                ctx.net.heal();
                ctx.net.delay_ms = (1, 10);
            }
            Fault::Crash(i) => self.nodes[i].crash(),
            Fault::Restart(i) => {
                if !self.nodes[i].is_up() {
                    self.nodes[i].start(ctx);
                }
            }
            Fault::Weather {
                loss_permille,
                dup_permille,
                delay_ms,
            } => {
                ctx.net.loss_permille = loss_permille;
                ctx.net.dup_permille = dup_permille;
                ctx.net.delay_ms = delay_ms;
                ctx.net.straggle_permille = 0;
            }
        }
    }

    /// Draws phase B's faults from the seed: back-to-back episodes, each a network fault (two
    /// halves, one node isolated, a one-way cut and, with two data centers, one in five a
    /// data-center cut: every link between them, both ways) under its own weather (loss,
    /// duplication, delay and so reordering; half the data-center cuts have no loss and short
    /// delays, so the checker can hold local requests to success), some with a node crashed
    /// and restarted inside it. Everything heals at `heal_at`.
    fn schedule_faults(&mut self) {
        let nodes = self.ctx.config.nodes;
        let multi_dc = self.ctx.config.multi_dc();
        let mut t = self.calm_until;
        let count = |report: &mut Report, kind: &'static str| {
            *report.faults.entry(kind).or_default() += 1;
        };
        while t + 2_000 < self.heal_at {
            // Drawn only with two data centers: one-data-center seeds draw what they always did.
            let dc_cut = multi_dc && self.ctx.rng.below(5) == 0;
            let start = t + self.ctx.between(0, 2_000);
            // A data-center cut lasts longer, so more requests fit in it whole.
            let length = if dc_cut {
                self.ctx.between(4_000, 12_000)
            } else {
                self.ctx.between(2_000, 9_000)
            };
            let end = (start + length).min(self.heal_at);
            let clean = dc_cut && self.ctx.rng.below(2) == 0;
            let weather = if clean {
                Fault::Weather {
                    loss_permille: 0,
                    dup_permille: self.ctx.between(0, 50),
                    delay_ms: (1, self.ctx.between(10, CLEAN_DELAY_MS)),
                }
            } else {
                Fault::Weather {
                    loss_permille: self.ctx.between(0, 100),
                    dup_permille: self.ctx.between(0, 50),
                    delay_ms: (1, self.ctx.between(10, 150)),
                }
            };
            count(&mut self.report, "weather (loss, duplication, delay)");
            self.ctx.schedule(start, Event::Fault(weather));
            let mut order: Vec<usize> = (0..nodes).collect();
            if !dc_cut {
                for i in 0..nodes {
                    let j = i + self.ctx.rng.below(nodes - i);
                    order.swap(i, j);
                }
            }
            let kind_draw = if dc_cut { 4 } else { self.ctx.rng.below(4) };
            let config = &self.ctx.config;
            let (links, kind): (Vec<(usize, usize)>, &'static str) = match kind_draw {
                0 => {
                    let (a, b) = order.split_at(2);
                    let kind = if nodes == 5 {
                        "partition 2 | 3"
                    } else {
                        "partition 2 | 4"
                    };
                    (both_ways(a, b), kind)
                }
                1 => (both_ways(&order[..1], &order[1..]), "single node isolated"),
                2 => (
                    order[1..].iter().map(|&o| (order[0], o)).collect(),
                    "one-way cut (a node cannot send)",
                ),
                3 => (
                    order[1..].iter().map(|&o| (o, order[0])).collect(),
                    "one-way cut (a node cannot receive)",
                ),
                _ => (
                    both_ways(
                        &config.nodes_in(crate::config::DC1),
                        &config.nodes_in(crate::config::DC2),
                    ),
                    if clean {
                        "data-center cut (no loss)"
                    } else {
                        "data-center cut (lossy)"
                    },
                ),
            };
            count(&mut self.report, kind);
            if dc_cut {
                self.ctx.history.dc_cuts.push(DcCut { start, end, clean });
            }
            self.ctx
                .schedule(start, Event::Fault(Fault::Cut(links, kind)));
            if self.ctx.rng.below(2) == 0 {
                let victim = self.ctx.rng.below(nodes);
                // Inside the episode, so the restart (at its end at the latest) comes after.
                let down = start + self.ctx.between(0, 1_000.min((end - start) / 2));
                let up = (down + self.ctx.between(1_000, 6_000)).min(end);
                count(&mut self.report, "crash and restart");
                self.ctx.history.outages.push(Outage {
                    node: victim,
                    down,
                    up,
                });
                self.ctx.schedule(down, Event::Fault(Fault::Crash(victim)));
                self.ctx.schedule(up, Event::Fault(Fault::Restart(victim)));
            }
            self.ctx.schedule(end, Event::Fault(Fault::Heal));
            t = end;
        }
        self.ctx.schedule(self.heal_at, Event::Fault(Fault::Heal));
        for i in 0..nodes {
            self.ctx
                .schedule(self.heal_at, Event::Fault(Fault::Restart(i)));
        }
    }

    /// Why the cluster is not converged yet, or `None` when it is: every node up, seeing every
    /// member healthy and the same ring, no hints left, and every replica of every key holding
    /// the same set.
    fn unsettled(&self) -> Option<String> {
        let config = &self.ctx.config;
        if let Some(n) = self.nodes.iter().find(|n| !n.is_up()) {
            return Some(format!("{} is down", n.id));
        }
        let ring = self.nodes[0].ring().expect("up");
        for n in &self.nodes {
            if n.ring() != Some(ring) || ring.members().len() != config.nodes {
                return Some(format!("{} sees another ring", n.id));
            }
            if n.unhealthy_members() > 0 {
                return Some(format!("{} sees unhealthy members", n.id));
            }
            if n.hints_pending() > 0 {
                return Some(format!("{} holds {} hints", n.id, n.hints_pending()));
            }
        }
        for k in 0..config.keys {
            let key = key_name(k);
            let replicas = ring.preference_list_for_key(&key, config.n);
            let sets: Vec<Option<SiblingSet>> = replicas
                .iter()
                .map(|id| self.node(id).set_of(&key, config.partitions))
                .collect();
            if sets.windows(2).any(|w| w[0] != w[1]) {
                return Some(format!(
                    "replicas {replicas:?} of {:?} differ",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        None
    }

    fn node(&self, id: &ringkv_core::NodeId) -> &SimNode {
        self.nodes
            .iter()
            .find(|n| &n.id == id)
            .expect("member of the sim")
    }

    fn check(mut self) -> Result<Report, Failure> {
        let config = &self.ctx.config;
        let ring = self.nodes[0].ring().expect("up").clone();
        let mut final_sets = BTreeMap::new();
        let mut layout: BTreeMap<bytes::Bytes, Layout> = BTreeMap::new();
        let mut replica_nodes: BTreeMap<bytes::Bytes, Vec<usize>> = BTreeMap::new();
        for k in 0..config.keys {
            let key = key_name(k);
            let replicas = ring.preference_list_for_key(&key, config.n);
            replica_nodes.insert(
                key.clone(),
                replicas.iter().map(|id| self.node(id).idx).collect(),
            );
            let per_dc = layout.entry(key.clone()).or_default();
            for id in &replicas {
                *per_dc
                    .entry(ring.dc_of(id).expect("member").to_string())
                    .or_default() += 1;
            }
            if let Some(set) = self.node(&replicas[0]).set_of(&key, config.partitions) {
                final_sets.insert(key, set);
            }
        }
        let history = &self.ctx.history;
        let mut checked = Checked::default();
        // How long a client waits for an answer (`Client::wake`).
        let window = 4 * config.request_timeout_ms;
        let result = history
            .check_no_lost_writes(&final_sets, &mut checked)
            .and_then(|()| history.check_calm_reads(self.calm_until, &layout, &mut checked))
            .and_then(|()| history.check_dc_cuts(&config.dc, &replica_nodes, window, &mut checked));
        if let Err(what) = result {
            return Err(self.fail(what));
        }
        self.report.checked = checked;
        self.report.reads = history.reads.len() as u64;
        self.report.net = self.ctx.net.stats;
        for n in &self.nodes {
            let (s, t) = (&mut self.report.nodes, n.stats);
            s.hints_stored += t.hints_stored;
            s.coordinator_hints += t.coordinator_hints;
            s.hints_delivered += t.hints_delivered;
            s.hints_dropped += t.hints_dropped;
            s.read_repairs += t.read_repairs;
            s.ae_sessions += t.ae_sessions;
            s.ae_repaired_keys += t.ae_repaired_keys;
            s.ae_bytes += t.ae_bytes;
        }
        self.report.simulated_ms = self.ctx.now;
        Ok(self.report)
    }
}

fn both_ways(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &x in a {
        for &y in b {
            out.push((x, y));
            out.push((y, x));
        }
    }
    out
}
