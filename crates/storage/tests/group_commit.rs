//! Group commit on the real engine and a real disk: concurrent commits share fsyncs, and what was
//! acknowledged is there after a reopen, and after the process is killed outright.

mod common;

use std::path::Path;
use std::process::Command;

use ringkv_storage::{Durability, Keyspace, Store, StoreOptions};

use common::{disk_tempdir, noise, put};

fn sync_opts() -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        cache_bytes: 8 << 20,
        // The tests' temp dir shares the build disk; the guard is tested in disk_full.rs.
        min_free_bytes: 0,
    }
}

fn value_of(i: u32) -> Vec<u8> {
    noise(u64::from(i), 100)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_share_fsyncs_and_survive_reopen() {
    const COMMITS: u32 = 64;
    let dir = disk_tempdir();
    let store = Store::open(dir.path(), sync_opts()).unwrap();

    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(COMMITS as usize));
    let tasks: Vec<_> = (0..COMMITS)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let batch = put(Keyspace::Data, format!("key-{i:03}"), value_of(i));
                if i % 2 == 0 {
                    store.commit(&batch).await
                } else {
                    let ticket = store.write(&batch)?;
                    store.durable(ticket).await
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let stats = store.stats();
    println!(
        "{COMMITS} concurrent commits took {} fsyncs ({} writes)",
        stats.fsyncs, stats.writes
    );
    assert_eq!(stats.writes, u64::from(COMMITS));
    assert!(
        stats.fsyncs < u64::from(COMMITS),
        "no group commit: {} fsyncs for {COMMITS} commits",
        stats.fsyncs
    );
    assert!(stats.disk_bytes > 0);

    store.shutdown().unwrap();
    drop(store);

    let reopened = Store::open(dir.path(), sync_opts()).unwrap();
    for i in 0..COMMITS {
        assert_eq!(
            reopened
                .get(Keyspace::Data, format!("key-{i:03}").as_bytes())
                .unwrap(),
            Some(value_of(i)),
            "commit {i} missing after reopen"
        );
    }
    let all = reopened.scan(Keyspace::Data, b"", None, 1000).unwrap();
    assert_eq!(all.len(), COMMITS as usize);
}

/// The child side of `acknowledged_commits_survive_kill`: commit, report each acknowledged key
/// on stdout, then die without any cleanup (no drop, no shutdown, no final fsync).
fn crash_child(dir: &Path) -> ! {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = Store::open(dir, sync_opts()).unwrap();
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .commit(&put(Keyspace::Data, format!("key-{i:03}"), value_of(i)))
                        .await
                        .map(|()| i)
                })
            })
            .collect();
        for task in tasks {
            let i = task.await.unwrap().unwrap();
            println!("ACK {i}");
        }
        // One more write that is never made durable: it may or may not survive; never garbage.
        store
            .write(&put(Keyspace::Data, "unacked", value_of(999)))
            .unwrap();
    });
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    std::process::abort();
}

#[test]
fn acknowledged_commits_survive_kill() {
    if let Some(dir) = std::env::var_os("RINGKV_STORAGE_CRASH_CHILD") {
        crash_child(Path::new(&dir));
    }
    let dir = disk_tempdir();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_commits_survive_kill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("RINGKV_STORAGE_CRASH_CHILD", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "the child should have aborted");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let acked: Vec<u32> = stdout
        .lines()
        // The test harness may print "test name ... " on the same line as the first ACK.
        .filter_map(|l| l.find("ACK ").map(|at| &l[at + 4..]))
        .map(|n| n.trim().parse().unwrap())
        .collect();
    assert_eq!(
        acked.len(),
        40,
        "child did not finish: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let store = Store::open(dir.path(), sync_opts()).unwrap();
    for i in acked {
        assert_eq!(
            store
                .get(Keyspace::Data, format!("key-{i:03}").as_bytes())
                .unwrap(),
            Some(value_of(i)),
            "acknowledged commit {i} lost after kill"
        );
    }
    let unacked = store.get(Keyspace::Data, b"unacked").unwrap();
    assert!(unacked.is_none() || unacked == Some(value_of(999)));
}
