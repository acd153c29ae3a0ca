//! The one error type of the storage crate, grouped by what the caller should do about it.
//!
//! - `DiskFull`: nothing was written; retry once space frees (the store recovers by itself).
//! - `Corrupt`: this replica cannot serve the record; read it from another replica and let repair
//!   overwrite it. Never retry locally.
//! - `Poisoned`: a durability failure (fsync, or the engine's own fail-stop); nothing more will be
//!   acknowledged. Restart the node; the journal replay decides what survived.
//! - `Closed`: the store was shut down; the node is stopping.
//! - `InvalidInput`: a caller bug (empty or over-long key); fix the caller.
//! - `Io` / `Engine`: anything else from the engine, with its message.

/// Errors of [`crate::Store`] and of every [`crate::Engine`].
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StorageError {
    /// An I/O error from the engine that did not (yet) poison it.
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),

    /// The write was refused before it reached the engine because free disk space is below the
    /// configured headroom. Nothing was written. Retry once space frees.
    #[error(
        "disk full: {free_bytes} bytes free, a write needs at least {needed_bytes}; free some space"
    )]
    DiskFull {
        /// Free bytes the guard believed were available (last `statvfs`, minus writes since).
        free_bytes: u64,
        /// The headroom plus the size of the refused write.
        needed_bytes: u64,
    },

    /// A stored record failed its checksum (or the engine's own block checksum). The bytes are
    /// never returned.
    #[error("corrupt record in {keyspace}: {detail}")]
    Corrupt {
        /// Keyspace name (`data`, `hints`, `meta`), or `journal` when the commit log is damaged.
        keyspace: &'static str,
        /// What was wrong, and with which key (hex).
        detail: String,
    },

    /// Fail-stop: an fsync failed (or the engine poisoned itself after a failed write, flush or
    /// compaction). After a failed fsync the state of the page cache is unknown, so nothing more
    /// is acknowledged.
    #[error("storage is poisoned after a failed fsync or disk write; restart the node")]
    Poisoned,

    /// The store was shut down.
    #[error("storage is closed")]
    Closed,

    /// The caller passed something no engine can store (empty key, key over 65535 bytes).
    #[error("invalid storage input: {0}")]
    InvalidInput(String),

    /// Any other engine error, with the engine's message.
    #[error("storage engine error: {0}")]
    Engine(String),
}

impl StorageError {
    /// Worth retrying the same request later on this node.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}
