//! Property tests for the laws the version module promises: sibling-set merge is commutative,
//! associative and idempotent, and a write never drops a version its context did not cover.

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_core::{Context, Dot, NodeId, SiblingSet};
use std::collections::BTreeSet;

/// One step of a random history on a few replicas of one key.
#[derive(Debug, Clone)]
enum Step {
    /// A client reads replica `read_from`, then writes through `through` (maybe a tombstone).
    Write {
        read_from: usize,
        through: usize,
        blind: bool,
        delete: bool,
    },
    /// Replica `to` receives replica `from`'s state (replication, read repair, anti-entropy).
    Sync { from: usize, to: usize },
}

const REPLICAS: usize = 3;

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (
            0..REPLICAS,
            0..REPLICAS,
            any::<bool>(),
            prop::bool::weighted(0.15)
        )
            .prop_map(|(read_from, through, blind, delete)| Step::Write {
                read_from,
                through,
                blind,
                delete
            }),
        (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap()
}

/// Runs a history and returns the replicas' sets.
fn run(steps: &[Step]) -> Vec<SiblingSet> {
    let mut replicas = vec![SiblingSet::new(); REPLICAS];
    for (t, s) in steps.iter().enumerate() {
        match *s {
            Step::Write {
                read_from,
                through,
                blind,
                delete,
            } => {
                let ctx = if blind {
                    Context::empty()
                } else {
                    replicas[read_from].context()
                };
                let value = (!delete).then(|| Bytes::from(format!("v{t}")));
                replicas[through].write(&node(through), &ctx, value, t as u64);
            }
            Step::Sync { from, to } => {
                let src = replicas[from].clone();
                replicas[to].merge(&src);
            }
        }
    }
    replicas
}

fn merged(a: &SiblingSet, b: &SiblingSet) -> SiblingSet {
    let mut m = a.clone();
    m.merge(b);
    m
}

proptest! {
    #[test]
    fn merge_is_commutative(steps in prop::collection::vec(step(), 0..40)) {
        let r = run(&steps);
        prop_assert_eq!(merged(&r[0], &r[1]), merged(&r[1], &r[0]));
    }

    #[test]
    fn merge_is_associative(steps in prop::collection::vec(step(), 0..40)) {
        let r = run(&steps);
        prop_assert_eq!(
            merged(&merged(&r[0], &r[1]), &r[2]),
            merged(&r[0], &merged(&r[1], &r[2]))
        );
    }

    #[test]
    fn merge_is_idempotent(steps in prop::collection::vec(step(), 0..40)) {
        let r = run(&steps);
        prop_assert_eq!(merged(&r[0], &r[0]), r[0].clone());
        let m = merged(&r[0], &r[1]);
        prop_assert_eq!(merged(&m, &r[1]), m.clone());
    }

    /// A write keeps every version whose dot the context does not cover, and the new version.
    #[test]
    fn write_drops_only_what_the_context_covers(
        steps in prop::collection::vec(step(), 0..40),
        read_from in 0..REPLICAS,
        through in 0..REPLICAS,
    ) {
        let r = run(&steps);
        let ctx = r[read_from].context();
        let mut target = r[through].clone();
        let before: Vec<Dot> = target.versions().iter().map(|v| v.dot.clone()).collect();
        let dot = target.write(&node(through), &ctx, Some(Bytes::from("new")), 1000);
        let after: BTreeSet<Dot> = target.versions().iter().map(|v| v.dot.clone()).collect();
        prop_assert!(after.contains(&dot));
        for d in before {
            let covered = ctx.clock().get(&d.node) >= d.counter;
            prop_assert_eq!(after.contains(&d), !covered, "dot {:?} covered={}", d, covered);
        }
    }

    /// After every replica has synced with every other, all hold the same set, and every version
    /// written survives unless a later write's context covered it.
    #[test]
    fn full_sync_converges(steps in prop::collection::vec(step(), 0..40)) {
        let mut r = run(&steps);
        for _ in 0..2 {
            for from in 0..REPLICAS {
                for to in 0..REPLICAS {
                    let src = r[from].clone();
                    r[to].merge(&src);
                }
            }
        }
        prop_assert_eq!(&r[0], &r[1]);
        prop_assert_eq!(&r[1], &r[2]);
    }

    #[test]
    fn encoding_round_trips(steps in prop::collection::vec(step(), 0..30)) {
        for set in run(&steps) {
            prop_assert_eq!(SiblingSet::decode(&set.encode()).unwrap(), set.clone());
            let ctx = set.context();
            prop_assert_eq!(Context::decode(&ctx.encode()).unwrap(), ctx);
        }
    }

    /// A blind overwrite is a write with the set's own context.
    #[test]
    fn overwrite_is_write_with_own_context(
        steps in prop::collection::vec(step(), 0..40),
        at in 0..REPLICAS,
    ) {
        let r = run(&steps);
        let mut a = r[at].clone();
        let mut b = r[at].clone();
        let ctx = b.context();
        let da = a.overwrite(&node(at), Some(Bytes::from("x")), 999);
        let db = b.write(&node(at), &ctx, Some(Bytes::from("x")), 999);
        prop_assert_eq!(da, db);
        prop_assert_eq!(a, b);
    }

    /// Arbitrary text never panics the context decoder.
    #[test]
    fn context_decode_never_panics(s in ".{0,200}") {
        let _ = Context::decode(&s);
    }

    #[test]
    fn sibling_decode_never_panics(b in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = SiblingSet::decode(&b);
    }
}
