//! Who this node is on the peer port: its [`NodeId`] and the cluster secret it proves knowledge of.

use ringkv_core::NodeId;
use std::fmt;
use std::sync::Arc;

/// The secret used when none is configured. It is public (it is in this source file), so a
/// cluster running on it is *unauthenticated*: anyone who can reach the peer port can join.
/// Using it keeps `ringkv server` with no flags working, and the servers log a warning for it.
pub const DEFAULT_INSECURE_SECRET: &[u8] = b"ringkv-default-cluster-secret-UNAUTHENTICATED";

/// Secrets shorter than this are accepted but logged as weak.
pub const MIN_RECOMMENDED_SECRET_BYTES: usize = 16;

/// The shared cluster secret. It never goes on the wire: peers prove they know it with an HMAC
/// over fresh nonces. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret {
    bytes: Arc<[u8]>,
    is_default: bool,
}

impl ClusterSecret {
    /// A configured secret. An empty one counts as "not configured".
    pub fn new(secret: impl AsRef<[u8]>) -> ClusterSecret {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return ClusterSecret::insecure_default();
        }
        ClusterSecret {
            bytes: secret.into(),
            is_default: false,
        }
    }

    /// The well-known default: an unauthenticated cluster.
    pub fn insecure_default() -> ClusterSecret {
        ClusterSecret {
            bytes: DEFAULT_INSECURE_SECRET.into(),
            is_default: true,
        }
    }

    /// `config.cluster_secret` as read from the file, environment or flags.
    pub fn from_config(secret: Option<&str>) -> ClusterSecret {
        match secret {
            Some(s) => ClusterSecret::new(s),
            None => ClusterSecret::insecure_default(),
        }
    }

    /// True when no secret was configured and the public default is in use.
    pub fn is_default(&self) -> bool {
        self.is_default
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Logs once at startup what the secret means for this cluster's safety.
    pub(crate) fn warn_if_weak(&self, who: &str) {
        if self.is_default {
            tracing::warn!(
                "{who}: no cluster_secret configured; the peer port uses the public default \
                 secret, so the cluster is UNAUTHENTICATED: anyone who can reach the peer port \
                 can join it and inject messages. Set --cluster-secret (RINGKV_CLUSTER_SECRET)."
            );
        } else if self.bytes.len() < MIN_RECOMMENDED_SECRET_BYTES {
            tracing::warn!(
                "{who}: cluster_secret is shorter than {MIN_RECOMMENDED_SECRET_BYTES} bytes; \
                 use a long random value"
            );
        }
    }
}

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_default {
            f.write_str("ClusterSecret(<insecure default>)")
        } else {
            f.write_str("ClusterSecret(<redacted>)")
        }
    }
}

/// This node's identity on the peer port.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub secret: ClusterSecret,
}

impl PeerIdentity {
    pub fn new(node_id: NodeId, secret: ClusterSecret) -> PeerIdentity {
        PeerIdentity { node_id, secret }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let s = ClusterSecret::new("hunter2-hunter2-hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!s.is_default());
        assert!(ClusterSecret::from_config(None).is_default());
        assert!(ClusterSecret::from_config(Some("")).is_default());
    }
}
