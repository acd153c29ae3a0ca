//! Errors a node returns to its APIs, grouped by what the caller should do about them. Each API
//! maps them to its own wire form (HTTP status, RESP `-ERR`) in one place.

use ringkv_core::{ConsistencyError, ContextError, LimitError};
use ringkv_storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Key or value outside the configured limits. Fix the request.
    #[error(transparent)]
    Limit(#[from] LimitError),
    /// The causal context could not be decoded. Fix the request (re-read the key).
    #[error(transparent)]
    InvalidContext(#[from] ContextError),
    /// A consistency level the cluster cannot honour. Fix the request.
    #[error(transparent)]
    Consistency(#[from] ConsistencyError),
    /// The write would leave more siblings than allowed: resolve them by reading the key and
    /// writing back with its context. Nothing was written.
    #[error("too many siblings for this key ({siblings} > {max}): read it and write back with its context to resolve them")]
    TooManySiblings { siblings: usize, max: usize },
    /// Not enough replicas answered a read in time (or a level cannot be met by the replicas
    /// that exist). Retry later.
    #[error("not enough replicas answered: needed {needed}, got {got}")]
    Unavailable { needed: usize, got: usize },
    /// A write did not reach its quorum in time. No rollback (Dynamo): it may still have been
    /// stored on some replicas. Retry with the context you read.
    #[error(
        "not enough replicas acknowledged: needed {needed}, got {got}; \
         the write may still have been stored on some replicas"
    )]
    WriteUnavailable { needed: usize, got: usize },
    /// The replica that coordinated a forwarded write refused it (a limit, a bad context, too
    /// many siblings). Fix the request.
    #[error("rejected by the coordinating replica: {0}")]
    Rejected(String),
    /// Storage refused or failed: disk full (retry when space frees), corruption, poisoned.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The node cannot start as configured (e.g. the data directory belongs to another node).
    #[error("cannot start: {0}")]
    Startup(String),
    /// The node is shutting down. Retry on another node.
    #[error("node is shutting down")]
    ShuttingDown,
}

impl NodeError {
    /// The `kind` label under which this error is counted in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Limit(_) => "limit",
            NodeError::InvalidContext(_) => "context",
            NodeError::Consistency(_) | NodeError::Rejected(_) => "argument",
            NodeError::TooManySiblings { .. } => "siblings",
            NodeError::Unavailable { .. }
            | NodeError::WriteUnavailable { .. }
            | NodeError::ShuttingDown => "unavailable",
            NodeError::Storage(_) | NodeError::Startup(_) => "storage",
        }
    }

    /// Worth retrying unchanged (later, or elsewhere).
    /// `(needed, got)` of a quorum error.
    pub fn quorum(&self) -> Option<(usize, usize)> {
        match *self {
            NodeError::Unavailable { needed, got }
            | NodeError::WriteUnavailable { needed, got } => Some((needed, got)),
            _ => None,
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NodeError::Unavailable { .. }
                | NodeError::WriteUnavailable { .. }
                | NodeError::ShuttingDown
                | NodeError::Storage(StorageError::DiskFull { .. })
        )
    }
}
