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
