//! The identity of a node: the actor name in vector clocks and the member key in membership.
//!
//! Node ids are short printable names (`n1`, `db-3.eu`), chosen by the operator or generated once
//! and persisted by the server. They travel inside every clock and every client context, so they
//! are bounded and restricted to characters that need no escaping anywhere we print them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest node id we accept, in bytes.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A validated node id. Construct with [`NodeId::new`]; deserialization validates too, so a node
/// id decoded from a client context or a peer frame is as trustworthy as one typed by an operator.
/// Shared (`Arc<str>`) because ids are cloned into every clock, dot and reply: a clone is a
/// reference-count bump, not an allocation.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(Arc<str>);

/// A string that is not a valid node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid node id {0:?}: use 1 to 64 characters from A-Z a-z 0-9 - _ . :")]
pub struct InvalidNodeId(pub String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Result<NodeId, InvalidNodeId> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_NODE_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(NodeId(id.into()))
        } else {
            Err(InvalidNodeId(id))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeId {
    type Error = InvalidNodeId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0.to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for NodeId {
    type Err = InvalidNodeId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_names_and_rejects_the_rest() {
        assert!(NodeId::new("n1").is_ok());
        assert!(NodeId::new("db-3.eu:a_b").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a b").is_err());
        assert!(NodeId::new("x".repeat(65)).is_err());
        assert!(NodeId::new("é").is_err());
    }

    #[test]
    fn deserialization_validates() {
        let bytes = postcard::to_stdvec(&"bad id".to_string()).unwrap();
        assert!(postcard::from_bytes::<NodeId>(&bytes).is_err());
    }
}
