//! `ringkv cluster up|add|remove|status|down`: a local cluster of real `ringkv server` processes
//! on loopback, for trying things out. One data directory per node under `--dir`, the first node
//! the seed of the others, one generated cluster secret shared by all. A state file
//! (`cluster.json` in `--dir`) records pids and addresses, so `status` and `down` find them.
//!
//! Processes are detached from this command (it exits once they serve); each logs to
//! `node-I/ringkv.log`. `down` sends SIGTERM (a clean, durable shutdown), then SIGKILL to any
//! process still running after 15 s, and removes the state file (data directories stay).
//!
//! `add` starts more nodes the way the autoscaler's local provisioner does ([`start_node`]) and
//! follows them until they are `up` (their partitions streamed in); `remove` asks one node to
//! leave, follows its handoff until it is `left` and only then stops it ([`stop_node`]). Both
//! wait with the autoscaler's own waits (`autoscale::provisioner::Waits`), so the two agree on
//! what "joined" and "handed off" mean.

use crate::autoscale::controller::{MemberObs, Status};
use crate::autoscale::metrics_probe::{parse_prometheus, Probe};
use crate::autoscale::provisioner::{post_leave, ActionError, Waits};
use crate::client::progress;
use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::json;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const STATE_FILE: &str = "cluster.json";

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Start N nodes on loopback.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
        /// Node i (from 0) gets RESP P+3i, HTTP P+3i+1, peer P+3i+2 [default: free ports].
        #[arg(long)]
        base_port: Option<u16>,
        /// Replicas per key, and the default quorums, for every node.
        #[arg(long)]
        n: Option<usize>,
        #[arg(long)]
        r: Option<usize>,
        #[arg(long)]
        w: Option<usize>,
        /// Spread the nodes over this many data centers, dc1..dcK, round robin (node i in
        /// dc(i mod K + 1)), each node of a data center on a rack of its own.
        #[arg(long, default_value_t = 1)]
        dcs: usize,
        /// Replicas per data center for every node, e.g. dc1=2,dc2=1 (see `ringkv server
        /// --replication`).
        #[arg(long)]
        replication: Option<String>,
    },
    /// Show the local cluster's processes and the member table of one live node.
    Status {
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
    },
    /// Start more nodes that join the running local cluster; follows them until each is `up`
    /// (its share of the partitions streamed in), printing their progress and addresses.
    Add {
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
        /// How many nodes to add (they join at the same time).
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Data center of the new nodes [default: the running one with the fewest nodes, when
        /// the cluster has data centers].
        #[arg(long)]
        dc: Option<String>,
        /// Seconds to follow the joins; past it the nodes keep joining (see `ringkv status`).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Take one node out: it hands its partitions to their new owners (progress is printed),
    /// and only once it is `left` is it stopped and forgotten. Refused when fewer than N
    /// (replicas per key) nodes would stay.
    Remove {
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
        /// The node to remove, e.g. `n4` [default: the newest running node].
        node: Option<String>,
        /// Seconds to follow the handoff; past it the node keeps handing off and keeps running
        /// (run the same command again to go on following it).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Stop the local cluster (SIGTERM, then SIGKILL after 15 s).
    Down {
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
    },
}

pub fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Up {
            nodes,
            dir,
            base_port,
            n,
            r,
            w,
            dcs,
            replication,
        } => {
            if dcs == 0 || dcs > nodes {
                bail!("--dcs must be 1 to --nodes ({nodes})");
            }
            let mut shared: Vec<String> = [("--n", n), ("--r", r), ("--w", w)]
                .into_iter()
                .filter_map(|(flag, v)| Some([flag.to_string(), v?.to_string()]))
                .flatten()
                .collect();
            if let Some(replication) = replication {
                shared.extend(["--replication".to_string(), replication]);
            }
            up(nodes, &dir, base_port, &shared, dcs)
        }
        ClusterCommand::Add {
            dir,
            nodes,
            dc,
            timeout,
        } => add(&dir, nodes, dc.as_deref(), Duration::from_secs(timeout)),
        ClusterCommand::Remove { dir, node, timeout } => {
            remove(&dir, node.as_deref(), Duration::from_secs(timeout))
        }
        ClusterCommand::Status { dir } => status(&dir),
        ClusterCommand::Down { dir } => down(&dir),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the cluster secret")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A node process that is still running *and is ringkv*: `kill -0` alone also succeeds for an
/// exited process its (new) parent has not reaped yet, and for an unrelated process that reused
/// the pid after a reboot, so the process's state and command line are checked in /proc too.
fn alive(pid: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let zombie = stat
        .rsplit_once(") ")
        .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'));
    let is_ringkv = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmd| cmd.split(|b| *b == 0).any(|arg| arg.ends_with(b"ringkv")))
        .unwrap_or(false);
    !zombie && is_ringkv
}

fn signal(pid: u64, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn read_state(dir: &Path) -> anyhow::Result<serde_json::Value> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no local cluster in {} (no {STATE_FILE}); start one with `ringkv cluster up`",
            dir.display()
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

/// The `ringkv server` command of one local node: its data directory under `node_dir`, its
/// id and its three listeners (RESP, HTTP, peer); and the log file it writes to there.
fn node_command(
    exe: &Path,
    node_dir: &Path,
    id: &str,
    [resp, http, peer]: [&str; 3],
) -> anyhow::Result<(Command, std::fs::File)> {
    std::fs::create_dir_all(node_dir)?;
    let log = std::fs::File::create(node_dir.join("ringkv.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(node_dir.join("data"))
        .args([
            "--resp-addr",
            resp,
            "--http-addr",
            http,
            "--peer-addr",
            peer,
        ])
        .args(["--node-id", id]);
    Ok((cmd, log))
}

/// Starts `count` nodes with the `shared` server flags, spread over `dcs` data centers.
fn up(
    count: usize,
    dir: &Path,
    base_port: Option<u16>,
    shared: &[String],
    dcs: usize,
) -> anyhow::Result<()> {
    if count == 0 || count > 64 {
        bail!("--nodes must be 1 to 64");
    }
    if let Ok(state) = read_state(dir) {
        let running = state["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["pid"].as_u64().is_some_and(alive));
        if running {
            bail!(
                "a local cluster is already running in {} (ringkv cluster down --dir {0})",
                dir.display()
            );
        }
    }
    std::fs::create_dir_all(dir)?;
    let exe = std::env::current_exe()?;
    let secret = random_secret()?;
    let mut nodes = Vec::new();
    let mut seed = String::new();
    for i in 0..count {
        let port = |k: u16| -> anyhow::Result<u16> {
            match base_port {
                Some(p) => p
                    .checked_add(3 * i as u16 + k)
                    .context("--base-port too high for this many nodes"),
                None => free_port(),
            }
        };
        let (resp, http, peer) = (
            format!("127.0.0.1:{}", port(0)?),
            format!("127.0.0.1:{}", port(1)?),
            format!("127.0.0.1:{}", port(2)?),
        );
        let node_dir = dir.join(format!("node-{}", i + 1));
        let (mut cmd, log) = node_command(
            &exe,
            &node_dir,
            &format!("n{}", i + 1),
            [&resp, &http, &peer],
        )?;
        cmd.args(shared).env("RINGKV_CLUSTER_SECRET", &secret);
        if dcs > 1 {
            cmd.args(["--dc", &format!("dc{}", i % dcs + 1)])
                .args(["--rack", &format!("rack{}", i / dcs + 1)]);
        }
        if i > 0 {
            cmd.args(["--seeds", &seed]);
        } else {
            seed = peer.clone();
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start a ringkv server process")?;
        nodes.push(json!({
            "id": format!("n{}", i + 1),
            "pid": child.id(),
            "resp_addr": resp,
            "http_addr": http,
            "peer_addr": peer,
            "dir": node_dir,
        }));
    }
    let state = json!({ "nodes": nodes, "seed": seed });
    std::fs::write(dir.join(STATE_FILE), serde_json::to_string_pretty(&state)?)?;
    for n in &nodes {
        let addr: SocketAddr = n["http_addr"].as_str().unwrap_or_default().parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if !n["pid"].as_u64().is_some_and(alive) || Instant::now() > deadline {
                bail!(
                    "node {} did not start; see {}/ringkv.log",
                    n["id"],
                    n["dir"].as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("started {count} nodes in {} (seed {seed}):", dir.display());
    for n in &nodes {
        let s = |k: &str| n[k].as_str().unwrap_or("").to_string();
        let resp_port = s("resp_addr").rsplit(':').next().unwrap_or("").to_string();
        println!(
            "  {:<4} pid {:<7} redis-cli -p {resp_port}   curl http://{}/v1/kv/KEY   ringkv get KEY --http {}",
            s("id"),
            n["pid"],
            s("http_addr"),
            s("http_addr")
        );
    }
    println!(
        "status: ringkv cluster status --dir {0}   grow/shrink: ringkv cluster add|remove --dir {0}   stop: ringkv cluster down --dir {0}",
        dir.display()
    );
    Ok(())
}

fn status(dir: &Path) -> anyhow::Result<()> {
    let state = read_state(dir)?;
    let nodes = state["nodes"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<5} {:<8} {:<6} {:<16} {:<16} {:<16}",
        "ID", "PID", "ALIVE", "RESP", "HTTP", "PEER"
    );
    let mut live_http = None;
    for n in &nodes {
        let is_alive = n["pid"].as_u64().is_some_and(alive);
        let s = |k: &str| n[k].as_str().unwrap_or("").to_string();
        if is_alive && live_http.is_none() {
            live_http = Some(s("http_addr"));
        }
        println!(
            "{:<5} {:<8} {:<6} {:<16} {:<16} {:<16}",
            s("id"),
            n["pid"],
            if is_alive { "yes" } else { "no" },
            s("resp_addr"),
            s("http_addr"),
            s("peer_addr")
        );
    }
    match live_http {
        Some(http) => {
            println!("\nmembers as {http} sees them:");
            crate::client::status(&crate::client::Connection::new(http))
        }
        None => bail!("no node of the local cluster is running"),
    }
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let state = read_state(dir)?;
    let pids: Vec<u64> = state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["pid"].as_u64())
        .filter(|&p| alive(p))
        .collect();
    for &pid in &pids {
        signal(pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &pid in pids.iter().filter(|&&p| alive(p)) {
        eprintln!("pid {pid} did not stop within 15 s of SIGTERM: SIGKILL");
        signal(pid, "KILL");
    }
    std::fs::remove_file(dir.join(STATE_FILE))?;
    println!(
        "stopped {} nodes; data stays in {}",
        pids.len(),
        dir.display()
    );
    Ok(())
}

// Helpers for the autoscaler's local provisioner (`src/autoscale/provisioner.rs`): one more node
// into a running local cluster, configured as `up` configured its nodes, and one node out of it.

/// One node of a local cluster as the state file records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalNode {
    pub id: String,
    pub pid: u64,
    pub resp_addr: String,
    pub http_addr: String,
    pub peer_addr: String,
    pub dir: PathBuf,
    /// The process is running (and is ringkv).
    pub alive: bool,
}

impl LocalNode {
    /// `i` of the node's id `n{i}`: `up` numbers nodes from 1, new ones continue the count.
    pub fn index(&self) -> Option<u32> {
        self.id.strip_prefix('n')?.parse().ok()
    }
}

fn nodes_of(state: &serde_json::Value) -> Vec<LocalNode> {
    state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            let s = |k: &str| n[k].as_str().map(String::from);
            let pid = n["pid"].as_u64()?;
            Some(LocalNode {
                id: s("id")?,
                pid,
                resp_addr: s("resp_addr").unwrap_or_default(),
                http_addr: s("http_addr").unwrap_or_default(),
                peer_addr: s("peer_addr").unwrap_or_default(),
                dir: PathBuf::from(s("dir").unwrap_or_default()),
                alive: alive(pid),
            })
        })
        .collect()
}

/// The nodes the state file in `dir` records.
pub(crate) fn local_nodes(dir: &Path) -> anyhow::Result<Vec<LocalNode>> {
    Ok(nodes_of(&read_state(dir)?))
}

/// Whether `pid` is a running ringkv process (not a zombie, not a reused pid).
pub(crate) fn process_alive(pid: u64) -> bool {
    alive(pid)
}

/// Replaces the state file atomically (a reader never sees half of it).
fn write_state(dir: &Path, state: &serde_json::Value) -> anyhow::Result<()> {
    let tmp = dir.join(format!("{STATE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)?;
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    Ok(())
}

/// Flags each node has for itself: a new node gets its own, never a copy of another node's.
const PER_NODE_FLAGS: &[&str] = &[
    "--data-dir",
    "--resp-addr",
    "--http-addr",
    "--peer-addr",
    "--node-id",
    "--seeds",
    "--dc",
    "--rack",
];
/// The environment variables of those flags.
const PER_NODE_ENV: &[&str] = &[
    "RINGKV_DATA_DIR",
    "RINGKV_RESP_ADDR",
    "RINGKV_HTTP_ADDR",
    "RINGKV_PEER_ADDR",
    "RINGKV_NODE_ID",
    "RINGKV_SEEDS",
    "RINGKV_DC",
    "RINGKV_RACK",
];

/// The arguments of a running `ringkv server` process after `server`, from /proc.
fn server_args(pid: u64) -> anyhow::Result<Vec<String>> {
    let cmdline =
        std::fs::read(format!("/proc/{pid}/cmdline")).context("cannot read its command line")?;
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv.get(1).map(String::as_str) != Some("server") {
        bail!("not a `ringkv server` process");
    }
    Ok(argv[2..].to_vec())
}

/// The value of `--flag value` or `--flag=value` in a node's `server` arguments.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, arg)| {
        if arg == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            arg.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

/// Where a new node goes: `dc` if given, else, when the running nodes have data centers, the one
/// with the fewest of them (ties by name); its rack is one the data center does not use yet.
/// `None` when the cluster has no data centers and none was asked for.
fn placement(running: &[Vec<String>], dc: Option<&str>) -> Option<(String, String)> {
    let mut per_dc: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for args in running {
        if let Some(d) = flag_value(args, "--dc") {
            *per_dc.entry(d).or_default() += 1;
        }
    }
    let dc = match dc {
        Some(dc) => dc.to_string(),
        None => per_dc
            .iter()
            .min_by_key(|(name, count)| (**count, **name))?
            .0
            .to_string(),
    };
    let taken = per_dc.get(dc.as_str()).copied().unwrap_or(0);
    Some((dc, format!("rack{}", taken + 1)))
}

/// The `server` flags of a node's command line (`argv` without the binary and `server`) that
/// every node of the cluster shares: everything but [`PER_NODE_FLAGS`] (as `--flag value` or
/// `--flag=value`).
fn shared_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let flag = arg.split('=').next().unwrap_or(arg);
        if PER_NODE_FLAGS.contains(&flag) {
            // `--flag value` skips the value too; `--flag=value` is one argument.
            i += if arg.contains('=') { 1 } else { 2 };
            continue;
        }
        out.push(arg.clone());
        i += 1;
    }
    out
}

/// `RINGKV_*` variables of a node's environment that every node shares (the cluster secret,
/// gossip period, ...): NUL-separated `KEY=VALUE` as in `/proc/PID/environ`.
fn shared_env(environ: &[u8]) -> Vec<(String, String)> {
    environ
        .split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok()?.split_once('='))
        .filter(|(k, _)| k.starts_with("RINGKV_") && !PER_NODE_ENV.contains(k))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts one more node into the running local cluster in `dir`, the way `up` starts its nodes:
/// the same binary, the shared flags and `RINGKV_*` environment (the cluster secret among them)
/// of a running node, read from its `/proc/PID/cmdline` and `environ` (`up` passes the secret
/// only to its processes, it keeps no copy), its own free loopback ports and data directory
/// (`node-I`), id `nI` past every id and directory used before, and `--seeds` every running
/// node's peer address. It is recorded in the state file at once, so `status` and `down` see it,
/// and runs in its own process group (a Ctrl-C to the caller does not reach it). Returns once
/// its HTTP port accepts connections; the child handle is the caller's to reap.
pub(crate) fn start_node(dir: &Path) -> anyhow::Result<(LocalNode, std::process::Child)> {
    start_node_in(dir, None)
}

/// [`start_node`] in data center `dc` (default: see [`placement`]).
pub(crate) fn start_node_in(
    dir: &Path,
    dc: Option<&str>,
) -> anyhow::Result<(LocalNode, std::process::Child)> {
    use std::os::unix::process::CommandExt as _;
    let mut state = read_state(dir)?;
    let nodes = nodes_of(&state);
    let live: Vec<&LocalNode> = nodes.iter().filter(|n| n.alive).collect();
    let Some(template) = live.first() else {
        bail!(
            "no node of the local cluster in {} is running to join",
            dir.display()
        );
    };
    let template_args = server_args(template.pid)
        .with_context(|| format!("{} (pid {})", template.id, template.pid))?;
    let environ = std::fs::read(format!("/proc/{}/environ", template.pid))
        .with_context(|| format!("cannot read the environment of {}", template.id))?;
    // The binary the cluster runs; this one if that was replaced on disk since.
    let exe = std::fs::read_link(format!("/proc/{}/exe", template.pid))
        .ok()
        .filter(|p| p.exists())
        .map_or_else(std::env::current_exe, Ok)?;

    let used_dirs = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("node-")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    let index = nodes
        .iter()
        .filter_map(LocalNode::index)
        .max()
        .unwrap_or(0)
        .max(used_dirs)
        + 1;
    let id = format!("n{index}");
    let (resp, http, peer) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    let seeds: Vec<&str> = live.iter().map(|n| n.peer_addr.as_str()).collect();
    let node_dir = dir.join(format!("node-{index}"));
    let (mut cmd, log) = node_command(&exe, &node_dir, &id, [&resp, &http, &peer])?;
    cmd.args(["--seeds", &seeds.join(",")])
        .args(shared_args(&template_args));
    let running: Vec<Vec<String>> = live
        .iter()
        .map(|n| server_args(n.pid).unwrap_or_default())
        .collect();
    if let Some((dc, rack)) = placement(&running, dc) {
        cmd.args(["--dc", &dc, "--rack", &rack]);
    }
    // The cluster's settings, not whatever the caller's environment says.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("RINGKV_") {
            cmd.env_remove(key);
        }
    }
    cmd.envs(shared_env(&environ));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("cannot start a ringkv server process")?;
    let node = LocalNode {
        id: id.clone(),
        pid: u64::from(child.id()),
        resp_addr: resp,
        http_addr: http,
        peer_addr: peer,
        dir: node_dir,
        alive: true,
    };
    match state["nodes"].as_array_mut() {
        Some(list) => list.push(json!({
            "id": node.id,
            "pid": node.pid,
            "resp_addr": node.resp_addr,
            "http_addr": node.http_addr,
            "peer_addr": node.peer_addr,
            "dir": node.dir,
        })),
        None => bail!("the state file in {} has no node list", dir.display()),
    }
    write_state(dir, &state)?;
    let addr: SocketAddr = node.http_addr.parse()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            forget_node(dir, &id)?;
            bail!(
                "node {id} did not start; see {}/ringkv.log",
                node.dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((node, child))
}

/// Removes node `id` from the state file (its data directory stays).
pub(crate) fn forget_node(dir: &Path, id: &str) -> anyhow::Result<()> {
    let mut state = read_state(dir)?;
    if let Some(list) = state["nodes"].as_array_mut() {
        list.retain(|n| n["id"].as_str() != Some(id));
    }
    write_state(dir, &state)
}

/// Stops node `id` of the local cluster in `dir` as `down` stops every node (SIGTERM, then
/// SIGKILL if it still runs after `grace`) and removes it from the state file. Returns whether
/// SIGKILL was needed. Only call this once the node's data is elsewhere.
pub(crate) fn stop_node(dir: &Path, id: &str, grace: Duration) -> anyhow::Result<bool> {
    let node = local_nodes(dir)?
        .into_iter()
        .find(|n| n.id == id)
        .with_context(|| format!("node {id} is not in the local cluster in {}", dir.display()))?;
    let mut killed = false;
    if alive(node.pid) {
        signal(node.pid, "TERM");
        let deadline = Instant::now() + grace;
        while alive(node.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(node.pid) {
            signal(node.pid, "KILL");
            killed = true;
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(node.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    forget_node(dir, id)?;
    Ok(killed)
}

// `ringkv cluster add` and `ringkv cluster remove`: the autoscaler's scale steps by hand, with
// the same helpers (start_node, stop_node) and the same waits (until_up, until_left).

/// How long `remove` gives a node that has left between SIGTERM and SIGKILL (as `down`).
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How long one round of a wait lasts before the progress is printed again.
const ROUND: Duration = Duration::from_secs(1);
/// A progress line that has not changed is printed again after this long.
const QUIET: Duration = Duration::from_secs(5);

/// The probe and waits the autoscaler uses, with the client password of the environment (the
/// local cluster's nodes have none unless `RINGKV_PASSWORD` was set for them).
fn probe() -> anyhow::Result<Probe> {
    Probe::new(std::env::var("RINGKV_PASSWORD").ok()).context("cannot build an HTTP client")
}

/// `/v1/cluster` of the node at `http`, as JSON (the transfers are not in `ClusterView`).
fn cluster_json(probe: &Probe, http: &str) -> Option<serde_json::Value> {
    let resp = probe
        .request(reqwest::Method::GET, &format!("http://{http}/v1/cluster"))
        .send()
        .ok()?;
    resp.status().is_success().then_some(())?;
    resp.json().ok()
}

/// The status a node's `/v1/cluster` gives itself.
fn own_status(body: &serde_json::Value) -> String {
    body["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["self"].as_bool() == Some(true))
        .and_then(|m| m["status"].as_str())
        .unwrap_or("unknown")
        .to_string()
}

/// One line on what node `id` (at `http`) is doing: its status and its transfer, as `ringkv
/// status` shows them.
fn progress_line(probe: &Probe, id: &str, http: &str) -> String {
    let Some(body) = cluster_json(probe, http) else {
        return format!("{id}: does not answer on {http}");
    };
    let status = own_status(&body);
    let t = &body["transfers"];
    let get = |k: &str| t[k].as_u64().unwrap_or(0);
    let (to_pull, pulled) = (get("partitions_to_pull"), get("partitions_pulled"));
    let (handoff, confirmed) = (get("handoff_partitions"), get("handoff_confirmed"));
    let detail = match status.as_str() {
        "up" => "up; waiting for another member to see it up".to_string(),
        "leaving" if handoff > 0 => format!(
            "handing off {} {confirmed}/{handoff} partitions confirmed by their new owners",
            progress(confirmed, handoff)
        ),
        "leaving" => "handing off (waiting for the new owners)".to_string(),
        _ if to_pull > 0 => format!(
            "streaming in {} {pulled}/{to_pull} partitions, {} keys, {} KiB",
            progress(pulled, to_pull),
            get("keys_received"),
            get("bytes_received") / 1024
        ),
        "joining" => "waiting for the ring to include it (gossip)".to_string(),
        _ => String::new(),
    };
    format!("{id} {status}: {detail}")
}

/// What node `http` received by partition streaming since it started, from its `/metrics`.
fn streamed_in(probe: &Probe, http: &str) -> String {
    let text = probe
        .request(reqwest::Method::GET, &format!("http://{http}/metrics"))
        .send()
        .ok()
        .filter(|r| r.status().is_success())
        .and_then(|r| r.text().ok())
        .unwrap_or_default();
    let samples = parse_prometheus(&text);
    let total = |name: &str| {
        samples
            .iter()
            .find(|s| s.name == name)
            .map_or(0, |s| s.value as u64)
    };
    format!(
        "{} partitions, {} keys, {} KiB streamed in",
        total("ringkv_stream_partitions_pulled_total"),
        total("ringkv_stream_keys_received_total"),
        total("ringkv_stream_bytes_received_total") / 1024
    )
}

/// Prints `line` (prefixed with the time since `started`) unless it is what was printed last,
/// less than [`QUIET`] ago.
struct Progress {
    started: Instant,
    last: String,
    at: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            last: String::new(),
            at: now,
        }
    }

    fn show(&mut self, line: String) {
        if line == self.last && self.at.elapsed() < QUIET {
            return;
        }
        println!("  [{:>5.1}s] {line}", self.started.elapsed().as_secs_f64());
        self.last = line;
        self.at = Instant::now();
    }
}

/// `ringkv cluster add`: starts `count` nodes into the running local cluster in `dir` (each with
/// every running node as a seed, so they join through the existing ones), prints their
/// addresses, then follows them until each is `up` in its own view and another member's, i.e.
/// done streaming its partitions in.
fn add(dir: &Path, count: usize, dc: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    if count == 0 || count > 64 {
        bail!("--nodes must be 1 to 64");
    }
    let before: Vec<LocalNode> = local_nodes(dir)?.into_iter().filter(|n| n.alive).collect();
    if before.is_empty() {
        bail!(
            "no node of the local cluster in {} is running; start it with `ringkv cluster up`",
            dir.display()
        );
    }
    let others: Vec<String> = before.iter().map(|n| n.http_addr.clone()).collect();
    let mut added = Vec::new();
    for _ in 0..count {
        let (node, _child) = start_node_in(dir, dc).with_context(|| {
            format!(
                "started {} of {count} nodes ({}); they keep joining",
                added.len(),
                added
                    .iter()
                    .map(|n: &LocalNode| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        added.push(node);
    }
    println!(
        "started {count} node{} joining the cluster in {} through {}:",
        if count == 1 { "" } else { "s" },
        dir.display(),
        before
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for n in &added {
        let resp_port = n.resp_addr.rsplit(':').next().unwrap_or("");
        println!(
            "  {:<4} pid {:<7} redis-cli -p {resp_port}   curl http://{}/v1/kv/KEY   ringkv status --http {}",
            n.id, n.pid, n.http_addr, n.http_addr
        );
    }
    println!("following the joins until each node is up (its partitions streamed in):");
    let probe = probe()?;
    let stop = AtomicBool::new(false);
    let waits = Waits {
        probe: &probe,
        stop: &stop,
        poll: Duration::from_millis(200),
    };
    let mut progress = Progress::new();
    let mut pending: Vec<&LocalNode> = added.iter().collect();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for n in pending {
            if !process_alive(n.pid) {
                bail!(
                    "{} (pid {}) exited while joining; see {}/ringkv.log",
                    n.id,
                    n.pid,
                    n.dir.display()
                );
            }
            match waits.until_up(&n.id, &n.http_addr, &others, ROUND) {
                Ok(_) => println!(
                    "  [{:>5.1}s] {} is up: {}",
                    progress.started.elapsed().as_secs_f64(),
                    n.id,
                    streamed_in(&probe, &n.http_addr)
                ),
                Err(ActionError::JoinTimeout { .. }) => still.push(n),
                Err(e) => bail!("{e}"),
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        if progress.started.elapsed() > timeout {
            bail!(
                "{} not up within {}s; {} keep{} joining (watch `ringkv status --http {}`)",
                pending
                    .iter()
                    .map(|n| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                timeout.as_secs(),
                if pending.len() == 1 { "it" } else { "they" },
                if pending.len() == 1 { "s" } else { "" },
                pending[0].http_addr
            );
        }
        let lines: Vec<String> = pending
            .iter()
            .map(|n| progress_line(&probe, &n.id, &n.http_addr))
            .collect();
        progress.show(lines.join("; "));
    }
    println!(
        "{} up after {:.1}s; the cluster has {} nodes (ringkv cluster status --dir {})",
        added
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        progress.started.elapsed().as_secs_f64(),
        before.len() + added.len(),
        dir.display()
    );
    Ok(())
}

/// `ringkv cluster remove`: node `id` (default: the newest running one) leaves the local
/// cluster in `dir`. Refused when fewer than N members would stay. The node is asked to leave
/// (`POST /v1/admin/leave`), its handoff is followed until every reachable member shows it
/// `left`, and only then is it stopped and forgotten; if the handoff does not finish within
/// `timeout` the node keeps running.
fn remove(dir: &Path, id: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let nodes = local_nodes(dir)?;
    let ids = || {
        nodes
            .iter()
            .map(|n| n.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let target = match id {
        Some(id) => nodes.iter().find(|n| n.id == id).with_context(|| {
            format!(
                "no node {id} in the local cluster in {} (it has {})",
                dir.display(),
                ids()
            )
        })?,
        None => nodes
            .iter()
            .filter(|n| n.alive)
            .max_by_key(|n| n.index().unwrap_or(0))
            .with_context(|| {
                format!(
                    "no node of the local cluster in {} is running",
                    dir.display()
                )
            })?,
    }
    .clone();
    let others: Vec<String> = nodes
        .iter()
        .filter(|n| n.alive && n.id != target.id)
        .map(|n| n.http_addr.clone())
        .collect();
    let probe = probe()?;
    let Some(view) = probe.first_view(&others) else {
        bail!(
            "no other node of the local cluster answers, so nobody could take {}'s data",
            target.id
        );
    };
    let n = view.n.unwrap_or(3);
    let status = view.member(&target.id).map(|m| m.status);
    if status == Some(Status::Left) {
        // An earlier remove stopped following before the end: the data is already elsewhere.
        let killed = stop_node(dir, &target.id, STOP_GRACE)?;
        println!(
            "{} had already left (its data is with the other nodes): {} it and removed it from {STATE_FILE}",
            target.id,
            if killed { "SIGKILLed" } else { "stopped" }
        );
        return Ok(());
    }
    if !target.alive {
        bail!(
            "{} (pid {}) is not running, so it cannot hand its data off; start the cluster's \
             nodes again, or if it is gone for good take it out with `ringkv remove {} --http {}` \
             (the others then restore N copies of its data)",
            target.id,
            target.pid,
            target.id,
            others.first().map(String::as_str).unwrap_or("HOST:PORT")
        );
    }
    if status != Some(Status::Leaving) {
        let staying: Vec<&str> = view
            .members
            .iter()
            .filter(|m| m.id != target.id && matches!(m.status, Status::Up | Status::Joining))
            .map(|m| m.id.as_str())
            .collect();
        if staying.len() < n {
            bail!(
                "refusing to remove {}: {} node{} would stay ({}), fewer than the {n} replicas \
                 per key (N={n}) each key is kept on; add a node first (`ringkv cluster add \
                 --dir {}`)",
                target.id,
                staying.len(),
                if staying.len() == 1 { "" } else { "s" },
                staying.join(", "),
                dir.display()
            );
        }
    }
    let member = MemberObs {
        id: target.id.clone(),
        http_addr: target.http_addr.clone(),
        status: status.unwrap_or(Status::Unknown),
        unhealthy: false,
        scraped: false,
        ops_per_sec: None,
        p99_ms: None,
        disk_bytes: None,
    };
    post_leave(&probe, &member).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{} (pid {}) is leaving: the new owners of its partitions stream them in; it is stopped \
         once it is `left`",
        target.id, target.pid
    );
    let stop = AtomicBool::new(false);
    let waits = Waits {
        probe: &probe,
        stop: &stop,
        poll: Duration::from_millis(200),
    };
    let mut progress = Progress::new();
    loop {
        match waits.until_left(&target.id, &target.http_addr, &others, ROUND) {
            Ok(_) => break,
            Err(ActionError::LeaveTimeout { .. }) => {}
            Err(e) => bail!("{e}"),
        }
        if !process_alive(target.pid) {
            bail!(
                "{} (pid {}) exited before it had handed its data off; start it again \
                 (`ringkv cluster remove --dir {} {}` then goes on), see {}/ringkv.log",
                target.id,
                target.pid,
                dir.display(),
                target.id,
                target.dir.display()
            );
        }
        if progress.started.elapsed() > timeout {
            bail!(
                "{} is still handing its data off after {}s; it keeps running and leaving \
                 (run `ringkv cluster remove --dir {} {}` again to follow it to the end)",
                target.id,
                timeout.as_secs(),
                dir.display(),
                target.id
            );
        }
        progress.show(progress_line(&probe, &target.id, &target.http_addr));
    }
    let took = progress.started.elapsed();
    let killed = stop_node(dir, &target.id, STOP_GRACE)?;
    println!(
        "{} left after {:.1}s (every partition is with its new owners); {} it and removed it \
         from {STATE_FILE} (its data directory {} stays); {} nodes remain",
        target.id,
        took.as_secs_f64(),
        if killed {
            "SIGKILLed (no exit within 15 s of SIGTERM)"
        } else {
            "stopped"
        },
        target.dir.display(),
        local_nodes(dir)?.iter().filter(|n| n.alive).count()
    );
    Ok(())
}

#[cfg(test)]
mod autoscale_helper_tests {
    use super::*;

    #[test]
    fn new_nodes_go_to_the_data_center_with_the_fewest() {
        let args = |dc: &str| -> Vec<String> {
            ["--n", "3", "--dc", dc]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        let running = vec![args("dc1"), args("dc2"), args("dc1")];
        assert_eq!(
            placement(&running, None),
            Some(("dc2".to_string(), "rack2".to_string()))
        );
        assert_eq!(
            placement(&running, Some("dc1")),
            Some(("dc1".to_string(), "rack3".to_string()))
        );
        assert_eq!(
            placement(&running, Some("dc3")),
            Some(("dc3".to_string(), "rack1".to_string()))
        );
        let plain = vec![vec!["--n".to_string(), "3".to_string()]];
        assert_eq!(placement(&plain, None), None);
        assert_eq!(flag_value(&["--dc=dc2".to_string()], "--dc"), Some("dc2"));
    }

    #[test]
    fn shared_args_drop_what_is_per_node() {
        let args: Vec<String> = [
            "--data-dir",
            "/c/node-1/data",
            "--resp-addr",
            "127.0.0.1:1",
            "--http-addr=127.0.0.1:2",
            "--peer-addr",
            "127.0.0.1:3",
            "--node-id",
            "n1",
            "--n",
            "3",
            "--seeds",
            "127.0.0.1:9",
            "--w=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(shared_args(&args), ["--n", "3", "--w=2"]);
    }

    #[test]
    fn shared_env_keeps_the_clusters_settings_only() {
        let environ = b"PATH=/bin\0RINGKV_CLUSTER_SECRET=s3=cret\0RINGKV_GOSSIP_INTERVAL_MS=100\0\
                        RINGKV_NODE_ID=n1\0RINGKV_DATA_DIR=/x\0HOME=/root\0";
        assert_eq!(
            shared_env(environ),
            [
                ("RINGKV_CLUSTER_SECRET".to_string(), "s3=cret".to_string()),
                ("RINGKV_GOSSIP_INTERVAL_MS".to_string(), "100".to_string()),
            ]
        );
    }
}
