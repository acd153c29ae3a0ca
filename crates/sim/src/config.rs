//! What one simulated run looks like, drawn from its seed.

use ringkv_core::membership::rng::SplitMix64;

/// The shape of one run. Everything is drawn from the seed, so the seed alone reproduces it.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    pub n: usize,
    pub w: usize,
    pub r: usize,
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
    /// Phase B: faults, right after phase A. Everything heals at its end and clients stop.
    pub faults_ms: u64,
    /// Phase C: how long after the heal every replica must have converged.
    pub converge_within_ms: u64,
    /// Per node: wall-clock offset (ms) and clock rate (parts per million of real time).
    pub clock_offset_ms: Vec<i64>,
    pub clock_rate_ppm: Vec<u64>,
}

impl SimConfig {
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = SplitMix64::new(seed ^ CONFIG_STREAM);
        let nodes = 5;
        SimConfig {
            seed,
            nodes,
            n: 3,
            w: 2,
            r: 2,
            partitions: 16,
            buckets: 16,
            keys: 12 + rng.below(12),
            clients: 4 + rng.below(4),
            request_timeout_ms: 500,
            gossip_interval_ms: 1000,
            anti_entropy_interval_ms: 250,
            handoff_sweep_ms: 2000,
            hint_window_ms: 10 * 60 * 1000,
            calm_ms: 8_000,
            faults_ms: 25_000 + rng.below(15_000) as u64,
            converge_within_ms: 60_000,
            clock_offset_ms: (0..nodes).map(|_| rng.below(4001) as i64 - 2000).collect(),
            clock_rate_ppm: (0..nodes)
                .map(|_| 980_000 + rng.below(40_001) as u64)
                .collect(),
        }
    }
}

/// Mixed into the seed so the config's draws differ from the run's.
const CONFIG_STREAM: u64 = 0x5eed_c0f1_9000_0001;
