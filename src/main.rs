//! `ringkv`: the one binary. `ringkv server` runs a node; `get`, `put`, `delete`, `status` and
//! `ring` talk to a running node over its HTTP API; `cluster up|status|down` runs a local
//! cluster of node processes; `autoscale` runs the autoscaling controller beside a cluster.
//!
//! Errors end here as `anyhow` with their context; everything below uses typed errors.

mod autoscale;
mod client;
mod local_cluster;

// mimalloc over glibc malloc: allocation and free were ~16% of the node's CPU under a SET load
// (perf, docs/benchmarks.md); mimalloc's thread-local free lists cut that for the many small,
// short-lived buffers of a request.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Args, Parser, Subcommand};
use ringkv_server::{Config, DurabilityMode, Overrides};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ringkv",
    version,
    about = "A leaderless, Dynamo-style distributed key-value store",
    long_about = "A leaderless, Dynamo-style distributed key-value store.\n\n\
        Start a single node with its data in ./ringkv-data:   ringkv server\n\
        Then use redis-cli -p 7379, curl http://127.0.0.1:7380/v1/kv/KEY, or ringkv get/put/delete."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (a single-node store with no flags; with --seeds, a cluster member).
    Server(Box<ServerArgs>),
    /// Read a key: prints the value, or every sibling with the context that resolves them.
    Get {
        key: String,
        /// Replicas that must answer: one, quorum, all, local_quorum, each_quorum or a number.
        #[arg(long)]
        r: Option<String>,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Write a value (use - to read it from stdin). Pass the context from `get` to supersede
    /// what you read; without it the write replaces what the node holds now.
    Put {
        key: String,
        value: String,
        #[arg(long)]
        context: Option<String>,
        /// Replicas that must acknowledge: one, quorum, all, local_quorum, each_quorum or a number.
        #[arg(long)]
        w: Option<String>,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Delete a key (writes a tombstone).
    Delete {
        key: String,
        #[arg(long)]
        context: Option<String>,
        #[arg(long)]
        w: Option<String>,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Leave the cluster: this node hands its partitions to their new owners, then shows
    /// `left` (stop it then). Follows the handoff until done or --timeout seconds.
    Leave {
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Take a dead node out of the cluster; the others stream its partitions in to restore N
    /// copies. Ask any live node.
    Remove {
        node: String,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Show the cluster's members as this node sees them, and its anti-entropy per partition
    /// (the 20 stalest; --all-partitions for every one).
    Status {
        /// List every partition this node replicates, not only the 20 stalest.
        #[arg(long)]
        all_partitions: bool,
        #[command(flatten)]
        conn: client::Connection,
    },
    /// Show the ring: partitions and share per node.
    Ring {
        #[command(flatten)]
        conn: client::Connection,
    },
    /// A local cluster of real node processes on loopback: up, status, down.
    #[command(subcommand)]
    Cluster(local_cluster::ClusterCommand),
    /// Run the autoscaling controller: watch load against a policy, add and remove nodes
    /// (local processes, or a command hook such as `kubectl scale`).
    Autoscale(autoscale::AutoscaleArgs),
}

/// Server flags. Each also reads its `RINGKV_*` environment variable; both beat the config file.
#[derive(Args)]
struct ServerArgs {
    /// TOML configuration file (see config/ringkv.toml).
    #[arg(long, env = "RINGKV_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory [default: ./ringkv-data].
    #[arg(long, env = "RINGKV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Redis protocol listener [default: 127.0.0.1:7379].
    #[arg(long, env = "RINGKV_RESP_ADDR")]
    resp_addr: Option<String>,
    /// HTTP API listener [default: 127.0.0.1:7380].
    #[arg(long, env = "RINGKV_HTTP_ADDR")]
    http_addr: Option<String>,
    /// Peer (internal RPC and gossip) listener [default: 127.0.0.1:7381].
    #[arg(long, env = "RINGKV_PEER_ADDR")]
    peer_addr: Option<String>,
    /// Node id [default: generated once and kept in the data directory].
    #[arg(long, env = "RINGKV_NODE_ID")]
    node_id: Option<String>,
    /// Peers to join through, host:port of their peer listeners, comma-separated.
    #[arg(long, env = "RINGKV_SEEDS", value_delimiter = ',')]
    seeds: Option<Vec<String>>,
    /// Data center [default: dc1].
    #[arg(long, env = "RINGKV_DC")]
    dc: Option<String>,
    /// Rack [default: rack1].
    #[arg(long, env = "RINGKV_RACK")]
    rack: Option<String>,
    /// Relative capacity [default: 1].
    #[arg(long, env = "RINGKV_WEIGHT")]
    weight: Option<u32>,
    /// sync: fsync before every ack (group commit); periodic: fsync every --sync-interval-ms
    /// [default: sync].
    #[arg(long, env = "RINGKV_DURABILITY")]
    durability: Option<DurabilityMode>,
    /// fsync period in periodic mode [default: 10].
    #[arg(long, env = "RINGKV_SYNC_INTERVAL_MS")]
    sync_interval_ms: Option<u64>,
    /// Secret shared by the cluster's nodes.
    #[arg(long, env = "RINGKV_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Client password (RESP AUTH, HTTP Authorization: Bearer) [default: none].
    #[arg(long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Replicas per key [default: 3; with --replication, its sum].
    #[arg(long, env = "RINGKV_N")]
    n: Option<usize>,
    /// Replicas per data center, e.g. dc1=3,dc2=2: each named data center gets that many,
    /// spread over its racks [default: n spread over all data centers].
    #[arg(long, env = "RINGKV_REPLICATION", value_parser = ringkv_server::config::parse_replication)]
    replication: Option<ringkv_core::DcReplication>,
    /// Default read quorum [default: 2].
    #[arg(long, env = "RINGKV_R")]
    r: Option<usize>,
    /// Default write quorum [default: 2].
    #[arg(long, env = "RINGKV_W")]
    w: Option<usize>,
    /// Ring partitions, a power of two fixed at cluster creation [default: 1024].
    #[arg(long, env = "RINGKV_PARTITIONS")]
    partitions: Option<u32>,
    /// Largest value in bytes, up to 1 MiB [default: 10240].
    #[arg(long, env = "RINGKV_MAX_VALUE_BYTES")]
    max_value_bytes: Option<usize>,
    /// Client connections per API [default: 4096].
    #[arg(long, env = "RINGKV_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Gossip period in milliseconds [default: 1000].
    #[arg(long, env = "RINGKV_GOSSIP_INTERVAL_MS")]
    gossip_interval_ms: Option<u64>,
    /// How long a request waits for its W acks or R replies, in milliseconds [default: 2000].
    #[arg(long, env = "RINGKV_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
}

impl ServerArgs {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut config = Config::load(self.config.as_deref())?;
        config.apply(Overrides {
            data_dir: self.data_dir,
            resp_addr: self.resp_addr,
            http_addr: self.http_addr,
            peer_addr: self.peer_addr,
            node_id: self.node_id,
            seeds: self.seeds,
            dc: self.dc,
            rack: self.rack,
            weight: self.weight,
            durability: self.durability,
            sync_interval_ms: self.sync_interval_ms,
            cluster_secret: self.cluster_secret,
            password: self.password,
            n: self.n,
            replication: self.replication,
            w: self.w,
            r: self.r,
            partitions: self.partitions,
            max_value_bytes: self.max_value_bytes,
            max_connections: self.max_connections,
            gossip_interval_ms: self.gossip_interval_ms,
            request_timeout_ms: self.request_timeout_ms,
        });
        config.validate()?;
        Ok(config)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => {
            init_logging();
            let config = (*args).into_config()?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("ringkv")
                .build()?;
            runtime.block_on(ringkv_server::server::run(config))
        }
        Command::Get { key, r, conn } => client::get(&conn, &key, r.as_deref()),
        Command::Put {
            key,
            value,
            context,
            w,
            conn,
        } => client::put(&conn, &key, &value, context.as_deref(), w.as_deref()),
        Command::Delete {
            key,
            context,
            w,
            conn,
        } => client::delete(&conn, &key, context.as_deref(), w.as_deref()),
        Command::Status {
            all_partitions,
            conn,
        } => client::status_with(
            &conn,
            (!all_partitions).then_some(client::STATUS_PARTITION_LINES),
        ),
        Command::Ring { conn } => client::ring(&conn),
        Command::Leave { timeout, conn } => client::leave(&conn, timeout),
        Command::Remove { node, conn } => client::remove(&conn, &node),
        Command::Cluster(cmd) => local_cluster::run(cmd),
        Command::Autoscale(args) => {
            init_logging();
            autoscale::run(args)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RINGKV_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
