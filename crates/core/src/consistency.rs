//! Per-request consistency levels: how many replicas must answer a read (`r`) or acknowledge a
//! write (`w`). Parsed from HTTP query strings and RESP arguments in one place so both APIs
//! accept exactly the same spellings.

use std::fmt;

/// A requested consistency level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    One,
    /// A majority of the N replicas: N/2 + 1.
    Quorum,
    All,
    /// An explicit number of replicas, 1..=N.
    Count(usize),
}

/// A consistency level that cannot be parsed or met by the replication factor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error("invalid consistency level {0:?}: use one, quorum, all or a number")]
    Unknown(String),
    #[error("consistency level {wanted} exceeds the replication factor n={n}")]
    ExceedsN { wanted: usize, n: usize },
    #[error("consistency level must be at least 1")]
    Zero,
}

impl Consistency {
    pub fn parse(text: &str) -> Result<Consistency, ConsistencyError> {
        match text.to_ascii_lowercase().as_str() {
            "one" => Ok(Consistency::One),
            "quorum" => Ok(Consistency::Quorum),
            "all" => Ok(Consistency::All),
            other => match other.parse::<usize>() {
                Ok(0) => Err(ConsistencyError::Zero),
                Ok(n) => Ok(Consistency::Count(n)),
                Err(_) => Err(ConsistencyError::Unknown(text.to_string())),
            },
        }
    }

    /// The number of replicas this level needs out of `n`.
    pub fn required(self, n: usize) -> Result<usize, ConsistencyError> {
        match self {
            Consistency::One => Ok(1),
            Consistency::Quorum => Ok(n / 2 + 1),
            Consistency::All => Ok(n),
            Consistency::Count(c) if c > n => Err(ConsistencyError::ExceedsN { wanted: c, n }),
            Consistency::Count(c) => Ok(c),
        }
    }
}

impl fmt::Display for Consistency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Consistency::One => f.write_str("one"),
            Consistency::Quorum => f.write_str("quorum"),
            Consistency::All => f.write_str("all"),
            Consistency::Count(n) => write!(f, "{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!(Consistency::parse("QUORUM").unwrap().required(3), Ok(2));
        assert_eq!(Consistency::parse("all").unwrap().required(5), Ok(5));
        assert_eq!(Consistency::parse("one").unwrap().required(3), Ok(1));
        assert_eq!(Consistency::parse("2").unwrap().required(3), Ok(2));
        assert_eq!(
            Consistency::parse("4").unwrap().required(3),
            Err(ConsistencyError::ExceedsN { wanted: 4, n: 3 })
        );
        assert_eq!(Consistency::parse("0"), Err(ConsistencyError::Zero));
        assert!(Consistency::parse("most").is_err());
    }
}
