//! The per-write CPU work of the version module, without storage or network: what every SET and
//! every replication pays (decode the stored set, apply the write, encode it back), plus the merge
//! replicas and read repair run. Run: `cargo bench -p ringkv-core --bench version`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use ringkv_core::{NodeId, SiblingSet};
use std::hint::black_box;

fn set_with_history(nodes: usize) -> SiblingSet {
    let mut set = SiblingSet::new();
    for i in 0..nodes {
        let node = NodeId::new(format!("node-{i}")).unwrap();
        let ctx = set.context();
        set.write(&node, &ctx, Some(Bytes::from(vec![b'x'; 100])), i as u64);
    }
    set
}

fn bench(c: &mut Criterion) {
    let node = NodeId::new("node-0").unwrap();
    let set = set_with_history(3);
    let encoded = set.encode();
    c.bench_function("decode 3-entry set", |b| {
        b.iter(|| SiblingSet::decode(black_box(&encoded)).unwrap())
    });
    c.bench_function("encode 3-entry set", |b| {
        b.iter(|| black_box(&set).encode())
    });
    c.bench_function("blind overwrite (SET)", |b| {
        b.iter_batched(
            || set.clone(),
            |mut s| s.overwrite(&node, Some(Bytes::from_static(&[b'y'; 100])), 7),
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("decode + overwrite + encode (SET read-modify-write)", |b| {
        b.iter(|| {
            let mut s = SiblingSet::decode(black_box(&encoded)).unwrap();
            s.overwrite(&node, Some(Bytes::from_static(&[b'y'; 100])), 7);
            s.encode()
        })
    });
    let mut other = set.clone();
    other.write(
        &NodeId::new("node-9").unwrap(),
        &set.context(),
        Some(Bytes::from_static(b"z")),
        9,
    );
    c.bench_function("merge diverged replicas", |b| {
        b.iter_batched(
            || set.clone(),
            |mut s| s.merge(black_box(&other)),
            criterion::BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
