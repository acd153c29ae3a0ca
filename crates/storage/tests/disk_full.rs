//! Disk full (BAD-INPUT.md row 24) on a real filesystem: an 8 MiB tmpfs. The store must refuse
//! writes with `DiskFull` before acknowledging them and before fjall ever meets ENOSPC (which
//! would poison it), keep every acknowledged write readable, and accept writes again once space
//! frees. Needs root (mount); skipped loudly without it, and a failure when `CI=true`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ringkv_storage::{Durability, Keyspace, StorageError, Store, StoreOptions};

use common::{noise, put};

const MIB: u64 = 1 << 20;

/// A size-capped tmpfs, unmounted on drop (also when the test panics).
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = common::disk_tempdir();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs { path, _dir: dir })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach now, the kernel frees it when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn mount_or_skip(size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(size) {
        Ok(m) => Some(m),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true and the disk-full test cannot mount a tmpfs: {e}")
        }
        Err(e) => {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: disk-full test needs root to mount a tmpfs: {e}\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        cache_bytes: MIB,
        min_free_bytes: MIB,
    }
}

fn key(i: u32) -> String {
    format!("key-{i:04}")
}

fn value(i: u32) -> Vec<u8> {
    // Incompressible: fjall LZ4-compresses journal entries over 4 KiB.
    noise(u64::from(i), 32 * 1024)
}

#[tokio::test]
async fn disk_full_refuses_before_ack_and_recovers_when_space_frees() {
    // Declared first so it is dropped (unmounted) last, after the store has closed its files.
    let Some(mnt) = mount_or_skip("8m") else {
        return;
    };
    // Ballast we can delete later to free space.
    let ballast = mnt.path().join("ballast");
    std::fs::write(&ballast, noise(0, 2 * MIB as usize)).unwrap();

    let store_dir = mnt.path().join("node");
    let store = Store::open(&store_dir, opts()).unwrap();

    // Write until the store refuses. Every answer must be Ok or DiskFull: an I/O error or
    // Poisoned would mean fjall met ENOSPC first.
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..1000u32 {
        match store.commit(&put(Keyspace::Data, key(i), value(i))).await {
            Ok(()) => acked.push(i),
            Err(e @ StorageError::DiskFull { .. }) => {
                refused = Some(e);
                break;
            }
            Err(other) => panic!("write {i} failed with {other:?} instead of DiskFull"),
        }
    }
    let refused = refused.expect("8 MiB filled without a DiskFull refusal");
    assert!(acked.len() > 20, "refused too early: {} acked", acked.len());
    assert!(refused.to_string().starts_with("disk full: "), "{refused}");
    assert!(refused.is_retryable());
    println!(
        "{} writes of 32 KiB acknowledged, then: {refused}",
        acked.len()
    );

    // Still full: refused again, counted, not poisoned, nothing of it stored.
    let extra = acked.len() as u32 + 1;
    assert!(matches!(
        store.write(&put(Keyspace::Data, key(extra), value(extra))),
        Err(StorageError::DiskFull { .. })
    ));
    let stats = store.stats();
    assert!(stats.disk_full_refusals >= 2);
    assert!(!stats.poisoned);
    assert_eq!(
        store.get(Keyspace::Data, key(extra).as_bytes()).unwrap(),
        None
    );

    // Every acknowledged write reads back intact.
    for &i in &acked {
        assert_eq!(
            store.get(Keyspace::Data, key(i).as_bytes()).unwrap(),
            Some(value(i)),
            "acknowledged write {i} damaged"
        );
    }

    // Free space; after the guard's next sample (<= 100 ms) writes are accepted again.
    std::fs::remove_file(&ballast).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    store
        .commit(&put(Keyspace::Data, key(extra), value(extra)))
        .await
        .expect("write after space was freed");
    acked.push(extra);

    // And everything is there after a restart.
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(&store_dir, opts()).unwrap();
    for &i in &acked {
        assert_eq!(
            store.get(Keyspace::Data, key(i).as_bytes()).unwrap(),
            Some(value(i)),
            "acknowledged write {i} lost after restart"
        );
    }
    assert!(!store.stats().poisoned);
    store.shutdown().unwrap();
}

/// Why the guard exists, pinned down: without it fjall meets ENOSPC, fails that write, and
/// poisons itself (every later write `Poisoned`, flushes never finish) until a restart, which
/// recovers every acknowledged write. If a fjall upgrade changes this, this test says so.
#[tokio::test]
async fn without_the_guard_enospc_poisons_fjall_until_restart() {
    let Some(mnt) = mount_or_skip("4m") else {
        return;
    };
    let db_dir = mnt.path().join("db");
    let mut acked = Vec::new();
    {
        let engine = std::sync::Arc::new(ringkv_storage::FjallEngine::open(&db_dir, MIB).unwrap());
        // with_engine: no free-space guard.
        let store = Store::with_engine(engine.clone(), opts());
        let mut failure = None;
        for i in 0..1000u32 {
            match store.commit(&put(Keyspace::Data, key(i), value(i))).await {
                Ok(()) => acked.push(i),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure.expect("4 MiB filled without an error") {
            StorageError::Io(e) => assert_eq!(e.kind(), std::io::ErrorKind::StorageFull),
            other => panic!("expected ENOSPC, got {other:?}"),
        }
        assert!(
            store.stats().poisoned,
            "a failed journal write must poison at once"
        );
        assert!(matches!(
            store.write(&put(Keyspace::Data, "tiny", b"x".to_vec())),
            Err(StorageError::Poisoned)
        ));
        assert!(store.stats().poisoned);
        // Reads still work; a flush fails instead of hanging.
        assert_eq!(
            store.get(Keyspace::Data, key(0).as_bytes()).unwrap(),
            Some(value(0))
        );
        assert!(engine.flush_memtables(Duration::from_secs(1)).is_err());
        assert!(matches!(store.shutdown(), Err(StorageError::Poisoned)));
    }
    // A restart recovers, even before space frees: the failed batch was never acknowledged.
    let engine = ringkv_storage::FjallEngine::open(&db_dir, MIB).unwrap();
    let store = Store::with_engine(std::sync::Arc::new(engine), opts());
    for &i in &acked {
        assert_eq!(
            store.get(Keyspace::Data, key(i).as_bytes()).unwrap(),
            Some(value(i)),
            "acknowledged write {i} lost"
        );
    }
    store
        .commit(&put(Keyspace::Data, "tiny", b"x".to_vec()))
        .await
        .unwrap();
    store.shutdown().unwrap();
}
