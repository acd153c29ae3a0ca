//! Join, leave and remove with partition streaming, end to end with real processes (N=3, W=2,
//! R=2, gossip every 100 ms):
//! 1. three nodes hold 300 keys; a fourth joins with `--seeds` while a writer keeps writing; it
//!    streams its partitions in (`ringkv_stream_keys_received_total` rises) and goes `up`; with
//!    the others SIGSTOPped it alone serves (R=1) most keys written before it joined; every
//!    acknowledged write reads back at R=2 from every node;
//! 2. `ringkv leave` on n2 follows the handoff to `left`; n2 is stopped; every key still reads
//!    at R=2 and R=3 from the three left;
//! 3. n3 is SIGKILLed and `ringkv remove n3` takes it out; the two left restore N copies: each
//!    alone (the other SIGSTOPped) serves every key at R=1.
//!
//! Every loop is bounded; every process dies with the test.

mod common;

use common::{get_parallel, http_client, Cluster, NodeProc};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 300;

fn put(http: std::net::SocketAddr, key: &str, value: &str) -> bool {
    http_client()
        .put(format!("http://{http}/v1/kv/{key}?w=2"))
        .body(value.to_string())
        .send()
        .map(|r| r.status().is_success())
        .unwrap_or(false)
}

/// A counter's value in a node's Prometheus text (0 when absent).
fn metric(http: std::net::SocketAddr, name: &str) -> u64 {
    let text = common::scrape(http).expect("node answers /metrics");
    common::sample(&text, name).unwrap_or(0)
}

/// Every acknowledged key reads back with its value from node `http` at `r`.
fn check_all(http: std::net::SocketAddr, acked: &BTreeMap<String, String>, r: &str, who: &str) {
    let keys: Vec<&String> = acked.keys().collect();
    let paths = keys.iter().map(|k| format!("/v1/kv/{k}?r={r}")).collect();
    for (k, (status, body)) in keys.iter().zip(get_parallel(http, paths, 8)) {
        assert_eq!(
            (status, body.as_str()),
            (200, acked[*k].as_str()),
            "{k} at r={r} via {who}"
        );
    }
}

fn ringkv(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn join_leave_and_remove_move_partitions_and_lose_nothing() {
    let started = Instant::now();
    let mut c = Cluster::start(3, &[]);
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for k in 0..KEYS {
        let (key, value) = (format!("key-{k}"), format!("value-{k}"));
        assert!(put(c.nodes[k % 3].http, &key, &value), "PUT {key}");
        acked.insert(key, value);
    }

    // 1. Join under load.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, http) = (stop.clone(), c.nodes[0].http);
        std::thread::spawn(move || {
            let mut done = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            for i in 0..2_000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let (key, value) = (format!("live-{i}"), format!("live-value-{i}"));
                if put(http, &key, &value) {
                    done.push((key, value));
                }
            }
            done
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let flags: Vec<String> = vec![
        "--node-id".into(),
        "n4".into(),
        "--cluster-secret".into(),
        c.secret.clone(),
        "--gossip-interval-ms".into(),
        common::TEST_GOSSIP_MS.into(),
        "--request-timeout-ms".into(),
        "1000".into(),
        "--seeds".into(),
        c.nodes[0].peer.to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.nodes
        .push(NodeProc::start(&c.dir.path().join("n4"), &flags));
    c.wait_up(&[0, 1, 2, 3], 4);
    let joined_after = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let live = writer.join().unwrap();
    assert!(
        !live.is_empty(),
        "no write was acknowledged during the join"
    );
    acked.extend(live);
    let streamed = metric(c.nodes[3].http, "ringkv_stream_keys_received_total");
    assert!(streamed > 0, "n4 joined without streaming anything in");
    assert!(metric(c.nodes[3].http, "ringkv_stream_partitions_pulled_total") > 0);
    // n4 holds the keys written before it joined (streamed, not read-repaired: nothing has read
    // through it yet): with every other node stopped, it alone serves those it replicates
    // (about 3/4 of them; the rest time out).
    for i in 0..3 {
        c.nodes[i].signal("STOP");
    }
    let paths = (0..KEYS).map(|k| format!("/v1/kv/key-{k}?r=1")).collect();
    let served = get_parallel(c.nodes[3].http, paths, 25)
        .into_iter()
        .enumerate()
        .filter(|(k, (status, body))| *status == 200 && *body == format!("value-{k}"))
        .count();
    for i in 0..3 {
        c.nodes[i].signal("CONT");
    }
    assert!(
        served * 2 >= KEYS,
        "n4 alone served {served} of the {KEYS} keys written before it joined"
    );
    for i in 0..4 {
        check_all(c.nodes[i].http, &acked, "2", &format!("n{}", i + 1));
    }

    // 2. Leave.
    let (ok, out) = ringkv(&[
        "leave",
        "--http",
        &c.nodes[1].http.to_string(),
        "--timeout",
        "30",
    ]);
    assert!(ok, "ringkv leave failed: {out}");
    assert!(out.contains("left"), "{out}");
    c.nodes[1].terminate();
    for i in [0, 2, 3] {
        check_all(
            c.nodes[i].http,
            &acked,
            "2",
            &format!("n{} after n2 left", i + 1),
        );
    }
    check_all(c.nodes[0].http, &acked, "3", "n1 after n2 left");

    // 3. Remove a dead node.
    c.nodes[2].kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, out) = loop {
        let (ok, out) = ringkv(&["remove", "n3", "--http", &c.nodes[0].http.to_string()]);
        if ok || Instant::now() > deadline {
            break (ok, out);
        }
        // Refused (409) until gossip marks n3 down.
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(ok, "ringkv remove n3 failed: {out}");
    // The two left stream the partitions they gained; then each alone holds every key.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (alone, other) in [(0usize, 3usize), (3, 0)] {
        loop {
            let t: serde_json::Value = http_client()
                .get(c.nodes[alone].url("/v1/cluster"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            let t = &t["transfers"];
            if t["partitions_to_pull"].as_u64() == Some(0)
                || t["partitions_to_pull"] == t["partitions_pulled"]
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "n{} still streaming: {t}",
                alone + 1
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c.nodes[other].signal("STOP");
        check_all(
            c.nodes[alone].http,
            &acked,
            "1",
            &format!("n{} alone", alone + 1),
        );
        c.nodes[other].signal("CONT");
    }
    eprintln!(
        "elasticity: {} keys; n4 joined (streamed {streamed} keys, alone served {served}/{KEYS} \
         older keys) {:.1?} after start; leave, remove and checks done in {:.1?}",
        acked.len(),
        joined_after,
        started.elapsed()
    );
}
