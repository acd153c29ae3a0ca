//! Deterministic simulation of whole ringkv clusters.
//!
//! DESIGN.md asks for a sans-IO core "driven by a deterministic simulator". This crate is that
//! simulator: several nodes run the core's real state machines (gossip and failure detection,
//! the ring, sloppy-quorum plans, the put and get coordinators with read repair, sibling sets,
//! hinted-handoff rules, Merkle trees and anti-entropy sessions) in one thread, over a
//! simulated network, clock and disk, with every random choice drawn from one seed. A failing
//! seed prints itself and reproduces the run exactly.
//!
//! Half the seeds (drawn from the seed) run today's single-data-center cluster: 5 nodes, one
//! rack, N = 3, W = 2, R = 2. The other half run two data centers of three nodes each (racks
//! drawn) with per-data-center replication `{dc1: 2, dc2: 1}` or `{dc1: 2, dc2: 2}`
//! (`Ring::build_with`); their clients sit in a data center, reach only its nodes, and ask per
//! request for the plain count, `local_quorum` or `each_quorum`, which the nodes resolve
//! through the core's `Plan::write_quorum` / `read_quorum` / `read_targets` as the server does.
//!
//! - [`config`]: the run's shape, drawn from the seed (topology, N/W/R, keys, clients, clock
//!   skew).
//! - [`net`]: cuts per link (partitions into halves, one node isolated, one-way, a whole data
//!   center cut off), loss, duplication, random delays (so reordering), and stragglers.
//! - [`node`]: one node's shell over the core, following the server's rules (durable before
//!   ack, hints, coordinator hints for replicas a write did not reach, forwards to the local
//!   data center first, handoff, anti-entropy pacing); crashes lose what was not flushed.
//! - [`workload`]: concurrent clients doing reads, read-modify-writes, blind writes, deletes,
//!   and reads of what they just wrote.
//! - [`checker`]: the history and the properties: no acknowledged write lost at any level,
//!   nothing superseded coming back, reads whose quorum must intersect an earlier acknowledged
//!   write's see it when nothing fails (R + W > N for counts; local majorities for the
//!   data-center levels), and in data-center cuts, `local_quorum` available where its data
//!   center is whole and `each_quorum` never acknowledged.
//! - [`sim`]: the run itself: phase A with no fault, phase B with faults, heal, and the wait
//!   for convergence within a bound.
//!
//! What this does not cover, and the real-process tests do (`tests/partitions.rs`,
//! `tests/durability.rs`): the tokio shell itself, the peer transport's framing and
//! authentication, and the storage engine. Those are the parts the simulator replaces. The
//! transport's failures are modelled as silence only: a replicate or forward to a dead or cut
//! off node waits for its deadline (the server's fails fast on "connection refused"), and a
//! cut message is gone for good (TCP would retransmit it once the path heals).

pub mod checker;
pub mod config;
pub mod ctx;
pub mod event;
pub mod net;
pub mod node;
pub mod sim;
pub mod workload;

pub use config::SimConfig;
pub use sim::{run, Failure, Report, Simulation};
