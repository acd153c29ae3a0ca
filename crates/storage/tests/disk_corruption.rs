//! Damage on disk under the real engine: a flipped bit in a sorted table, a torn or flipped tail
//! of the journal. Whatever fjall's own checks catch and ours catch, a damaged value is never
//! served as if it were good.

mod common;

use std::path::Path;
use std::sync::Arc;

use ringkv_storage::{Durability, FjallEngine, Keyspace, StorageError, Store, StoreOptions};

use common::{disk_tempdir, files_under, find, noise, put};

fn opts() -> StoreOptions {
    StoreOptions {
        durability: Durability::Sync,
        cache_bytes: 1 << 20,
        min_free_bytes: 0,
    }
}

/// Flips one bit at the middle of the first occurrence of `needle` in any file under `dir` that
/// `pick` accepts. Returns how many files were damaged.
fn flip_in_files(dir: &Path, needle: &[u8], pick: impl Fn(&Path) -> bool) -> usize {
    let mut damaged = 0;
    for path in files_under(dir).into_iter().filter(|p| pick(p)) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = find(&bytes, needle) {
            bytes[at + needle.len() / 2] ^= 0x10;
            std::fs::write(&path, &bytes).unwrap();
            damaged += 1;
        }
    }
    damaged
}

fn is_journal(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "jnl")
}

#[tokio::test]
async fn a_bit_flip_in_a_sorted_table_is_never_served() {
    let dir = disk_tempdir();
    let victim = noise(42, 300);
    {
        let engine = Arc::new(FjallEngine::open(dir.path(), 1 << 20).unwrap());
        let store = Store::with_engine(engine.clone(), opts());
        for i in 0..50u32 {
            store
                .commit(&put(
                    Keyspace::Data,
                    format!("k{i:02}"),
                    noise(u64::from(i), 50),
                ))
                .await
                .unwrap();
        }
        store
            .commit(&put(Keyspace::Data, "victim", victim.clone()))
            .await
            .unwrap();
        // Into a sorted table, out of the journal's reach.
        engine
            .flush_memtables(std::time::Duration::from_secs(10))
            .unwrap();
        store.shutdown().unwrap();
    }
    let damaged = flip_in_files(dir.path(), &victim, |p| !is_journal(p));
    assert_eq!(damaged, 1, "expected the value in exactly one table file");

    let store = Store::with_engine(
        Arc::new(FjallEngine::open(dir.path(), 1 << 20).unwrap()),
        opts(),
    );
    match store.get(Keyspace::Data, b"victim") {
        Err(StorageError::Corrupt { keyspace, .. }) => assert_eq!(keyspace, "data"),
        Ok(Some(v)) if v == victim => panic!("the damaged copy should not be readable intact"),
        other => panic!("damaged value served or unexpected answer: {other:?}"),
    }
    assert!(store.stats().corrupt_reads >= 1);
}

/// Writes ten batches and a last one, shuts down, then damages the last batch in the journal
/// with `damage`. Returns the dir and the last batch's value.
async fn journal_with_damaged_tail(damage: impl Fn(&mut [u8], usize)) -> tempfile::TempDir {
    let dir = disk_tempdir();
    let last = noise(7, 200);
    {
        let store = Store::open(dir.path(), opts()).unwrap();
        for i in 0..10u32 {
            store
                .commit(&put(
                    Keyspace::Data,
                    format!("k{i}"),
                    noise(u64::from(i), 64),
                ))
                .await
                .unwrap();
        }
        store
            .commit(&put(Keyspace::Data, "last", last.clone()))
            .await
            .unwrap();
        store.shutdown().unwrap();
    }
    let mut damaged = 0;
    for path in files_under(dir.path())
        .into_iter()
        .filter(|p| is_journal(p))
    {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = find(&bytes, &last) {
            damage(&mut bytes, at);
            std::fs::write(&path, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1, "value not found in exactly one journal");
    dir
}

/// A torn last write (its second half never reached the disk and reads back as the journal's
/// preallocated zeros): the batch is dropped whole, everything before it is intact.
#[tokio::test]
async fn a_torn_journal_tail_loses_only_the_torn_batch() {
    let dir = journal_with_damaged_tail(|bytes, at| {
        bytes[at + 100..].iter_mut().for_each(|b| *b = 0);
    })
    .await;

    let store = Store::open(dir.path(), opts()).unwrap();
    for i in 0..10u32 {
        assert_eq!(
            store
                .get(Keyspace::Data, format!("k{i}").as_bytes())
                .unwrap(),
            Some(noise(u64::from(i), 64)),
            "intact batch {i} lost"
        );
    }
    assert_eq!(store.get(Keyspace::Data, b"last").unwrap(), None);
    // Writable after recovery, and the new write survives another reopen.
    store
        .commit(&put(Keyspace::Data, "after", b"ok".to_vec()))
        .await
        .unwrap();
    store.shutdown().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(
        store.get(Keyspace::Data, b"after").unwrap(),
        Some(b"ok".to_vec())
    );
}

/// A flipped bit inside a journaled value: fjall 3.1 refuses to open the database (its batch
/// checksum fails) rather than serve or silently drop it. The store says so clearly.
#[tokio::test]
async fn a_bit_flip_in_the_journal_refuses_to_open() {
    let dir = journal_with_damaged_tail(|bytes, at| bytes[at + 100] ^= 0x01).await;
    match Store::open(dir.path(), opts()) {
        Err(StorageError::Corrupt { keyspace, detail }) => {
            assert_eq!(keyspace, "journal");
            assert!(detail.contains("checksum mismatch"), "{detail}");
        }
        Err(other) => panic!("expected Corrupt, got {other:?}"),
        Ok(store) => {
            // Had the engine opened it, the damaged value must still not be served.
            let got = store.get(Keyspace::Data, b"last");
            assert!(
                !matches!(got, Ok(Some(_))),
                "damaged journal value served: {got:?}"
            );
        }
    }
}
