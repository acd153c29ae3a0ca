//! The causal context handed to clients: opaque, versioned, bounded, checksummed.
//!
//! A read returns the merged clock of what it saw; a write hands it back so the new version
//! supersedes exactly that. Clients never look inside, so the encoding is ours to evolve: a
//! format byte, the postcard-encoded `(node, counter)` pairs, and a 32-bit xxh3 checksum, in
//! URL-safe base64 without padding (it travels in HTTP headers and RESP arguments). Wall times
//! are not included: they are the server's business.
//!
//! Decoding is the only place untrusted bytes become a clock, so it checks everything: length
//! before decoding, the checksum, the format, the entry count, and each node id. A context that
//! fails any check is rejected with [`ContextError`] (HTTP 400, RESP `-ERR invalid context`).
//! The checksum catches truncation and corruption, not malice: a client can always forge a
//! context that claims to have seen more, which only makes its own write supersede more.

use super::{VersionVector, MAX_CONTEXT_COUNTER};
use crate::NodeId;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use std::fmt;

/// Longest encoded context accepted, in characters.
pub const MAX_CONTEXT_LEN: usize = 8192;
/// Most entries a context may carry. Clocks are pruned to 10 by default; this bound is far above
/// any honest context and far below anything that costs a node memory.
pub const MAX_CONTEXT_ENTRIES: usize = 256;

const FORMAT_V1: u8 = 1;

/// A causal context: the clock of what a client read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    clock: VersionVector,
}

/// Why a context string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("invalid context: longer than {MAX_CONTEXT_LEN} characters")]
    TooLong,
    #[error("invalid context: not base64url")]
    NotBase64,
    #[error("invalid context: checksum mismatch (truncated or altered)")]
    Checksum,
    #[error("invalid context: unknown format {0}")]
    UnknownFormat(u8),
    #[error("invalid context: more than {MAX_CONTEXT_ENTRIES} entries")]
    TooManyEntries,
    #[error("invalid context: counter out of range")]
    CounterOutOfRange,
    #[error("invalid context: malformed ({0})")]
    Malformed(String),
}

impl Context {
    /// The context of a client that has seen nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn from_clock(clock: &VersionVector) -> Self {
        let mut counters = VersionVector::new();
        for (node, counter) in clock.counters() {
            counters.witness(node, counter, 0);
        }
        Context { clock: counters }
    }

    /// The clock this context stands for (wall times are zero).
    pub fn clock(&self) -> &VersionVector {
        &self.clock
    }

    pub fn is_empty(&self) -> bool {
        self.clock.is_empty()
    }

    pub fn encode(&self) -> String {
        let pairs: Vec<(&str, u64)> = self
            .clock
            .counters()
            .map(|(n, c)| (n.as_str(), c))
            .collect();
        let mut raw = vec![FORMAT_V1];
        raw.extend(postcard::to_stdvec(&pairs).expect("context serializes"));
        let sum = checksum(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str) -> Result<Context, ContextError> {
        let text = text.trim();
        if text.len() > MAX_CONTEXT_LEN {
            return Err(ContextError::TooLong);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| ContextError::NotBase64)?;
        if raw.len() < 1 + 4 {
            return Err(ContextError::Malformed("too short".into()));
        }
        let (body, sum) = raw.split_at(raw.len() - 4);
        if checksum(body).to_le_bytes() != sum {
            return Err(ContextError::Checksum);
        }
        if body[0] != FORMAT_V1 {
            return Err(ContextError::UnknownFormat(body[0]));
        }
        // postcard decodes a Vec lazily element by element from the slice, so a claimed length
        // larger than the input fails instead of allocating; the text length bound caps the rest.
        let pairs: Vec<(String, u64)> =
            postcard::from_bytes(&body[1..]).map_err(|e| ContextError::Malformed(e.to_string()))?;
        if pairs.len() > MAX_CONTEXT_ENTRIES {
            return Err(ContextError::TooManyEntries);
        }
        let mut clock = VersionVector::new();
        for (node, counter) in pairs {
            // A forged counter near u64::MAX would make the next write's dot overflow (found by
            // the `context` fuzz target).
            if counter > MAX_CONTEXT_COUNTER {
                return Err(ContextError::CounterOutOfRange);
            }
            let node = NodeId::new(node).map_err(|e| ContextError::Malformed(e.to_string()))?;
            clock.witness(&node, counter, 0);
        }
        Ok(Context { clock })
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

fn checksum(bytes: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(bytes) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(&str, u64)]) -> Context {
        let mut v = VersionVector::new();
        for (n, c) in pairs {
            v.witness(&NodeId::new(*n).unwrap(), *c, 123);
        }
        Context::from_clock(&v)
    }

    #[test]
    fn round_trips() {
        let c = ctx(&[("a", 3), ("node-2", 1)]);
        assert_eq!(Context::decode(&c.encode()).unwrap(), c);
        assert_eq!(
            Context::decode(&Context::empty().encode()).unwrap(),
            Context::empty()
        );
    }

    #[test]
    fn rejects_malformed_truncated_and_forged() {
        let good = ctx(&[("a", 3)]).encode();
        assert_eq!(Context::decode("!!!"), Err(ContextError::NotBase64));
        assert_eq!(
            Context::decode(""),
            Err(ContextError::Malformed("too short".into()))
        );
        assert!(Context::decode(&good[..good.len() - 2]).is_err());
        // Flip one character in the middle.
        let mut forged: Vec<char> = good.chars().collect();
        let mid = forged.len() / 2;
        forged[mid] = if forged[mid] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert!(Context::decode(&forged).is_err());
        assert_eq!(
            Context::decode(&"A".repeat(9000)),
            Err(ContextError::TooLong)
        );
    }

    #[test]
    fn rejects_wrong_version_and_bad_node_ids() {
        let mut raw = vec![7u8];
        raw.extend(postcard::to_stdvec(&Vec::<(String, u64)>::new()).unwrap());
        raw.extend_from_slice(&checksum(&raw).to_le_bytes());
        assert_eq!(
            Context::decode(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(ContextError::UnknownFormat(7))
        );
        let mut raw = vec![FORMAT_V1];
        raw.extend(postcard::to_stdvec(&vec![("bad id".to_string(), 1u64)]).unwrap());
        raw.extend_from_slice(&checksum(&raw).to_le_bytes());
        assert!(matches!(
            Context::decode(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(ContextError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_too_many_entries() {
        let pairs: Vec<(String, u64)> = (0..300).map(|i| (format!("n{i}"), 1)).collect();
        let mut raw = vec![FORMAT_V1];
        raw.extend(postcard::to_stdvec(&pairs).unwrap());
        raw.extend_from_slice(&checksum(&raw).to_le_bytes());
        assert_eq!(
            Context::decode(&URL_SAFE_NO_PAD.encode(&raw)),
            Err(ContextError::TooManyEntries)
        );
    }
}
