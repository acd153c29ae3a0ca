//! A whole data center cut off (issue 5's acceptance test): six `ringkv server` processes, each in
//! its own network namespace (see `tests/common/netns.rs`), dc1 = n1..n3 and dc2 = n4..n6 (racks
//! r1, r2, r3 in each), `--replication dc1=3,dc2=2` (N = 5), gossip every 100 ms, request timeout
//! 500 ms.
//!
//! 1. Placement: every node's `/v1/cluster` lists all six members with their dc and rack, N = 5,
//!    and every partition's replicas are 3 nodes of dc1 and 2 of dc2. An `each_quorum` write
//!    succeeds while the network is whole.
//! 2. One writer per data center PUTs distinct keys at `w=local_quorum` through that data
//!    center's nodes in turn, reading each acknowledged key back at `r=local_quorum` through
//!    another node of the same data center. After ~1.5 s nftables cut every link between dc1 and
//!    dc2 for ~5 s while both keep writing and reading. Asserted: no `local_quorum` write fails
//!    (before or during the cut), every read-back returns the acknowledged value, an
//!    `each_quorum` write during the cut answers 503 with a clear error, and at the end of the cut
//!    each data center serves, at `r=local_quorum`, every key acknowledged in it.
//! 3. Heal. Within a bound (the times are printed): all members up, hints drained, and then,
//!    before any read at `r=all` (a read repairs the stale replicas it meets, so it would make
//!    the replicas converge instead of checking that they did), each data center, cut off again
//!    for a moment, alone serves every acknowledged key of both at `r=local_quorum`: what the
//!    write path, hinted handoff and anti-entropy delivered by themselves. Re-checked every few
//!    seconds until the bound.
//! 4. An `r=all` read of every acknowledged key through every node returns its value, and after
//!    those reads each data center alone once more serves every acknowledged key.
//!
//! Node logs (`RINGKV_LOG=info`) go to `n<i>.log` in the run's temp dir, which is kept (and its
//! path printed) when the test fails. Namespaces, bridge, veths and processes are removed by a
//! Drop guard. Needs root, `ip` and `nft` (skipped loudly otherwise; a failure in CI).

mod common;

use common::http_client;
use common::netns::{prerequisites, read_at, Logs, Net};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const NODES: usize = 6;
const DC1: [usize; 3] = [0, 1, 2];
const DC2: [usize; 3] = [3, 4, 5];
/// Writes per writer thread at most (one writer per data center): the workload is bounded.
const MAX_WRITES_PER_THREAD: usize = 400;
/// Pause between a writer's iterations (write + read-back).
const PAUSE: Duration = Duration::from_millis(20);

const PHASES: [&str; 3] = ["before the cut", "during the cut", "after the heal"];

fn dc_of(i: usize) -> &'static str {
    if DC1.contains(&i) {
        "dc1"
    } else {
        "dc2"
    }
}

fn rack_of(i: usize) -> String {
    format!("r{}", i % 3 + 1)
}

/// What the writers saw. Failures are human-readable lines for the report.
#[derive(Default)]
struct Log {
    /// (dc, phase, key, value) of every write acknowledged at w=local_quorum.
    acked: Vec<(&'static str, usize, String, String)>,
    /// Writes per phase (by the phase when the request started).
    writes: [usize; 3],
    /// Slowest acknowledged write per phase, in ms.
    max_write_ms: [u128; 3],
    write_failures: Vec<String>,
    read_failures: Vec<String>,
}

/// PUT `value` at `key` through `base` at write level `w`: (status, body).
fn put(
    client: &reqwest::blocking::Client,
    base: &str,
    key: &str,
    value: &str,
    w: &str,
) -> Result<(u16, String), String> {
    let resp = client
        .put(format!("{base}/v1/kv/{key}?w={w}"))
        .body(value.to_string())
        .send()
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    Ok((status, resp.text().unwrap_or_default()))
}

/// One read to check: through node `.0`, key `.1` must read back `.2` at read level `.3`.
type Check = (usize, String, String, &'static str);

/// Runs `checks` over a few threads; returns the ones that failed, each with what was read.
fn check_reads(bases: &[String], checks: Vec<Check>, threads: usize) -> Vec<(Check, String)> {
    let chunk = checks.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = checks
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let client = http_client();
                    part.iter()
                        .filter_map(|(i, key, value, r)| {
                            match read_at(&client, &bases[*i], key, r) {
                                Ok(Some(v)) if &v == value => None,
                                other => Some((
                                    (*i, key.clone(), value.clone(), *r),
                                    format!("{other:?}"),
                                )),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("reader thread"))
            .collect()
    })
}

/// Re-runs the failing `checks` until none fails or `deadline` passes; returns what still fails.
fn check_until(
    bases: &[String],
    mut checks: Vec<Check>,
    deadline: Instant,
) -> Vec<(Check, String)> {
    loop {
        let failed = check_reads(bases, checks, 3);
        if failed.is_empty() || Instant::now() > deadline {
            return failed;
        }
        checks = failed.into_iter().map(|(c, _)| c).collect();
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Node `i`'s `/v1/cluster` document.
fn cluster_doc(net: &Net, i: usize) -> serde_json::Value {
    http_client()
        .get(net.url(i, "/v1/cluster"))
        .send()
        .and_then(|r| r.json())
        .unwrap_or_else(|e| panic!("/v1/cluster of n{}: {e}", i + 1))
}

/// Replica placement is visible and per data center: every node lists every member with its dc
/// and rack, N = 5, and every partition a node replicates has 3 replicas in dc1 and 2 in dc2 (the
/// node itself plus the peers its anti-entropy exchanges with).
fn check_placement(net: &Net) {
    let mut replicated = [0usize; NODES];
    let mut partitions = 0;
    for (i, count) in replicated.iter_mut().enumerate() {
        let doc = cluster_doc(net, i);
        assert_eq!(doc["n"], 5, "n{}: N is the sum of the per-dc counts", i + 1);
        assert_eq!(doc["replicas_per_key"], 5, "n{}: replicas per key", i + 1);
        partitions = doc["partitions"].as_u64().expect("partitions") as usize;
        let members = doc["members"].as_array().expect("members");
        assert_eq!(members.len(), NODES, "n{} lists every member", i + 1);
        let mut dc = BTreeMap::new();
        for j in 0..NODES {
            let id = format!("n{}", j + 1);
            let m = members
                .iter()
                .find(|m| m["id"] == id.as_str())
                .unwrap_or_else(|| panic!("n{} does not list {id}", i + 1));
            assert_eq!(m["dc"], dc_of(j), "n{}'s view of {id}'s dc", i + 1);
            assert_eq!(m["rack"], rack_of(j).as_str(), "n{}'s view of {id}", i + 1);
            dc.insert(id, dc_of(j));
        }
        let per_partition = doc["anti_entropy"]["per_partition"]
            .as_array()
            .expect("anti_entropy.per_partition");
        *count = per_partition.len();
        for p in per_partition {
            let mut in_dc = BTreeMap::from([(dc_of(i), 1)]);
            for peer in p["peers"].as_array().expect("peers") {
                let peer = peer.as_str().expect("peer id");
                *in_dc.entry(dc[peer]).or_insert(0) += 1;
            }
            assert_eq!(
                in_dc,
                BTreeMap::from([("dc1", 3), ("dc2", 2)]),
                "replicas of partition {} as n{} sees them: {p}",
                p["partition"],
                i + 1
            );
        }
    }
    // dc1's three replicas of each partition are all of dc1; dc2's two are two of its three.
    assert_eq!(
        &replicated[..3],
        &[partitions; 3],
        "dc1 nodes replicate every partition"
    );
    assert_eq!(
        replicated[3..].iter().sum::<usize>(),
        2 * partitions,
        "dc2 nodes hold two replicas of each partition: {replicated:?}"
    );
    let ring: serde_json::Value = http_client()
        .get(net.url(0, "/v1/ring"))
        .send()
        .and_then(|r| r.json())
        .expect("/v1/ring");
    eprintln!(
        "datacenters: placement ok; partitions replicated per node {replicated:?} of {partitions}; \
         /v1/ring load: {}",
        ring["load"]
    );
}

/// PUT at w=each_quorum through node `i` during the cut: must answer 503 with a clear error.
fn each_quorum_refused(net: &Net, i: usize, key: &str) -> Result<String, String> {
    let t = Instant::now();
    let (status, body) = put(&http_client(), &net.url(i, ""), key, "never", "each_quorum")?;
    let took = t.elapsed();
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    let lower = message.to_lowercase();
    let clear = ["replica", "quorum", "data center", "dc"]
        .iter()
        .any(|w| lower.contains(w));
    let line = format!("n{} answered {status} in {took:?}: {body}", i + 1);
    if status == 503 && clear {
        Ok(line)
    } else {
        Err(line)
    }
}

#[test]
fn a_data_center_cut_off_keeps_local_quorum_working_and_converges_after_healing() {
    if !prerequisites("datacenters") {
        return;
    }
    let started = Instant::now();
    let mut net = Net::setup("datacenters", NODES);
    net.logs = Logs::Files;
    net.log_level = "info".into();
    net.start_nodes(|i| {
        [
            "--gossip-interval-ms",
            "100",
            "--request-timeout-ms",
            "500",
            "--dc",
            dc_of(i),
            "--rack",
            &rack_of(i),
            "--replication",
            "dc1=3,dc2=2",
        ]
        .map(String::from)
        .to_vec()
    });
    net.wait_all_up(Duration::from_secs(20));
    eprintln!(
        "datacenters: 6 nodes up in namespaces rk-{}-0..5 on 10.213.{}.0/24 after {:?}; logs in {}",
        net.pid,
        net.subnet,
        started.elapsed(),
        net.dir().display()
    );
    check_placement(&net);
    let bases: Arc<Vec<String>> = Arc::new((0..NODES).map(|i| net.url(i, "")).collect());

    // each_quorum works while the network is whole; those keys must then be in both data centers.
    let mut global: Vec<(String, String)> = Vec::new();
    for (n, i) in [0, 2, 4].into_iter().enumerate() {
        let (key, value) = (format!("eachq-ok-{n}"), format!("value-eachq-{n}"));
        let (status, body) = put(&http_client(), &bases[i], &key, &value, "each_quorum")
            .unwrap_or_else(|e| panic!("each_quorum PUT via n{}: {e}", i + 1));
        assert_eq!(
            status,
            200,
            "each_quorum PUT via n{} (no cut): {body}",
            i + 1
        );
        global.push((key, value));
    }

    // The workload: one writer per data center, through its nodes in turn, each acknowledged key
    // read back through the next node of the same data center.
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let log: Arc<Mutex<Log>> = Arc::default();
    let writers: Vec<_> = [("dc1", DC1), ("dc2", DC2)]
        .into_iter()
        .map(|(dc, nodes)| {
            let (bases, phase, stop, log) =
                (bases.clone(), phase.clone(), stop.clone(), log.clone());
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                for k in 0..MAX_WRITES_PER_THREAD {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let (via, back) = (nodes[k % 3], nodes[(k + 1) % 3]);
                    let (key, value) = (format!("{dc}-{k}"), format!("value-{dc}-{k}"));
                    let p = phase.load(Ordering::Relaxed);
                    let t = Instant::now();
                    let answer = put(&client, &bases[via], &key, &value, "local_quorum");
                    let took = t.elapsed();
                    let at = started.elapsed();
                    let mut l = log.lock().unwrap();
                    l.writes[p] += 1;
                    match answer {
                        Ok((200, _)) => {
                            l.max_write_ms[p] = l.max_write_ms[p].max(took.as_millis());
                            l.acked.push((dc, p, key.clone(), value.clone()));
                        }
                        other => {
                            l.write_failures.push(format!(
                                "PUT {key} w=local_quorum via n{} {} (at {at:?}, took {took:?}, \
                                 phase now {}): {other:?}",
                                via + 1,
                                PHASES[p],
                                PHASES[phase.load(Ordering::Relaxed)]
                            ));
                            drop(l);
                            std::thread::sleep(PAUSE);
                            continue;
                        }
                    }
                    drop(l);
                    let got = read_at(&client, &bases[back], &key, "local_quorum");
                    if got.as_ref().ok().and_then(|v| v.as_deref()) != Some(value.as_str()) {
                        log.lock().unwrap().read_failures.push(format!(
                            "GET {key} r=local_quorum via n{} {} (at {:?}): {got:?}",
                            back + 1,
                            PHASES[p],
                            started.elapsed()
                        ));
                    }
                    std::thread::sleep(PAUSE);
                }
            })
        })
        .collect();

    // The cut: every link between dc1 and dc2, both directions, for ~5 s.
    std::thread::sleep(Duration::from_millis(1500));
    net.split(&DC1, &DC2);
    let cut_at = Instant::now();
    phase.store(1, Ordering::Relaxed);
    eprintln!("datacenters: dc1 | dc2 cut at {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(1));
    let each_quorum: Vec<Result<String, String>> = [(0, "eachq-cut-dc1"), (4, "eachq-cut-dc2")]
        .into_iter()
        .map(|(i, key)| each_quorum_refused(&net, i, key))
        .collect();
    for r in &each_quorum {
        eprintln!("datacenters: each_quorum PUT during the cut: {r:?}");
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer thread");
    }
    // Still cut: each data center serves every key acknowledged in it (and the each_quorum keys).
    let log = std::mem::take(&mut *log.lock().unwrap());
    let mut local_checks = Vec::new();
    for (dc, nodes) in [("dc1", DC1), ("dc2", DC2)] {
        let keys = log
            .acked
            .iter()
            .filter(|(d, _, _, _)| *d == dc)
            .map(|(_, _, k, v)| (k, v))
            .chain(global.iter().map(|(k, v)| (k, v)));
        for (n, (key, value)) in keys.enumerate() {
            local_checks.push((nodes[n % 3], key.clone(), value.clone(), "local_quorum"));
        }
    }
    let local_checked = local_checks.len();
    let local_failed = check_reads(&bases, local_checks, 3);
    eprintln!(
        "datacenters: end of the cut ({:?} long): {local_checked} local_quorum reads, {} failed",
        cut_at.elapsed(),
        local_failed.len()
    );
    // How the cut left things: hints the coordinators took for the other data center.
    let cut_hints = (
        net.hints_pending(),
        net.metric_sum("ringkv_hints_stored_total"),
    );
    net.heal();
    let healed = Instant::now();
    phase.store(2, Ordering::Relaxed);
    eprintln!(
        "datacenters: at the heal: hints pending {:?}, hints stored in all {:?}",
        cut_hints.0, cut_hints.1
    );
    eprintln!(
        "datacenters: healed at {:?}; writes {} before / {} during the cut, {} acknowledged, \
         {} failed; slowest acknowledged write {} ms before / {} ms during; {} read-backs failed",
        started.elapsed(),
        log.writes[0],
        log.writes[1],
        log.acked.len(),
        log.write_failures.len(),
        log.max_write_ms[0],
        log.max_write_ms[1],
        log.read_failures.len()
    );
    for f in log.write_failures.iter().chain(&log.read_failures).take(20) {
        eprintln!("datacenters:   {f}");
    }
    for ((i, key, _, _), got) in local_failed.iter().take(10) {
        eprintln!(
            "datacenters:   end of cut: GET {key} r=local_quorum via n{}: {got}",
            i + 1
        );
    }

    // Convergence (bounded), checked first without a read of ours at r=all: a read repairs the
    // replicas it finds stale, so reading everything first would make the replicas converge
    // rather than check that they did. All members up and hints drained, then each data center,
    // cut off again for a moment, must alone serve every acknowledged key (of both) at
    // r=local_quorum: what the write path, hinted handoff and anti-entropy delivered by
    // themselves. Re-checked (what still fails) every few seconds until the bound.
    let all_keys: Vec<(String, String)> = log
        .acked
        .iter()
        .map(|(_, _, k, v)| (k.clone(), v.clone()))
        .chain(global.iter().cloned())
        .collect();
    let origin: BTreeMap<&str, (&str, usize)> = log
        .acked
        .iter()
        .map(|(dc, p, k, _)| (k.as_str(), (*dc, *p)))
        .chain(global.iter().map(|(k, _)| (k.as_str(), ("each_quorum", 0))))
        .collect();
    let alone_checks = |keys: &[(String, String)]| -> Vec<_> {
        [DC1, DC2]
            .into_iter()
            .flat_map(|nodes| {
                keys.iter()
                    .enumerate()
                    .map(move |(n, (k, v))| (nodes[n % 3], k.clone(), v.clone(), "local_quorum"))
            })
            .collect()
    };
    let bound = Duration::from_secs(20);
    let deadline = healed + bound;
    net.wait_all_up(bound);
    let members_up = healed.elapsed();
    let hints_left = loop {
        match net.hints_pending() {
            Some(0) => break None,
            h if Instant::now() > deadline => break Some(h),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let hints_drained = healed.elapsed();
    let (delivered, ae_repairs) = (
        net.metric_sum("ringkv_hints_delivered_total"),
        net.metric_sum("ringkv_anti_entropy_repairs_total"),
    );
    eprintln!(
        "datacenters: after the heal: members up in {members_up:?}, hints drained in \
         {hints_drained:?} ({hints_left:?} left; delivered in all {delivered:?}), anti-entropy \
         repairs so far {ae_repairs:?}"
    );
    let mut pending = alone_checks(&all_keys);
    let probe_checked = pending.len();
    let mut probes = 0;
    let (probe_failed, present_after) = loop {
        std::thread::sleep(Duration::from_secs(2));
        probes += 1;
        net.split(&DC1, &DC2);
        let failed = check_until(&bases, pending, Instant::now() + Duration::from_secs(1));
        net.heal();
        let took = healed.elapsed();
        eprintln!(
            "datacenters: {took:?} after the heal, each data center alone: {} of {probe_checked} \
             local_quorum reads still miss the acknowledged value",
            failed.len()
        );
        if failed.is_empty() || Instant::now() + Duration::from_secs(2) > deadline {
            break (failed, took);
        }
        pending = failed.into_iter().map(|(c, _)| c).collect();
    };
    // What is missing where: (read in, acknowledged in, when) -> keys.
    let mut missing: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
    for ((i, key, _, _), _) in &probe_failed {
        let (dc, p) = origin[key.as_str()];
        *missing.entry((dc_of(*i), dc, PHASES[p])).or_default() += 1;
    }
    for ((i, key, _, _), got) in probe_failed.iter().take(6) {
        eprintln!(
            "datacenters:   alone: GET {key} r=local_quorum via n{}: {got}",
            i + 1
        );
    }
    eprintln!(
        "datacenters: {} probe(s); still missing (read in, acknowledged in, when) -> keys: \
         {missing:?}; anti-entropy repairs {:?}",
        probes,
        net.metric_sum("ringkv_anti_entropy_repairs_total")
    );

    // Every acknowledged key at r=all through every node (these reads repair what is stale).
    net.wait_all_up(bound);
    let repairs_before = net.metric_sum("ringkv_read_repairs_total");
    let all_checks: Vec<_> = (0..NODES)
        .flat_map(|i| {
            all_keys
                .iter()
                .map(move |(k, v)| (i, k.clone(), v.clone(), "all"))
        })
        .collect();
    let all_checked = all_checks.len();
    let all_started = Instant::now();
    let not_converged = check_until(&bases, all_checks, all_started + bound);
    let repairs = net
        .metric_sum("ringkv_read_repairs_total")
        .zip(repairs_before)
        .map(|(a, b)| a - b);
    eprintln!(
        "datacenters: {all_checked} r=all reads through every node in {:?}, {} still failing; \
         read repairs they made: {repairs:?}",
        all_started.elapsed(),
        not_converged.len()
    );
    for ((i, key, _, _), got) in not_converged.iter().take(10) {
        eprintln!("datacenters:   GET {key} r=all via n{}: {got}", i + 1);
    }

    // And after those reads, each data center alone once more.
    net.split(&DC1, &DC2);
    let recut = Instant::now();
    let alone_failed = check_until(
        &bases,
        alone_checks(&all_keys),
        recut + Duration::from_secs(10),
    );
    let alone_took = recut.elapsed();
    net.heal();
    eprintln!(
        "datacenters: cut again after the r=all reads: {probe_checked} local_quorum reads in each \
         data center alone, {} failed, in {alone_took:?}; {:?} in all",
        alone_failed.len(),
        started.elapsed()
    );
    for ((i, key, _, _), got) in alone_failed.iter().take(10) {
        eprintln!(
            "datacenters:   alone: GET {key} r=local_quorum via n{}: {got}",
            i + 1
        );
    }

    assert!(
        log.acked.len() >= 100 && log.writes[0] >= 10 && log.writes[1] >= 50,
        "too few writes to mean anything: {:?} acked {}",
        log.writes,
        log.acked.len()
    );
    assert!(
        log.write_failures.is_empty(),
        "{} local_quorum writes failed: {:#?}",
        log.write_failures.len(),
        log.write_failures
    );
    assert!(
        log.read_failures.is_empty(),
        "{} local_quorum read-backs in the writing data center did not return the acknowledged \
         value: {:#?}",
        log.read_failures.len(),
        log.read_failures
    );
    for r in each_quorum {
        r.expect("an each_quorum write during the cut must answer 503 with a clear error");
    }
    assert!(
        local_failed.is_empty(),
        "at the end of the cut {} of {local_checked} local_quorum reads missed a key acknowledged \
         in that data center: {:?}",
        local_failed.len(),
        &local_failed[..local_failed.len().min(10)]
    );
    assert_eq!(hints_left, None, "hints did not drain within {bound:?}");
    assert!(
        probe_failed.is_empty(),
        "{present_after:?} after the heal, before any read at r=all, a data center alone did not \
         serve {} of {probe_checked} acknowledged keys at r=local_quorum: (read in, acknowledged \
         in, when) -> keys {missing:?}; e.g. {:?}",
        probe_failed.len(),
        &probe_failed[..probe_failed.len().min(5)]
    );
    assert!(
        not_converged.is_empty(),
        "{} of {all_checked} r=all reads did not return the acknowledged value: {:?}",
        not_converged.len(),
        &not_converged[..not_converged.len().min(10)]
    );
    assert!(
        alone_failed.is_empty(),
        "after the r=all reads, a data center alone did not serve {} of {probe_checked} \
         acknowledged keys at r=local_quorum: {:?}",
        alone_failed.len(),
        &alone_failed[..alone_failed.len().min(10)]
    );
}
