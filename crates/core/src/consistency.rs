//! Per-request consistency levels: how many replicas must answer a read (`r`) or acknowledge a
//! write (`w`). Parsed from HTTP query strings and RESP arguments in one place so both APIs
//! accept exactly the same spellings. The data-center levels (`local_quorum`, `each_quorum`)
//! depend on where the key's replicas are, so they resolve to a
//! [`Need`](crate::coordinator::Need) here and to counts only once the key's plan is known
//! ([`crate::coordinator::Quorum`]).

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
    /// A majority of the key's replicas in the coordinating node's data center.
    LocalQuorum,
    /// A majority of the key's replicas in every data center that holds some.
    EachQuorum,
}

/// A consistency level that cannot be parsed or met by the replication factor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsistencyError {
    #[error(
        "invalid consistency level {0:?}: use one, quorum, all, local_quorum, each_quorum or a number"
    )]
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
            "local_quorum" | "local-quorum" => Ok(Consistency::LocalQuorum),
            "each_quorum" | "each-quorum" => Ok(Consistency::EachQuorum),
            other => match other.parse::<usize>() {
                Ok(0) => Err(ConsistencyError::Zero),
                Ok(n) => Ok(Consistency::Count(n)),
                Err(_) => Err(ConsistencyError::Unknown(text.to_string())),
            },
        }
    }

    /// The number of replicas this level needs out of `n`. The data-center levels, asked
    /// without a data-center layout, are taken as `quorum` (a single-node store, or one data
    /// center, has one quorum).
    pub fn required(self, n: usize) -> Result<usize, ConsistencyError> {
        match self {
            Consistency::One => Ok(1),
            Consistency::Quorum | Consistency::LocalQuorum | Consistency::EachQuorum => {
                Ok(n / 2 + 1)
            }
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
            Consistency::LocalQuorum => f.write_str("local_quorum"),
            Consistency::EachQuorum => f.write_str("each_quorum"),
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
        assert_eq!(
            Consistency::parse("LOCAL_QUORUM"),
            Ok(Consistency::LocalQuorum)
        );
        assert_eq!(
            Consistency::parse("each_quorum"),
            Ok(Consistency::EachQuorum)
        );
        for level in ["one", "quorum", "all", "3", "local_quorum", "each_quorum"] {
            assert_eq!(Consistency::parse(level).unwrap().to_string(), level);
        }
    }
}
