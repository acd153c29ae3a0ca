//! Errors a node returns to its APIs, grouped by what the caller should do about them. Each API
//! maps them to its own wire form (HTTP status, RESP `-ERR`) in one place.

use ringkv_core::{ConsistencyError, ContextError, LimitError, QuorumError};
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
    /// Not enough replicas answered a read, or acknowledged a write, in time (or a level
    /// cannot be met by the replicas that exist): the core's [`QuorumError`], with the data
    /// center whose quorum fell short for `local_quorum` and `each_quorum`. Retry later; a
    /// failed write may still have been stored on some replicas (no rollback, as in Dynamo).
    #[error(transparent)]
    Quorum(#[from] QuorumError),
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
            NodeError::Quorum(_) | NodeError::ShuttingDown => "unavailable",
            NodeError::Storage(_) | NodeError::Startup(_) => "storage",
        }
    }

    /// `(needed, got, data center)` of a quorum error.
    pub fn quorum(&self) -> Option<(usize, usize, Option<&str>)> {
        match self {
            NodeError::Quorum(e) => Some((e.needed(), e.got(), e.dc())),
            _ => None,
        }
    }

    /// A read that got `got` of the `needed` replies, anywhere.
    pub fn unavailable(needed: usize, got: usize) -> NodeError {
        NodeError::Quorum(QuorumError::ReadUnavailable {
            needed,
            got,
            dc: None,
        })
    }

    /// A write that got `got` of the `needed` durable acks, anywhere.
    pub fn write_unavailable(needed: usize, got: usize) -> NodeError {
        NodeError::Quorum(QuorumError::WriteUnavailable {
            needed,
            got,
            dc: None,
        })
    }

    /// Worth retrying unchanged (later, or elsewhere).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            NodeError::Quorum(_)
                | NodeError::ShuttingDown
                | NodeError::Storage(StorageError::DiskFull { .. })
        )
    }
}
