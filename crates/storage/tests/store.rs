//! Store behaviour over the in-memory engine (and fault-injecting wrappers): checksums, crash
//! semantics of both durability modes, group-commit ordering, fail-stop, shutdown.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringkv_storage::{
    Durability, Engine, Keyspace, MemEngine, StorageError, Store, StoreOptions, WriteBatch,
};

use common::{put, FailingSync, GatedSync};

fn sync_opts() -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        ..StoreOptions::default()
    }
}

fn periodic_opts(interval: Duration) -> StoreOptions {
    StoreOptions {
        durability: Durability::Periodic { interval },
        ..StoreOptions::default()
    }
}

fn mem_store(opts: StoreOptions) -> (Arc<MemEngine>, Store) {
    let engine = Arc::new(MemEngine::new());
    let store = Store::with_engine(engine.clone(), opts);
    (engine, store)
}

/// Polls `cond` for up to two seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[tokio::test]
async fn values_are_stored_framed_and_read_back_verified() {
    let (engine, store) = mem_store(sync_opts());
    store
        .commit(&put(Keyspace::Data, b"k".to_vec(), b"hello".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        store.get(Keyspace::Data, b"k").unwrap(),
        Some(b"hello".to_vec())
    );
    let raw = engine.get(Keyspace::Data, b"k").unwrap().unwrap();
    assert_eq!(raw.len(), b"hello".len() + 5, "checksum header missing");
    assert_ne!(raw, b"hello");
    assert_eq!(store.get(Keyspace::Data, b"missing").unwrap(), None);
    let stats = store.stats();
    assert_eq!(stats.writes, 1);
    assert_eq!(stats.corrupt_reads, 0);
}

#[tokio::test]
async fn a_corrupted_record_is_never_served() {
    let (engine, store) = mem_store(sync_opts());
    let mut batch = WriteBatch::new();
    for key in ["a", "b", "c", "d"] {
        batch.put(Keyspace::Data, key, format!("value of {key}"));
    }
    store.commit(&batch).await.unwrap();
    assert!(engine.corrupt(Keyspace::Data, b"b"));

    match store.get(Keyspace::Data, b"b") {
        Err(StorageError::Corrupt { keyspace, detail }) => {
            assert_eq!(keyspace, "data");
            assert!(detail.contains("checksum mismatch"), "{detail}");
            assert!(
                detail.contains("62"),
                "detail should name the key (hex): {detail}"
            );
        }
        other => panic!("corrupt record served or wrong error: {other:?}"),
    }
    assert_eq!(store.stats().corrupt_reads, 1);
    // The error's message says what happened.
    let msg = store.get(Keyspace::Data, b"b").unwrap_err().to_string();
    assert!(
        msg.starts_with("corrupt record in data: checksum mismatch"),
        "{msg}"
    );

    // A scan skips it, still fills its limit, and counts it.
    let rows = store.scan(Keyspace::Data, b"", None, 3).unwrap();
    let keys: Vec<_> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [b"a", b"c", b"d"]);
    assert_eq!(rows[1].1, b"value of c");
    assert_eq!(store.stats().corrupt_reads, 3);

    // A rewrite repairs it (what read repair / anti-entropy will do).
    store
        .commit(&put(Keyspace::Data, b"b".to_vec(), b"repaired".to_vec()))
        .await
        .unwrap();
    assert_eq!(
        store.get(Keyspace::Data, b"b").unwrap(),
        Some(b"repaired".to_vec())
    );
}

#[tokio::test]
async fn a_record_moved_to_another_key_is_refused() {
    let (engine, store) = mem_store(sync_opts());
    store
        .commit(&put(Keyspace::Data, b"alice".to_vec(), b"10".to_vec()))
        .await
        .unwrap();
    let raw = engine.get(Keyspace::Data, b"alice").unwrap().unwrap();
    engine
        .write(&put(Keyspace::Data, b"bob".to_vec(), raw))
        .unwrap();
    assert!(matches!(
        store.get(Keyspace::Data, b"bob"),
        Err(StorageError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn crash_keeps_synced_writes_and_drops_unsynced_ones() {
    let (engine, store) = mem_store(sync_opts());
    let ticket = store
        .write(&put(Keyspace::Data, b"synced".to_vec(), b"1".to_vec()))
        .unwrap();
    store.durable(ticket).await.unwrap();
    // Written (and readable) but nobody asked for durability: no fsync happens for it.
    store
        .write(&put(Keyspace::Data, b"unsynced".to_vec(), b"2".to_vec()))
        .unwrap();
    assert_eq!(
        store.get(Keyspace::Data, b"unsynced").unwrap(),
        Some(b"2".to_vec())
    );

    engine.crash();
    let after = Store::with_engine(engine.clone(), sync_opts());
    assert_eq!(
        after.get(Keyspace::Data, b"synced").unwrap(),
        Some(b"1".to_vec())
    );
    assert_eq!(after.get(Keyspace::Data, b"unsynced").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_write_survives_a_crash_in_sync_mode() {
    let (engine, store) = mem_store(sync_opts());
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{i}");
            // Half through commit, half through write + durable: both must be durable on Ok.
            if i % 2 == 0 {
                store
                    .commit(&put(Keyspace::Data, key, i.to_le_bytes().to_vec()))
                    .await
            } else {
                let t = store.write(&put(Keyspace::Data, key, i.to_le_bytes().to_vec()))?;
                store.durable(t).await
            }
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    // Crash with no shutdown: only fsyncs done before acknowledging can have saved them.
    engine.crash();
    for i in 0..64u32 {
        assert_eq!(
            engine
                .get(Keyspace::Data, format!("key-{i}").as_bytes())
                .unwrap()
                .map(|raw| raw[5..].to_vec()),
            Some(i.to_le_bytes().to_vec()),
            "acknowledged write {i} lost in a crash"
        );
    }
    assert!(store.stats().fsyncs >= 1);
}

/// The group-commit invariant: a write is acknowledged only after an fsync that *started after*
/// it. Write A and ask for its durability; hold that fsync open; write B meanwhile and ask too.
/// When the first fsync finishes, A is durable but B must still wait for a second one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_waits_for_an_fsync_that_started_after_the_write() {
    let mem = Arc::new(MemEngine::new());
    let (gated, gate) = GatedSync::new(mem.clone());
    let store = Store::with_engine(Arc::new(gated), sync_opts());

    let (started, open) = (gate.started, gate.open);
    let wait_for_fsync_start = |started: std::sync::mpsc::Receiver<()>| {
        tokio::task::spawn_blocking(move || {
            started
                .recv_timeout(Duration::from_secs(5))
                .expect("the syncer did not start an fsync");
            started
        })
    };
    let durable_in_background = |t| {
        let store = store.clone();
        tokio::spawn(async move { store.durable(t).await })
    };

    let a = store
        .write(&put(Keyspace::Data, b"a".to_vec(), b"1".to_vec()))
        .unwrap();
    let a_done = durable_in_background(a);
    // fsync #1 (for A) has started and is held open.
    let started = wait_for_fsync_start(started).await.unwrap();

    let b = store
        .write(&put(Keyspace::Data, b"b".to_vec(), b"2".to_vec()))
        .unwrap();
    let b_done = durable_in_background(b);

    // fsync #1 finishes: A is durable; B, written during it, is not.
    open.send(()).unwrap();
    a_done.await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !b_done.is_finished(),
        "B was acknowledged by an fsync that began before it was written"
    );

    // fsync #2 starts for B; let it through.
    let _started = wait_for_fsync_start(started).await.unwrap();
    open.send(()).unwrap();
    b_done.await.unwrap().unwrap();
    assert_eq!(mem.sync_count(), 2);
    mem.crash();
    assert!(mem.get(Keyspace::Data, b"b").unwrap().is_some());
}

#[tokio::test]
async fn periodic_mode_acknowledges_at_once_and_fsyncs_on_a_timer() {
    let (engine, store) = mem_store(periodic_opts(Duration::from_millis(20)));
    assert_eq!(store.durability().name(), "periodic");
    store
        .commit(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
        .await
        .unwrap();
    eventually("the periodic fsync", || engine.unsynced_ops() == 0);
    assert!(store.stats().fsyncs >= 1);
    engine.crash();
    assert!(engine.get(Keyspace::Data, b"k").unwrap().is_some());

    // Idle: no fsync without new writes.
    let fsyncs = store.stats().fsyncs;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.stats().fsyncs, fsyncs);
}

#[tokio::test]
async fn periodic_mode_can_lose_acknowledged_writes_in_a_crash() {
    // The documented trade of periodic mode, made visible: acknowledged, then lost.
    let (engine, store) = mem_store(periodic_opts(Duration::from_secs(3600)));
    store
        .commit(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
        .await
        .unwrap();
    engine.crash();
    assert_eq!(engine.get(Keyspace::Data, b"k").unwrap(), None);
    drop(store);
}

#[tokio::test]
async fn a_failed_fsync_poisons_the_store() {
    let engine = Arc::new(FailingSync::new(MemEngine::new(), false));
    let store = Store::with_engine(engine.clone(), sync_opts());
    store
        .commit(&put(Keyspace::Data, b"before".to_vec(), b"1".to_vec()))
        .await
        .unwrap();

    engine.fail.store(true, Ordering::SeqCst);
    assert!(matches!(
        store
            .commit(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
            .await,
        Err(StorageError::Poisoned)
    ));
    assert!(store.stats().poisoned);

    // Fail-stop even though the disk "recovered": nothing more is accepted.
    engine.fail.store(false, Ordering::SeqCst);
    let calls = engine.sync_calls.load(Ordering::SeqCst);
    assert!(matches!(
        store.write(&put(Keyspace::Data, b"x".to_vec(), b"v".to_vec())),
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        store
            .commit(&put(Keyspace::Data, b"x".to_vec(), b"v".to_vec()))
            .await,
        Err(StorageError::Poisoned)
    ));
    assert_eq!(
        engine.sync_calls.load(Ordering::SeqCst),
        calls,
        "no fsync retried"
    );
    assert_eq!(store.get(Keyspace::Data, b"x").unwrap(), None);
    // Reads still work; a durability question about an old write still has its answer.
    assert_eq!(
        store.get(Keyspace::Data, b"before").unwrap(),
        Some(b"1".to_vec())
    );
    let msg = StorageError::Poisoned.to_string();
    assert!(msg.contains("restart the node"), "{msg}");
    assert!(matches!(store.shutdown(), Err(StorageError::Poisoned)));
}

#[tokio::test]
async fn a_failed_fsync_answers_every_waiter_of_the_write_durable_path() {
    let engine = Arc::new(FailingSync::new(MemEngine::new(), true));
    let store = Store::with_engine(engine.clone(), sync_opts());
    let t = store
        .write(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
        .unwrap();
    assert!(matches!(
        store.durable(t).await,
        Err(StorageError::Poisoned)
    ));
    assert!(matches!(
        store.durable(t).await,
        Err(StorageError::Poisoned)
    ));
}

#[tokio::test]
async fn a_failed_periodic_fsync_poisons_the_store() {
    let engine = Arc::new(FailingSync::new(MemEngine::new(), true));
    let store = Store::with_engine(engine.clone(), periodic_opts(Duration::from_millis(5)));
    store
        .commit(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
        .await
        .unwrap();
    eventually("poisoning", || store.stats().poisoned);
    assert!(matches!(
        store
            .commit(&put(Keyspace::Data, b"k2".to_vec(), b"v".to_vec()))
            .await,
        Err(StorageError::Poisoned)
    ));
}

#[tokio::test]
async fn shutdown_fsyncs_then_refuses_writes_and_is_idempotent() {
    let (engine, store) = mem_store(sync_opts());
    store
        .write(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
        .unwrap();
    assert_eq!(engine.unsynced_ops(), 1);
    store.shutdown().unwrap();
    assert_eq!(engine.unsynced_ops(), 0, "shutdown must fsync");
    store.shutdown().unwrap();

    assert!(matches!(
        store.write(&put(Keyspace::Data, b"x".to_vec(), b"v".to_vec())),
        Err(StorageError::Closed)
    ));
    assert!(matches!(
        store
            .commit(&put(Keyspace::Data, b"x".to_vec(), b"v".to_vec()))
            .await,
        Err(StorageError::Closed)
    ));
    assert_eq!(
        store.get(Keyspace::Data, b"k").unwrap(),
        Some(b"v".to_vec())
    );
}

#[tokio::test]
async fn dropping_the_last_handle_shuts_down() {
    for opts in [sync_opts(), periodic_opts(Duration::from_secs(3600))] {
        let (engine, store) = mem_store(opts);
        let clone = store.clone();
        store
            .write(&put(Keyspace::Data, b"k".to_vec(), b"v".to_vec()))
            .unwrap();
        drop(store);
        assert_eq!(engine.unsynced_ops(), 1, "a clone is still alive");
        drop(clone);
        assert_eq!(engine.unsynced_ops(), 0, "last drop must fsync");
    }
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_written() {
    let (engine, store) = mem_store(sync_opts());
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Data, b"ok".to_vec(), b"v".to_vec());
    batch.put(Keyspace::Data, Vec::new(), b"v".to_vec());
    assert!(matches!(
        store.commit(&batch).await,
        Err(StorageError::InvalidInput(_))
    ));
    assert!(matches!(
        store.write(&batch),
        Err(StorageError::InvalidInput(_))
    ));
    assert_eq!(engine.get(Keyspace::Data, b"ok").unwrap(), None);
    assert_eq!(store.stats().writes, 0);
    // An empty batch is fine.
    store.commit(&WriteBatch::new()).await.unwrap();
}

#[test]
fn options_and_names() {
    let opts = StoreOptions::default();
    assert_eq!(opts.durability, Durability::Sync);
    assert_eq!(opts.cache_bytes, 64 << 20);
    assert_eq!(opts.min_free_bytes, 64 << 20);
    assert_eq!(Durability::Sync.name(), "sync");
    let store = Store::in_memory(opts);
    assert_eq!(store.durability(), Durability::Sync);
    assert_eq!(store.stats().disk_bytes, 0);
    assert!(!store.stats().poisoned);
}

/// `for_each` pages through a range larger than one page, in key order, and stops at `end`.
#[tokio::test]
async fn for_each_visits_every_entry_of_a_range_across_pages() {
    let (_engine, store) = mem_store(periodic_opts(Duration::from_millis(10)));
    let mut batch = WriteBatch::new();
    for i in 0..10_000u32 {
        batch.put(Keyspace::Data, i.to_be_bytes().to_vec(), b"v".to_vec());
    }
    store.commit(&batch).await.unwrap();
    let mut seen = Vec::new();
    store
        .for_each(Keyspace::Data, &[], None, |k, _| seen.push(k))
        .unwrap();
    assert_eq!(seen.len(), 10_000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in key order");
    let mut bounded = 0;
    store
        .for_each(
            Keyspace::Data,
            &100u32.to_be_bytes(),
            Some(&5_000u32.to_be_bytes()),
            |_, _| bounded += 1,
        )
        .unwrap();
    assert_eq!(bounded, 4_900);
}
