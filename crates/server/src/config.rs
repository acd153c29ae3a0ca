//! The server's one typed configuration: defaults in one place, every field documented.
//!
//! Layering (DESIGN.md): built-in defaults, then the TOML file given with `--config`, then
//! `RINGKV_*` environment variables, then flags. The binary's clap layer resolves "flag or
//! environment" into one optional value per field (clap's `env` support gives flags precedence),
//! and [`Config::apply`] lays those over the file, so the order holds without a second parser.
//! A commented example lives in `config/ringkv.toml`.

use ringkv_core::{DcReplication, Limits, NodeId};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a write is made durable before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// fsync before the ack; concurrent writers share fsyncs (group commit).
    Sync,
    /// ack once in the commit log's buffer; fsync every `sync_interval_ms`.
    Periodic,
}

impl std::str::FromStr for DurabilityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sync" => Ok(DurabilityMode::Sync),
            "periodic" => Ok(DurabilityMode::Periodic),
            other => Err(format!(
                "durability must be sync or periodic, not {other:?}"
            )),
        }
    }
}

/// Everything a node needs to start. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the node keeps its data (created if missing).
    pub data_dir: PathBuf,
    /// Redis protocol listener.
    pub resp_addr: String,
    /// HTTP API, `/metrics` and `/healthz` listener.
    pub http_addr: String,
    /// Peer traffic (internal RPC and gossip) listener.
    pub peer_addr: String,
    /// This node's id; generated once and stored in the data directory when not given.
    pub node_id: Option<String>,
    /// Peers to join through (`host:port` of their peer listener).
    pub seeds: Vec<String>,
    /// Data center and rack, for replica placement.
    pub dc: String,
    pub rack: String,
    /// Relative capacity: a node of weight 2 holds twice the partitions of a node of weight 1.
    pub weight: u32,
    pub durability: DurabilityMode,
    /// fsync period in `periodic` mode.
    pub sync_interval_ms: u64,
    /// Shared secret that peers prove knowledge of when they connect.
    pub cluster_secret: Option<String>,
    /// Password for clients (RESP `AUTH`, HTTP `Authorization: Bearer`); none = open.
    pub password: Option<String>,
    /// Replicas per key, and the default write and read quorums. With `replication` set, `n` is
    /// its sum (set it only to that, or leave it out).
    pub n: usize,
    /// Replicas per data center, `{ dc1 = 3, dc2 = 2 }` (as Cassandra's NetworkTopologyStrategy):
    /// each data center named gets that many replicas of every key, spread over its racks, and
    /// one not named gets none (its nodes coordinate). Empty (the default): `n` replicas spread
    /// over every data center. Every node of a cluster must have the same value.
    pub replication: DcReplication,
    /// Whether `n` was set in the file or by a flag (so a `replication` sum must match it).
    #[serde(skip)]
    pub n_given: bool,
    pub w: usize,
    pub r: usize,
    /// Partitions of the ring (a power of two), fixed at cluster creation.
    pub partitions: u32,
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_siblings: usize,
    pub sibling_warn: usize,
    pub max_clock_entries: usize,
    /// Client connections accepted at once, per API; past it new ones are refused.
    pub max_connections: usize,
    /// Replies a RESP client may leave unread before it is disconnected, in bytes.
    pub max_client_output_bytes: usize,
    /// Seconds a client connection may sit idle (0 = forever, as Redis's `timeout 0`).
    pub client_idle_timeout_secs: u64,
    /// LSM block cache.
    pub cache_bytes: u64,
    /// Cache of decoded sibling sets in front of the LSM (0 disables it).
    pub row_cache_bytes: u64,
    /// Writes are refused, before any ack, when the data directory's disk has less free space.
    pub min_free_bytes: u64,
    /// Gossip period: one membership tick (heartbeat bump and exchange) every this many ms.
    pub gossip_interval_ms: u64,
    /// How long a coordinator waits for W acks or R replies (and a forwarder for the
    /// coordinator) before answering Unavailable.
    pub request_timeout_ms: u64,
    /// Hints (writes a stand-in took for a down node) older than this are dropped undelivered;
    /// anti-entropy repairs those keys. Counted from the hint's last update.
    pub hint_window_secs: u64,
    /// Anti-entropy period: every this many ms the node compares one partition it replicates
    /// with one other replica of it (round robin), one session at a time.
    pub anti_entropy_interval_ms: u64,
    /// Leaf buckets of each partition's Merkle tree (a power of two up to 65536). A built tree
    /// takes `32 * merkle_buckets` bytes: 2 KiB at 64, 2 MiB for 1024 partitions. All nodes
    /// must agree (a mismatch aborts the exchange).
    pub merkle_buckets: u32,
    /// A deleted key's tombstone is purged once its newest version is older than this and every
    /// replica holds it (`cluster::tombstones`). Must exceed `hint_window_secs`: a hint written
    /// before the delete is dropped only after the hint window, and one delivered after the
    /// purge would bring the old value back. Default 10 days (Cassandra's `gc_grace_seconds`):
    /// long enough for an operator to bring back a replica that was down.
    pub tombstone_grace_secs: u64,
    /// Purge pace: every this many ms the node scans the next partition it replicates (round
    /// robin) for tombstones past grace. A separate knob from `anti_entropy_interval_ms`, so a
    /// test or an operator can change one without the other.
    pub tombstone_scan_interval_ms: u64,
    /// Pace of partition streaming (join, leave, remove) on the receiving node, bytes per
    /// second: a transfer leaves room for client traffic.
    pub stream_bytes_per_sec: u64,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Config {
            data_dir: PathBuf::from("./ringkv-data"),
            resp_addr: "127.0.0.1:7379".into(),
            http_addr: "127.0.0.1:7380".into(),
            peer_addr: "127.0.0.1:7381".into(),
            node_id: None,
            seeds: Vec::new(),
            dc: "dc1".into(),
            rack: "rack1".into(),
            weight: 1,
            durability: DurabilityMode::Sync,
            sync_interval_ms: 10,
            cluster_secret: None,
            password: None,
            n: 3,
            replication: DcReplication::new(),
            n_given: false,
            w: 2,
            r: 2,
            partitions: ringkv_core::keys::DEFAULT_PARTITIONS,
            max_key_bytes: limits.max_key_bytes,
            max_value_bytes: limits.max_value_bytes,
            max_siblings: limits.max_siblings,
            sibling_warn: limits.sibling_warn,
            max_clock_entries: limits.max_clock_entries,
            max_connections: 4096,
            max_client_output_bytes: 64 * 1024 * 1024,
            client_idle_timeout_secs: 0,
            cache_bytes: 64 * 1024 * 1024,
            row_cache_bytes: 64 * 1024 * 1024,
            min_free_bytes: 64 * 1024 * 1024,
            gossip_interval_ms: 1000,
            request_timeout_ms: 2000,
            hint_window_secs: 3 * 60 * 60,
            anti_entropy_interval_ms: 10_000,
            merkle_buckets: 64,
            tombstone_grace_secs: 10 * 24 * 60 * 60,
            tombstone_scan_interval_ms: 10_000,
            stream_bytes_per_sec: 32 * 1024 * 1024,
        }
    }
}

/// Parses `dc1=3,dc2=2` (the `--replication` flag and `RINGKV_REPLICATION`).
pub fn parse_replication(text: &str) -> Result<DcReplication, String> {
    let mut out = DcReplication::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (dc, count) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not dc=count (e.g. dc1=3,dc2=2)"))?;
        let count: usize = count
            .trim()
            .parse()
            .map_err(|_| format!("{part:?}: the count must be a number"))?;
        if out.insert(dc.trim().to_string(), count).is_some() {
            return Err(format!("data center {:?} is named twice", dc.trim()));
        }
    }
    Ok(out)
}

/// `dc1=3,dc2=2`: replication as the flag spells it (status pages, errors).
pub fn format_replication(replication: &DcReplication) -> String {
    replication
        .iter()
        .map(|(dc, n)| format!("{dc}={n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values that beat the file: flags, or their `RINGKV_*` variables. `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub resp_addr: Option<String>,
    pub http_addr: Option<String>,
    pub peer_addr: Option<String>,
    pub node_id: Option<String>,
    pub seeds: Option<Vec<String>>,
    pub dc: Option<String>,
    pub rack: Option<String>,
    pub weight: Option<u32>,
    pub durability: Option<DurabilityMode>,
    pub sync_interval_ms: Option<u64>,
    pub cluster_secret: Option<String>,
    pub password: Option<String>,
    pub n: Option<usize>,
    pub replication: Option<DcReplication>,
    pub w: Option<usize>,
    pub r: Option<usize>,
    pub partitions: Option<u32>,
    pub max_value_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub gossip_interval_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
}

impl Config {
    /// Defaults, then the file (when given).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = file else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parse_error = |e: toml::de::Error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut config: Config = toml::from_str(&text).map_err(parse_error)?;
        let table: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        config.n_given = table.contains_key("n");
        config.derive_n();
        Ok(config)
    }

    /// With per-DC replication and no `n` given, `n` is the replication's sum.
    fn derive_n(&mut self) {
        if !self.replication.is_empty() && !self.n_given {
            self.n = self.replication.values().sum();
        }
    }

    /// Lays flags and environment over this config.
    pub fn apply(&mut self, o: Overrides) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = o.$field { self.$field = v; } )* };
        }
        set!(
            data_dir,
            resp_addr,
            http_addr,
            peer_addr,
            seeds,
            dc,
            rack,
            weight,
            durability,
            sync_interval_ms,
            n,
            w,
            r,
            partitions,
            max_value_bytes,
            max_connections,
            gossip_interval_ms,
            request_timeout_ms
        );
        if o.node_id.is_some() {
            self.node_id = o.node_id;
        }
        if o.cluster_secret.is_some() {
            self.cluster_secret = o.cluster_secret;
        }
        if o.password.is_some() {
            self.password = o.password;
        }
        self.n_given |= o.n.is_some();
        if let Some(replication) = o.replication {
            self.replication = replication;
        }
        self.derive_n();
    }

    /// Checks what a file or flag could get wrong, with a message that names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(id) = &self.node_id {
            NodeId::new(id.clone()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        }
        if !self.partitions.is_power_of_two() || self.partitions > 1 << 20 {
            return bad(format!(
                "partitions must be a power of two up to 1048576, not {}",
                self.partitions
            ));
        }
        if let Some((dc, _)) = self.replication.iter().find(|(_, &count)| count == 0) {
            return bad(format!(
                "replication gives data center {dc:?} 0 replicas: leave it out instead"
            ));
        }
        let sum: usize = self.replication.values().sum();
        if !self.replication.is_empty() && self.n != sum {
            return bad(format!(
                "n={} but replication {} holds {sum} replicas: leave n out (it is the sum) or \
                 make them agree",
                self.n,
                format_replication(&self.replication)
            ));
        }
        if self.n == 0 || self.w == 0 || self.r == 0 || self.w > self.n || self.r > self.n {
            return bad(format!(
                "need 1 <= w <= n and 1 <= r <= n (n={}, w={}, r={})",
                self.n, self.w, self.r
            ));
        }
        if self.max_value_bytes == 0 || self.max_value_bytes > ringkv_core::limits::MAX_VALUE_LIMIT
        {
            return bad(format!(
                "max_value_bytes must be 1..={} (1 MiB), not {}",
                ringkv_core::limits::MAX_VALUE_LIMIT,
                self.max_value_bytes
            ));
        }
        if self.max_key_bytes == 0 || self.max_key_bytes > 64 * 1024 {
            return bad(format!(
                "max_key_bytes must be 1..=65536, not {}",
                self.max_key_bytes
            ));
        }
        if self.max_siblings == 0 || self.sibling_warn > self.max_siblings {
            return bad("need 1 <= sibling_warn <= max_siblings".into());
        }
        if self.max_clock_entries < 1 {
            return bad("max_clock_entries must be at least 1".into());
        }
        if self.weight == 0 {
            return bad("weight must be at least 1".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1".into());
        }
        if self.gossip_interval_ms == 0 || self.request_timeout_ms == 0 {
            return bad("gossip_interval_ms and request_timeout_ms must be at least 1".into());
        }
        if self.anti_entropy_interval_ms == 0 {
            return bad("anti_entropy_interval_ms must be at least 1".into());
        }
        if self.tombstone_grace_secs <= self.hint_window_secs {
            return bad(format!(
                "tombstone_grace_secs ({}) must be greater than hint_window_secs ({}): a hint \
                 written before a delete is kept up to the hint window, and if it were delivered \
                 after the tombstone was purged it would bring the deleted value back",
                self.tombstone_grace_secs, self.hint_window_secs
            ));
        }
        if self.tombstone_scan_interval_ms == 0 {
            return bad("tombstone_scan_interval_ms must be at least 1".into());
        }
        if !self.merkle_buckets.is_power_of_two()
            || self.merkle_buckets > ringkv_core::anti_entropy::MAX_BUCKETS
        {
            return bad(format!(
                "merkle_buckets must be a power of two up to {}, not {}",
                ringkv_core::anti_entropy::MAX_BUCKETS,
                self.merkle_buckets
            ));
        }
        if self.durability == DurabilityMode::Periodic && self.sync_interval_ms == 0 {
            return bad("sync_interval_ms must be at least 1".into());
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            sibling_warn: self.sibling_warn,
            max_siblings: self.max_siblings,
            max_clock_entries: self.max_clock_entries,
        }
    }

    pub fn gossip_interval(&self) -> Duration {
        Duration::from_millis(self.gossip_interval_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringkv.toml");
        std::fs::write(
            &path,
            "n = 5\nw = 3\ndurability = \"periodic\"\ndc = \"eu\"\n",
        )
        .unwrap();
        let mut c = Config::load(Some(&path)).unwrap();
        assert_eq!((c.n, c.w, c.r), (5, 3, 2));
        assert_eq!(c.durability, DurabilityMode::Periodic);
        c.apply(Overrides {
            dc: Some("us".into()),
            ..Default::default()
        });
        assert_eq!(c.dc, "us");
        assert_eq!(c.n, 5);
        c.validate().unwrap();
    }

    /// The commented example file documents every default: it must parse and equal them.
    #[test]
    fn example_config_file_states_the_defaults() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/ringkv.toml"
        ));
        let mut example = Config::load(Some(path)).unwrap();
        assert!(example.n_given);
        example.n_given = false;
        assert_eq!(example, Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "replicas = 3\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("replicas"), "{err}");
        let c = Config {
            w: 4,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("w <= n"));
        let c = Config {
            partitions: 1000,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn per_dc_replication_sets_n_and_must_agree_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dc.toml");
        std::fs::write(&path, "replication = { dc1 = 3, dc2 = 2 }\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.n, 5);
        c.validate().unwrap();
        std::fs::write(&path, "n = 3\nreplication = { dc1 = 3, dc2 = 2 }\n").unwrap();
        let err = Config::load(Some(&path))
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("dc1=3,dc2=2 holds 5"), "{err}");
        let mut c = Config::default();
        c.apply(Overrides {
            replication: Some(parse_replication("east=2, west=1").unwrap()),
            ..Default::default()
        });
        assert_eq!(c.n, 3);
        c.validate().unwrap();
        assert!(parse_replication("dc1").is_err());
        assert!(parse_replication("dc1=x").is_err());
        assert!(parse_replication("dc1=1,dc1=2").is_err());
        let mut c = Config::default();
        c.apply(Overrides {
            replication: Some(parse_replication("dc1=0,dc2=2").unwrap()),
            ..Default::default()
        });
        assert!(c.validate().unwrap_err().to_string().contains("0 replicas"));
    }

    /// A grace period no longer than the hint window could let a late hint resurrect a key.
    #[test]
    fn tombstone_grace_must_exceed_the_hint_window() {
        let c = Config {
            tombstone_grace_secs: 60,
            hint_window_secs: 60,
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tombstone_grace_secs"), "{err}");
        assert!(err.contains("hint_window_secs"), "{err}");
        assert!(err.contains("deleted value back"), "{err}");
        let c = Config {
            tombstone_grace_secs: 61,
            hint_window_secs: 60,
            ..Config::default()
        };
        c.validate().unwrap();
        let c = Config {
            tombstone_scan_interval_ms: 0,
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
