//! Real networks for tests that run as root: K `ringkv server` processes, each in its own network
//! namespace `rk-<pid>-<i>`, joined by veth pairs (`rkh<pid>-<i>` on the host side, `eth0` inside)
//! to a bridge `rkb<pid>` in the root namespace. The bridge holds `.254` of a private
//! 10.213.x.0/24 (a /24 no route uses yet), so the test reaches every node directly; node `i` is
//! `10.213.x.(i+1)` and `n{i+1}`. Faults are nftables tables (`inet rkpart`) inside the
//! namespaces: [`Net::cut`], [`Net::split`], [`Net::heal`]. Namespaces, bridge, veths and
//! processes are removed by [`Net`]'s Drop, also when the test fails.
//!
//! Used by `tests/partitions.rs` (five nodes, splits inside one data center) and
//! `tests/datacenters.rs` (two data centers, one cut off from the other).

use super::{bin, count_up, http_client, in_ci, require_tool};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const HTTP_PORT: u16 = 8080;
pub const RESP_PORT: u16 = 7379;
pub const PEER_PORT: u16 = 7381;

/// Runs a command, returning whether it succeeded (output discarded).
pub fn run(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs a command and panics with its stderr when it fails.
pub fn must(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `nft -f -` inside namespace `ns` with `script` on stdin.
pub fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nft");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft in {ns} failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether a network-namespace test can run here: root, `ip` and `nft`. Otherwise it is skipped
/// loudly, or, in CI, fails. `what` names the test in the messages.
pub fn prerequisites(what: &str) -> bool {
    if !is_root() {
        if in_ci() {
            panic!("the {what} test needs root in CI (network namespaces, nftables)");
        }
        eprintln!("\n*** SKIPPED: {what} test needs root (network namespaces, nftables) ***\n");
        return false;
    }
    require_tool("ip") && require_tool("nft")
}

/// Where a node's stderr goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Logs {
    /// The test's stderr (what `cargo test -- --nocapture` shows).
    Inherit,
    /// `<temp dir>/n<i>.log`; on a failing test (or with `RINGKV_TEST_KEEP` set) the temp dir is
    /// kept and its path printed.
    Files,
}

/// The namespaces, bridge, veths and processes of one run. Everything goes on drop.
pub struct Net {
    pub pid: u32,
    pub subnet: u8,
    /// Node processes' `RINGKV_LOG` (default `warn`); set before [`Net::start_nodes`].
    pub log_level: String,
    /// Where node stderr goes (default [`Logs::Inherit`]); set before [`Net::start_nodes`].
    pub logs: Logs,
    /// Names this run in messages (e.g. "partitions").
    label: String,
    count: usize,
    bridge: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    dir: Option<tempfile::TempDir>,
}

impl Net {
    /// Number of nodes (namespaces).
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Node `i`'s address in the test subnet.
    pub fn addr(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.subnet, i + 1)
    }

    pub fn http(&self, i: usize) -> SocketAddr {
        format!("{}:{HTTP_PORT}", self.addr(i)).parse().unwrap()
    }

    pub fn url(&self, i: usize, path: &str) -> String {
        format!("http://{}{}", self.http(i), path)
    }

    /// Node `i`'s namespace name.
    pub fn namespace(&self, i: usize) -> &str {
        &self.namespaces[i]
    }

    /// The run's temporary directory (node data dirs `n<i>`, logs `n<i>.log`).
    pub fn dir(&self) -> PathBuf {
        self.dir.as_ref().unwrap().path().to_path_buf()
    }

    /// Node `i`'s log file (with [`Logs::Files`]).
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir().join(format!("n{}.log", i + 1))
    }

    /// Creates `count` namespaces on a fresh bridge and subnet (no processes yet).
    pub fn setup(label: &str, count: usize) -> Net {
        assert!((1..=200).contains(&count), "1..=200 nodes");
        let pid = std::process::id();
        // A /24 no route in the root namespace uses yet.
        let subnet = (0..200u32)
            .map(|k| (16 + (pid + k) % 200) as u8)
            .find(|x| {
                let out = Command::new("ip")
                    .args(["-4", "route", "show", &format!("10.213.{x}.0/24")])
                    .output()
                    .unwrap();
                out.stdout.is_empty()
            })
            .expect("no free 10.213.x.0/24");
        let mut net = Net {
            pid,
            subnet,
            log_level: "warn".into(),
            logs: Logs::Inherit,
            label: label.into(),
            count,
            bridge: format!("rkb{pid}"),
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: Some(tempfile::tempdir().unwrap()),
        };
        let br = net.bridge.clone();
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("10.213.{subnet}.254/24"),
            "dev",
            &br,
        ]);
        must(&["ip", "link", "set", &br, "up"]);
        for i in 0..count {
            let ns = format!("rk-{pid}-{i}");
            must(&["ip", "netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let host = format!("rkh{pid}-{i}");
            let peer = format!("rkp{pid}-{i}");
            must(&[
                "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
            ]);
            must(&["ip", "link", "set", &peer, "netns", &ns]);
            must(&["ip", "link", "set", &host, "master", &br, "up"]);
            must(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            must(&["ip", "-n", &ns, "link", "set", &peer, "name", "eth0"]);
            let cidr = format!("{}/24", net.addr(i));
            must(&["ip", "-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            must(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        }
        net
    }

    /// Starts `ringkv server` in every namespace, in order, each waited for until its HTTP port
    /// answers (bounded). Every node gets its id `n<i+1>`, a shared cluster secret, its three
    /// listeners on its address, a data dir in the temp dir, and n1 as its seed (but n1 itself);
    /// `extra(i)` adds node `i`'s other flags (gossip period, timeouts, dc, rack...).
    pub fn start_nodes(&mut self, extra: impl Fn(usize) -> Vec<String>) {
        let secret = format!("{}-secret-{}", self.label, self.pid);
        let seed = format!("{}:{PEER_PORT}", self.addr(0));
        for i in 0..self.count {
            let a = self.addr(i);
            let data = self.dir().join(format!("n{}", i + 1));
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &self.namespaces[i], bin(), "server"])
                .args(["--node-id", &format!("n{}", i + 1)])
                .args(["--cluster-secret", &secret])
                .args(["--resp-addr", &format!("{a}:{RESP_PORT}")])
                .args(["--http-addr", &format!("{a}:{HTTP_PORT}")])
                .args(["--peer-addr", &format!("{a}:{PEER_PORT}")])
                .arg("--data-dir")
                .arg(&data);
            if i > 0 {
                cmd.args(["--seeds", &seed]);
            }
            cmd.args(extra(i));
            let stderr = match self.logs {
                Logs::Inherit => Stdio::inherit(),
                Logs::Files => Stdio::from(
                    std::fs::File::create(self.log_path(i)).expect("create node log file"),
                ),
            };
            let child = cmd
                .env("RINGKV_LOG", &self.log_level)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn ringkv in a namespace");
            self.children.push(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            while TcpStream::connect_timeout(&self.http(i), Duration::from_millis(200)).is_err() {
                if let Some(s) = self.children[i].try_wait().unwrap() {
                    panic!("n{} exited during start: {s}{}", i + 1, self.log_tail(i));
                }
                assert!(
                    Instant::now() < deadline,
                    "n{} did not start in 30 s",
                    i + 1
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// The last lines of node `i`'s log file, for a panic message ("" with [`Logs::Inherit`]).
    pub fn log_tail(&self, i: usize) -> String {
        if self.logs != Logs::Files {
            return String::new();
        }
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(20);
        format!("\n--- n{} log ---\n{}", i + 1, lines[from..].join("\n"))
    }

    /// The member table node `i` serves on `/v1/cluster`, if it answers.
    pub fn members(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        let body: serde_json::Value = http_client()
            .get(self.url(i, "/v1/cluster"))
            .send()
            .ok()?
            .json()
            .ok()?;
        body["members"].as_array().cloned()
    }

    /// Waits (bounded) until every node sees all members up.
    pub fn wait_all_up(&self, within: Duration) {
        let all: Vec<usize> = (0..self.count).collect();
        self.wait_up(&all, self.count, within);
    }

    /// Waits (bounded) until each node in `which` sees `members` members up, neither down nor
    /// suspected.
    pub fn wait_up(&self, which: &[usize], members: usize, within: Duration) {
        let deadline = Instant::now() + within;
        for &i in which {
            loop {
                let up = self.members(i).map(|ms| count_up(&ms));
                if up == Some(members) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{} did not see {members} members up within {within:?} (saw {up:?})",
                    i + 1
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Hints pending across all nodes, as `/v1/cluster` reports them (None if a node does not answer).
    pub fn hints_pending(&self) -> Option<u64> {
        let mut sum = 0;
        for i in 0..self.count {
            sum += self
                .members(i)?
                .iter()
                .filter_map(|m| m["hints_pending"].as_u64())
                .sum::<u64>();
        }
        Some(sum)
    }

    /// The sum over every node of the unlabelled sample `name` of its `/metrics` (None if a node
    /// does not answer or lacks it).
    pub fn metric_sum(&self, name: &str) -> Option<u64> {
        (0..self.count)
            .map(|i| super::sample(&super::scrape(self.http(i))?, name))
            .sum()
    }

    /// Node `i` drops packets from `drop_in` and to `drop_out` (node indexes). Replaces any cut
    /// node `i` had.
    pub fn cut(&self, i: usize, drop_in: &[usize], drop_out: &[usize]) {
        let set = |v: &[usize]| {
            v.iter()
                .map(|&j| self.addr(j))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Adding then deleting the table first makes a new cut replace the previous one.
        let mut s = String::from("add table inet rkpart\ndelete table inet rkpart\n");
        s += "table inet rkpart {\n";
        s += "  chain input {\n    type filter hook input priority 0; policy accept;\n";
        if !drop_in.is_empty() {
            s += &format!("    ip saddr {{ {} }} drop\n", set(drop_in));
        }
        s += "  }\n  chain output {\n    type filter hook output priority 0; policy accept;\n";
        if !drop_out.is_empty() {
            s += &format!("    ip daddr {{ {} }} drop\n", set(drop_out));
        }
        s += "  }\n}\n";
        nft(&self.namespaces[i], &s);
    }

    /// Cuts both directions between `a` and `b`.
    pub fn split(&self, a: &[usize], b: &[usize]) {
        for &i in a {
            self.cut(i, b, b);
        }
        for &i in b {
            self.cut(i, a, a);
        }
    }

    /// Removes every cut (idempotent: add then delete the table).
    pub fn heal(&self) {
        for ns in &self.namespaces {
            nft(ns, "add table inet rkpart\ndelete table inet rkpart\n");
        }
    }

    /// GET `key` through node `i` at read level `r` (a number or a level name): Ok(Some(value)),
    /// Ok(None) when missing, Err on an error answer (quorum not met, timeout) or siblings with
    /// different values.
    pub fn read(&self, i: usize, key: &str, r: &str) -> Result<Option<String>, String> {
        read_at(&http_client(), &self.url(i, ""), key, r)
    }
}

/// GET `key` from the node at `base` (`http://host:port`) at read level `r`: Ok(Some(value)),
/// Ok(None) when missing, Err on an error answer (quorum not met, timeout) or siblings with
/// different values. Identical-value siblings are one value (see tests/cluster.rs).
pub fn read_at(
    client: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    r: &str,
) -> Result<Option<String>, String> {
    let resp = client
        .get(format!("{base}/v1/kv/{key}?r={r}"))
        .send()
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        200 => Ok(Some(resp.text().map_err(|e| e.to_string())?)),
        404 => Ok(None),
        300 => {
            use base64::Engine as _;
            let body: serde_json::Value = resp.json().map_err(|e| e.to_string())?;
            let values: std::collections::BTreeSet<Vec<u8>> = body["siblings"]
                .as_array()
                .ok_or("no siblings")?
                .iter()
                .filter(|s| !s["deleted"].as_bool().unwrap_or(false))
                .filter_map(|s| {
                    base64::engine::general_purpose::STANDARD
                        .decode(s["value"].as_str()?)
                        .ok()
                })
                .collect();
            if values.len() != 1 {
                return Err(format!("siblings differ: {body}"));
            }
            Ok(Some(
                String::from_utf8_lossy(&values.into_iter().next().unwrap()).into_owned(),
            ))
        }
        s => Err(format!("{s} {}", resp.text().unwrap_or_default())),
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in &self.namespaces {
            // Deleting the namespace deletes its veth end, and with it the host end.
            run(&["ip", "netns", "del", ns]);
        }
        for i in 0..self.count {
            run(&["ip", "link", "del", &format!("rkh{}-{i}", self.pid)]);
        }
        run(&["ip", "link", "del", &self.bridge]);
        // A failing test keeps its data dirs and logs for a post-mortem (any test does with
        // RINGKV_TEST_KEEP=1).
        let keep = std::thread::panicking() || std::env::var_os("RINGKV_TEST_KEEP").is_some();
        if keep && self.logs == Logs::Files {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!(
                    "{}: node logs and data kept in {}",
                    self.label,
                    kept.display()
                );
            }
        }
        // Namespace teardown is asynchronous: wait (bounded) until the names and links are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = Command::new("ip")
                .args(["netns", "list"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let links = Command::new("ip")
                .args(["-o", "link", "show"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let prefix = format!("rk-{}-", self.pid);
            let left = list.lines().any(|l| l.starts_with(&prefix))
                || links.contains(&format!("rkh{}-", self.pid))
                || links.contains(&format!("{}:", self.bridge));
            if !left {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{}: cleanup of run {} still pending after 10 s",
                    self.label, self.pid
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
