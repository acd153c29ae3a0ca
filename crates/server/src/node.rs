//! The node: what every client API calls. It checks a request against the limits and the
//! consistency levels, runs it against the replica, and counts it.
//!
//! A node that knows no other member (no seeds, nothing persisted) is a cluster of one: it is
//! the only replica of every key, every consistency level up to `n` is met by its own answer,
//! and a multi-key write (MSET, DEL k1 k2) is one atomic batch. Once the ring holds other
//! members, each key goes through the coordinator shell ([`crate::cluster::replication`]): the
//! key's preference list, forwarding, W durable acks, R replies and read repair. A multi-key
//! write is then split into per-key coordinated writes, applied in order, and answers OK only
//! if every one reached its quorum (the first failure is returned; keys before it stay
//! written): there is no cross-key atomicity in a Dynamo-style cluster.

use crate::cluster::anti_entropy::AntiEntropyState;
use crate::cluster::hints::Hints;
use crate::cluster::{gossip, replication, Cluster};
use crate::config::{Config, DurabilityMode};
use crate::error::NodeError;
use crate::metrics::{Metrics, Op, OpLabels};
use crate::replica::{Replica, WriteOp};
use bytes::Bytes;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};
use ringkv_core::coordinator::Need;
use ringkv_core::{Consistency, Context, Limits, NodeId, SiblingSet, Version};
use ringkv_storage::{Durability, Keyspace, Store, StoreOptions, WriteBatch};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Per-request read options.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Replicas that must answer; `None` = the configured `r`.
    pub r: Option<Consistency>,
}

/// Per-request write options.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Replicas that must acknowledge durably; `None` = the configured `w`.
    pub w: Option<Consistency>,
}

/// The answer to a read: every surviving version and the context to write back with.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Shared with the row cache: reads do not copy the set.
    pub set: Arc<SiblingSet>,
    /// Replicas whose answers were merged.
    pub replicas: Vec<NodeId>,
}

impl ReadResult {
    pub fn context(&self) -> Context {
        self.set.context()
    }

    /// True when no version holds a value (never written, or deleted).
    pub fn is_missing(&self) -> bool {
        self.set.is_deleted()
    }

    /// The one value a plain Redis `GET` returns.
    pub fn winner(&self) -> Option<&Version> {
        self.set.winner()
    }
}

/// The answer to a write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// The key's sibling set after the write, on the coordinator.
    pub set: Arc<SiblingSet>,
    /// Replicas that acknowledged the write durably.
    pub acked_by: Vec<NodeId>,
}

impl WriteResult {
    pub fn context(&self) -> Context {
        self.set.context()
    }
}

/// Figures for `INFO`, `/v1/cluster` and `ringkv status`.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: NodeId,
    pub version: &'static str,
    pub uptime_secs: u64,
    pub keys: u64,
    pub durability: DurabilityMode,
    pub sync_interval_ms: u64,
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub disk_bytes: u64,
    pub fsyncs: u64,
    pub storage_writes: u64,
    pub poisoned: bool,
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub partitions: u32,
    /// Hints this node holds for other nodes, not yet delivered.
    pub hints_pending: u64,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    replica: Replica,
    metrics: Metrics,
    /// Per-operation counter and histogram, looked up once: `Family::get_or_create` takes a lock
    /// and hashes the labels, which showed up at ~7% of CPU on in-memory GETs.
    op_handles: [(Counter, Histogram); 3],
    started: Instant,
    shutting_down: AtomicBool,
    cluster: Cluster,
    hints: Hints,
    anti_entropy: AntiEntropyState,
    streaming: crate::cluster::streaming::StreamingState,
}

const META_NODE_ID: &[u8] = b"node_id";

impl Node {
    /// Opens (or creates) the node's data directory and storage.
    pub async fn open(config: &Config) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(ringkv_storage::StorageError::Io)?;
        let store = Store::open(&config.data_dir, store_options(config))?;
        Node::with_store(config, store).await
    }

    /// A node over a given store (in-memory in tests).
    pub async fn with_store(config: &Config, store: Store) -> Result<Node, NodeError> {
        let node_id = resolve_node_id(config, &store).await?;
        let replica = Replica::open(
            node_id.clone(),
            store,
            config.limits(),
            config.partitions,
            config.row_cache_bytes,
            config.merkle_buckets,
        )?;
        let membership = gossip::open(config, replica.store(), node_id).await?;
        let hints = Hints::open(replica.store().clone(), config.partitions)?;
        let cluster = Cluster::new(membership, config.partitions, config.replication.clone());
        let metrics = Metrics::new();
        metrics.keys.set(replica.live_keys() as i64);
        metrics.hints_pending.set(hints.total() as i64);
        let op_handles = [Op::Get, Op::Put, Op::Delete].map(|op| {
            let labels = OpLabels { op };
            (
                metrics.ops.get_or_create(&labels).clone(),
                metrics.op_seconds.get_or_create(&labels).clone(),
            )
        });
        Ok(Node {
            inner: Arc::new(Inner {
                config: config.clone(),
                replica,
                metrics,
                op_handles,
                started: Instant::now(),
                shutting_down: AtomicBool::new(false),
                cluster,
                hints,
                anti_entropy: AntiEntropyState::new(config.partitions),
                streaming: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub fn node_id(&self) -> &NodeId {
        self.inner.replica.node_id()
    }

    pub fn limits(&self) -> Limits {
        self.inner.config.limits()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn store(&self) -> &Store {
        self.inner.replica.store()
    }

    /// Membership, ring and peer client.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub(crate) fn replica(&self) -> &Replica {
        &self.inner.replica
    }

    /// Anti-entropy sessions and per-partition last exchanges.
    pub fn anti_entropy(&self) -> &AntiEntropyState {
        &self.inner.anti_entropy
    }

    /// Partition streaming: transfers in progress and leave confirmations.
    pub fn streaming(&self) -> &crate::cluster::streaming::StreamingState {
        &self.inner.streaming
    }

    /// Brings the live-keys gauge up to date after a replica-side change.
    /// Hints held here for other nodes (sloppy quorum).
    pub(crate) fn hints(&self) -> &Hints {
        &self.inner.hints
    }

    /// Hints held here for `target`, not yet delivered.
    pub fn hints_pending_for(&self, target: &NodeId) -> u64 {
        self.inner.hints.pending_for(target)
    }

    pub(crate) fn note_keys(&self) {
        self.inner
            .metrics
            .keys
            .set(self.inner.replica.live_keys() as i64);
    }

    /// Replicas a key has in this cluster: min(n, members of the ring).
    pub fn replicas_per_key(&self) -> usize {
        self.inner
            .config
            .n
            .min(self.inner.cluster.ring().members().len())
    }

    /// True when the ring holds other members: requests go through the coordinator shell.
    fn in_cluster(&self) -> bool {
        self.inner.cluster.ring().members().len() > 1
    }

    /// What a read at `level` needs (`None` = the configured `r`).
    pub fn required_replies(&self, level: Option<Consistency>) -> Result<Need, NodeError> {
        self.required(level, self.inner.config.r)
    }

    /// What a write at `level` needs (`None` = the configured `w`).
    pub fn required_acks(&self, level: Option<Consistency>) -> Result<Need, NodeError> {
        self.required(level, self.inner.config.w)
    }

    /// `one`, `quorum` and `all` are relative to the replicas a key has (min(n, members)); a
    /// number is absolute: above `n` it is malformed, above the replicas that exist it cannot be
    /// met (Unavailable), never silently lowered. The configured default is capped to what exists,
    /// so a one-node store works with the default `w = 2`. `local_quorum` (this node's data
    /// center) and `each_quorum` resolve per key, against its replicas' data centers; a node
    /// alone has one data center and one quorum.
    fn required(&self, level: Option<Consistency>, default: usize) -> Result<Need, NodeError> {
        let replicas = self.replicas_per_key();
        let count = match level {
            None => default.min(replicas),
            Some(Consistency::LocalQuorum) if self.in_cluster() => {
                return Ok(Need::LocalQuorum {
                    dc: self.inner.config.dc.clone(),
                })
            }
            Some(Consistency::EachQuorum) if self.in_cluster() => return Ok(Need::EachQuorum),
            Some(Consistency::Count(wanted)) => {
                let n = self.inner.config.n;
                Consistency::Count(wanted).required(n)?;
                if wanted > replicas {
                    return Err(NodeError::unavailable(wanted, replicas));
                }
                wanted
            }
            Some(level) => level.required(replicas)?,
        };
        Ok(Need::Count(count))
    }

    pub async fn get(&self, key: &[u8], opts: ReadOptions) -> Result<ReadResult, NodeError> {
        let started = Instant::now();
        self.limits().check_key(key)?;
        let need = self.required_replies(opts.r)?;
        if self.in_cluster() {
            let result = replication::read(self, Bytes::copy_from_slice(key), need).await?;
            self.count(Op::Get, started);
            return Ok(result);
        }
        let set = self.inner.replica.read(key)?;
        self.count(Op::Get, started);
        Ok(ReadResult {
            set,
            replicas: vec![self.node_id().clone()],
        })
    }

    pub async fn put(
        &self,
        key: Bytes,
        value: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<WriteResult, NodeError> {
        let mut results = self
            .write(
                vec![WriteOp {
                    key,
                    value: Some(value),
                    context,
                }],
                opts,
            )
            .await?;
        Ok(results.remove(0))
    }

    /// Writes a tombstone. Returns `None` (and writes nothing) when the key has no live value
    /// and the client sent no context: there is nothing to delete.
    pub async fn delete(
        &self,
        key: Bytes,
        context: Option<Context>,
        opts: WriteOptions,
    ) -> Result<Option<WriteResult>, NodeError> {
        let mut context = context;
        if context.is_none() {
            self.limits().check_key(&key)?;
            if self.in_cluster() {
                // The local copy may be stale or absent: ask the replicas, and delete exactly
                // what they hold (the read's context), not what this node happens to know.
                let read = self.get(&key, ReadOptions::default()).await?;
                if read.is_missing() {
                    return Ok(None);
                }
                context = Some(read.context());
            } else if self.inner.replica.read(&key)?.is_deleted() {
                return Ok(None);
            }
        }
        let mut results = self
            .write(
                vec![WriteOp {
                    key,
                    value: None,
                    context,
                }],
                opts,
            )
            .await?;
        Ok(Some(results.remove(0)))
    }

    /// Deletes, in one atomic write, every key that holds a live value, and returns how many did
    /// (Redis `DEL k1 k2 ...`). Keys with nothing to delete get no tombstone; a key named twice
    /// counts once.
    pub async fn delete_many(
        &self,
        keys: Vec<Bytes>,
        opts: WriteOptions,
    ) -> Result<usize, NodeError> {
        let limits = self.limits();
        let mut seen = std::collections::HashSet::with_capacity(keys.len());
        let mut ops = Vec::new();
        let cluster = self.in_cluster();
        for key in keys {
            limits.check_key(&key)?;
            if !seen.insert(key.clone()) {
                continue;
            }
            if cluster {
                let read = self.get(&key, ReadOptions::default()).await?;
                if !read.is_missing() {
                    ops.push(WriteOp {
                        key,
                        value: None,
                        context: Some(read.context()),
                    });
                }
            } else if !self.inner.replica.read(&key)?.is_deleted() {
                ops.push(WriteOp {
                    key,
                    value: None,
                    context: None,
                });
            }
        }
        if ops.is_empty() {
            return Ok(0);
        }
        let deleted = ops.len();
        self.write(ops, opts).await?;
        Ok(deleted)
    }

    /// Several writes (values or tombstones) applied atomically with one durability wait: MSET.
    pub async fn write(
        &self,
        ops: Vec<WriteOp>,
        opts: WriteOptions,
    ) -> Result<Vec<WriteResult>, NodeError> {
        let started = Instant::now();
        if self.inner.shutting_down.load(Ordering::Acquire) {
            return Err(NodeError::ShuttingDown);
        }
        let limits = self.limits();
        for op in &ops {
            limits.check_key(&op.key)?;
            if let Some(v) = &op.value {
                limits.check_value_len(v.len())?;
            }
        }
        let need = self.required_acks(opts.w)?;
        if self.in_cluster() {
            return self.write_cluster(ops, need, started).await;
        }
        let written = self.inner.replica.apply_write(&ops).await?;
        let m = &self.inner.metrics;
        m.keys.set(self.inner.replica.live_keys() as i64);
        for (op, w) in ops.iter().zip(&written) {
            if w.set.versions().len() >= limits.sibling_warn {
                m.sibling_warnings.inc();
            }
            self.count(
                if op.value.is_some() {
                    Op::Put
                } else {
                    Op::Delete
                },
                started,
            );
        }
        let me = self.node_id().clone();
        Ok(written
            .into_iter()
            .map(|w| WriteResult {
                set: w.set,
                acked_by: vec![me.clone()],
            })
            .collect())
    }

    /// A multi-key write in cluster mode: one coordinated write per key, in order; the first
    /// failure ends it (see the module doc).
    async fn write_cluster(
        &self,
        ops: Vec<WriteOp>,
        need: Need,
        started: Instant,
    ) -> Result<Vec<WriteResult>, NodeError> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            let kind = if op.value.is_some() {
                Op::Put
            } else {
                Op::Delete
            };
            let result = replication::write_one(self, op, need.clone()).await?;
            if result.set.versions().len() >= self.limits().sibling_warn {
                self.inner.metrics.sibling_warnings.inc();
            }
            self.count(kind, started);
            results.push(result);
        }
        self.note_keys();
        Ok(results)
    }

    fn count(&self, op: Op, started: Instant) {
        let (counter, histogram) = &self.inner.op_handles[op as usize];
        counter.inc();
        histogram.observe(started.elapsed().as_secs_f64());
    }

    pub fn info(&self) -> NodeInfo {
        let stats = self.store().stats();
        let m = &self.inner.metrics;
        let c = &self.inner.config;
        NodeInfo {
            node_id: self.node_id().clone(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            keys: self.inner.replica.live_keys(),
            durability: c.durability,
            sync_interval_ms: c.sync_interval_ms,
            gets: m.op_count(Op::Get),
            puts: m.op_count(Op::Put),
            deletes: m.op_count(Op::Delete),
            disk_bytes: stats.disk_bytes,
            fsyncs: stats.fsyncs,
            storage_writes: stats.writes,
            poisoned: stats.poisoned,
            n: c.n,
            r: c.r,
            w: c.w,
            partitions: c.partitions,
            hints_pending: self.inner.hints.total(),
        }
    }

    /// Prometheus text for `/metrics`, with storage figures brought up to date.
    pub fn render_metrics(&self) -> String {
        let stats = self.store().stats();
        let m = &self.inner.metrics;
        Metrics::mirror(&m.storage_writes, stats.writes);
        Metrics::mirror(&m.storage_fsyncs, stats.fsyncs);
        Metrics::mirror(&m.storage_corrupt_reads, stats.corrupt_reads);
        Metrics::mirror(&m.storage_disk_full_refusals, stats.disk_full_refusals);
        m.storage_disk_bytes.set(stats.disk_bytes as i64);
        m.storage_poisoned.set(stats.poisoned as i64);
        m.keys.set(self.inner.replica.live_keys() as i64);
        m.hints_pending.set(self.inner.hints.total() as i64);
        m.row_cache_bytes
            .set(self.inner.replica.cache_bytes() as i64);
        let cluster = &self.inner.cluster;
        if let Some(client) = cluster.client() {
            m.mirror_peer("client", &client.stats().snapshot());
        }
        if let Some(server) = cluster.server_stats() {
            m.mirror_peer("server", &server.snapshot());
        }
        m.render()
    }

    /// True once shutdown has begun; APIs stop taking new requests.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// Refuses new writes, then makes everything written durable and closes storage. Writes
    /// already acknowledged were durable before their ack; this covers periodic mode's window.
    pub fn shutdown(&self) -> Result<(), NodeError> {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.store().shutdown()?;
        Ok(())
    }
}

fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        durability: match config.durability {
            DurabilityMode::Sync => Durability::Sync,
            DurabilityMode::Periodic => Durability::Periodic {
                interval: config.sync_interval(),
            },
        },
        cache_bytes: config.cache_bytes,
        min_free_bytes: config.min_free_bytes,
    }
}

/// The node id: from the config, else the one stored in the data directory, else a new one
/// (stored, so a restart keeps it). A configured id that differs from the stored one is refused:
/// the data directory belongs to another node.
async fn resolve_node_id(config: &Config, store: &Store) -> Result<NodeId, NodeError> {
    let stored = store
        .get(Keyspace::Meta, META_NODE_ID)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| NodeId::new(s).ok());
    let configured = config
        .node_id
        .as_ref()
        .map(|s| NodeId::new(s.clone()))
        .transpose()
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let id = match (stored, configured) {
        (Some(s), Some(c)) if s != c => {
            return Err(NodeError::Startup(format!(
                "data directory {} belongs to node {s}, not {c}",
                config.data_dir.display()
            )))
        }
        (Some(s), _) => return Ok(s),
        (None, Some(c)) => c,
        (None, None) => generate_node_id(),
    };
    let mut batch = WriteBatch::new();
    batch.put(
        Keyspace::Meta,
        META_NODE_ID.to_vec(),
        id.as_str().as_bytes().to_vec(),
    );
    store.commit(&batch).await?;
    Ok(id)
}

fn generate_node_id() -> NodeId {
    let seed = format!(
        "{:?}-{}-{:?}",
        std::time::SystemTime::now(),
        std::process::id(),
        std::thread::current().id()
    );
    let hash = xxhash_rust::xxh3::xxh3_64(seed.as_bytes());
    NodeId::new(format!("n-{:08x}", hash as u32)).expect("generated id is valid")
}
