//! Measures commit throughput of the store on the real engine and disk.
//!
//! `cargo run --release -p ringkv-storage --example commit_bench [DIR]` (DIR defaults to the
//! current directory; use a real disk, not a tmpfs, or fsyncs cost nothing).
//!
//! Reports: concurrent commits in sync mode (group commit), the same through write + durable,
//! one writer in sync mode (one fsync per commit), a raw 4 KiB write + fdatasync loop for
//! reference, and periodic mode.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ringkv_storage::{Durability, Keyspace, Store, StoreOptions, WriteBatch};

fn batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    // ~ a small sibling set: 16-byte key, 100-byte value.
    b.put(
        Keyspace::Data,
        format!("key-{i:012}").into_bytes(),
        vec![(i % 251) as u8; 100],
    );
    b
}

#[derive(Clone, Copy)]
enum Via {
    Commit,
    WriteDurable,
}

async fn run(dir: &Path, durability: Durability, tasks: u64, total: u64, path: Via) -> String {
    let opts = StoreOptions {
        durability,
        min_free_bytes: 0,
        ..StoreOptions::default()
    };
    let store = Store::open(dir, opts).unwrap();
    let per_task = total / tasks;
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task as usize);
                for j in 0..per_task {
                    let b = batch(t * per_task + j);
                    let s = Instant::now();
                    match path {
                        Via::Commit => store.commit(&b).await.unwrap(),
                        Via::WriteDurable => {
                            let ticket = store.write(&b).unwrap();
                            store.durable(ticket).await.unwrap();
                        }
                    }
                    lat.push(s.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = Vec::new();
    for h in handles {
        lat.extend(h.await.unwrap());
    }
    let elapsed = start.elapsed();
    let stats = store.stats();
    store.shutdown().unwrap();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    let n = lat.len() as f64;
    format!(
        "{:>6.0} commits/s  {:>5} fsyncs ({:>5.1} commits/fsync)  p50 {:>8.2?}  p99 {:>8.2?}  [{} commits in {:.2?}]",
        n / elapsed.as_secs_f64(),
        stats.fsyncs,
        n / stats.fsyncs.max(1) as f64,
        pct(0.50),
        pct(0.99),
        lat.len(),
        elapsed,
    )
}

fn raw_fdatasync_rate(dir: &Path, n: u32) -> f64 {
    let path = dir.join("raw-fsync-probe");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![7u8; 4096];
    let start = Instant::now();
    for _ in 0..n {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let rate = f64::from(n) / start.elapsed().as_secs_f64();
    std::fs::remove_file(&path).unwrap();
    rate
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| ".".into());
    let fresh = || tempfile::tempdir_in(&base).expect("temp dir in DIR");
    println!(
        "storage commit benchmark in {base} ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let sync = Durability::Sync;
    for total in [1_000, 10_000] {
        let d = fresh();
        let r = run(d.path(), sync, 50, total, Via::Commit).await;
        println!("sync,  50 tasks, commit        : {r}");
        let d = fresh();
        let r = run(d.path(), sync, 50, total, Via::WriteDurable).await;
        println!("sync,  50 tasks, write+durable : {r}");
    }
    let d = fresh();
    let r = run(d.path(), sync, 200, 20_000, Via::Commit).await;
    println!("sync, 200 tasks, commit        : {r}");
    let d = fresh();
    let r = run(d.path(), sync, 1, 1_000, Via::Commit).await;
    println!("sync,   1 task,  commit        : {r}");
    let d = fresh();
    let rate = raw_fdatasync_rate(d.path(), 1_000);
    println!("raw 4 KiB write + fdatasync    : {rate:>6.0} /s");
    let d = fresh();
    let periodic = Durability::Periodic {
        interval: Duration::from_millis(10),
    };
    let r = run(d.path(), periodic, 50, 50_000, Via::Commit).await;
    println!("periodic 10ms, 50 tasks, commit: {r}");
}
