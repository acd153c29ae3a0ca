//! Nothing acknowledged is lost: writes acknowledged in `sync` mode survive SIGKILL, and a
//! SIGTERM'd node in `periodic` mode flushes everything before it exits.

mod common;

use common::NodeProc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn value_of(key: &str) -> String {
    format!("value-of-{key}-{}", "x".repeat(40))
}

#[test]
fn acknowledged_sync_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(dir.path(), &["--durability", "sync"]);
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acked = acked.clone();
            let stop = stop.clone();
            let mut con = node.redis();
            std::thread::spawn(move || {
                // Bounded: at most 5,000 writes or until the node dies.
                for i in 0..5_000 {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w{w}:k{i}");
                    let res: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(&key)
                        .arg(value_of(&key))
                        .query(&mut con);
                    match res {
                        Ok(()) => acked.lock().unwrap().push(key),
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    while acked.lock().unwrap().len() < 3_000 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    node.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "too few writes acknowledged before the kill: {}",
        acked.len()
    );

    node.restart();
    let mut con = node.redis();
    let mut lost = Vec::new();
    for key in &acked {
        let got: Option<String> = redis::cmd("GET").arg(key).query(&mut con).unwrap();
        if got.as_deref() != Some(value_of(key).as_str()) {
            lost.push(key.clone());
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost after SIGKILL: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}

#[test]
fn sigterm_in_periodic_mode_flushes_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(
        dir.path(),
        &["--durability", "periodic", "--sync-interval-ms", "60000"],
    );
    let mut con = node.redis();
    for i in 0..300 {
        let key = format!("k{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(value_of(&key))
            .query(&mut con)
            .unwrap();
    }
    drop(con);
    let status = node.terminate();
    assert!(status.success(), "ringkv exited with {status} on SIGTERM");
    node.restart();
    let mut con = node.redis();
    for i in 0..300 {
        let key = format!("k{i}");
        let got: Option<String> = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(value_of(&key).as_str()),
            "{key} lost across SIGTERM"
        );
    }
}
