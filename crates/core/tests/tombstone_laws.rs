//! Property tests for the tombstone purge rule (`ringkv_core::tombstone`): purging by the rule
//! never brings a deleted value back and never loses a live one, whatever writes, deletes,
//! replica syncs and purge steps interleave; and the three decisions keep their promises on
//! arbitrary sets.
//!
//! The history test runs every history twice, with purges and on a twin that never purges, and
//! compares what readers would see after every step. It finds a counterexample within a few
//! hundred cases if purging skips `all_hold` (a deleted value comes back) or if a replica
//! writes without `reserve_dots` after a purge (a new value is lost to a dot reused from the
//! purged history), also when it applies the floor only to keys it holds no record of (found in
//! CI: a replica that purged, then received another replica's newer version, reused a dot).

use bytes::Bytes;
use proptest::prelude::*;
use ringkv_core::tombstone::{all_hold, may_purge, purge_candidate, reserve_dots};
use ringkv_core::{Context, NodeId, SiblingSet, VersionVector};
use std::collections::BTreeSet;

const REPLICAS: usize = 3;
/// Grace period of the model, in its time units.
const GRACE: u64 = 3;

/// One step of a random history on the replicas of one key.
#[derive(Debug, Clone)]
enum Step {
    /// A client reads replica `read_from`, then writes through `through` (maybe a tombstone).
    Write {
        read_from: usize,
        through: usize,
        blind: bool,
        delete: bool,
    },
    /// Replica `to` merges replica `from`'s set (replication, read repair, anti-entropy,
    /// including anti-entropy re-sending a tombstone to a replica that purged it).
    Sync { from: usize, to: usize },
    /// Replica `from`'s purge worker: a candidate past grace that every replica holds becomes
    /// the pending purge (its clock).
    Check { from: usize },
    /// The pending purge reaches replica `to`, which applies `may_purge` (purges may arrive
    /// late, after other writes and syncs, or never).
    Apply { to: usize },
    /// Time passes.
    Tick(u64),
    /// Every replica merges every other (anti-entropy caught up everywhere).
    Heal,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..REPLICAS, 0..REPLICAS, any::<bool>(), prop::bool::weighted(0.5)).prop_map(
            |(read_from, through, blind, delete)| Step::Write {
                read_from,
                through,
                blind,
                delete
            }
        ),
        4 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Step::Sync { from, to }),
        2 => (0..REPLICAS).prop_map(|from| Step::Check { from }),
        3 => (0..REPLICAS).prop_map(|to| Step::Apply { to }),
        2 => (1..5u64).prop_map(Step::Tick),
        1 => Just(Step::Heal),
    ]
}

fn node(i: usize) -> NodeId {
    NodeId::new(format!("n{i}")).unwrap()
}

/// The values (tombstones left out) readers would see: each write's value is unique.
fn live_values(sets: &[SiblingSet]) -> BTreeSet<Bytes> {
    let mut all = SiblingSet::new();
    for set in sets {
        all.merge(set);
    }
    all.live().filter_map(|v| v.value.clone()).collect()
}

/// The replicas of one key. With `purging`, under the purge rule; without, the ideal twin that
/// keeps every tombstone forever, run over the same history as the oracle: purging must be
/// invisible to readers, so at every step what all replicas together hold has the same live
/// values in both (a value only the twin has was lost; one only the purging model has came
/// back). Values are compared, not dots: a dot reused after a purge would fool a dot oracle.
struct Model {
    purging: bool,
    replicas: Vec<SiblingSet>,
    /// Per replica: the largest counter of its own that a purged clock held (the write floor).
    floors: Vec<u64>,
    pending: Option<VersionVector>,
    now: u64,
    purges: usize,
}

impl Model {
    fn new(purging: bool) -> Model {
        Model {
            purging,
            replicas: vec![SiblingSet::new(); REPLICAS],
            floors: vec![0; REPLICAS],
            pending: None,
            now: 1,
            purges: 0,
        }
    }

    /// The write path of a replica, as `Replica::apply_write` does it: every write first
    /// reserves the dots under the replica's floor.
    fn write(&mut self, through: usize, context: Option<Context>, value: Option<Bytes>) {
        let me = node(through);
        let now = self.now;
        let set = &mut self.replicas[through];
        reserve_dots(set, &me, self.floors[through], now);
        match context {
            Some(ctx) => set.write(&me, &ctx, value, now),
            None => set.overwrite(&me, value, now),
        };
    }

    fn apply(&mut self, step: &Step, t: usize) {
        match *step {
            Step::Write {
                read_from,
                through,
                blind,
                delete,
            } => {
                let ctx = (!blind).then(|| self.replicas[read_from].context());
                let value = (!delete).then(|| Bytes::from(format!("v{t}")));
                self.write(through, ctx, value);
            }
            Step::Sync { from, to } => {
                let incoming = self.replicas[from].clone();
                self.replicas[to].merge(&incoming);
            }
            Step::Check { from } if self.purging => {
                let candidate = &self.replicas[from];
                let replies: Vec<Option<SiblingSet>> = self
                    .replicas
                    .iter()
                    .map(|s| (!s.versions().is_empty()).then(|| s.clone()))
                    .collect();
                if purge_candidate(candidate, self.now, GRACE) && all_hold(candidate, &replies) {
                    self.pending = Some(candidate.clock().clone());
                }
            }
            Step::Apply { to } if self.purging => {
                if let Some(clock) = &self.pending {
                    if may_purge(&self.replicas[to], clock) {
                        self.floors[to] = self.floors[to].max(clock.get(&node(to)));
                        self.replicas[to] = SiblingSet::new();
                        self.purges += 1;
                    }
                }
            }
            Step::Check { .. } | Step::Apply { .. } => {}
            Step::Tick(d) => self.now += d,
            Step::Heal => self.heal(),
        }
    }

    fn heal(&mut self) {
        for _ in 0..2 {
            for from in 0..REPLICAS {
                for to in 0..REPLICAS {
                    let incoming = self.replicas[from].clone();
                    self.replicas[to].merge(&incoming);
                }
            }
        }
    }
}

/// Runs a history on the purging model and on its never-purging twin, comparing what readers
/// see after every step and after a final heal.
fn check_history(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut real = Model::new(true);
    let mut ideal = Model::new(false);
    for (t, s) in steps.iter().enumerate() {
        real.apply(s, t);
        ideal.apply(s, t);
        prop_assert_eq!(
            live_values(&real.replicas),
            live_values(&ideal.replicas),
            "step {} ({:?}), after {} purges: readers see a different key than without purging",
            t,
            s,
            real.purges
        );
    }
    real.heal();
    ideal.heal();
    prop_assert_eq!(live_values(&real.replicas), live_values(&ideal.replicas));
    for i in 1..REPLICAS {
        prop_assert_eq!(
            live_values(&real.replicas[i..=i]),
            live_values(&real.replicas[..1]),
            "replicas converge"
        );
    }
    Ok(())
}

/// The history CI's proptest run found: replica 2 purges and takes a fresh write, replica 0
/// purges, receives replica 2's version, and coordinates a write over it; with the floor applied
/// only to keys without a record, that write reused the purged dot (n0, 1), and a client that had
/// read the old tombstone on replica 1 then superseded it unseen.
#[test]
fn a_replica_that_purged_and_then_received_a_newer_version_reuses_no_dot() {
    use Step::*;
    let write = |read_from, through, blind, delete| Write {
        read_from,
        through,
        blind,
        delete,
    };
    let steps = [
        write(0, 0, false, true),
        Heal,
        Tick(4),
        Check { from: 0 },
        Apply { to: 2 },
        write(0, 2, true, false),
        Apply { to: 0 },
        Sync { from: 2, to: 0 },
        write(0, 0, false, false),
        write(1, 0, false, false),
    ];
    check_history(&steps).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Purging by the rule is invisible to readers: no deleted value comes back, no live value
    /// is lost, whatever interleaves with the purge.
    #[test]
    fn purge_by_the_rule_never_resurrects_nor_loses(
        steps in prop::collection::vec(step(), 1..100)
    ) {
        check_history(&steps)?;
    }

    /// The three decisions on arbitrary sets: a candidate is a non-empty all-tombstone set
    /// whose every version is past grace; every holder of a purge is itself a candidate holder;
    /// a replica never purges a live value.
    #[test]
    fn decisions_keep_their_promises(
        writes in prop::collection::vec((0..REPLICAS, any::<bool>(), 0..1_000u64), 0..8),
        now in 0..2_000u64,
        grace in 0..1_000u64,
    ) {
        let mut set = SiblingSet::new();
        for (through, delete, ts) in &writes {
            let ctx = if *through == 0 { set.context() } else { Context::empty() };
            let value = (!delete).then(|| Bytes::from("v"));
            set.write(&node(*through), &ctx, value, *ts);
        }
        if purge_candidate(&set, now, grace) {
            prop_assert!(!set.versions().is_empty() && set.is_deleted());
            for v in set.versions() {
                // Every version, hence every hint last updated before any of them, is older
                // than grace: with grace > the hint window, such hints are all dropped.
                prop_assert!(now - v.timestamp_ms > grace);
            }
        }
        if may_purge(&set, set.clock()) {
            prop_assert!(set.is_deleted() && !set.versions().is_empty());
        }
        prop_assert!(!may_purge(&set, &VersionVector::new()) || set.clock().is_empty());
        let replies = vec![Some(set.clone()); REPLICAS];
        prop_assert_eq!(
            all_hold(&set, &replies),
            !set.versions().is_empty() && set.is_deleted()
        );
        let mut with_none = replies.clone();
        with_none[REPLICAS - 1] = None;
        prop_assert!(!all_hold(&set, &with_none));
    }
}
