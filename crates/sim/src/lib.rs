//! Deterministic simulation of whole ringkv clusters.
//!
//! DESIGN.md asks for a sans-IO core "driven by a deterministic simulator". This crate is that
//! simulator: several nodes run the core's real state machines (gossip and failure detection,
//! the ring, sloppy-quorum plans, the put and get coordinators with read repair, sibling sets,
//! hinted-handoff rules, Merkle trees and anti-entropy sessions) in one thread, over a
//! simulated network, clock and disk, with every random choice drawn from one seed. A failing
//! seed prints itself and reproduces the run exactly.
//!
//! - [`config`]: the run's shape, drawn from the seed (N/W/R, keys, clients, clock skew).
//! - [`net`]: cuts per link (partitions into halves, one node isolated, one-way), loss,
//!   duplication, and random delays (so reordering).
//! - [`node`]: one node's shell over the core, following the server's rules (durable before
//!   ack, hints, handoff, anti-entropy pacing); crashes lose what was not flushed.
//! - [`workload`]: concurrent clients doing reads, read-modify-writes, blind writes, deletes.
//! - [`checker`]: the history and the properties: no acknowledged write lost, nothing
//!   superseded coming back, R + W > N reads see the latest acknowledged write with no fault.
//! - [`sim`]: the run itself: phase A with no fault, phase B with faults, heal, and the wait
//!   for convergence within a bound.
//!
//! What this does not cover, and the real-process tests do (`tests/partitions.rs`,
//! `tests/durability.rs`): the tokio shell itself, the peer transport's framing and
//! authentication, and the storage engine. Those are the parts the simulator replaces.

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
