//! ringkv's storage: one embedded LSM engine per node behind a small trait, with the policies a
//! Dynamo-style replica needs on top (DESIGN.md, "Storage: write path and read path").
//!
//! Layout, bottom up:
//! - [`engine`]: the [`Engine`] trait (bytes in, bytes out), [`Keyspace`], [`WriteBatch`].
//! - [`memory`]: [`MemEngine`], in memory, with `crash()` (drops unsynced writes) and
//!   `corrupt()` (bit rot), for tests and the deterministic simulation.
//! - [`fjall_engine`]: [`FjallEngine`], the production engine; the only module importing fjall.
//! - `record`: the `[crc32][format][payload]` framing of every stored value.
//! - `group_commit`: the syncer thread (group commit in `sync` mode, a timer in `periodic`).
//! - `free_space`: refuses writes before the disk fills (fjall stops for good on ENOSPC).
//! - [`store`]: [`Store`], the handle the server uses, tying the above together.
//!
//! Guarantees the rest of ringkv builds on:
//! - A batch is atomic across keyspaces (visible whole or not at all, survives a crash whole or
//!   not at all).
//! - `Store::commit` returns only after the batch is durable (sync mode) or applied (periodic
//!   mode, fsynced within one interval); which one is in the config and in `INFO`.
//! - A value whose checksum fails is never returned: `get` errs `Corrupt`, `scan` skips it; both
//!   log and count it.
//! - A refused write (`DiskFull`, `InvalidInput`, `Closed`, `Poisoned`) wrote nothing.
//! - A failed fsync (or journal write) poisons the store: fail-stop, restart the node.
//!
//! IMPLEMENTATION CAVEATS: no snapshot API yet (each scan page reads one consistent engine
//! snapshot, successive pages do not); fjall's journal recovery drops a torn tail silently but
//! refuses to open on a batch checksum failure (details in [`fjall_engine`]); tickets and
//! counters reset on restart; `Sync` mode runs a real thread, so a deterministic simulation
//! should drive [`MemEngine`] through the [`Engine`] trait (or `Periodic` mode plus explicit
//! `MemEngine::sync`) rather than through a `Sync`-mode [`Store`].

pub mod engine;
mod error;
pub mod fjall_engine;
mod free_space;
mod group_commit;
pub mod memory;
mod record;
pub mod store;

pub use engine::{BatchOp, Engine, KeyValue, Keyspace, WriteBatch, MAX_KEY_LEN};
pub use error::StorageError;
pub use fjall_engine::FjallEngine;
pub use group_commit::{Durability, WriteTicket};
pub use memory::MemEngine;
pub use store::{Store, StoreOptions, StoreStats, ENGINE_SUBDIR};
