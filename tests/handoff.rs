//! Sloppy quorum and hinted handoff, end to end with real processes: five nodes (N=3, W=2,
//! R=2, gossip every 100 ms). One node is SIGKILLed; once gossip marks it down, every write of a
//! bounded set of keys is still acknowledged at W=2 (stand-ins take the dead node's place and
//! keep hints); `/v1/cluster`, `ringkv status`, INFO and metrics show hints pending for it; after
//! a restart the hints drain to 0 everywhere within 20 s; then, with every other node
//! SIGSTOPped so that only the restarted node can answer, an R=1 read through it returns every
//! hinted key's value from its own replica. Every loop is bounded; every process dies with the
//! test.

mod common;

use common::{http_client, Cluster};
use std::process::Command;
use std::time::{Duration, Instant};

const NODES: usize = 5;
const KEYS: usize = 200;
const VICTIM: usize = 2;

/// Hints pending on node `i` for member `id`, as `/v1/cluster` reports them.
fn hints_for(c: &Cluster, i: usize, id: &str) -> u64 {
    c.members(i)
        .unwrap_or_default()
        .iter()
        .find(|m| m["id"] == id)
        .and_then(|m| m["hints_pending"].as_u64())
        .unwrap_or(0)
}

/// A counter's value in node `i`'s Prometheus text.
fn metric(c: &Cluster, i: usize, name: &str) -> u64 {
    let text = common::scrape(c.nodes[i].http).expect("node answers /metrics");
    common::sample(&text, name).unwrap_or_else(|| panic!("no {name} in the metrics of n{}", i + 1))
}

#[test]
fn writes_stay_available_while_a_node_is_down_and_its_hints_drain_when_it_returns() {
    let started = Instant::now();
    let mut c = Cluster::start(NODES, &[]);
    let victim_id = format!("n{}", VICTIM + 1);
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != VICTIM).collect();

    // SIGKILL one node and wait (bounded) until every survivor's gossip marks it down.
    c.nodes[VICTIM].kill9();
    let deadline = Instant::now() + Duration::from_secs(15);
    for &i in &survivors {
        while !c
            .members(i)
            .unwrap_or_default()
            .iter()
            .any(|m| m["id"] == victim_id.as_str() && m["down"] == true)
        {
            assert!(
                Instant::now() < deadline,
                "n{} did not mark {victim_id} down",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Every write is acknowledged by W=2 durable replicas, stand-ins included.
    let client = http_client();
    let value = |k: usize| format!("value-{k}");
    for k in 0..KEYS {
        let via = survivors[k % survivors.len()];
        let resp = client
            .put(c.nodes[via].url(&format!("/v1/kv/key-{k}?w=2")))
            .body(value(k))
            .send()
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "PUT key-{k} via n{} with {victim_id} down: {}",
            via + 1,
            resp.text().unwrap()
        );
    }

    // The stand-ins hold hints for the dead node; every view shows them.
    let pending: u64 = survivors
        .iter()
        .map(|&i| hints_for(&c, i, &victim_id))
        .sum();
    assert!(pending > 0, "no hints pending for {victim_id}");
    assert!(pending <= KEYS as u64, "{pending} hints for {KEYS} keys");
    let holder = *survivors
        .iter()
        .max_by_key(|&&i| hints_for(&c, i, &victim_id))
        .unwrap();
    let held = hints_for(&c, holder, &victim_id);
    let status = Command::new(common::bin())
        .args(["status", "--http", &c.nodes[holder].http.to_string()])
        .output()
        .unwrap();
    assert!(status.status.success(), "ringkv status failed");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("HINTS"), "{stdout}");
    let row = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(victim_id.as_str()))
        .unwrap_or_else(|| panic!("no {victim_id} row in:\n{stdout}"));
    assert_eq!(
        row.split_whitespace().last(),
        Some(held.to_string().as_str()),
        "HINTS column of {row}"
    );
    assert!(metric(&c, holder, "ringkv_hints_pending") >= held);
    let mut con = c.nodes[holder].redis();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut con).unwrap();
    assert!(
        info.contains(&format!("hints_pending:{held}")),
        "INFO stats: {info}"
    );

    // Back again: the hints drain to 0 everywhere within 20 s.
    c.nodes[VICTIM].restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: u64 = (0..NODES).map(|i| hints_for(&c, i, &victim_id)).sum();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} hints still pending 20 s after {victim_id} restarted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let delivered: u64 = survivors
        .iter()
        .map(|&i| metric(&c, i, "ringkv_hints_delivered_total"))
        .sum();
    assert!(
        delivered >= pending,
        "{delivered} hints delivered of {pending}"
    );

    // Only the restarted node answers now: an R=1 read through it is served from its own
    // replica for every key it is a replica of (the others time out with 503, in parallel).
    for &i in &survivors {
        c.nodes[i].signal("STOP");
    }
    let paths = (0..KEYS).map(|k| format!("/v1/kv/key-{k}?r=1")).collect();
    let mut served = 0u64;
    for (k, (status, body)) in common::get_parallel(c.nodes[VICTIM].http, paths, 20)
        .into_iter()
        .enumerate()
    {
        match status {
            200 => {
                assert_eq!(body, value(k), "key-{k} from {victim_id}");
                served += 1;
            }
            // Not a replica of this key: the other replicas are stopped.
            503 | 504 => {}
            s => panic!("GET key-{k} via {victim_id} alone: {s} {body}"),
        }
    }
    for &i in &survivors {
        c.nodes[i].signal("CONT");
    }
    assert!(
        served >= pending,
        "{victim_id} alone served {served} keys, but {pending} were hinted to it"
    );
    eprintln!(
        "handoff: {KEYS} writes acked with {victim_id} down, {pending} hints, {delivered} \
         delivered, {served} keys served by {victim_id} alone, in {:?}",
        started.elapsed()
    );
}
