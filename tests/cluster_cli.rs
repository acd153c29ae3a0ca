//! `ringkv cluster up|status|down` end to end (issue 3, item 6): `up` starts three real node
//! processes on a chosen port range and says how to reach them; `status` shows them alive and the
//! member table; a write through node 1 reads back through node 3 (redis-cli and `ringkv get`);
//! a second `up` over a running cluster is refused; `down` stops every process cleanly (no
//! SIGKILL needed) and removes the state file. Every wait is bounded; if the test fails midway,
//! `LocalClusterGuard` SIGKILLs whatever the state file says was started.

mod common;

use common::{
    free_port, http_client, process_running, recorded_nodes, run_cli, CliRun, LocalClusterGuard,
};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODES: u16 = 3;

/// Runs `ringkv args...` and waits for it, at most `limit`.
fn ringkv(args: &[&str], limit: Duration) -> CliRun {
    // Children of `cluster up` inherit this: membership settles in about a second.
    let env = [("RINGKV_GOSSIP_INTERVAL_MS", "100"), ("RINGKV_LOG", "warn")];
    run_cli(args, &env, limit)
}

/// A base port P such that P..P+3*NODES are free (below the usual ephemeral range, so outgoing
/// connections do not take them meanwhile).
fn free_port_range() -> u16 {
    let mut seed = u64::from(std::process::id()) ^ u64::from(free_port());
    for _ in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let base = 20000 + (seed >> 33) as u16 % 12000;
        let listeners: Vec<_> = (0..3 * NODES)
            .map_while(|k| TcpListener::bind(("127.0.0.1", base + k)).ok())
            .collect();
        if listeners.len() == usize::from(3 * NODES) {
            return base;
        }
    }
    panic!("no free range of {} loopback ports", 3 * NODES);
}

/// The node processes recorded in the state file: (id, pid).
fn recorded_pids(dir: &Path) -> Vec<(String, u64)> {
    recorded_nodes(dir)
        .into_iter()
        .map(|(id, pid, _)| (id, pid))
        .collect()
}

/// Waits (bounded) until the node at `http` sees `count` members up and neither down nor
/// suspected.
fn wait_members_up(http: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = http_client();
    loop {
        let up = client
            .get(format!("http://{http}/v1/cluster"))
            .send()
            .ok()
            .and_then(|r| r.json::<serde_json::Value>().ok())
            .and_then(|b| b["members"].as_array().cloned())
            .map(|ms| {
                ms.iter()
                    .filter(|m| {
                        m["status"] == "up" && m["down"] == false && m["suspected"] == false
                    })
                    .count()
            });
        if up == Some(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{http} did not see {count} members up within 10 s (saw {up:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_redis_cli() -> bool {
    Command::new("redis-cli")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// SET through one RESP port, then GET through another: redis-cli if installed, else the
/// `redis` crate (the same protocol a user's client library speaks).
fn set_then_get(set_port: u16, get_port: u16, key: &str, value: &str) -> String {
    if has_redis_cli() {
        let cli = |port: u16, args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                .args(args)
                .output()
                .expect("run redis-cli");
            assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim_end().to_string()
        };
        assert_eq!(cli(set_port, &["SET", key, value]), "OK");
        cli(get_port, &["GET", key])
    } else {
        eprintln!("cluster_cli: redis-cli not installed; using the redis crate");
        let con = |port: u16| {
            redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection_with_timeout(Duration::from_secs(5))
                .expect("connect over RESP")
        };
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<()>(&mut con(set_port))
            .expect("SET");
        redis::cmd("GET")
            .arg(key)
            .query::<String>(&mut con(get_port))
            .expect("GET")
    }
}

#[test]
fn cluster_up_status_write_read_down() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_arg = dir.to_str().unwrap();
    let _guard = LocalClusterGuard::new(&dir);
    let base = free_port_range();
    let resp = |i: u16| base + 3 * i;
    let http = |i: u16| format!("127.0.0.1:{}", base + 3 * i + 1);

    // up: three processes, and how to reach each of them.
    let base_arg = base.to_string();
    let up = ringkv(
        &[
            "cluster",
            "up",
            "--nodes",
            "3",
            "--dir",
            dir_arg,
            "--base-port",
            &base_arg,
        ],
        Duration::from_secs(30),
    );
    assert!(up.ok, "cluster up failed: {}{}", up.stdout, up.stderr);
    assert!(
        up.stdout.contains("started 3 nodes"),
        "cluster up said: {}",
        up.stdout
    );
    for i in 0..NODES {
        for hint in [
            format!("redis-cli -p {}", resp(i)),
            format!("curl http://{}/v1/kv/KEY", http(i)),
        ] {
            assert!(up.stdout.contains(&hint), "no `{hint}` in: {}", up.stdout);
        }
    }
    assert!(
        up.stdout
            .contains(&format!("ringkv cluster down --dir {dir_arg}")),
        "cluster up does not say how to stop it: {}",
        up.stdout
    );
    let pids = recorded_pids(&dir);
    assert_eq!(pids.len(), 3, "state file: {:?}", recorded_nodes(&dir));
    for (id, pid) in &pids {
        assert!(process_running(*pid), "{id} (pid {pid}) is not running");
        assert!(
            dir.join(format!("node-{}", &id[1..])).join("data").is_dir(),
            "{id} has no data directory"
        );
    }
    for i in 0..NODES {
        wait_members_up(&http(i), 3);
    }

    // status: every process alive, then the member table with the three nodes up.
    let status = ringkv(
        &["cluster", "status", "--dir", dir_arg],
        Duration::from_secs(15),
    );
    assert!(status.ok, "cluster status failed: {}", status.stderr);
    let text = &status.stdout;
    let (procs, members) = text
        .split_once("members as")
        .unwrap_or_else(|| panic!("no member table in: {text}"));
    for (id, pid) in &pids {
        let line = procs
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing from: {text}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cols[1], pid.to_string(), "{line}");
        assert_eq!(cols[2], "yes", "{id} not alive: {line}");
    }
    assert!(members.contains("n=3 r=2 w=2"), "{members}");
    for (id, _) in &pids {
        let line = members
            .lines()
            .find(|l| l.split_whitespace().next().map(|c| c.trim_end_matches('*')) == Some(id))
            .unwrap_or_else(|| panic!("{id} missing from the member table: {members}"));
        let cols: Vec<&str> = line.split_whitespace().collect();
        // ID PEER HTTP DC RACK WEIGHT STATUS DOWN HB-AGE PARTITIONS
        assert_eq!(
            (cols[6], cols[7]),
            ("up", "no"),
            "{id} is not up in: {line}"
        );
        assert!(
            cols[9].parse::<u32>().is_ok_and(|p| p > 0),
            "{id} holds no partitions: {line}"
        );
    }

    // A write through node 1 reads back through node 3, over RESP and with `ringkv get`.
    assert_eq!(
        set_then_get(resp(0), resp(2), "cli-greeting", "hello cluster"),
        "hello cluster"
    );
    let get = ringkv(
        &["get", "cli-greeting", "--http", &http(2)],
        Duration::from_secs(15),
    );
    assert!(get.ok, "ringkv get failed: {}", get.stderr);
    assert_eq!(get.stdout, "hello cluster");

    // A second `up` over the running cluster is refused and starts nothing.
    let again = ringkv(
        &["cluster", "up", "--nodes", "3", "--dir", dir_arg],
        Duration::from_secs(15),
    );
    assert!(!again.ok, "a second cluster up succeeded: {}", again.stdout);
    assert!(again.stderr.contains("already running"), "{}", again.stderr);
    assert_eq!(recorded_pids(&dir), pids, "the state file changed");

    // down: every process stops on SIGTERM, the state file goes, the data stays.
    let down = ringkv(
        &["cluster", "down", "--dir", dir_arg],
        Duration::from_secs(25),
    );
    assert!(down.ok, "cluster down failed: {}", down.stderr);
    assert!(down.stdout.contains("stopped 3 nodes"), "{}", down.stdout);
    assert!(
        !down.stderr.contains("SIGKILL"),
        "a node needed SIGKILL: {}",
        down.stderr
    );
    for (id, pid) in &pids {
        assert!(
            !process_running(*pid),
            "{id} (pid {pid}) still runs after down"
        );
    }
    assert!(
        !dir.join("cluster.json").exists(),
        "down left the state file"
    );
    assert!(
        dir.join("node-1").join("data").is_dir(),
        "down removed data"
    );
    let after = ringkv(
        &["cluster", "status", "--dir", dir_arg],
        Duration::from_secs(15),
    );
    assert!(!after.ok, "status after down succeeded: {}", after.stdout);
    assert!(
        after.stderr.contains("no local cluster"),
        "{}",
        after.stderr
    );
    eprintln!("cluster_cli: {:?}", started.elapsed());
}
