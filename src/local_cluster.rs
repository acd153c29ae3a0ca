//! `ringkv cluster up|status|down`: a local cluster of real `ringkv server` processes on
//! loopback, for trying things out. One data directory per node under `--dir`, the first node
//! the seed of the others, one generated cluster secret shared by all. A state file
//! (`cluster.json` in `--dir`) records pids and addresses, so `status` and `down` find them.
//!
//! Processes are detached from this command (it exits once they serve); each logs to
//! `node-I/ringkv.log`. `down` sends SIGTERM (a clean, durable shutdown), then SIGKILL to any
//! process still running after 15 s, and removes the state file (data directories stay).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use serde_json::json;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
    },
    /// Show the local cluster's processes and the member table of one live node.
    Status {
        #[arg(long, default_value = "./ringkv-cluster")]
        dir: PathBuf,
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
        } => up(nodes, &dir, base_port, [("--n", n), ("--r", r), ("--w", w)]),
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

fn up(
    count: usize,
    dir: &Path,
    base_port: Option<u16>,
    quorum: [(&str, Option<usize>); 3],
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
        std::fs::create_dir_all(&node_dir)?;
        let log = std::fs::File::create(node_dir.join("ringkv.log"))?;
        let mut cmd = Command::new(&exe);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(node_dir.join("data"))
            .args([
                "--resp-addr",
                &resp,
                "--http-addr",
                &http,
                "--peer-addr",
                &peer,
            ])
            .args(["--node-id", &format!("n{}", i + 1)])
            .env("RINGKV_CLUSTER_SECRET", &secret);
        for (flag, value) in quorum {
            if let Some(v) = value {
                cmd.arg(flag).arg(v.to_string());
            }
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
        "status: ringkv cluster status --dir {0}   stop: ringkv cluster down --dir {0}",
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
];
/// The environment variables of those flags.
const PER_NODE_ENV: &[&str] = &[
    "RINGKV_DATA_DIR",
    "RINGKV_RESP_ADDR",
    "RINGKV_HTTP_ADDR",
    "RINGKV_PEER_ADDR",
    "RINGKV_NODE_ID",
    "RINGKV_SEEDS",
];

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
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", template.pid))
        .with_context(|| format!("cannot read the command line of {}", template.id))?;
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if argv.get(1).map(String::as_str) != Some("server") {
        bail!(
            "{} (pid {}) is not a `ringkv server` process",
            template.id,
            template.pid
        );
    }
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
    std::fs::create_dir_all(&node_dir)?;
    let log = std::fs::File::create(node_dir.join("ringkv.log"))?;
    let mut cmd = Command::new(&exe);
    cmd.arg("server")
        .arg("--data-dir")
        .arg(node_dir.join("data"))
        .args([
            "--resp-addr",
            &resp,
            "--http-addr",
            &http,
            "--peer-addr",
            &peer,
        ])
        .args(["--node-id", &id])
        .args(["--seeds", &seeds.join(",")])
        .args(shared_args(&argv[2..]));
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

#[cfg(test)]
mod autoscale_helper_tests {
    use super::*;

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
