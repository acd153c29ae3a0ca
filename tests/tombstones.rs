//! Tombstone purge, end to end with real processes: three nodes (N=3, 16 partitions, gossip every
//! 100 ms, anti-entropy every 200 ms, a purge scan every 100 ms, hint window 1 s, grace 2 s).
//!
//! - Every replica holds the tombstones: after the grace period each node's
//!   `ringkv_tombstones_purged_total` reaches the number of deleted keys, every deleted key reads
//!   at `r=all` from every node exactly like a key never written (404 with an empty context: no
//!   replica holds anything), the keys that were not deleted are untouched, and a purged key
//!   can be written again.
//! - One replica missed the deletes (SIGSTOPped during them, then SIGKILLed so the replicates
//!   queued for it are lost): it still holds the values, so while it is away nothing is purged
//!   however long past grace (the scans count the tombstones as deferred). Once it is back, the
//!   keys stay deleted at every read (never resurrected), anti-entropy brings it the tombstones,
//!   and then every replica purges them.
//!
//! Every loop is bounded; every process dies with the test.

mod common;

use common::{http_client, Cluster};
use std::time::{Duration, Instant};

const NODES: usize = 3;

/// Short timings for the whole purge cycle; the hint window stays below the grace, as the
/// server requires.
const CONFIG: &str = "anti_entropy_interval_ms = 200\nhint_window_secs = 1\n\
                      tombstone_grace_secs = 2\ntombstone_scan_interval_ms = 100\n";

fn start() -> (Cluster, tempfile::TempDir) {
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = conf_dir.path().join("ringkv.toml");
    std::fs::write(&conf, CONFIG).unwrap();
    let c = Cluster::start(
        NODES,
        &["--config", conf.to_str().unwrap(), "--partitions", "16"],
    );
    (c, conf_dir)
}

/// A counter's value in node `i`'s Prometheus text (0 when the node does not answer).
fn metric(c: &Cluster, i: usize, name: &str) -> u64 {
    let Some(text) = common::scrape(c.nodes[i].http) else {
        return 0;
    };
    common::sample(&text, name).unwrap_or_else(|| panic!("no {name} in the metrics of n{}", i + 1))
}

fn purged(c: &Cluster, i: usize) -> u64 {
    metric(c, i, "ringkv_tombstones_purged_total")
}

/// GET at `r=all` through node `i`: status and context header.
fn get_all(c: &Cluster, i: usize, key: &str) -> (u16, String, String) {
    let resp = http_client()
        .get(c.nodes[i].url(&format!("/v1/kv/{key}?r=all")))
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let context = resp
        .headers()
        .get("x-ringkv-context")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, context, resp.text().unwrap_or_default())
}

fn put_all(c: &Cluster, via: usize, key: &str, value: &str) {
    let resp = http_client()
        .put(c.nodes[via].url(&format!("/v1/kv/{key}?w=all")))
        .body(value.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "PUT {key}: {}", resp.text().unwrap());
}

fn delete(c: &Cluster, via: usize, key: &str, w: &str) {
    let resp = http_client()
        .delete(c.nodes[via].url(&format!("/v1/kv/{key}?w={w}")))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "DELETE {key}: {}", resp.text().unwrap());
}

/// The context a key that no replica holds reads with.
fn empty_context(c: &Cluster) -> String {
    let (status, context, _) = get_all(c, 0, "never-written");
    assert_eq!(status, 404);
    context
}

/// True when every deleted key reads at `r=all` from every node as never written. A read that
/// finds a value fails the test (a resurrection); one that cannot reach every replica (a node
/// just restarted) only means "not yet".
fn all_purged(c: &Cluster, deleted: &[String], empty: &str) -> bool {
    deleted.iter().all(|k| {
        (0..NODES).all(|i| {
            let (status, context, body) = get_all(c, i, k);
            match status {
                404 => context == empty,
                503 | 504 => false,
                _ => panic!("deleted {k} via n{} read {status}: {body}", i + 1),
            }
        })
    })
}

#[test]
fn tombstones_every_replica_holds_are_purged_after_grace() {
    let started = Instant::now();
    let (c, _conf) = start();
    let keys: Vec<String> = (0..40).map(|k| format!("tk-{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        put_all(&c, k % NODES, key, &format!("value-{k}"));
    }
    let (deleted, kept): (Vec<_>, Vec<_>) = keys
        .iter()
        .cloned()
        .enumerate()
        .partition(|(k, _)| k % 2 == 0);
    let deleted: Vec<String> = deleted.into_iter().map(|(_, k)| k).collect();
    for (k, key) in deleted.iter().enumerate() {
        delete(&c, k % NODES, key, "all");
    }
    let deleted_at = Instant::now();
    let empty = empty_context(&c);

    // Within grace (the first delete is well under 2 s old a second on) nothing is purged.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..NODES {
        assert_eq!(purged(&c, i), 0, "n{} purged within grace", i + 1);
    }

    // Past grace, every replica purges every tombstone (each node replicates every key here).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts: Vec<u64> = (0..NODES).map(|i| purged(&c, i)).collect();
        if counts.iter().all(|&n| n >= deleted.len() as u64) && all_purged(&c, &deleted, &empty) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "purged per node {counts:?} of {} tombstones 20 s on",
            deleted.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = deleted_at.elapsed();

    for (k, key) in kept {
        for i in 0..NODES {
            let (status, _, body) = get_all(&c, i, &key);
            assert_eq!(
                (status, body),
                (200, format!("value-{k}")),
                "{key} via n{}",
                i + 1
            );
        }
    }
    // A purged key can be written again, through any node, and every replica serves it.
    for (k, key) in deleted.iter().take(NODES).enumerate() {
        put_all(&c, k, key, "again");
        for i in 0..NODES {
            let (status, _, body) = get_all(&c, i, key);
            assert_eq!(
                (status, body.as_str()),
                (200, "again"),
                "{key} via n{}",
                i + 1
            );
        }
    }
    let mut con = c.nodes[0].redis();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    let line = info
        .lines()
        .find(|l| l.starts_with("tombstones_purged:"))
        .unwrap_or_else(|| panic!("INFO stats: {info}"));
    assert!(
        line["tombstones_purged:".len()..].parse::<u64>().unwrap() >= deleted.len() as u64,
        "{line}"
    );
    eprintln!(
        "tombstones: {} deleted keys purged on every replica {took:?} after the deletes, in {:?}",
        deleted.len(),
        started.elapsed()
    );
}

#[test]
fn a_replica_that_missed_the_delete_blocks_the_purge_and_nothing_comes_back() {
    const VICTIM: usize = 2;
    let started = Instant::now();
    let (mut c, _conf) = start();
    let keys: Vec<String> = (0..10).map(|k| format!("mk-{k}")).collect();
    for (k, key) in keys.iter().enumerate() {
        put_all(&c, k % NODES, key, &format!("old-{k}"));
    }

    let empty = empty_context(&c);

    // The victim misses the deletes: stopped during them, then killed before it could read the
    // replicates waiting in its sockets. Its copy still holds every value.
    c.nodes[VICTIM].signal("STOP");
    for (k, key) in keys.iter().enumerate() {
        delete(&c, k % 2, key, "2");
    }
    c.nodes[VICTIM].kill9();

    // Well past grace, and for many scans of every partition: nothing is purged while a replica
    // that may hold the old values is away, and the scans say why.
    std::thread::sleep(Duration::from_secs(4));
    for i in 0..NODES {
        if i != VICTIM {
            assert_eq!(purged(&c, i), 0, "n{} purged with a replica away", i + 1);
        }
    }
    let deferred: u64 = (0..NODES)
        .filter(|&i| i != VICTIM)
        .map(|i| metric(&c, i, "ringkv_tombstones_deferred_total"))
        .sum();
    assert!(deferred > 0, "no scan found the tombstones past grace");

    // Back with the old values: every read, at every moment, still finds the keys deleted; the
    // tombstones reach the victim and then every replica purges them.
    c.nodes[VICTIM].restart();
    c.wait_up(&[0, 1, 2], NODES);
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let counts: Vec<u64> = (0..NODES).map(|i| purged(&c, i)).collect();
        // `all_purged` also asserts that every read is a 404.
        if all_purged(&c, &keys, &empty) && counts.iter().all(|&n| n >= keys.len() as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "purged per node {counts:?} of {} tombstones 25 s after the victim returned",
            keys.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Nothing anywhere brings them back now: the victim alone answers 404 at r=1.
    for key in &keys {
        let resp = http_client()
            .get(c.nodes[VICTIM].url(&format!("/v1/kv/{key}?r=1")))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 404, "{key} via the victim");
    }
    eprintln!(
        "tombstones: purge held back while a replica missed {} deletes ({deferred} deferred), \
         then purged everywhere, in {:?}",
        keys.len(),
        started.elapsed()
    );
}
