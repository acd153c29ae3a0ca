//! One conformance suite for every [`Engine`]: the in-memory engine and the fjall adapter must
//! behave the same on everything the rest of ringkv relies on. Each case is a function over a
//! [`Harness`]; the macro at the bottom runs each one against both engines.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ringkv_storage::{Engine, FjallEngine, Keyspace, MemEngine, StorageError, WriteBatch};

use common::{disk_tempdir, put};

/// Opens an engine and can restart it the way a process restart would.
trait Harness {
    fn engine(&self) -> Arc<dyn Engine>;
    /// A restart: the engine comes back with (at least) everything that was synced.
    fn restart(&mut self);
}

struct MemHarness(Arc<MemEngine>);

impl MemHarness {
    fn new() -> Self {
        MemHarness(Arc::new(MemEngine::new()))
    }
}

impl Harness for MemHarness {
    fn engine(&self) -> Arc<dyn Engine> {
        self.0.clone()
    }
    fn restart(&mut self) {
        // The pessimistic restart: everything unsynced is gone.
        self.0.crash();
    }
}

struct FjallHarness {
    dir: tempfile::TempDir,
    engine: Option<Arc<FjallEngine>>,
}

impl FjallHarness {
    fn new() -> Self {
        let dir = disk_tempdir();
        let engine = FjallEngine::open(dir.path(), 8 << 20).unwrap();
        FjallHarness {
            dir,
            engine: Some(Arc::new(engine)),
        }
    }
}

impl Harness for FjallHarness {
    fn engine(&self) -> Arc<dyn Engine> {
        self.engine.clone().unwrap()
    }
    fn restart(&mut self) {
        let engine = self.engine.take().unwrap();
        assert_eq!(Arc::strong_count(&engine), 1, "test still holds the engine");
        drop(engine);
        self.engine = Some(Arc::new(
            FjallEngine::open(self.dir.path(), 8 << 20).unwrap(),
        ));
    }
}

fn get(e: &dyn Engine, ks: Keyspace, key: &[u8]) -> Option<Vec<u8>> {
    e.get(ks, key).unwrap()
}

fn get_put_delete(h: &mut dyn Harness) {
    let e = h.engine();
    assert_eq!(get(&*e, Keyspace::Data, b"k"), None);

    e.write(&put(Keyspace::Data, b"k".to_vec(), b"v1".to_vec()))
        .unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"k"), Some(b"v1".to_vec()));

    e.write(&put(Keyspace::Data, b"k".to_vec(), b"v2".to_vec()))
        .unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"k"), Some(b"v2".to_vec()));

    // Keyspaces are separate namespaces.
    assert_eq!(get(&*e, Keyspace::Hints, b"k"), None);
    e.write(&put(Keyspace::Hints, b"k".to_vec(), b"hint".to_vec()))
        .unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"k"), Some(b"v2".to_vec()));
    assert_eq!(get(&*e, Keyspace::Hints, b"k"), Some(b"hint".to_vec()));

    let mut del = WriteBatch::new();
    del.delete(Keyspace::Data, b"k".to_vec());
    e.write(&del).unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"k"), None);
    assert_eq!(get(&*e, Keyspace::Hints, b"k"), Some(b"hint".to_vec()));

    // Deleting what is absent is fine.
    e.write(&del).unwrap();

    // Keys and values are bytes: NUL, 0xff, an empty value.
    e.write(&put(Keyspace::Meta, vec![0u8, 0xff, 0], Vec::new()))
        .unwrap();
    assert_eq!(get(&*e, Keyspace::Meta, &[0, 0xff, 0]), Some(Vec::new()));
    assert_eq!(get(&*e, Keyspace::Meta, &[0, 0xff]), None);

    // An empty batch is a no-op, not an error.
    e.write(&WriteBatch::new()).unwrap();
}

fn later_ops_in_a_batch_win(h: &mut dyn Harness) {
    let e = h.engine();
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Data, b"a".to_vec(), b"1".to_vec());
    batch.put(Keyspace::Data, b"a".to_vec(), b"2".to_vec());
    batch.put(Keyspace::Data, b"b".to_vec(), b"1".to_vec());
    batch.delete(Keyspace::Data, b"b".to_vec());
    e.write(&batch).unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"a"), Some(b"2".to_vec()));
    assert_eq!(get(&*e, Keyspace::Data, b"b"), None);
}

fn batch_spans_keyspaces(h: &mut dyn Harness) {
    let e = h.engine();
    e.write(&put(Keyspace::Hints, b"old".to_vec(), b"x".to_vec()))
        .unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Data, b"d".to_vec(), b"1".to_vec());
    batch.put(Keyspace::Hints, b"h".to_vec(), b"2".to_vec());
    batch.put(Keyspace::Meta, b"m".to_vec(), b"3".to_vec());
    batch.delete(Keyspace::Hints, b"old".to_vec());
    assert_eq!(batch.len(), 4);
    e.write(&batch).unwrap();
    assert_eq!(get(&*e, Keyspace::Data, b"d"), Some(b"1".to_vec()));
    assert_eq!(get(&*e, Keyspace::Hints, b"h"), Some(b"2".to_vec()));
    assert_eq!(get(&*e, Keyspace::Meta, b"m"), Some(b"3".to_vec()));
    assert_eq!(get(&*e, Keyspace::Hints, b"old"), None);
}

/// Readers never see half a batch. A writer keeps writing generation `n` to the same key in Hints
/// and then Data (in that order, in one batch), and to ten keys of Meta. A reader that reads Hints
/// before Data must find Data >= Hints (a torn batch would show Hints = n, Data = n - 1), and a
/// scan of Meta must find all ten keys at one generation.
fn readers_never_see_half_a_batch(h: &mut dyn Harness) {
    let e = h.engine();
    let write_gen = |n: u64| {
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Hints, b"x".to_vec(), n.to_be_bytes().to_vec());
        batch.put(Keyspace::Data, b"x".to_vec(), n.to_be_bytes().to_vec());
        for i in 0..10u8 {
            batch.put(Keyspace::Meta, vec![b'm', i], n.to_be_bytes().to_vec());
        }
        batch
    };
    e.write(&write_gen(0)).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 1u64;
            while !stop.load(Ordering::Relaxed) && n < 1_000 {
                e.write(&write_gen(n)).unwrap();
                n += 1;
            }
        })
    };
    let as_gen = |v: Vec<u8>| u64::from_be_bytes(v.try_into().unwrap());
    for _ in 0..300 {
        let hint = as_gen(get(&*e, Keyspace::Hints, b"x").unwrap());
        let data = as_gen(get(&*e, Keyspace::Data, b"x").unwrap());
        assert!(data >= hint, "torn batch: hints at {hint}, data at {data}");

        let rows = e.scan(Keyspace::Meta, b"m", None, 100).unwrap();
        assert_eq!(rows.len(), 10);
        let first = &rows[0].1;
        assert!(
            rows.iter().all(|(_, v)| v == first),
            "scan saw a torn batch: {rows:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

fn scan_ranges_and_limits(h: &mut dyn Harness) {
    let e = h.engine();
    let mut batch = WriteBatch::new();
    for i in 0..100u32 {
        let key = format!("k{i:02}");
        batch.put(Keyspace::Data, key.clone(), format!("v{i}"));
    }
    batch.put(Keyspace::Hints, b"k50".to_vec(), b"other keyspace".to_vec());
    e.write(&batch).unwrap();
    let mut del = WriteBatch::new();
    del.delete(Keyspace::Data, b"k15".to_vec());
    e.write(&del).unwrap();

    let keys = |rows: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<String> {
        rows.into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect()
    };

    // [k10, k20): ten keys minus the deleted one, in order, with their values.
    let rows = e.scan(Keyspace::Data, b"k10", Some(b"k20"), 1000).unwrap();
    assert_eq!(rows[0], (b"k10".to_vec(), b"v10".to_vec()));
    assert_eq!(
        keys(rows),
        ["k10", "k11", "k12", "k13", "k14", "k16", "k17", "k18", "k19"]
    );

    // The limit cuts from the start.
    let rows = e.scan(Keyspace::Data, b"k10", Some(b"k20"), 3).unwrap();
    assert_eq!(keys(rows), ["k10", "k11", "k12"]);

    // Start between keys; end None runs to the end.
    let rows = e.scan(Keyspace::Data, b"k955", None, 1000).unwrap();
    assert_eq!(keys(rows), ["k96", "k97", "k98", "k99"]);

    // Empty start is the beginning of the keyspace.
    let rows = e.scan(Keyspace::Data, b"", None, 1000).unwrap();
    assert_eq!(rows.len(), 99);
    assert!(rows.windows(2).all(|w| w[0].0 < w[1].0), "not key-ordered");

    // Degenerate ranges are empty, not errors.
    assert!(e
        .scan(Keyspace::Data, b"k10", Some(b"k10"), 10)
        .unwrap()
        .is_empty());
    assert!(e
        .scan(Keyspace::Data, b"k20", Some(b"k10"), 10)
        .unwrap()
        .is_empty());
    assert!(e.scan(Keyspace::Data, b"k10", None, 0).unwrap().is_empty());
    assert!(e.scan(Keyspace::Data, b"z", None, 10).unwrap().is_empty());

    // Other keyspaces are not mixed in.
    let rows = e.scan(Keyspace::Hints, b"", None, 1000).unwrap();
    assert_eq!(rows, [(b"k50".to_vec(), b"other keyspace".to_vec())]);
    assert!(e.scan(Keyspace::Meta, b"", None, 1000).unwrap().is_empty());
}

fn restart_keeps_synced_data(h: &mut dyn Harness) {
    {
        let e = h.engine();
        let mut batch = WriteBatch::new();
        batch.put(Keyspace::Data, b"a".to_vec(), b"1".to_vec());
        batch.put(Keyspace::Hints, b"b".to_vec(), b"2".to_vec());
        batch.put(Keyspace::Meta, b"gone".to_vec(), b"x".to_vec());
        e.write(&batch).unwrap();
        let mut del = WriteBatch::new();
        del.delete(Keyspace::Meta, b"gone".to_vec());
        e.write(&del).unwrap();
        e.sync().unwrap();
    }
    h.restart();
    let e = h.engine();
    assert_eq!(get(&*e, Keyspace::Data, b"a"), Some(b"1".to_vec()));
    assert_eq!(get(&*e, Keyspace::Hints, b"b"), Some(b"2".to_vec()));
    assert_eq!(get(&*e, Keyspace::Meta, b"gone"), None);
    // And it keeps working after the restart.
    e.write(&put(Keyspace::Data, b"c".to_vec(), b"3".to_vec()))
        .unwrap();
    assert_eq!(e.scan(Keyspace::Data, b"", None, 10).unwrap().len(), 2);
}

fn bad_keys_are_refused_and_nothing_of_the_batch_applies(h: &mut dyn Harness) {
    let e = h.engine();
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Data, b"good".to_vec(), b"v".to_vec());
    batch.put(Keyspace::Data, Vec::new(), b"v".to_vec());
    assert!(matches!(
        e.write(&batch),
        Err(StorageError::InvalidInput(_))
    ));
    assert_eq!(get(&*e, Keyspace::Data, b"good"), None);

    let mut long = WriteBatch::new();
    long.put(
        Keyspace::Data,
        vec![b'k'; ringkv_storage::MAX_KEY_LEN + 1],
        b"v".to_vec(),
    );
    assert!(matches!(e.write(&long), Err(StorageError::InvalidInput(_))));
    assert!(matches!(
        e.get(Keyspace::Data, b""),
        Err(StorageError::InvalidInput(_))
    ));

    // The longest allowed key works.
    let max_key = vec![b'k'; ringkv_storage::MAX_KEY_LEN];
    e.write(&put(Keyspace::Data, max_key.clone(), b"v".to_vec()))
        .unwrap();
    assert_eq!(get(&*e, Keyspace::Data, &max_key), Some(b"v".to_vec()));
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $case() { super::$case(&mut super::MemHarness::new()) } )*
        }
        mod fjall {
            $( #[test] fn $case() { super::$case(&mut super::FjallHarness::new()) } )*
        }
    };
}

conformance!(
    get_put_delete,
    later_ops_in_a_batch_win,
    batch_spans_keyspaces,
    readers_never_see_half_a_batch,
    scan_ranges_and_limits,
    restart_keeps_synced_data,
    bad_keys_are_refused_and_nothing_of_the_batch_applies,
);

/// Engine-specific: the fjall adapter reports real disk use; memory reports none.
#[test]
fn disk_bytes_reflect_the_engine() {
    let mem = MemEngine::new();
    mem.write(&put(Keyspace::Data, b"k".to_vec(), vec![0u8; 10_000]))
        .unwrap();
    assert_eq!(mem.disk_bytes(), 0);

    let h = FjallHarness::new();
    let e = h.engine();
    e.write(&put(
        Keyspace::Data,
        b"k".to_vec(),
        common::noise(1, 200_000),
    ))
    .unwrap();
    e.sync().unwrap();
    let bytes = e.disk_bytes();
    // At least the value itself; far less than the 64 MiB journal preallocation.
    assert!(bytes >= 200_000, "disk_bytes = {bytes}");
    assert!(bytes < 32 << 20, "disk_bytes = {bytes} counts sparse space");
}

/// A restart of fjall without a sync still keeps a write that reached the journal (the OS has
/// it); only a power loss could take it. MemEngine is stricter (crash drops it); the Store never
/// relies on either without a sync.
#[test]
fn mem_crash_drops_unsynced_writes() {
    let mut h = MemHarness::new();
    let e = h.engine();
    e.write(&put(Keyspace::Data, b"synced".to_vec(), b"1".to_vec()))
        .unwrap();
    e.sync().unwrap();
    let mut batch = WriteBatch::new();
    batch.put(Keyspace::Data, b"unsynced".to_vec(), b"2".to_vec());
    batch.put(Keyspace::Meta, b"unsynced".to_vec(), b"2".to_vec());
    batch.put(Keyspace::Data, b"synced".to_vec(), b"overwritten".to_vec());
    e.write(&batch).unwrap();
    h.restart();
    let e = h.engine();
    assert_eq!(get(&*e, Keyspace::Data, b"synced"), Some(b"1".to_vec()));
    assert_eq!(get(&*e, Keyspace::Data, b"unsynced"), None);
    assert_eq!(get(&*e, Keyspace::Meta, b"unsynced"), None);
}
