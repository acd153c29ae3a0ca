//! Merkle anti-entropy, end to end with real processes: three nodes (N=3, 16 partitions,
//! anti-entropy every 200 ms, hint window 0). One node is SIGSTOPped; writes of a bounded set of
//! keys are acknowledged at W=1 without it (with N = 3 nodes there is no stand-in, so no hint
//! exists for it, and the hint window of 0 would drop one at once anyway). The stopped node is
//! SIGKILLed (losing whatever replicates sat in its socket buffers) and restarted; within 20 s
//! its anti-entropy repairs reach the number of missed keys, and with the two other nodes
//! SIGSTOPped it alone serves every key at R=1 from its own replica. `/v1/cluster`,
//! `ringkv status` (summary and per-partition ages) and INFO show the anti-entropy figures.
//! Every loop is bounded; every process dies with the test.

mod common;

use common::{http_client, Cluster};
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: usize = 3;
const KEYS: usize = 60;
const VICTIM: usize = 2;

/// Node `i`'s `anti_entropy` object of `/v1/cluster`.
fn anti_entropy(c: &Cluster, i: usize) -> serde_json::Value {
    http_client()
        .get(c.nodes[i].url("/v1/cluster"))
        .send()
        .ok()
        .and_then(|r| r.json::<serde_json::Value>().ok())
        .map(|v| v["anti_entropy"].clone())
        .unwrap_or_default()
}

#[test]
fn a_node_that_missed_writes_is_repaired_by_anti_entropy() {
    let started = Instant::now();
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("ringkv.toml");
    std::fs::write(
        &conf,
        "anti_entropy_interval_ms = 200\nhint_window_secs = 0\nmerkle_buckets = 64\n",
    )
    .unwrap();
    let conf = conf.to_str().unwrap().to_string();
    let mut c = Cluster::start(NODES, &["--config", &conf, "--partitions", "16"]);
    let victim_id = format!("n{}", VICTIM + 1);

    // The victim misses every write: stopped, then killed before it could read its sockets.
    c.nodes[VICTIM].signal("STOP");
    let client = http_client();
    let value = |k: usize| format!("ae-value-{k}");
    for k in 0..KEYS {
        let via = k % 2;
        let resp = client
            .put(c.nodes[via].url(&format!("/v1/kv/ae-key-{k}?w=1")))
            .body(value(k))
            .send()
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "PUT ae-key-{k}: {}",
            resp.text().unwrap()
        );
    }
    c.nodes[VICTIM].kill9();
    c.nodes[VICTIM].restart();
    c.wait_up(&[0, 1, 2], NODES);

    // Anti-entropy brings every missed key to the victim within 20 s.
    let deadline = Instant::now() + Duration::from_secs(20);
    let repairs = loop {
        let ae = anti_entropy(&c, VICTIM);
        let repairs = ae["repairs"].as_u64().unwrap_or(0);
        if repairs >= KEYS as u64 {
            break repairs;
        }
        assert!(
            Instant::now() < deadline,
            "{victim_id} repaired {repairs} of {KEYS} keys in 20 s: {ae}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let ae = anti_entropy(&c, VICTIM);
    assert!(ae["bytes"].as_u64().unwrap_or(0) > 0, "{ae}");
    assert_eq!(ae["partitions"], 16, "{ae}");
    assert!(ae["exchanged_ever"].as_u64().unwrap_or(0) > 0, "{ae}");
    // Per partition: the other two replicas, and an age once exchanged (null = never); the
    // summary is computed from the same list.
    let per = ae["per_partition"].as_array().expect("per_partition");
    assert_eq!(per.len(), 16, "{ae}");
    let ages: Vec<u64> = per
        .iter()
        .filter_map(|p| p["last_exchange_age_ms"].as_u64())
        .collect();
    assert_eq!(
        ages.len() as u64,
        ae["exchanged_ever"].as_u64().unwrap(),
        "{ae}"
    );
    assert_eq!(
        ages.iter().max().copied(),
        ae["oldest_exchange_age_ms"].as_u64()
    );
    for p in per {
        let mut peers: Vec<&str> = p["peers"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v.as_str())
            .collect();
        peers.sort_unstable();
        assert_eq!(peers, ["n1", "n2"], "{p}");
    }

    let status = Command::new(common::bin())
        .args(["status", "--all-partitions", "--http"])
        .arg(c.nodes[VICTIM].http.to_string())
        .output()
        .unwrap();
    assert!(status.status.success(), "ringkv status failed");
    let stdout = String::from_utf8_lossy(&status.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("anti-entropy: "))
        .unwrap_or_else(|| panic!("no anti-entropy line in:\n{stdout}"));
    assert!(line.contains("/16 partitions exchanged"), "{line}");
    assert!(line.ends_with(" repairs"), "{line}");
    // Then one line per partition, stalest first.
    let listed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("  p")).collect();
    assert_eq!(listed.len(), 16, "{stdout}");
    assert!(listed.iter().all(|l| l.contains("(with n")), "{stdout}");
    assert!(
        listed.iter().any(|l| l.contains("last exchange ")),
        "{stdout}"
    );
    let mut con = c.nodes[VICTIM].redis();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    assert!(info.contains("anti_entropy_repairs:"), "INFO stats: {info}");
    assert!(info.contains("anti_entropy_bytes:"), "INFO stats: {info}");

    // Only the victim answers now: it serves every key at R=1 from its own replica.
    for i in 0..NODES {
        if i != VICTIM {
            c.nodes[i].signal("STOP");
        }
    }
    let paths = (0..KEYS)
        .map(|k| format!("/v1/kv/ae-key-{k}?r=1"))
        .collect();
    let results = common::get_parallel(c.nodes[VICTIM].http, paths, 6);
    for i in 0..NODES {
        if i != VICTIM {
            c.nodes[i].signal("CONT");
        }
    }
    for (k, (status, body)) in results.into_iter().enumerate() {
        assert_eq!(status, 200, "GET ae-key-{k} via {victim_id} alone: {body}");
        assert_eq!(body, value(k), "ae-key-{k} from {victim_id}");
    }
    eprintln!(
        "anti-entropy: {KEYS} writes missed by {victim_id}, {repairs} repairs, {line}, in {:?}",
        started.elapsed()
    );
}
