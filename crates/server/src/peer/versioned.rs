//! The payload format of the cluster protocols that ride on their own tags (handoff,
//! anti-entropy, tombstones, streaming): a format byte, then postcard. The byte lets a protocol
//! change its layout later; a node refuses a format it does not know instead of misreading it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The only format so far.
pub const FORMAT_V1: u8 = 1;

/// `v` as a format-1 payload.
pub fn encode<T: Serialize>(v: &T) -> Bytes {
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_stdvec(v).expect("protocol message serializes"));
    Bytes::from(out)
}

/// A payload of the `what` protocol (named in the errors), refused when empty, of an unknown
/// format, or malformed.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("malformed {what} message: {e}"))
        }
        Some((other, _)) => Err(format!("unknown {what} message format {other}")),
        None => Err(format!("empty {what} message")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_unknown_empty_and_malformed() {
        let bytes = encode(&(7u32, "x".to_string()));
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(
            decode::<(u32, String)>(&bytes, "test").unwrap(),
            (7, "x".to_string())
        );
        assert!(decode::<u32>(&[9, 1], "test")
            .unwrap_err()
            .contains("format 9"));
        assert!(decode::<u32>(&[], "test").unwrap_err().contains("empty"));
        assert!(decode::<String>(&[FORMAT_V1, 0xff], "test")
            .unwrap_err()
            .contains("malformed"));
    }
}
