//! What a peer call can fail with, grouped by what the caller should do next.

use super::frame::FrameError;

/// A failed [`PeerClient::call`](super::PeerClient::call) or
/// [`send`](super::PeerClient::send).
///
/// "Never sent" errors ([`Connect`](Self::Connect), [`Handshake`](Self::Handshake),
/// [`Unauthorized`](Self::Unauthorized), [`SettingsMismatch`](Self::SettingsMismatch),
/// [`Overloaded`](Self::Overloaded),
/// [`FrameTooLarge`](Self::FrameTooLarge), [`Closed`](Self::Closed)) guarantee the peer never
/// saw the request; [`Timeout`](Self::Timeout) and [`ConnectionLost`](Self::ConnectionLost) do
/// not: the peer may have executed it. [`PeerError::maybe_delivered`] tells which, so a
/// coordinator knows whether a write's outcome is indeterminate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// No connection could be opened (refused, unreachable, connect timeout, or backing off after
    /// recent failures to this address).
    #[error("cannot connect to peer {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The connection opened but the handshake did not complete (timeout, garbage, version).
    #[error("peer handshake failed: {0}")]
    Handshake(String),
    /// The cluster secret did not match: the peer refused us, or failed to prove it knows the
    /// secret. A configuration problem, not a transient one.
    #[error("peer authentication failed: {0}")]
    Unauthorized(String),
    /// The peer runs with different cluster-wide settings (ring algorithm version, `partitions`,
    /// `n` or `replication`: the [`ClusterLayout`](super::ClusterLayout)), so it would compute
    /// a different ring. The message names both layouts. A configuration problem, not a
    /// transient one.
    #[error("peer has different cluster settings: {0}")]
    SettingsMismatch(String),
    /// No answer within the call's timeout. The request may have been executed.
    #[error("peer call timed out")]
    Timeout,
    /// The connection died while the call was in flight. The request may have been executed.
    #[error("peer connection lost")]
    ConnectionLost,
    /// The connection's in-flight bound stayed full until the deadline (or, for a one-way send,
    /// was full): the request was not sent.
    #[error("peer connection overloaded: too many requests in flight")]
    Overloaded,
    /// The peer's handler answered with an error.
    #[error("peer handler error: {0}")]
    Remote(String),
    /// The payload does not fit in a frame; it was not sent.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    /// The client was closed.
    #[error("peer client closed")]
    Closed,
}

impl PeerError {
    /// Whether trying again (later, or at another replica) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            PeerError::Connect { .. }
            | PeerError::Handshake(_)
            | PeerError::Timeout
            | PeerError::ConnectionLost
            | PeerError::Overloaded => true,
            PeerError::Unauthorized(_)
            | PeerError::SettingsMismatch(_)
            | PeerError::Remote(_)
            | PeerError::FrameTooLarge { .. }
            | PeerError::Closed => false,
        }
    }

    /// Whether the peer may have received (and executed) the request.
    pub fn maybe_delivered(&self) -> bool {
        matches!(
            self,
            PeerError::Timeout | PeerError::ConnectionLost | PeerError::Remote(_)
        )
    }
}

impl From<FrameError> for PeerError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge { len, max } => PeerError::FrameTooLarge { len, max },
            _ => PeerError::ConnectionLost,
        }
    }
}
