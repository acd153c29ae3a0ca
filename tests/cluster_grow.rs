//! `ringkv cluster add|remove` end to end: a `cluster up` cluster of three grows to five with
//! `cluster add --nodes 2` and shrinks back to three with two `cluster remove` (the newest node
//! first), while a writer keeps writing through n1, a node that stays. Every acknowledged write
//! then reads back at R=2 from two of the nodes that stayed. A third `remove` is refused
//! (N=3 would not hold) and stops nothing.
//!
//! Every wait is bounded (the CLI commands by their `--timeout` and by [`ringkv`]'s limit, the
//! writer by a count and a deadline); if the test fails midway, [`StateGuard`] SIGKILLs whatever
//! the state file says was started over this test's directory.

mod common;

use common::{
    get_parallel, http_client, process_running, recorded_nodes, run_cli, CliRun, LocalClusterGuard,
};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys written before the cluster grows.
const PRELOAD: usize = 300;
/// Most writes the writer makes while the cluster grows and shrinks.
const MAX_WRITES: usize = 20_000;

/// Runs `ringkv args...` to its end, at most `limit`, and echoes what it printed.
fn ringkv(args: &[&str], limit: Duration) -> CliRun {
    let env = [
        // Inherited by the nodes `cluster up` starts (and copied by `cluster add` from them):
        // membership settles in about a second.
        ("RINGKV_GOSSIP_INTERVAL_MS", "100"),
        // 256 partitions instead of 1024: a join streams a partition at a time (a few round
        // trips and a commit each), so fewer partitions keep the test short.
        ("RINGKV_PARTITIONS", "256"),
        ("RINGKV_LOG", "warn"),
        // An error is one message, not a backtrace.
        ("RUST_LIB_BACKTRACE", "0"),
    ];
    let run = run_cli(args, &env, limit);
    eprintln!("$ ringkv {}\n{}{}", args.join(" "), run.stdout, run.stderr);
    run
}

/// `/v1/cluster` members of the node at `http` that are up, neither down nor suspected.
fn members_up(http: &str) -> Option<Vec<String>> {
    let body: serde_json::Value = http_client()
        .get(format!("http://{http}/v1/cluster"))
        .send()
        .ok()?
        .json()
        .ok()?;
    Some(
        body["members"]
            .as_array()?
            .iter()
            .filter(|m| m["status"] == "up" && m["down"] == false && m["suspected"] == false)
            .filter_map(|m| m["id"].as_str().map(String::from))
            .collect(),
    )
}

fn wait_members_up(http: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let up = members_up(http);
        if up.as_ref().map(Vec::len) == Some(count) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{http} did not see {count} members up within 15 s (saw {up:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn put(
    client: &reqwest::blocking::Client,
    http: &str,
    key: &str,
    value: &str,
) -> Result<(), String> {
    match client
        .put(format!("http://{http}/v1/kv/{key}?w=2"))
        .body(value.to_string())
        .send()
    {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("{}: {}", r.status(), r.text().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn cluster_add_and_remove_grow_to_five_and_back_losing_nothing() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let d = dir.to_str().unwrap();
    let mut guard = LocalClusterGuard::new(&dir);

    let up = ringkv(
        &["cluster", "up", "--nodes", "3", "--dir", d],
        Duration::from_secs(30),
    );
    assert!(up.ok, "cluster up failed: {}", up.stderr);
    let first = recorded_nodes(&dir);
    assert_eq!(first.len(), 3, "{first:?}");
    for (_, _, http) in &first {
        wait_members_up(http, 3);
    }
    let n1 = first[0].2.clone();
    let n2 = first[1].2.clone();

    // Data that is there before the cluster grows.
    let client = http_client();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for k in 0..PRELOAD {
        let (key, value) = (format!("pre-{k}"), format!("value-{k}"));
        put(&client, &n1, &key, &value).unwrap_or_else(|e| panic!("PUT {key}: {e}"));
        acked.insert(key, value);
    }

    // A bounded writer through n1 (which stays) for the whole grow and shrink.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, http) = (stop.clone(), n1.clone());
        std::thread::spawn(move || {
            let client = http_client();
            let deadline = Instant::now() + Duration::from_secs(60);
            let (mut ok, mut errors) = (Vec::new(), Vec::new());
            for i in 0..MAX_WRITES {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let (key, value) = (format!("live-{i}"), format!("v{i}"));
                match put(&client, &http, &key, &value) {
                    Ok(()) => ok.push((key, value)),
                    Err(e) => errors.push(format!("{key}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, errors)
        })
    };
    std::thread::sleep(Duration::from_millis(500));

    // Grow: two nodes join through the three, and the command returns once both are up.
    let add = ringkv(
        &[
            "cluster",
            "add",
            "--nodes",
            "2",
            "--dir",
            d,
            "--timeout",
            "60",
        ],
        Duration::from_secs(75),
    );
    assert!(add.ok, "cluster add failed: {}{}", add.stdout, add.stderr);
    let grown = recorded_nodes(&dir);
    let ids: Vec<&str> = grown.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "n3", "n4", "n5"], "{grown:?}");
    for (id, pid, http) in &grown[3..] {
        assert!(process_running(*pid), "{id} does not run");
        assert!(
            add.stdout.contains(&format!("{id} is up")),
            "{}",
            add.stdout
        );
        assert!(add.stdout.contains(http.as_str()), "{}", add.stdout);
        guard.removed.push(*pid);
    }
    wait_members_up(&n1, 5);

    // Shrink: the newest node goes first, each only once it has handed its data off.
    for (id, pid, _) in [grown[4].clone(), grown[3].clone()] {
        let rm = ringkv(
            &["cluster", "remove", "--dir", d, "--timeout", "60"],
            Duration::from_secs(90),
        );
        assert!(rm.ok, "cluster remove failed: {}{}", rm.stdout, rm.stderr);
        assert!(
            rm.stdout.contains(&format!("{id} (pid {pid}) is leaving"))
                && rm.stdout.contains(&format!("{id} left after")),
            "{}",
            rm.stdout
        );
        assert!(
            !process_running(pid),
            "{id} still runs after cluster remove"
        );
        assert!(
            !recorded_nodes(&dir).iter().any(|(i, _, _)| *i == id),
            "{id} is still in the state file"
        );
    }
    let left: Vec<String> = recorded_nodes(&dir)
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(left, ["n1", "n2", "n3"]);

    // Below N=3 is refused, and nothing is stopped.
    let refused = ringkv(
        &["cluster", "remove", "--dir", d, "--timeout", "10"],
        Duration::from_secs(30),
    );
    assert!(
        !refused.ok,
        "a remove below N went through: {}",
        refused.stdout
    );
    assert!(
        refused.stderr.contains("refusing to remove n3") && refused.stderr.contains("N=3"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        recorded_nodes(&dir),
        first,
        "the refused remove changed the cluster"
    );
    assert!(first.iter().all(|(_, pid, _)| process_running(*pid)));

    stop.store(true, Ordering::Relaxed);
    let (live, errors) = writer.join().unwrap();
    eprintln!(
        "cluster_grow: {} writes acknowledged during the grow and shrink, {} failed{}",
        live.len(),
        errors.len(),
        errors
            .iter()
            .take(5)
            .map(|e| format!("\n  {e}"))
            .collect::<String>()
    );
    assert!(live.len() > 100, "the writer barely wrote: {}", live.len());
    acked.extend(live);

    // Every acknowledged write reads back at R=2, through n1 and through n2.
    for http in [&n1, &n2] {
        let addr: SocketAddr = http.parse().unwrap();
        let keys: Vec<&String> = acked.keys().collect();
        let paths = keys.iter().map(|k| format!("/v1/kv/{k}?r=2")).collect();
        let mut lost = Vec::new();
        for (k, (status, body)) in keys.iter().zip(get_parallel(addr, paths, 8)) {
            if (status, body.as_str()) != (200, acked[*k].as_str()) {
                lost.push(format!("{k}: {status} {body:?}"));
            }
        }
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes do not read back via {http}: {:?}",
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
    }

    let down = ringkv(&["cluster", "down", "--dir", d], Duration::from_secs(25));
    assert!(down.ok, "cluster down failed: {}", down.stderr);
    eprintln!(
        "cluster_grow: {} keys checked, {:?}",
        acked.len(),
        started.elapsed()
    );
}

/// `/v1/cluster` of the node at `http`.
fn cluster_doc(http: &str) -> serde_json::Value {
    http_client()
        .get(format!("http://{http}/v1/cluster"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// `cluster up --dcs 2 --replication ...` spreads the nodes over two data centers (a rack each),
/// `cluster add` puts a new node in the data center with the fewest, and `local_quorum` works
/// through a node of either data center.
#[test]
fn a_local_cluster_spreads_over_data_centers() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let d = dir.to_str().unwrap();
    let _guard = LocalClusterGuard::new(&dir);
    let up = ringkv(
        &[
            "cluster",
            "up",
            "--nodes",
            "3",
            "--dcs",
            "2",
            "--replication",
            "dc1=2,dc2=1",
            "--dir",
            d,
        ],
        Duration::from_secs(30),
    );
    assert!(up.ok, "cluster up failed: {}", up.stderr);
    let nodes = recorded_nodes(&dir);
    for (_, _, http) in &nodes {
        wait_members_up(http, 3);
    }
    let placement = |http: &str| -> Vec<(String, String, String)> {
        let doc = cluster_doc(http);
        assert_eq!(doc["n"], 3, "n is the replication's sum");
        assert_eq!(doc["replication"], serde_json::json!({"dc1": 2, "dc2": 1}));
        let mut members: Vec<(String, String, String)> = doc["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
                (s("id"), s("dc"), s("rack"))
            })
            .collect();
        members.sort();
        members
    };
    let owned = |v: &[(&str, &str, &str)]| -> Vec<(String, String, String)> {
        v.iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect()
    };
    assert_eq!(
        placement(&nodes[0].2),
        owned(&[
            ("n1", "dc1", "rack1"),
            ("n2", "dc2", "rack1"),
            ("n3", "dc1", "rack2")
        ])
    );

    // dc2 has one node, dc1 two: the new node goes to dc2, on a rack of its own.
    let add = ringkv(
        &["cluster", "add", "--dir", d, "--timeout", "60"],
        Duration::from_secs(75),
    );
    assert!(add.ok, "cluster add failed: {}{}", add.stdout, add.stderr);
    wait_members_up(&nodes[0].2, 4);
    assert_eq!(
        placement(&nodes[0].2),
        owned(&[
            ("n1", "dc1", "rack1"),
            ("n2", "dc2", "rack1"),
            ("n3", "dc1", "rack2"),
            ("n4", "dc2", "rack2")
        ])
    );

    // local_quorum through a node of each data center, read back in the same one.
    let client = http_client();
    for (via, key) in [(&nodes[0].2, "east"), (&nodes[1].2, "west")] {
        let put = client
            .put(format!("http://{via}/v1/kv/{key}?w=local_quorum"))
            .body(format!("value-{key}"))
            .send()
            .unwrap();
        assert_eq!(put.status(), 200, "{}", put.text().unwrap());
        let get = client
            .get(format!("http://{via}/v1/kv/{key}?r=local_quorum"))
            .send()
            .unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(get.text().unwrap(), format!("value-{key}"));
    }
    let down = ringkv(&["cluster", "down", "--dir", d], Duration::from_secs(25));
    assert!(down.ok, "cluster down failed: {}", down.stderr);
}
