//! What one simulated run looks like, drawn from its seed.

use ringkv_core::membership::rng::SplitMix64;
use ringkv_core::DcReplication;

/// The shape of one run. Everything is drawn from the seed, so the seed alone reproduces it.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Replicas per key: 3 with one data center; the sum of [`SimConfig::replication`] with two.
    pub n: usize,
    /// The plain-count levels (`Need::Count`) clients use by default; R + W > N always.
    pub w: usize,
    pub r: usize,
    /// Each node's data center and rack (index = node). One data center, one rack: `dc1`,
    /// `rack1` for every node, as `Member::new` defaults them.
    pub dc: Vec<String>,
    pub rack: Vec<String>,
    /// Per-data-center replica counts (`Ring::build_with`); empty with one data center.
    pub replication: DcReplication,
    /// The data center each client sits in (and sends to); `None` with one data center, where
    /// clients send to any node.
    pub client_dc: Vec<Option<String>>,
    /// Ring partitions (a power of two).
    pub partitions: u32,
    /// Merkle tree leaves per partition.
    pub buckets: u32,
    /// Keys the clients share (few, so writes collide and make siblings).
    pub keys: usize,
    pub clients: usize,
    /// A coordinator's deadline for one request, in the node's local milliseconds.
    pub request_timeout_ms: u64,
    pub gossip_interval_ms: u64,
    pub anti_entropy_interval_ms: u64,
    pub handoff_sweep_ms: u64,
    pub hint_window_ms: u64,
    /// Phase A: no faults (the R + W > N check runs on it), from the cluster's start.
    pub calm_ms: u64,
    /// Phase A's stragglers: this share of messages (per mille) takes `calm_straggle_ms` more
    /// on top of its delay, so a read can overtake the last replicates of a write acknowledged
    /// just before it. None with one data center (its phase A is as it always was).
    pub calm_straggle_permille: u64,
    pub calm_straggle_ms: (u64, u64),
    /// Phase B: faults, right after phase A. Everything heals at its end and clients stop.
    pub faults_ms: u64,
    /// Phase C: how long after the heal every replica must have converged.
    pub converge_within_ms: u64,
    /// Per node: wall-clock offset (ms) and clock rate (parts per million of real time).
    pub clock_offset_ms: Vec<i64>,
    pub clock_rate_ppm: Vec<u64>,
}

/// The data centers of a two-data-center run.
pub const DC1: &str = "dc1";
pub const DC2: &str = "dc2";

impl SimConfig {
    /// Half the seeds (drawn from the seed) run two data centers of three nodes each; the
    /// others the single-data-center 5-node cluster. The topology is drawn from a stream of
    /// its own, so a single-data-center seed draws everything else exactly as before data
    /// centers existed.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut topo = SplitMix64::new(seed ^ TOPOLOGY_STREAM);
        if topo.below(2) == 0 {
            SimConfig::two_data_centers(seed, &mut topo)
        } else {
            SimConfig::one_data_center(seed)
        }
    }

    /// Today's shape: 5 nodes in one data center and rack, N = 3, W = 2, R = 2.
    pub fn one_data_center(seed: u64) -> SimConfig {
        SimConfig::drawn(seed, 5, 3, 2, 2)
    }

    /// 6 nodes, three per data center (which ids go where, and their racks, drawn), with
    /// `{dc1: 2, dc2: 1}` or `{dc1: 2, dc2: 2}` replicas, and clients placed in either. Phase
    /// A has stragglers and lasts 12 s rather than 8 (stragglers slow the clients down; the
    /// longer phase keeps the number of calm reads checked).
    pub fn two_data_centers(seed: u64, topo: &mut SplitMix64) -> SimConfig {
        let nodes = 6;
        let dc2_copies = 1 + topo.below(2);
        let n = 2 + dc2_copies;
        // N = 3: W = 2, R = 2; N = 4: W = 3, R = 2. R + W > N either way.
        let (w, r) = if n == 3 { (2, 2) } else { (3, 2) };
        let mut config = SimConfig::drawn(seed, nodes, n, w, r);
        let mut order: Vec<usize> = (0..nodes).collect();
        for i in 0..nodes {
            let j = i + topo.below(nodes - i);
            order.swap(i, j);
        }
        for (at, dc) in [(0, DC1), (3, DC2)] {
            // One to three racks in each data center.
            let racks = 1 + topo.below(3);
            for (k, &node) in order[at..at + 3].iter().enumerate() {
                config.dc[node] = dc.to_string();
                config.rack[node] = format!("rack{}", 1 + k % racks);
            }
        }
        config.replication = [(DC1.to_string(), 2), (DC2.to_string(), dc2_copies)].into();
        config.calm_ms = 12_000;
        config.calm_straggle_permille = 200;
        config.calm_straggle_ms = (20, 240);
        config.client_dc = (0..config.clients)
            .map(|_| Some([DC1, DC2][topo.below(2)].to_string()))
            .collect();
        config
    }

    fn drawn(seed: u64, nodes: usize, n: usize, w: usize, r: usize) -> SimConfig {
        let mut rng = SplitMix64::new(seed ^ CONFIG_STREAM);
        let keys = 12 + rng.below(12);
        let clients = 4 + rng.below(4);
        SimConfig {
            seed,
            nodes,
            n,
            w,
            r,
            dc: vec!["dc1".into(); nodes],
            rack: vec!["rack1".into(); nodes],
            replication: DcReplication::new(),
            client_dc: vec![None; clients],
            partitions: 16,
            buckets: 16,
            keys,
            clients,
            request_timeout_ms: 500,
            gossip_interval_ms: 1000,
            anti_entropy_interval_ms: 250,
            handoff_sweep_ms: 2000,
            hint_window_ms: 10 * 60 * 1000,
            calm_ms: 8_000,
            calm_straggle_permille: 0,
            calm_straggle_ms: (0, 0),
            faults_ms: 25_000 + rng.below(15_000) as u64,
            converge_within_ms: 60_000,
            clock_offset_ms: (0..nodes).map(|_| rng.below(4001) as i64 - 2000).collect(),
            clock_rate_ppm: (0..nodes)
                .map(|_| 980_000 + rng.below(40_001) as u64)
                .collect(),
        }
    }

    /// True for a two-data-center run.
    pub fn multi_dc(&self) -> bool {
        !self.replication.is_empty()
    }

    /// The nodes of data center `dc`.
    pub fn nodes_in(&self, dc: &str) -> Vec<usize> {
        (0..self.nodes).filter(|&i| self.dc[i] == dc).collect()
    }
}

/// Mixed into the seed so the config's draws differ from the run's.
const CONFIG_STREAM: u64 = 0x5eed_c0f1_9000_0001;
/// Mixed into the seed for the topology's draws (kept apart from the config's, see above).
const TOPOLOGY_STREAM: u64 = 0x5eed_d0c5_0000_0002;
