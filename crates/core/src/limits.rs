//! The data model's bounds, in one place.
//!
//! The seed asks for key-value pairs under 10 KB; DESIGN.md fixes keys at 1..=1024 bytes and values
//! at 10 KiB by default (configurable up to 1 MiB). Every API checks a request against the same
//! [`Limits`] before it touches storage, so a request over a limit changes nothing.

/// Hard ceiling for the configurable value limit.
pub const MAX_VALUE_LIMIT: usize = 1024 * 1024;

/// Bounds applied to every request. Defaults are DESIGN.md's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, in bytes. Keys are never empty.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// A key with this many siblings is logged and counted: some client writes without contexts.
    pub sibling_warn: usize,
    /// A write that would leave more siblings than this is refused (a "sibling bomb" is never
    /// silently truncated: dropping a sibling would lose an acknowledged write).
    pub max_siblings: usize,
    /// Vector clocks are pruned past this many entries, oldest wall time first (seed, Dynamo 4.4).
    pub max_clock_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 1024,
            max_value_bytes: 10 * 1024,
            sibling_warn: 25,
            max_siblings: 100,
            max_clock_entries: 10,
        }
    }
}

/// A request outside the limits. Messages are what the client sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("empty key: keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },
    #[error("key too large: {len} bytes, the limit is {max}")]
    KeyTooLarge { len: usize, max: usize },
    #[error("value too large: {len} bytes, the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
}

impl Limits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey {
                max: self.max_key_bytes,
            });
        }
        if key.len() > self.max_key_bytes {
            return Err(LimitError::KeyTooLarge {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn check_value_len(&self, len: usize) -> Result<(), LimitError> {
        if len > self.max_value_bytes {
            return Err(LimitError::ValueTooLarge {
                len,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_at_and_past_the_limits() {
        let l = Limits::default();
        assert!(l.check_key(b"k").is_ok());
        assert!(l.check_key(&[0u8; 1024]).is_ok());
        assert_eq!(
            l.check_key(&[0u8; 1025]),
            Err(LimitError::KeyTooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert!(matches!(l.check_key(b""), Err(LimitError::EmptyKey { .. })));
        assert!(l.check_value_len(10 * 1024).is_ok());
        assert!(l.check_value_len(10 * 1024 + 1).is_err());
    }
}
