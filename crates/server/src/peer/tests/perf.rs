//! Throughput and latency sanity over loopback. Ignored by default; run in release:
//! `cargo test --release -p ringkv-server peer::tests::perf -- --ignored --nocapture`

use super::*;
use std::time::Instant;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "performance report; run in release with --ignored --nocapture"]
async fn echo_calls_per_second() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("cli", SECRET);
    let payload = Bytes::from(vec![0x5a; 100]);
    c.call(&srv.addr, ECHO, payload.clone(), T).await.unwrap();

    let n = 20_000;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        c.call(&srv.addr, ECHO, payload.clone(), T).await.unwrap();
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sequential:    {:>8.0} calls/s, median {:?}, p99 {:?} ({n} calls, 100 B)",
        n as f64 / secs,
        median(lat.clone()),
        p99(lat)
    );

    let workers = 64;
    let per = 2_000;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let c = c.clone();
        let addr = srv.addr.clone();
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                c.call(&addr, ECHO, payload.clone(), T).await.unwrap();
                lat.push(t.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::new();
    while let Some(r) = tasks.join_next().await {
        lat.extend(r.unwrap());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "64 concurrent: {:>8.0} calls/s, median {:?}, p99 {:?} ({} calls, one connection)",
        (workers * per) as f64 / secs,
        median(lat.clone()),
        p99(lat),
        workers * per
    );
    assert_eq!(c.stats().snapshot().connections_total, 1);
    srv.stop().await;
}
