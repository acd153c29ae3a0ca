//! What an operator sees at `/metrics` (Prometheus text) and in `INFO`: one registry per node.
//!
//! A registry per node, not a process-global recorder, so that several nodes in one process (the
//! deterministic simulator, in-process tests) keep their figures apart. `INFO` reads the same
//! counters, so the two views never disagree.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

/// A key-value operation.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Op {
    Get,
    Put,
    Delete,
}

/// A client API.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Api {
    Resp,
    Http,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Put => "put",
            Op::Delete => "delete",
        }
    }
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Resp => "resp",
            Api::Http => "http",
        }
    }
}

// Written by hand so label values are lowercase (`op="get"`), as Prometheus users expect; the
// derive would print the variant names.
impl EncodeLabelValue for Op {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

impl EncodeLabelValue for Api {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    pub op: Op,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: Api,
}

/// Why a client request was refused; one label value per kind of bad input.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub api: Api,
    /// e.g. `protocol`, `limit`, `context`, `unknown_command`, `auth`, `storage`, `siblings`.
    pub kind: &'static str,
}

/// One peer-transport figure: which end (`client`: calls this node made; `server`: calls it
/// answered) and what (`requests`, `timeouts`, `handshake_failures`, `settings_mismatches`, ...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub side: &'static str,
    pub event: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabels {
    pub side: &'static str,
}

/// Every figure a node exports.
pub struct Metrics {
    registry: Registry,
    /// Completed key-value operations, by kind.
    pub ops: Family<OpLabels, Counter>,
    /// Latency of key-value operations inside the node (storage and durability), in seconds.
    pub op_seconds: Family<OpLabels, Histogram>,
    /// Commands (RESP) and requests (HTTP) received.
    pub requests: Family<ApiLabels, Counter>,
    /// Requests refused, by API and reason.
    pub client_errors: Family<ErrorLabels, Counter>,
    /// Open client connections, by API.
    pub connections: Family<ApiLabels, Gauge>,
    pub connections_total: Family<ApiLabels, Counter>,
    /// Connections refused because the connection cap was reached.
    pub connections_refused: Family<ApiLabels, Counter>,
    /// Keys holding at least one live value.
    pub keys: Gauge,
    /// Writes that left a key at or past the sibling warning threshold.
    pub sibling_warnings: Counter,
    /// Read repairs sent: one per stale replica a read found (RESP `INFO` shows it too).
    pub read_repairs: Counter,
    /// Storage figures, copied from the store when scraped.
    pub storage_writes: Counter,
    pub storage_fsyncs: Counter,
    pub storage_corrupt_reads: Counter,
    pub storage_disk_full_refusals: Counter,
    pub storage_disk_bytes: Gauge,
    pub storage_poisoned: Gauge,
    /// Bytes held by the row cache of decoded sibling sets.
    pub row_cache_bytes: Gauge,
    /// Hints this node holds for other nodes, not yet delivered.
    pub hints_pending: Gauge,
    /// Hints stored (or merged into) here: as a stand-in for a down node, or as the coordinator
    /// of a write that could not reach a replica.
    pub hints_stored: Counter,
    /// Hints delivered to their node and deleted here.
    pub hints_delivered: Counter,
    /// Hints deleted undelivered because they outlived `hint_window_secs`.
    pub hints_dropped: Counter,
    /// Keys whose stored set an anti-entropy exchange changed (either side of the session).
    pub anti_entropy_repairs: Counter,
    /// Bytes of anti-entropy messages this node sent (postcard-encoded sizes).
    pub anti_entropy_bytes: Counter,
    /// Anti-entropy sessions that ended InSync or Repaired (either side).
    pub anti_entropy_exchanges: Counter,
    /// Partition streaming (join, leave, remove): keys and bytes received, partitions done.
    pub stream_keys: Counter,
    pub stream_bytes: Counter,
    pub stream_partitions: Counter,
    /// Anti-entropy sessions that timed out, aborted or failed in transport (initiator side).
    pub anti_entropy_failures: Counter,
    /// Tombstones this node deleted from its own replica (past grace, held by every replica).
    pub tombstones_purged: Counter,
    /// Tombstones past grace this node's scans left for later: a replica was unhealthy, did not
    /// answer, or did not hold the tombstone (yet).
    pub tombstones_deferred: Counter,
    /// Peer transport figures, copied from its own counters when scraped.
    pub peer_events: Family<PeerLabels, Counter>,
    pub peer_connections_open: Family<SideLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("ringkv");
        let ops = Family::<OpLabels, Counter>::default();
        // 25 us .. ~0.4 s: loopback reads sit at the bottom, fsync-bound writes in the middle.
        let op_seconds = Family::<OpLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(exponential_buckets(0.000_025, 2.0, 15))) as fn() -> Histogram,
        );
        let requests = Family::<ApiLabels, Counter>::default();
        let client_errors = Family::<ErrorLabels, Counter>::default();
        let connections = Family::<ApiLabels, Gauge>::default();
        let connections_total = Family::<ApiLabels, Counter>::default();
        let connections_refused = Family::<ApiLabels, Counter>::default();
        let keys = Gauge::default();
        let sibling_warnings = Counter::default();
        let read_repairs = Counter::default();
        let storage_writes = Counter::default();
        let storage_fsyncs = Counter::default();
        let storage_corrupt_reads = Counter::default();
        let storage_disk_full_refusals = Counter::default();
        let storage_disk_bytes = Gauge::default();
        let storage_poisoned = Gauge::default();
        let row_cache_bytes = Gauge::default();
        let hints_pending = Gauge::default();
        let stream_keys = Counter::default();
        let stream_bytes = Counter::default();
        let stream_partitions = Counter::default();
        registry.register(
            "stream_keys_received",
            "Keys received by partition streaming (join, leave, remove)",
            stream_keys.clone(),
        );
        registry.register(
            "stream_bytes_received",
            "Bytes of sibling sets received by partition streaming",
            stream_bytes.clone(),
        );
        registry.register(
            "stream_partitions_pulled",
            "Partitions streamed in completely",
            stream_partitions.clone(),
        );
        let hints_stored = Counter::default();
        let hints_delivered = Counter::default();
        let hints_dropped = Counter::default();
        let anti_entropy_repairs = Counter::default();
        let anti_entropy_bytes = Counter::default();
        let anti_entropy_exchanges = Counter::default();
        let anti_entropy_failures = Counter::default();
        let tombstones_purged = Counter::default();
        let tombstones_deferred = Counter::default();
        registry.register("ops", "Completed key-value operations", ops.clone());
        registry.register(
            "op_seconds",
            "Latency of key-value operations in the node, including durability",
            op_seconds.clone(),
        );
        registry.register(
            "requests",
            "Client commands and requests received",
            requests.clone(),
        );
        registry.register(
            "client_errors",
            "Client requests refused, by reason",
            client_errors.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "Client connections accepted",
            connections_total.clone(),
        );
        registry.register(
            "connections_refused",
            "Client connections refused at the connection cap",
            connections_refused.clone(),
        );
        registry.register("keys", "Keys holding at least one live value", keys.clone());
        registry.register(
            "sibling_warnings",
            "Writes that left a key at or past the sibling warning threshold",
            sibling_warnings.clone(),
        );
        registry.register(
            "read_repairs",
            "Stale replicas sent the merged sibling set after a read",
            read_repairs.clone(),
        );
        registry.register(
            "storage_writes",
            "Batches written to storage",
            storage_writes.clone(),
        );
        registry.register(
            "storage_fsyncs",
            "fsyncs of the commit log",
            storage_fsyncs.clone(),
        );
        registry.register(
            "storage_corrupt_reads",
            "Records refused on read for a checksum mismatch",
            storage_corrupt_reads.clone(),
        );
        registry.register(
            "storage_disk_full_refusals",
            "Writes refused because the disk was nearly full",
            storage_disk_full_refusals.clone(),
        );
        registry.register(
            "storage_disk_bytes",
            "Bytes the storage engine uses on disk",
            storage_disk_bytes.clone(),
        );
        registry.register(
            "storage_poisoned",
            "1 when a failed fsync has stopped all writes (restart the node)",
            storage_poisoned.clone(),
        );
        registry.register(
            "row_cache_bytes",
            "Bytes held by the cache of decoded sibling sets",
            row_cache_bytes.clone(),
        );
        registry.register(
            "hints_pending",
            "Hints held for other nodes, not yet delivered",
            hints_pending.clone(),
        );
        registry.register(
            "hints_stored",
            "Writes stored as hints for a down or unreachable node",
            hints_stored.clone(),
        );
        registry.register(
            "hints_delivered",
            "Hints delivered to their node and deleted",
            hints_delivered.clone(),
        );
        registry.register(
            "hints_dropped",
            "Hints deleted undelivered past the hint window",
            hints_dropped.clone(),
        );
        registry.register(
            "anti_entropy_repairs",
            "Keys whose stored set an anti-entropy exchange changed",
            anti_entropy_repairs.clone(),
        );
        registry.register(
            "anti_entropy_bytes",
            "Bytes of anti-entropy messages sent",
            anti_entropy_bytes.clone(),
        );
        registry.register(
            "anti_entropy_exchanges",
            "Anti-entropy sessions that ended in sync or repaired",
            anti_entropy_exchanges.clone(),
        );
        registry.register(
            "anti_entropy_failures",
            "Anti-entropy sessions this node started that timed out, aborted or failed",
            anti_entropy_failures.clone(),
        );
        registry.register(
            "tombstones_purged",
            "Tombstones deleted from this replica after the grace period, once every replica held them",
            tombstones_purged.clone(),
        );
        registry.register(
            "tombstones_deferred",
            "Tombstones past grace left for a later scan because a replica was unhealthy, silent or did not hold them",
            tombstones_deferred.clone(),
        );
        let peer_events = Family::<PeerLabels, Counter>::default();
        let peer_connections_open = Family::<SideLabels, Gauge>::default();
        registry.register(
            "peer_events",
            "Peer transport counters by side (client: calls made; server: calls answered) and \
             event: requests, one_way, timeouts, connection_lost, overloaded, remote_errors, \
             handshake_failures (auth_failures and settings_mismatches among them), frame_errors, \
             connections, connections_refused, bytes_in, bytes_out",
            peer_events.clone(),
        );
        registry.register(
            "peer_connections_open",
            "Peer connections open, by side",
            peer_connections_open.clone(),
        );
        Metrics {
            registry,
            ops,
            op_seconds,
            requests,
            client_errors,
            connections,
            connections_total,
            connections_refused,
            keys,
            sibling_warnings,
            read_repairs,
            storage_writes,
            storage_fsyncs,
            storage_corrupt_reads,
            storage_disk_full_refusals,
            storage_disk_bytes,
            storage_poisoned,
            row_cache_bytes,
            hints_pending,
            hints_stored,
            hints_delivered,
            hints_dropped,
            anti_entropy_repairs,
            anti_entropy_bytes,
            anti_entropy_exchanges,
            stream_keys,
            stream_bytes,
            stream_partitions,
            anti_entropy_failures,
            tombstones_purged,
            tombstones_deferred,
            peer_events,
            peer_connections_open,
        }
    }

    /// Copies one side's peer transport counters (`client` or `server`) into the registry.
    pub fn mirror_peer(&self, side: &'static str, stats: &crate::peer::PeerStatsSnapshot) {
        let requests = stats.requests_sent + stats.requests_received;
        let one_way = stats.one_way_sent + stats.one_way_received;
        for (event, value) in [
            ("requests", requests),
            ("one_way", one_way),
            ("timeouts", stats.timeouts),
            ("connection_lost", stats.connection_lost),
            ("overloaded", stats.overloaded),
            ("remote_errors", stats.remote_errors),
            ("handshake_failures", stats.handshake_failures),
            ("auth_failures", stats.auth_failures),
            ("settings_mismatches", stats.settings_mismatches),
            ("frame_errors", stats.frame_errors),
            ("connections", stats.connections_total),
            ("connections_refused", stats.connections_refused),
            ("bytes_in", stats.bytes_in),
            ("bytes_out", stats.bytes_out),
        ] {
            Self::mirror(
                &self.peer_events.get_or_create(&PeerLabels { side, event }),
                value,
            );
        }
        self.peer_connections_open
            .get_or_create(&SideLabels { side })
            .set(stats.connections_open as i64);
    }

    /// Counts a refused client request.
    pub fn client_error(&self, api: Api, kind: &'static str) {
        self.client_errors
            .get_or_create(&ErrorLabels { api, kind })
            .inc();
    }

    pub fn op_count(&self, op: Op) -> u64 {
        self.ops.get_or_create(&OpLabels { op }).get()
    }

    /// Sum of refused requests over all reasons for one API.
    pub fn client_error_total(&self, api: Api) -> u64 {
        // Family has no iterator; the kinds are a closed set named where they are counted.
        ERROR_KINDS
            .iter()
            .filter_map(|kind| {
                self.client_errors
                    .get(&ErrorLabels { api, kind })
                    .map(|c| c.get())
            })
            .sum()
    }

    /// Sets a counter mirrored from elsewhere (storage keeps its own atomics).
    pub fn mirror(counter: &Counter, value: u64) {
        counter.inner().store(value, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Every `kind` label value used with [`Metrics::client_error`].
pub const ERROR_KINDS: &[&str] = &[
    "protocol",
    "limit",
    "context",
    "argument",
    "unknown_command",
    "auth",
    "storage",
    "siblings",
    "output_buffer",
    "unavailable",
    "timeout",
];
