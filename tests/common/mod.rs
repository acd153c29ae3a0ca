//! Shared harness for tests that run the real `ringkv` binary: start a node on free loopback
//! ports with its own data directory, wait until it serves, signal it, restart it.
#![allow(dead_code)]

pub mod netns;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `ringkv server` process. Killed on drop, so a failing test leaves nothing running.
pub struct NodeProc {
    child: Option<Child>,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    /// Flags after the addresses; change them before [`NodeProc::restart`] (e.g. drop seeds).
    pub extra: Vec<String>,
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringkv")
}

impl NodeProc {
    /// Starts a node over `data_dir` with extra flags and waits until both APIs answer.
    pub fn start(data_dir: &Path, extra: &[&str]) -> NodeProc {
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let mut node = NodeProc {
            child: None,
            resp: addr(free_port()),
            http: addr(free_port()),
            peer: addr(free_port()),
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let child = Command::new(bin())
            .arg("server")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--resp-addr")
            .arg(self.resp.to_string())
            .arg("--http-addr")
            .arg(self.http.to_string())
            .arg("--peer-addr")
            .arg(self.peer.to_string())
            .args(&self.extra)
            .env("RINGKV_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringkv");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits until the RESP and HTTP ports accept connections (bounded).
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ringkv exited during start: {status}");
            }
            let up =
                |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
            if up(&self.resp) && up(&self.http) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ringkv did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (TERM, INT, STOP, CONT) with the system's `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGTERM and wait for a clean exit (bounded).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("ringkv did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the process again over the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node before restarting it");
        self.spawn();
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://{}/", self.resp))
            .unwrap()
            .get_connection()
            .expect("connect over RESP")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// True when the test runs in CI, where a skipped prerequisite is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Skips a test loudly when a tool is missing; in CI the missing tool fails the test.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if in_ci() {
            panic!("{tool} is required in CI but is not installed (.ci/run installs it)");
        }
        eprintln!("\n*** SKIPPED: {tool} is not installed; install it to run this test ***\n");
    }
    found
}

/// A cluster of `ringkv server` processes on loopback: node `i` is `n{i+1}`, the first node is
/// every other node's seed, all share a secret, and gossip ticks every 100 ms so membership
/// settles in about a second. Every process is killed (after a SIGCONT) on drop.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub secret: String,
    pub dir: tempfile::TempDir,
}

/// Gossip period the cluster tests use, in ms.
pub const TEST_GOSSIP_MS: &str = "100";

impl Cluster {
    pub fn start(count: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let secret = format!("test-secret-{}", std::process::id());
        let mut nodes: Vec<NodeProc> = Vec::new();
        for i in 0..count {
            let id = format!("n{}", i + 1);
            let mut flags: Vec<String> = vec![
                "--node-id".into(),
                id,
                "--cluster-secret".into(),
                secret.clone(),
                "--gossip-interval-ms".into(),
                TEST_GOSSIP_MS.into(),
                "--request-timeout-ms".into(),
                "1000".into(),
            ];
            if let Some(seed) = nodes.first() {
                flags.push("--seeds".into());
                flags.push(seed.peer.to_string());
            }
            flags.extend(extra.iter().map(|s| s.to_string()));
            let flags: Vec<&str> = flags.iter().map(|s| s.as_str()).collect();
            nodes.push(NodeProc::start(
                &dir.path().join(format!("n{}", i + 1)),
                &flags,
            ));
        }
        let cluster = Cluster { nodes, secret, dir };
        let all: Vec<usize> = (0..count).collect();
        cluster.wait_up(&all, count);
        cluster
    }

    /// Waits (bounded, 20 s) until each node in `which` sees `members` members up and not down.
    pub fn wait_up(&self, which: &[usize], members: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for &i in which {
            loop {
                let up = self.members(i).map(|ms| count_up(&ms));
                if up == Some(members) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {i} did not see {members} members up within 20 s (saw {up:?})"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The member table node `i` serves on `/v1/cluster`, if it answers.
    pub fn members(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        let body: serde_json::Value = http_client()
            .get(self.nodes[i].url("/v1/cluster"))
            .send()
            .ok()?
            .json()
            .ok()?;
        body["members"].as_array().cloned()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            // A stopped process must be continued, or a later kill leaves it lingering.
            if n.child.is_some() {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(n.pid().to_string())
                    .status();
            }
            n.kill9();
        }
    }
}

/// A blocking HTTP client with a bound on every request.
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Members of a `/v1/cluster` answer that are up and neither down nor suspected.
pub fn count_up(members: &[serde_json::Value]) -> usize {
    members
        .iter()
        .filter(|m| m["status"] == "up" && m["down"] == false && m["suspected"] == false)
        .count()
}

/// GETs each path (e.g. `/v1/kv/k?r=1`) from one node, spread over `threads` client threads so
/// requests that wait for a stopped replica's timeout run side by side. Returns, in input order,
/// each path's status and body.
pub fn get_parallel(http: SocketAddr, paths: Vec<String>, threads: usize) -> Vec<(u16, String)> {
    let chunk = paths.len().div_ceil(threads.max(1)).max(1);
    let workers: Vec<_> = paths
        .chunks(chunk)
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                let client = http_client();
                chunk
                    .into_iter()
                    .map(|path| {
                        let resp = client.get(format!("http://{http}{path}")).send().unwrap();
                        (resp.status().as_u16(), resp.text().unwrap_or_default())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

/// Node `http`'s Prometheus text, `None` when it does not answer.
pub fn scrape(http: SocketAddr) -> Option<String> {
    http_client()
        .get(format!("http://{http}/metrics"))
        .send()
        .ok()?
        .text()
        .ok()
}

/// The value of the unlabelled sample `name` in Prometheus `text`.
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Output of one `ringkv` CLI run.
pub struct CliRun {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ringkv args...` with `env` set, to its end, at most `limit` (killed and a panic after
/// that). Node processes that `cluster up`/`add` start inherit `env` and log to their own
/// files, so the pipes close when the command itself exits.
pub fn run_cli(args: &[&str], env: &[(&str, &str)], limit: Duration) -> CliRun {
    use std::io::Read;
    let mut child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ringkv");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ringkv {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliRun {
        ok: status.success(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// True while `pid` is a process that has not exited (a zombie waiting for its parent to reap it
/// has exited).
pub fn process_running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the parenthesised command name: "pid (comm) S ...".
            let (_, rest) = stat.rsplit_once(')')?;
            Some(!matches!(rest.split_whitespace().next(), Some("Z" | "X")))
        })
        .unwrap_or(false)
}

/// The nodes the state file of a `ringkv cluster up` directory records: (id, pid, http address).
pub fn recorded_nodes(dir: &Path) -> Vec<(String, u64, String)> {
    let Ok(text) = std::fs::read_to_string(dir.join("cluster.json")) else {
        return Vec::new();
    };
    let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| {
            Some((
                n["id"].as_str()?.to_string(),
                n["pid"].as_u64()?,
                n["http_addr"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// On drop (a failed assertion included), SIGKILLs every process the state file in `dir` lists,
/// and every pid in `removed` (nodes a test took out of the state file), that still runs and whose
/// command line names `dir`: nothing outlives the test, and a reused pid of some other process is
/// never touched.
pub struct LocalClusterGuard {
    pub dir: PathBuf,
    pub removed: Vec<u64>,
}

impl LocalClusterGuard {
    pub fn new(dir: &Path) -> LocalClusterGuard {
        LocalClusterGuard {
            dir: dir.to_path_buf(),
            removed: Vec::new(),
        }
    }
}

impl Drop for LocalClusterGuard {
    fn drop(&mut self) {
        let dir = self.dir.to_string_lossy().into_owned();
        let pids = recorded_nodes(&self.dir).into_iter().map(|(_, pid, _)| pid);
        for pid in pids.chain(self.removed.iter().copied()) {
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&dir))
                .unwrap_or(false);
            if ours && process_running(pid) {
                eprintln!("killing leftover node (pid {pid})");
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}
