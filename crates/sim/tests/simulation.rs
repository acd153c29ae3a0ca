//! Deterministic simulation of a 5-node cluster under faults, seed by seed.
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
    eprintln!(
        "simulation: {} seeds passed in {:.1?} ({} s simulated)",
        reports.len(),
        took,
        total(|r| r.simulated_ms) / 1000
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
    eprintln!(
        "  reads: {} ({} checked against R + W > N with no fault); keys ending with siblings: {}",
        total(|r| r.reads),
        total(|r| r.checked.reads_checked),
        total(|r| r.checked.keys_with_siblings),
    );
    eprintln!(
        "  messages: {} sent, {} lost, {} duplicated, {} cut by partitions",
        total(|r| r.net.sent),
        total(|r| r.net.lost),
        total(|r| r.net.duplicated),
        total(|r| r.net.cut),
    );
    eprintln!(
        "  hints: {} stored, {} delivered, {} dropped; read repairs: {}; anti-entropy: {} \
         sessions, {} keys repaired, {} KB sent",
        total(|r| r.nodes.hints_stored),
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
