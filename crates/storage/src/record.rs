//! Checksum framing of every value the [`crate::Store`] writes (BAD-INPUT.md row 23).
//!
//! Layout: `[u32 crc32 LE][u8 format][payload]`. The CRC covers the format byte, the key (length
//! prefixed) and the payload. Covering the key means a record that ends up under the wrong key
//! (an engine bug, a flipped bit in the key) fails the check too, instead of being served as some
//! other key's value.
//!
//! Why our own checksum when fjall checksums its journal and blocks: the engine is behind a trait
//! (the in-memory engine has none), the memtable is never checksummed, and fjall's recovery treats
//! mid-journal corruption like a torn tail (fjall#311). One end-to-end check at the storage
//! boundary covers every path; it costs ~1 ns/byte (crc32fast uses SSE4.2/PCLMUL).
//!
//! IMPLEMENTATION CAVEATS: CRC32 detects all single-bit flips and bursts up to 32 bits but is not
//! a MAC: it guards against rot, not against an attacker with write access to the disk.

/// The only format so far. A new format gets a new byte; readers reject unknown ones as corrupt.
const FORMAT_V1: u8 = 1;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 5;

/// Why a stored record was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Shorter than the header: a torn or truncated record.
    Truncated { len: usize },
    /// A format byte this build does not know.
    UnknownFormat(u8),
    /// The CRC does not match.
    ChecksumMismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Truncated { len } => {
                write!(f, "checksum mismatch: truncated record ({len} bytes)")
            }
            RecordError::UnknownFormat(v) => {
                write!(f, "checksum mismatch: unknown record format {v}")
            }
            RecordError::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
        }
    }
}

fn checksum(format: u8, key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[format]);
    // Keys are at most 65535 bytes (validated before any write), so this never truncates.
    hasher.update(&(key.len() as u32).to_le_bytes());
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

/// Frames `payload` for storage under `key`.
pub(crate) fn encode(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let crc = checksum(FORMAT_V1, key, payload);
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&crc.to_le_bytes());
    out.push(FORMAT_V1);
    out.extend_from_slice(payload);
    out
}

/// Checks a stored record read back under `key` and returns its payload.
pub(crate) fn decode<'a>(key: &[u8], raw: &'a [u8]) -> Result<&'a [u8], RecordError> {
    let Some((header, payload)) = raw.split_at_checked(HEADER_LEN) else {
        return Err(RecordError::Truncated { len: raw.len() });
    };
    let stored = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let format = header[4];
    if format != FORMAT_V1 {
        return Err(RecordError::UnknownFormat(format));
    }
    let computed = checksum(format, key, payload);
    if stored != computed {
        return Err(RecordError::ChecksumMismatch { stored, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_including_empty_payload() {
        for payload in [&b""[..], b"x", &[0u8; 1000][..]] {
            let raw = encode(b"key", payload);
            assert_eq!(raw.len(), HEADER_LEN + payload.len());
            assert_eq!(decode(b"key", &raw), Ok(payload));
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let raw = encode(b"some key", b"a value of moderate length");
        for byte in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode(b"some key", &bad).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn truncation_is_detected_at_every_length() {
        let raw = encode(b"k", b"payload");
        for len in 0..raw.len() {
            assert!(decode(b"k", &raw[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn a_record_under_the_wrong_key_is_refused() {
        let raw = encode(b"alice", b"balance=10");
        assert!(matches!(
            decode(b"alicf", &raw),
            Err(RecordError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn unknown_format_is_refused_and_says_checksum_mismatch() {
        let mut raw = encode(b"k", b"v");
        raw[4] = 9;
        let err = decode(b"k", &raw).unwrap_err();
        assert_eq!(err, RecordError::UnknownFormat(9));
        assert!(err.to_string().starts_with("checksum mismatch"));
    }
}
