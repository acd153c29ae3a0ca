//! Who this node is on the peer port: its [`NodeId`], the cluster secret it proves knowledge of,
//! and the [`ClusterLayout`] (the cluster-wide settings the ring is computed from) it must share
//! with every member.

use ringkv_core::ring::RING_ALGORITHM_VERSION;
use ringkv_core::{DcReplication, NodeId};
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

/// The cluster-wide settings every member computes the ring from, as one short canonical string:
/// `ring=1;partitions=1024;n=3;replication=dc1=3,dc2=2` (the ring algorithm version, `partitions`,
/// `n`, and the per-data-center `replication`, sorted by data center, empty when not set).
///
/// Each node reads these from its own configuration; one started with a different value would
/// silently compute a different ring and put (and look for) data on the wrong replicas. So both
/// sides of the peer handshake send their layout, covered by the HMAC proofs, and a connection
/// between two different layouts is refused (`REFUSED_SETTINGS`, [`PeerError::SettingsMismatch`]).
/// Layouts are compared byte for byte.
///
/// [`PeerError::SettingsMismatch`]: super::PeerError::SettingsMismatch
#[derive(Clone, PartialEq, Eq, Default)]
pub struct ClusterLayout(Arc<str>);

impl ClusterLayout {
    /// Longest layout: the handshake frames (1 KiB before authentication) must hold two of them
    /// in a refusal. A few dozen data centers with short names fit.
    pub const MAX_BYTES: usize = 256;

    /// This build's layout for the given settings. Fails only when the result is longer than
    /// [`MAX_BYTES`](Self::MAX_BYTES) (too many, or too long, data center names).
    pub fn new(
        partitions: u32,
        n: usize,
        replication: &DcReplication,
    ) -> Result<ClusterLayout, String> {
        Self::with_ring_version(RING_ALGORITHM_VERSION, partitions, n, replication)
    }

    pub(crate) fn with_ring_version(
        ring: u32,
        partitions: u32,
        n: usize,
        replication: &DcReplication,
    ) -> Result<ClusterLayout, String> {
        // Data center names are free-form: escape the separators so that two different maps can
        // never produce the same string. Ordinary names are left as they are.
        let escaped: DcReplication = replication
            .iter()
            .map(|(dc, count)| (escape_dc(dc), *count))
            .collect();
        let text = format!(
            "ring={ring};partitions={partitions};n={n};replication={}",
            crate::config::format_replication(&escaped)
        );
        if text.len() > Self::MAX_BYTES {
            return Err(format!(
                "the cluster layout {text:?} is {} bytes, more than the {} the peer handshake \
                 carries: use fewer or shorter data center names in `replication`",
                text.len(),
                Self::MAX_BYTES
            ));
        }
        Ok(ClusterLayout(text.into()))
    }

    /// A layout received from a peer: any UTF-8 text up to [`MAX_BYTES`](Self::MAX_BYTES).
    pub(crate) fn from_wire(raw: &[u8]) -> Option<ClusterLayout> {
        if raw.len() > Self::MAX_BYTES {
            return None;
        }
        std::str::from_utf8(raw)
            .ok()
            .map(|s| ClusterLayout(s.into()))
    }

    /// The canonical string; empty when none was set ([`PeerIdentity::new`] alone, in tests).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `%`, `,`, `;`, `=` and control characters as `%XX`.
fn escape_dc(dc: &str) -> String {
    let mut out = String::with_capacity(dc.len());
    for c in dc.chars() {
        if matches!(c, '%' | ',' | ';' | '=') || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for ClusterLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("<no layout>")
        } else {
            f.write_str(&self.0)
        }
    }
}

impl fmt::Debug for ClusterLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterLayout({:?})", &*self.0)
    }
}

/// This node's identity on the peer port.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    pub node_id: NodeId,
    pub secret: ClusterSecret,
    /// The cluster-wide settings; peers with a different one are refused at the handshake.
    pub layout: ClusterLayout,
}

impl PeerIdentity {
    /// An identity with no layout set: it talks only to peers that have none either (tests).
    /// A node sets its layout with [`with_layout`](Self::with_layout).
    pub fn new(node_id: NodeId, secret: ClusterSecret) -> PeerIdentity {
        PeerIdentity {
            node_id,
            secret,
            layout: ClusterLayout::default(),
        }
    }

    pub fn with_layout(mut self, layout: ClusterLayout) -> PeerIdentity {
        self.layout = layout;
        self
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

    #[test]
    fn layout_is_canonical() {
        let dcs = |pairs: &[(&str, usize)]| -> DcReplication {
            pairs.iter().map(|(d, n)| (d.to_string(), *n)).collect()
        };
        let l = ClusterLayout::with_ring_version(1, 1024, 3, &DcReplication::new()).unwrap();
        assert_eq!(l.as_str(), "ring=1;partitions=1024;n=3;replication=");
        // Sorted by data center whatever the insertion order.
        let a = ClusterLayout::with_ring_version(1, 1024, 5, &dcs(&[("dc2", 2), ("dc1", 3)]));
        let b = ClusterLayout::with_ring_version(1, 1024, 5, &dcs(&[("dc1", 3), ("dc2", 2)]));
        assert_eq!(a, b);
        assert_eq!(
            a.unwrap().as_str(),
            "ring=1;partitions=1024;n=5;replication=dc1=3,dc2=2"
        );
        // Every setting is in it.
        let base = ClusterLayout::new(1024, 3, &DcReplication::new()).unwrap();
        assert_eq!(
            base.as_str(),
            format!("ring={RING_ALGORITHM_VERSION};partitions=1024;n=3;replication=")
        );
        assert_ne!(
            base,
            ClusterLayout::new(2048, 3, &DcReplication::new()).unwrap()
        );
        assert_ne!(
            base,
            ClusterLayout::new(1024, 5, &DcReplication::new()).unwrap()
        );
        assert_ne!(
            base,
            ClusterLayout::new(1024, 3, &dcs(&[("dc1", 3)])).unwrap()
        );
        assert_ne!(
            base,
            ClusterLayout::with_ring_version(2, 1024, 3, &DcReplication::new()).unwrap()
        );
        // Separators inside names cannot make two maps look alike.
        let odd = ClusterLayout::new(1024, 3, &dcs(&[("a=1,b", 2), ("x;%", 1)])).unwrap();
        let plain = ClusterLayout::new(1024, 3, &dcs(&[("a", 1), ("b", 2)])).unwrap();
        assert_ne!(odd, plain);
        assert!(
            odd.as_str().ends_with("replication=a%3D1%2Cb=2,x%3B%25=1"),
            "{odd}"
        );
        // Too long for the handshake: a clear error, not a truncated layout.
        let many: DcReplication = (0..40).map(|i| (format!("datacenter-{i}"), 1)).collect();
        let err = ClusterLayout::new(1024, 40, &many).unwrap_err();
        assert!(err.contains("more than the 256"), "{err}");
        assert_eq!(ClusterLayout::default().to_string(), "<no layout>");
    }

    #[test]
    fn layouts_from_the_wire_are_bounded_utf8() {
        assert_eq!(
            ClusterLayout::from_wire(b"ring=1;partitions=8;n=1;replication=")
                .unwrap()
                .as_str(),
            "ring=1;partitions=8;n=1;replication="
        );
        assert_eq!(
            ClusterLayout::from_wire(b"").unwrap(),
            ClusterLayout::default()
        );
        assert!(ClusterLayout::from_wire(&[0xff, 0xfe]).is_none());
        assert!(ClusterLayout::from_wire(&[b'a'; 257]).is_none());
        assert!(ClusterLayout::from_wire(&[b'a'; 256]).is_some());
    }
}
