//! Deterministic simulation of ringkv clusters under faults, seed by seed: half the seeds a
//! 5-node cluster in one data center, half 6 nodes in two with per-data-center replication.
//!
//! CI runs `RINGKV_SIM_SEEDS` seeds (default 24) starting at `RINGKV_SIM_FIRST_SEED` (default 1);
//! `RINGKV_SIM_SEED=N` runs only seed N. A failing seed prints itself and how to rerun it.

use ringkv_sim::{run, Report};
use std::collections::BTreeMap;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}"))
    })
}

#[test]
fn no_acknowledged_write_is_lost_and_replicas_converge() {
    let seeds: Vec<u64> = match env_u64("RINGKV_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("RINGKV_SIM_FIRST_SEED").unwrap_or(1);
            let count = env_u64("RINGKV_SIM_SEEDS").unwrap_or(24);
            (first..first + count).collect()
        }
    };
    let started = std::time::Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    let mut failures = Vec::new();
    for &seed in &seeds {
        match run(seed) {
            Ok(r) => reports.push(r),
            Err(f) => {
                eprintln!("{f}");
                failures.push(f);
            }
        }
    }
    summarize(&reports, started.elapsed());
    assert!(
        failures.is_empty(),
        "{} of {} seeds failed: {:?}",
        failures.len(),
        seeds.len(),
        failures.iter().map(|f| f.seed).collect::<Vec<_>>()
    );
    // The runs must have exercised what they claim to.
    let total = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    assert!(
        total(|r| r.checked.writes_acked) > 0,
        "no write was acknowledged"
    );
    assert!(
        total(|r| r.checked.reads_checked) > 0,
        "no calm read was checked"
    );
    if seeds.len() >= 8 {
        assert!(
            total(|r| r.nodes.hints_delivered) > 0,
            "no hint was ever delivered"
        );
        assert!(
            total(|r| r.nodes.ae_repaired_keys) > 0,
            "anti-entropy never repaired"
        );
        assert!(total(|r| r.net.lost) > 0 && total(|r| r.net.duplicated) > 0);
        assert!(
            reports.iter().any(|r| r.multi_dc) && reports.iter().any(|r| !r.multi_dc),
            "both topologies must run"
        );
        assert!(
            total(|r| r.nodes.coordinator_hints) > 0,
            "no coordinator hint was ever stored"
        );
        let level = |name: &str| {
            reports
                .iter()
                .filter_map(|r| r.checked.by_level.get(name))
                .map(|c| c.writes_acked)
                .sum::<u64>()
        };
        assert!(
            level("local_quorum dc1") > 0 && level("each_quorum") > 0,
            "the data-center levels were not exercised"
        );
    }
    if seeds.len() >= 24 {
        let cuts: u64 = reports
            .iter()
            .flat_map(|r| &r.faults)
            .filter(|(k, _)| k.starts_with("data-center cut"))
            .map(|(_, n)| n)
            .sum();
        assert!(cuts > 0, "no data center was ever cut off");
    }
}

fn summarize(reports: &[Report], took: std::time::Duration) {
    let total = |f: fn(&Report) -> u64| reports.iter().map(f).sum::<u64>();
    let mut faults: BTreeMap<&str, u64> = BTreeMap::new();
    for r in reports {
        for (k, v) in &r.faults {
            *faults.entry(k).or_default() += v;
        }
    }
    let conv: Vec<u64> = reports.iter().map(|r| r.convergence_ms).collect();
    let multi = reports.iter().filter(|r| r.multi_dc).count();
    eprintln!(
        "simulation: {} seeds passed in {:.1?} ({} s simulated; {} with one data center, {} \
         with two)",
        reports.len(),
        took,
        total(|r| r.simulated_ms) / 1000,
        reports.len() - multi,
        multi
    );
    eprintln!("  faults injected: {faults:?}");
    eprintln!(
        "  writes: {} acknowledged ({} still present, {} superseded by later writes), {} failed, \
         {} unknown; lost: 0",
        total(|r| r.checked.writes_acked),
        total(|r| r.checked.acked_present),
        total(|r| r.checked.acked_superseded),
        total(|r| r.checked.writes_failed),
        total(|r| r.checked.writes_unknown),
    );
    let mut levels: BTreeMap<String, ringkv_sim::checker::LevelCounts> = BTreeMap::new();
    let mut pairs: BTreeMap<String, u64> = BTreeMap::new();
    for r in reports {
        for (k, c) in &r.checked.by_level {
            let t = levels.entry(k.clone()).or_default();
            t.writes_acked += c.writes_acked;
            t.writes_failed += c.writes_failed;
            t.writes_unknown += c.writes_unknown;
            t.reads_ok += c.reads_ok;
            t.reads_failed += c.reads_failed;
        }
        for (k, n) in &r.checked.calm_pairs {
            *pairs.entry(k.clone()).or_default() += n;
        }
    }
    for (name, c) in &levels {
        eprintln!(
            "    {name}: writes {} acknowledged, {} failed, {} unknown; reads {} answered, {} \
             failed",
            c.writes_acked, c.writes_failed, c.writes_unknown, c.reads_ok, c.reads_failed
        );
    }
    eprintln!(
        "  reads: {} ({} checked with no fault, against {} earlier acknowledged writes whose \
         quorums must intersect theirs); keys ending with siblings: {}",
        total(|r| r.reads),
        total(|r| r.checked.reads_checked),
        pairs.values().sum::<u64>(),
        total(|r| r.checked.keys_with_siblings),
    );
    eprintln!("    (write level -> read level) pairs held: {pairs:?}");
    if multi > 0 {
        let (w, a) = (
            total(|r| r.checked.cut_local_writes),
            total(|r| r.checked.cut_local_writes_acked),
        );
        let pct = |a: u64, w: u64| {
            if w > 0 {
                100.0 * a as f64 / w as f64
            } else {
                0.0
            }
        };
        let (fw, fa) = (
            total(|r| r.checked.cut_local_forwarded),
            total(|r| r.checked.cut_local_forwarded_acked),
        );
        eprintln!(
            "  data-center cuts: local_quorum requests held to success in clean cuts: {}; \
             each_quorum requests held to failure: {}; measured: local_quorum writes started \
             in any cut {w}, acknowledged {a} ({:.1}%); forwarded ones in clean cuts with \
             their data center up {fw}, acknowledged {fa} ({:.1}%)",
            total(|r| r.checked.cut_local_checked),
            total(|r| r.checked.cut_each_checked),
            pct(a, w),
            pct(fa, fw),
        );
    }
    eprintln!(
        "  messages: {} sent, {} lost, {} duplicated, {} cut by partitions",
        total(|r| r.net.sent),
        total(|r| r.net.lost),
        total(|r| r.net.duplicated),
        total(|r| r.net.cut),
    );
    eprintln!(
        "  hints: {} stored ({} by coordinators for replicas they did not reach), {} \
         delivered, {} dropped; read repairs: {}; anti-entropy: {} sessions, {} keys \
         repaired, {} KB sent",
        total(|r| r.nodes.hints_stored),
        total(|r| r.nodes.coordinator_hints),
        total(|r| r.nodes.hints_delivered),
        total(|r| r.nodes.hints_dropped),
        total(|r| r.nodes.read_repairs),
        total(|r| r.nodes.ae_sessions),
        total(|r| r.nodes.ae_repaired_keys),
        total(|r| r.nodes.ae_bytes) / 1024,
    );
    if !conv.is_empty() {
        eprintln!(
            "  convergence after the heal: max {} ms, mean {} ms",
            conv.iter().max().unwrap(),
            conv.iter().sum::<u64>() / conv.len() as u64
        );
    }
    for (name, multi_dc) in [("one data center", false), ("two data centers", true)] {
        let conv: Vec<u64> = reports
            .iter()
            .filter(|r| r.multi_dc == multi_dc)
            .map(|r| r.convergence_ms)
            .collect();
        if !conv.is_empty() {
            eprintln!(
                "    {name}: max {} ms, mean {} ms",
                conv.iter().max().unwrap(),
                conv.iter().sum::<u64>() / conv.len() as u64
            );
        }
    }
}

#[test]
fn a_seed_reproduces_its_run_exactly() {
    let a = run(7).expect("seed 7 passes");
    let b = run(7).expect("seed 7 passes");
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
    let c = run(8).expect("seed 8 passes");
    assert_ne!(
        format!("{a:?}"),
        format!("{c:?}"),
        "different seeds, same run"
    );
}
