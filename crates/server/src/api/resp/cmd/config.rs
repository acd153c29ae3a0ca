//! `CONFIG GET pattern [pattern ...]`: the parameters tools ask for (redis-benchmark reads `save`
//! and `appendonly`), with values that describe ringkv truthfully where a Redis name fits, plus
//! ringkv's own settings under `ringkv-*`. `CONFIG SET`, `REWRITE` and `RESETSTAT` are refused:
//! a node is configured by its file, `RINGKV_*` variables and flags (DESIGN.md), never by a
//! client.

use super::{Args, Ctx};
use crate::DurabilityMode;

pub fn config(cx: &mut Ctx<'_>, args: Args<'_>) {
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("GET") {
        if args.len() < 3 {
            return cx.wrong_arity("config|get");
        }
        let params = parameters(cx);
        let matching: Vec<&(&str, String)> = params
            .iter()
            .filter(|(name, _)| {
                args.iter_from(2)
                    .any(|pattern| glob_match(pattern, name.as_bytes()))
            })
            .collect();
        cx.out.map(matching.len());
        for (name, value) in matching {
            cx.out.bulk(name.as_bytes());
            cx.out.bulk(value.as_bytes());
        }
    } else if is("SET") || is("REWRITE") || is("RESETSTAT") {
        cx.arg_error(&format!(
            "ERR CONFIG {} is not supported by ringkv: configure the node with its config file, RINGKV_* environment variables or flags, and restart it",
            super::quote(sub, 16).to_uppercase()
        ));
    } else if is("HELP") {
        let lines = [
            "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET <pattern> [<pattern> ...]: parameters matching the glob-style patterns, with their values.",
            "(SET, REWRITE and RESETSTAT are not supported: configure the node with its config file.)",
        ];
        cx.out.array(lines.len());
        for line in lines {
            cx.out.simple(line);
        }
    } else {
        cx.unknown_subcommand(sub, "CONFIG");
    }
}

/// Every parameter `CONFIG GET` knows, with its value.
fn parameters(cx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = cx.node().config();
    let addr = cx.shared.local_addr;
    vec![
        // No snapshots and no Redis-style AOF: durability is ringkv's own commit log.
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("databases", "1".into()),
        ("maxclients", c.max_connections.to_string()),
        ("timeout", c.client_idle_timeout_secs.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("port", addr.port().to_string()),
        ("bind", addr.ip().to_string()),
        (
            "proto-max-bulk-len",
            super::super::frame::MAX_BULK.to_string(),
        ),
        (
            "ringkv-durability",
            match c.durability {
                DurabilityMode::Sync => "sync".into(),
                DurabilityMode::Periodic => "periodic".into(),
            },
        ),
        ("ringkv-sync-interval-ms", c.sync_interval_ms.to_string()),
        ("ringkv-n", c.n.to_string()),
        ("ringkv-r", c.r.to_string()),
        ("ringkv-w", c.w.to_string()),
        ("ringkv-max-key-bytes", c.max_key_bytes.to_string()),
        ("ringkv-max-value-bytes", c.max_value_bytes.to_string()),
        ("ringkv-max-siblings", c.max_siblings.to_string()),
        (
            "ringkv-max-client-output-bytes",
            c.max_client_output_bytes.to_string(),
        ),
    ]
}

/// Redis-style glob: `*`, `?`, case-insensitive (parameter names are lower case).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, text index it matched up to).
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match(b"save", b"save"));
        assert!(glob_match(b"SAVE", b"save"));
        assert!(glob_match(b"*", b"appendonly"));
        assert!(glob_match(b"append*", b"appendonly"));
        assert!(glob_match(b"*only", b"appendonly"));
        assert!(glob_match(b"a*d*y", b"appendonly"));
        assert!(glob_match(b"sav?", b"save"));
        assert!(!glob_match(b"sav", b"save"));
        assert!(!glob_match(b"x*", b"save"));
        assert!(glob_match(b"**", b""));
        assert!(!glob_match(b"?", b""));
    }
}
