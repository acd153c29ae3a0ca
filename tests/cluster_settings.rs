//! Cluster-wide settings must agree: real `ringkv server` processes on loopback, all with the
//! same cluster secret. A node started with a different `--partitions` (or `--replication`) would
//! compute a different ring, so the peer handshake refuses it: it never becomes a member of the
//! first node's cluster, and both logs name the two layouts. A node with equal settings still
//! joins. Every loop is bounded; every process dies with the test (killed on drop).

mod common;

use common::{bin, count_up, free_port, http_client, sample, scrape};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `ringkv server` whose stderr (its log, at `warn`) goes to a file the test can read.
struct Proc {
    id: String,
    child: Child,
    http: SocketAddr,
    peer: SocketAddr,
    log: PathBuf,
}

impl Proc {
    fn start(dir: &Path, id: &str, secret: &str, seed: Option<&Proc>, extra: &[&str]) -> Proc {
        let addr = |p: u16| -> SocketAddr { format!("127.0.0.1:{p}").parse().unwrap() };
        let (resp, http, peer) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let data = dir.join(id);
        let log = dir.join(format!("{id}.log"));
        let mut cmd = Command::new(bin());
        cmd.arg("server")
            .arg("--data-dir")
            .arg(&data)
            .args(["--resp-addr", &resp.to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--peer-addr", &peer.to_string()])
            .args(["--node-id", id, "--cluster-secret", secret])
            .args(["--gossip-interval-ms", common::TEST_GOSSIP_MS]);
        if let Some(seed) = seed {
            cmd.args(["--seeds", &seed.peer.to_string()]);
        }
        let child = cmd
            .args(extra)
            .env("RINGKV_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ringkv");
        let mut p = Proc {
            id: id.to_string(),
            child,
            http,
            peer,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&http, Duration::from_millis(200)).is_err() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("{id} exited during start: {status}\n{}", p.log_text());
            }
            assert!(Instant::now() < deadline, "{id} did not start within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        p
    }

    /// The member table this node serves on `/v1/cluster`.
    fn members(&self) -> Vec<serde_json::Value> {
        let body: serde_json::Value = http_client()
            .get(format!("http://{}/v1/cluster", self.http))
            .send()
            .unwrap()
            .json()
            .unwrap();
        body["members"].as_array().cloned().unwrap_or_default()
    }

    fn member_ids(&self) -> Vec<String> {
        self.members()
            .iter()
            .map(|m| m["id"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until this node's log has a line containing every one of `parts`;
    /// returns that line.
    fn wait_log_line(&self, parts: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "{}'s log has no line with {parts:?} within {within:?}:\n{text}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const DEFAULT_LAYOUT: &str = "ring=1;partitions=1024;n=3;replication=";

/// Asserts, for `for_at_least`, that `node` lists nobody but itself (and at most itself up).
fn stays_alone(node: &Proc, for_at_least: Duration) {
    let until = Instant::now() + for_at_least;
    loop {
        let members = node.members();
        assert_eq!(
            node.member_ids(),
            vec![node.id.clone()],
            "{} lists other members: {members:?}",
            node.id
        );
        assert!(count_up(&members) <= 1, "{members:?}");
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nodes_with_different_cluster_settings_are_refused_and_equal_ones_join() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("test-secret-{}", std::process::id());

    // n1: the defaults (1024 partitions, n=3, no per-DC replication). Alone and up.
    let n1 = Proc::start(dir.path(), "n1", &secret, None, &[]);

    // n2: the same secret but twice the partitions, seeded with n1: refused at the handshake.
    let n2 = Proc::start(
        dir.path(),
        "n2",
        &secret,
        Some(&n1),
        &["--partitions", "2048"],
    );
    let theirs = "ring=1;partitions=2048;n=3;replication=";
    // The acceptor's warning names the peer and both layouts...
    let line = n1.wait_log_line(
        &["cluster settings differ", "n2", DEFAULT_LAYOUT, theirs],
        Duration::from_secs(5),
    );
    eprintln!("n1 (acceptor) logged: {line}");
    // ...and so does the dialer's, with the acceptor's address.
    let line = n2.wait_log_line(
        &[
            "cluster settings differ",
            "n1",
            &n1.peer.to_string(),
            DEFAULT_LAYOUT,
            theirs,
        ],
        Duration::from_secs(5),
    );
    eprintln!("n2 (dialer) logged: {line}");
    // Neither ever lists the other: each is alone (n2 never got past `joining`).
    stays_alone(&n1, Duration::from_secs(2));
    stays_alone(&n2, Duration::from_millis(200));
    // An operator sees the refusals in /metrics on both sides.
    for (node, side) in [(&n1, "server"), (&n2, "client")] {
        let name =
            format!("ringkv_peer_events_total{{side=\"{side}\",event=\"settings_mismatches\"}}");
        let text = scrape(node.http).expect("metrics");
        let count = sample(&text, &name).unwrap_or(0);
        assert!(count >= 1, "{}: {name} = {count}", node.id);
    }

    // n3: same n (3) but a per-DC replication map: a different layout too.
    let n3 = Proc::start(
        dir.path(),
        "n3",
        &secret,
        Some(&n1),
        &["--replication", "dc1=3"],
    );
    let line = n3.wait_log_line(
        &[
            "cluster settings differ",
            DEFAULT_LAYOUT,
            "ring=1;partitions=1024;n=3;replication=dc1=3",
        ],
        Duration::from_secs(5),
    );
    eprintln!("n3 (dialer) logged: {line}");
    stays_alone(&n3, Duration::from_millis(500));

    // n4: the same settings as n1 (given explicitly): joins, and both see two members up.
    let n4 = Proc::start(
        dir.path(),
        "n4",
        &secret,
        Some(&n1),
        &["--partitions", "1024", "--n", "3"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in [&n1, &n4] {
        loop {
            let members = node.members();
            if count_up(&members) == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not see 2 members up within 20 s: {members:?}",
                node.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut ids = n1.member_ids();
    ids.sort();
    assert_eq!(ids, ["n1", "n4"], "the refused nodes never joined");
    assert!(
        !n4.log_text().contains("cluster settings differ"),
        "n4 was refused: {}",
        n4.log_text()
    );
    eprintln!(
        "cluster_settings: refusals and a join checked in {:?}",
        started.elapsed()
    );
}
