//! `ringkv autoscale` end to end (issue 5, item 4): a 3-node local cluster from `ringkv cluster
//! up`, the controller beside it with a policy of 3 to 4 nodes and a low target, and a bounded
//! load of HTTP writes. The load pushes the cluster over the target: a 4th node is started,
//! recorded in the cluster's state file and shows `up`. The load stops: the controller scales
//! down. With `POST /v1/admin/leave` it must end with 3 nodes, the 4th stopped only after it
//! showed `left`, and every acknowledged write readable at r=2 from every remaining node;
//! without the endpoint (a 404) the 4th node must still run and be `up` (the controller refused
//! to stop a node whose data was not handed off).
//!
//! Every wait is bounded; whatever happens, [`Guard`] kills the controller and every process
//! started over the test's directory (by pid, found by that unique path).

mod common;

use common::{bin, count_up, get_parallel, http_client, process_running, recorded_nodes, run_cli};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills the controller and every process whose command line names the test's directory.
struct Guard {
    dir: PathBuf,
    autoscaler: Option<Child>,
}

impl Guard {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("autoscale.log")).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- autoscaler log ---\n{}", self.log());
        }
        if let Some(mut c) = self.autoscaler.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let needle = self.dir.to_string_lossy().into_owned();
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let ours = std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false);
            if ours {
                eprintln!("autoscale test: killing leftover pid {pid}");
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
    }
}

/// Runs `ringkv args...` to completion (bounded); returns (success, stdout, stderr).
fn ringkv(args: &[&str], limit: Duration) -> (bool, String, String) {
    // Children of `cluster up` inherit these: membership settles in about a second.
    let env = [("RINGKV_GOSSIP_INTERVAL_MS", "100"), ("RINGKV_LOG", "warn")];
    let run = run_cli(args, &env, limit);
    (run.ok, run.stdout, run.stderr)
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The nodes the cluster's state file records: (id, pid, http address).
fn members(http: &str) -> Option<Vec<serde_json::Value>> {
    let body: serde_json::Value = http_client()
        .get(format!("http://{http}/v1/cluster"))
        .send()
        .ok()?
        .json()
        .ok()?;
    body["members"].as_array().cloned()
}

/// Polls `check` every 100 ms until it returns `Some`, at most `limit`.
fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const POLICY: &str = "\
min_nodes = 3
max_nodes = 4
replicas = 3
target_ops_per_node = 10
up_after_secs = 2
down_after_secs = 3
down_fraction = 0.5
cooldown_secs = 3
interval_secs = 1
join_timeout_secs = 20
leave_timeout_secs = 20

[provisioner]
kind = \"local\"
";

#[test]
fn autoscaler_adds_a_node_under_load_and_removes_it_after() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_arg = dir.to_str().unwrap().to_string();
    let mut guard = Guard {
        dir: dir.clone(),
        autoscaler: None,
    };

    // Three nodes.
    let (ok, out, err) = ringkv(
        &["cluster", "up", "--nodes", "3", "--dir", &dir_arg],
        Duration::from_secs(30),
    );
    assert!(ok, "cluster up failed: {out}{err}");
    let first = recorded_nodes(&dir);
    assert_eq!(first.len(), 3, "{first:?}");
    let https: Vec<String> = first.iter().map(|(_, _, h)| h.clone()).collect();
    for h in &https {
        wait_for(
            &format!("{h} sees 3 members up"),
            Duration::from_secs(20),
            || (members(h).map(|m| count_up(&m)) == Some(3)).then_some(()),
        );
    }

    // The controller.
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let log = std::fs::File::create(dir.join("autoscale.log")).unwrap();
    guard.autoscaler = Some(
        Command::new(bin())
            .args(["autoscale", "--policy", policy.to_str().unwrap()])
            .args(["--cluster-dir", &dir_arg])
            .env("RINGKV_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start ringkv autoscale"),
    );
    let status_file = dir.join("autoscale.json");

    // A bounded load: ~60 writes/s (20 per node, twice the target) through the three original
    // nodes, at most 20 s and 1500 writes, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        let https = https.clone();
        std::thread::spawn(move || {
            let client = http_client();
            let begun = Instant::now();
            let mut acked = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed)
                && begun.elapsed() < Duration::from_secs(20)
                && i < 1500
            {
                let next = begun + Duration::from_millis(1000 * i as u64 / 60);
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let (key, value) = (format!("as-{i}"), format!("value-{i}"));
                let url = format!("http://{}/v1/kv/{key}", https[i % https.len()]);
                if client
                    .put(url)
                    .body(value.clone())
                    .send()
                    .is_ok_and(|r| r.status().is_success())
                {
                    acked.push((key, value));
                }
                i += 1;
            }
            (acked, i)
        })
    };

    // Scale up: a 4th node in the state file, `up` in the cluster.
    let (new_id, new_pid, new_http) = wait_for(
        "a 4th node is added and up",
        Duration::from_secs(25),
        || {
            let nodes = recorded_nodes(&dir);
            let new = nodes
                .iter()
                .find(|(id, ..)| !first.iter().any(|f| &f.0 == id))?;
            let up = members(&https[0]).map(|m| count_up(&m)) == Some(4)
                && members(&new.2).map(|m| count_up(&m)) == Some(4);
            up.then(|| new.clone())
        },
    );
    let scaled_up_at = started.elapsed();
    assert!(process_running(new_pid), "{new_id} is not running");
    eprintln!("autoscale: {new_id} added and up at {scaled_up_at:?}");

    // Stop the load.
    stop.store(true, Ordering::Relaxed);
    let (acked, attempted) = load.join().unwrap();
    assert!(
        acked.len() >= 100 && acked.len() * 10 >= attempted * 9,
        "only {} of {attempted} writes were acknowledged",
        acked.len()
    );

    // Scale down: the controller's next action, and how it ended.
    let action = wait_for(
        "the controller tries to scale down",
        Duration::from_secs(30),
        || {
            let status = read_json(&status_file)?;
            status["history"]
                .as_array()?
                .iter()
                .find(|a| a["kind"] == "scale_down" && a["result"] != "in_progress")
                .cloned()
        },
    );
    eprintln!(
        "autoscale: scale-down attempt at {:?}: {action}",
        started.elapsed()
    );
    let status = read_json(&status_file).unwrap();
    for a in status["history"].as_array().unwrap() {
        let to = a["to"].as_u64().unwrap();
        assert!(
            (3..=4).contains(&to),
            "an action left the policy's bounds: {a}"
        );
    }
    let message = action["message"].as_str().unwrap_or_default().to_string();
    match action["result"].as_str() {
        Some("ok") => {
            assert_eq!(
                action["node"],
                new_id.as_str(),
                "the newest node should go: {action}"
            );
            // Three nodes recorded, the 4th stopped, the rest see three members up.
            wait_for(
                "the 4th node is stopped and forgotten",
                Duration::from_secs(10),
                || (recorded_nodes(&dir).len() == 3 && !process_running(new_pid)).then_some(()),
            );
            let remaining: Vec<String> = recorded_nodes(&dir)
                .into_iter()
                .map(|(_, _, h)| h)
                .collect();
            assert_eq!(remaining, https, "an original node was removed");
            for h in &remaining {
                wait_for(
                    &format!("{h} sees 3 members up"),
                    Duration::from_secs(10),
                    || {
                        let ms = members(h)?;
                        let left = ms
                            .iter()
                            .find(|m| m["id"] == new_id.as_str())
                            .is_none_or(|m| m["status"] == "left");
                        (count_up(&ms) == 3 && left).then_some(())
                    },
                );
            }
            // Every acknowledged write, from every remaining node, at r=2.
            let paths: Vec<String> = acked
                .iter()
                .map(|(k, _)| format!("/v1/kv/{k}?r=2"))
                .collect();
            for h in &remaining {
                let answers = get_parallel(h.parse().unwrap(), paths.clone(), 4);
                let lost: Vec<String> = acked
                    .iter()
                    .zip(&answers)
                    .filter(|((_, v), (code, body))| *code != 200 || body != v)
                    .map(|((k, _), (code, body))| format!("{k}: {code} {body}"))
                    .take(5)
                    .collect();
                assert!(lost.is_empty(), "{h} lost acknowledged writes: {lost:?}");
            }
            eprintln!(
                "autoscale: scaled 3 -> 4 -> 3; {} acknowledged writes readable from all 3 nodes",
                acked.len()
            );
            // At the floor, it stays there: after the cooldown (3 s), a second sample and the
            // low-load window (3 s) at one observation a second, so ~8 s on a quiet machine;
            // 30 s leaves room for a loaded one. The last decision is shown on a timeout.
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut seen = Vec::new();
            loop {
                let decision = read_json(&status_file)
                    .and_then(|s| s["decision"].as_str().map(str::to_string))
                    .unwrap_or_default();
                if decision.contains("at the floor") {
                    break;
                }
                if seen.last() != Some(&decision) {
                    seen.push(decision);
                }
                assert!(
                    Instant::now() < deadline,
                    "the controller did not hold at the floor within 30 s; its decisions: {seen:#?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Some("refused") if message.contains("404") => {
            assert!(
                process_running(new_pid),
                "{new_id} was stopped without a handoff"
            );
            let ms = members(&new_http).expect("the 4th node answers");
            let me = ms.iter().find(|m| m["id"] == new_id.as_str()).unwrap();
            assert_eq!(me["status"], "up", "{me}");
            assert_eq!(recorded_nodes(&dir).len(), 4);
            eprintln!(
                "\n*** autoscale: scale-down is waiting on the leave endpoint (POST /v1/admin/leave \
                 answered 404); the controller refused and {new_id} keeps running ***\n"
            );
        }
        _ => panic!("the scale-down did not go as it should: {action}"),
    }

    // SIGTERM stops the controller cleanly and leaves the cluster alone.
    let mut controller = guard.autoscaler.take().unwrap();
    let pid = controller.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let exit = wait_for(
        "the controller exits on SIGTERM",
        Duration::from_secs(10),
        || controller.try_wait().unwrap(),
    );
    assert!(exit.success(), "autoscale exited with {exit}");
    assert_eq!(read_json(&status_file).unwrap()["state"], "stopped");
    assert!(recorded_nodes(&dir)
        .iter()
        .all(|(_, p, _)| process_running(*p)));

    let (ok, out, err) = ringkv(
        &["cluster", "down", "--dir", &dir_arg],
        Duration::from_secs(30),
    );
    assert!(ok, "cluster down failed: {out}{err}");
    eprintln!("autoscale: {:?}", started.elapsed());
}
