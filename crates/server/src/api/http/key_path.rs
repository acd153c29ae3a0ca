//! Keys in URIs, and the `?r=` / `?w=` query.
//!
//! Keys are bytes (BAD-INPUT 14). The key is everything in the raw request path after
//! `/v1/kv/`, percent-decoded exactly once: `%2F` is a byte of the key like any other, `%00` and
//! `%FF` are legal, an unencoded `/` is part of the key too (`/v1/kv/a/b` and `/v1/kv/a%2Fb` name
//! the same key), and `..` is just two dots. Nothing here ever turns a key into a file path.
//! Malformed escapes (`%G1`, a lone `%`) are refused rather than passed through, so one key has
//! one spelling on the wire. `+` is a plus sign, not a space: this is a path, not a form.

use super::errors::ApiError;
use ringkv_core::{Consistency, LimitError, Limits};

/// Where keys live in the URI space.
pub(crate) const KV_PREFIX: &str = "/v1/kv/";

/// The key named by a raw request path that starts with `/v1/kv` (with or without the slash).
/// Checks the key against `limits` (empty 400, too long 414) before anything else sees it.
pub(crate) fn key_from_path(path: &str, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let raw = path.strip_prefix(KV_PREFIX).unwrap_or("");
    // Each decoded byte takes at most three characters: a path this long is over the limit
    // whatever it holds, so refuse it without decoding it.
    if raw.len() > limits.max_key_bytes.saturating_mul(3) {
        return Err(LimitError::KeyTooLarge {
            len: raw.len().div_ceil(3),
            max: limits.max_key_bytes,
        }
        .into());
    }
    let key = percent_decode(raw)?;
    limits.check_key(&key)?;
    Ok(key)
}

/// Strict percent-decoding: every `%` must start a two-hex-digit escape.
pub(crate) fn percent_decode(raw: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                _ => {
                    let end = (i + 3).min(bytes.len());
                    return Err(ApiError::BadKey(format!(
                        "bad percent-encoding in key at byte {i}: {:?} (write a byte as %XX, a % as %25)",
                        String::from_utf8_lossy(&bytes[i..end])
                    )));
                }
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The consistency level a request asked for with `?r=` (reads) or `?w=` (writes).
///
/// Only that one parameter is accepted: a typo (`?W=`, `?consistency=`) or the other level
/// (`?w=` on a read) is refused rather than silently ignored, since ignoring it would quietly
/// run the request at the default level.
pub(crate) fn level_from_query(
    query: Option<&str>,
    name: &'static str,
) -> Result<Option<Consistency>, ApiError> {
    let mut level = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k).map_err(|_| bad_query(pair))?;
        let v = percent_decode(v).map_err(|_| bad_query(pair))?;
        if k != name.as_bytes() {
            return Err(ApiError::BadArgument(format!(
                "unknown query parameter {:?}: this request takes only {name}=one|quorum|all|N",
                String::from_utf8_lossy(&k)
            )));
        }
        if level.is_some() {
            return Err(ApiError::BadArgument(format!(
                "{name} given more than once"
            )));
        }
        let v = std::str::from_utf8(&v).map_err(|_| bad_query(pair))?;
        level = Some(Consistency::parse(v).map_err(crate::NodeError::from)?);
    }
    Ok(level)
}

fn bad_query(pair: &str) -> ApiError {
    ApiError::BadArgument(format!("malformed query parameter {pair:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> Result<Vec<u8>, ApiError> {
        key_from_path(path, &Limits::default())
    }

    #[test]
    fn decodes_exactly_once() {
        assert_eq!(key("/v1/kv/a%2Fb").unwrap(), b"a/b");
        assert_eq!(key("/v1/kv/a/b").unwrap(), b"a/b");
        assert_eq!(key("/v1/kv/%00%ff%FF").unwrap(), b"\x00\xff\xff");
        assert_eq!(key("/v1/kv/%252F").unwrap(), b"%2F");
        assert_eq!(key("/v1/kv/../etc").unwrap(), b"../etc");
        assert_eq!(key("/v1/kv/a+b").unwrap(), b"a+b");
        assert_eq!(key("/v1/kv//").unwrap(), b"/");
    }

    #[test]
    fn refuses_bad_escapes_empty_and_long_keys() {
        for bad in ["/v1/kv/%G1", "/v1/kv/a%", "/v1/kv/a%2", "/v1/kv/%%41"] {
            assert!(matches!(key(bad), Err(ApiError::BadKey(_))), "{bad}");
        }
        for empty in ["/v1/kv/", "/v1/kv"] {
            assert!(matches!(
                key(empty),
                Err(ApiError::Node(crate::NodeError::Limit(
                    LimitError::EmptyKey { .. }
                )))
            ));
        }
        let at_limit = format!("/v1/kv/{}", "%41".repeat(1024));
        assert_eq!(key(&at_limit).unwrap().len(), 1024);
        for long in [
            format!("/v1/kv/{}", "a".repeat(1025)),
            format!("/v1/kv/{}", "a".repeat(5000)),
        ] {
            assert!(matches!(
                key(&long),
                Err(ApiError::Node(crate::NodeError::Limit(
                    LimitError::KeyTooLarge { .. }
                )))
            ));
        }
    }

    #[test]
    fn levels_parse_and_strangers_are_refused() {
        assert_eq!(level_from_query(None, "r").unwrap(), None);
        assert_eq!(level_from_query(Some(""), "r").unwrap(), None);
        assert_eq!(
            level_from_query(Some("r=quorum"), "r").unwrap(),
            Some(Consistency::Quorum)
        );
        assert_eq!(
            level_from_query(Some("w=2"), "w").unwrap(),
            Some(Consistency::Count(2))
        );
        assert!(matches!(
            level_from_query(Some("r=most"), "r"),
            Err(ApiError::Node(_))
        ));
        assert!(matches!(
            level_from_query(Some("r=0"), "r"),
            Err(ApiError::Node(_))
        ));
        assert!(matches!(
            level_from_query(Some("w=1"), "r"),
            Err(ApiError::BadArgument(_))
        ));
        assert!(matches!(
            level_from_query(Some("r=1&r=2"), "r"),
            Err(ApiError::BadArgument(_))
        ));
        assert!(matches!(
            level_from_query(Some("r=%ZZ"), "r"),
            Err(ApiError::BadArgument(_))
        ));
    }
}
