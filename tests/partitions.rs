//! Real network partitions (issue 4, item 6): five `ringkv server` processes, each in its own
//! network namespace `rk-<pid>-<i>`, joined by veth pairs to a bridge in the root namespace (which
//! holds `.254` of a private 10.213.x.0/24 used only here, so the test reaches every node directly).
//! N=3, W=2, R=2, gossip every 100 ms, request timeout 500 ms. While two writer threads PUT distinct
//! keys through every node, nftables tables inside the namespaces cut the network: a 2 | 3 split,
//! then a single node isolated, then a one-way cut (n1 drops what comes from n3), each ~3 s and
//! healed. Afterwards, within a bound, every acknowledged write must read back with its value at
//! R=2 through every node, hints must drain and an R=3 read of every acknowledged key must agree;
//! the time that took is printed. Writes lost must be 0. Namespaces, bridge, veths and processes are
//! removed by a Drop guard, also when the test fails. Needs root, `ip` and `nft` (skipped loudly
//! otherwise; a failure in CI).

mod common;

use common::netns::{prerequisites, Net};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 5;
/// Writes per writer thread at most (two threads): the workload is bounded.
const MAX_WRITES_PER_THREAD: usize = 250;

/// GET `key` at read quorum `r` through node `i`: Ok(Some(value)), Ok(None) when missing, Err on
/// an error answer (quorum not met, timeout) or siblings with different values.
fn read(net: &Net, i: usize, key: &str, r: usize) -> Result<Option<String>, String> {
    net.read(i, key, &r.to_string())
}

#[test]
fn acknowledged_writes_survive_real_partitions_and_replicas_converge() {
    if !prerequisites("partitions") {
        return;
    }
    let started = Instant::now();
    let mut net = Net::setup("partitions", NODES);
    net.start_nodes(|_| {
        ["--gossip-interval-ms", "100", "--request-timeout-ms", "500"]
            .map(String::from)
            .to_vec()
    });
    net.wait_all_up(Duration::from_secs(20));
    eprintln!(
        "partitions: 5 nodes up in namespaces rk-{}-0..4 on 10.213.{}.0/24 after {:?}",
        net.pid,
        net.subnet,
        started.elapsed()
    );
    // Writers get the nodes' base URLs only, so `net` (and its cleanup) stays with this thread.
    let bases: Arc<Vec<String>> = Arc::new((0..NODES).map(|i| net.url(i, "")).collect());

    // The workload: two writers, distinct keys and values, through every node in turn.
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0usize));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (bases, stop, acked, failed) =
                (bases.clone(), stop.clone(), acked.clone(), failed.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for k in 0..MAX_WRITES_PER_THREAD {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let via = (k + t * 2) % NODES;
                    let (key, value) = (format!("part-{t}-{k}"), format!("value-{t}-{k}"));
                    let ok = client
                        .put(format!("{}/v1/kv/{key}?w=2", bases[via]))
                        .body(value.clone())
                        .send()
                        .map(|r| r.status() == 200)
                        .unwrap_or(false);
                    if ok {
                        acked.lock().unwrap().push((key, value));
                    } else {
                        *failed.lock().unwrap() += 1;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        })
        .collect();

    let phase = Duration::from_secs(3);
    let settle = Duration::from_secs(1);
    std::thread::sleep(settle);
    // 1. Halves: {n1, n2} | {n3, n4, n5}.
    net.split(&[0, 1], &[2, 3, 4]);
    std::thread::sleep(phase);
    net.heal();
    std::thread::sleep(settle);
    // 2. A single node isolated: n4.
    net.split(&[3], &[0, 1, 2, 4]);
    std::thread::sleep(phase);
    net.heal();
    std::thread::sleep(settle);
    // 3. One way: n1 drops what n3 sends it (n1 -> n3 packets still leave).
    net.cut(0, &[2], &[]);
    std::thread::sleep(phase);
    net.heal();
    let healed = Instant::now();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    let acked = acked.lock().unwrap().clone();
    let failed = *failed.lock().unwrap();
    eprintln!(
        "partitions: {} writes, {} acknowledged, {failed} failed during the cuts",
        acked.len() + failed,
        acked.len()
    );
    assert!(
        acked.len() >= 100,
        "too few writes acknowledged ({}) to mean anything",
        acked.len()
    );

    // Convergence (bounded): all members up, no hints pending, every acknowledged key read back
    // with its value at R=2 through every node and at R=3 (all replicas answer and agree).
    let bound = Duration::from_secs(30);
    let deadline = healed + bound;
    net.wait_all_up(bound);
    let mut last_problem;
    loop {
        last_problem = None;
        'check: for i in 0..NODES {
            for (key, value) in &acked {
                match read(&net, i, key, 2) {
                    Ok(Some(v)) if &v == value => {}
                    other => {
                        last_problem = Some(format!("{key} at r=2 via n{}: {other:?}", i + 1));
                        break 'check;
                    }
                }
            }
        }
        if last_problem.is_none() {
            match net.hints_pending() {
                Some(0) => {}
                h => last_problem = Some(format!("hints pending: {h:?}")),
            }
        }
        if last_problem.is_none() {
            for (n, (key, value)) in acked.iter().enumerate() {
                match read(&net, n % NODES, key, 3) {
                    Ok(Some(v)) if &v == value => {}
                    other => {
                        last_problem = Some(format!("{key} at r=3: {other:?}"));
                        break;
                    }
                }
            }
        }
        if last_problem.is_none() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let convergence = healed.elapsed();
    let lost = acked
        .iter()
        .filter(|(key, value)| {
            (0..NODES).all(|i| read(&net, i, key, 2).ok().flatten().as_deref() != Some(value))
        })
        .count();
    eprintln!(
        "partitions: converged {:?} after the last heal; writes acknowledged {}, writes lost {lost}; \
         {:?} in all",
        convergence,
        acked.len(),
        started.elapsed()
    );
    assert_eq!(lost, 0, "acknowledged writes lost");
    assert!(
        last_problem.is_none(),
        "replicas did not converge within {bound:?} of the last heal: {}",
        last_problem.unwrap()
    );
}
