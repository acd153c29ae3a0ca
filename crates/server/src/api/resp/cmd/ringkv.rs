//! `RINGKV.GET`, `RINGKV.PUT`, `RINGKV.DEL`, `RINGKV.CONSISTENCY`: the full data model over RESP.
//!
//! - `RINGKV.GET key [R level]` -> `[context, value...]`: the causal context (the string to hand
//!   back when writing), then the value of every live sibling in the set's order (dot order). A
//!   missing or deleted key answers `[context]` alone.
//! - `RINGKV.PUT key value [CONTEXT c] [W level]` -> the key's context after the write. The new
//!   version supersedes exactly what `c` covers; anything else stays a sibling. Without a
//!   context it is a blind write, like `SET`.
//! - `RINGKV.DEL key [CONTEXT c] [W level]` -> 1 when a tombstone was written, 0 when there was
//!   nothing to delete (no context given and no live value).
//! - `RINGKV.CONSISTENCY [R level] [W level]` -> `OK`: this connection's defaults for the plain
//!   commands (`default` restores the node's); with no arguments, the current settings.
//!
//! Options are case-insensitive and may come in any order; a repeated option's last value wins.

use super::{parse_level, Args, Ctx};
use crate::{ReadOptions, WriteOptions};
use bytes::Bytes;
use ringkv_core::{Consistency, Context, ContextError};

#[derive(Default)]
struct Options {
    context: Option<Context>,
    r: Option<Consistency>,
    w: Option<Consistency>,
}

#[derive(Clone, Copy)]
enum Opt {
    Context,
    R,
    W,
}

/// Parses `NAME value` pairs from argument `from` on. `None` when an error reply was written.
fn parse_options(
    cx: &mut Ctx<'_>,
    args: Args<'_>,
    from: usize,
    command: &str,
    allowed: &[(&str, Opt)],
) -> Option<Options> {
    let mut opts = Options::default();
    let mut i = from;
    while i < args.len() {
        let name = args.get(i);
        let Some(&(spelled, opt)) = allowed
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        else {
            let expected: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
            cx.arg_error(&format!(
                "ERR {command}: unknown option '{}' (expected {})",
                super::quote(name, 64),
                expected.join(" or ")
            ));
            return None;
        };
        if i + 1 >= args.len() {
            cx.arg_error(&format!(
                "ERR syntax error: {command} option {spelled} needs a value"
            ));
            return None;
        }
        let value = args.get(i + 1);
        match opt {
            Opt::Context => match decode_context(value) {
                Ok(c) => opts.context = Some(c),
                Err(e) => {
                    cx.fail("context", &format!("ERR {e}"));
                    return None;
                }
            },
            Opt::R | Opt::W => match parse_level(value) {
                Ok(level) => match opt {
                    Opt::R => opts.r = Some(level),
                    _ => opts.w = Some(level),
                },
                Err(e) => {
                    cx.arg_error(&format!("ERR {e}"));
                    return None;
                }
            },
        }
        i += 2;
    }
    Some(opts)
}

/// A context argument; the decoder's messages already start with "invalid context".
fn decode_context(arg: &[u8]) -> Result<Context, ContextError> {
    let text = std::str::from_utf8(arg).map_err(|_| ContextError::NotBase64)?;
    Context::decode(text)
}

pub async fn get(cx: &mut Ctx<'_>, args: Args<'_>) {
    let Some(opts) = parse_options(cx, args, 2, "RINGKV.GET", &[("R", Opt::R)]) else {
        return;
    };
    let read = ReadOptions {
        r: opts.r.or(cx.session.read.r),
    };
    match cx.shared.node.get(args.get(1), read).await {
        Ok(result) => {
            let live = result.set.live().count();
            cx.out.array(1 + live);
            cx.out.bulk(result.context().encode().as_bytes());
            for version in result.set.live() {
                if let Some(value) = &version.value {
                    cx.out.bulk(value);
                }
            }
        }
        Err(e) => cx.node_error(e),
    }
}

pub async fn put(cx: &mut Ctx<'_>, args: Args<'_>) {
    let allowed = [("CONTEXT", Opt::Context), ("W", Opt::W)];
    let Some(opts) = parse_options(cx, args, 3, "RINGKV.PUT", &allowed) else {
        return;
    };
    let write = WriteOptions {
        w: opts.w.or(cx.session.write.w),
    };
    let owned = args.to_owned_range(1, 2);
    let result = cx
        .shared
        .node
        .put(owned.get(1), owned.get(2), opts.context, write)
        .await;
    match result {
        Ok(written) => cx.out.bulk(written.context().encode().as_bytes()),
        Err(e) => cx.node_error(e),
    }
}

pub async fn del(cx: &mut Ctx<'_>, args: Args<'_>) {
    let allowed = [("CONTEXT", Opt::Context), ("W", Opt::W)];
    let Some(opts) = parse_options(cx, args, 2, "RINGKV.DEL", &allowed) else {
        return;
    };
    let write = WriteOptions {
        w: opts.w.or(cx.session.write.w),
    };
    let key = Bytes::copy_from_slice(args.get(1));
    match cx.shared.node.delete(key, opts.context, write).await {
        Ok(written) => cx.out.integer(written.is_some() as i64),
        Err(e) => cx.node_error(e),
    }
}

pub fn consistency(cx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() == 1 {
        let r = level_name(cx.session.read.r);
        let w = level_name(cx.session.write.w);
        cx.out.map(2);
        cx.out.bulk(b"r");
        cx.out.bulk(r.as_bytes());
        cx.out.bulk(b"w");
        cx.out.bulk(w.as_bytes());
        return;
    }
    // Validate everything before changing anything.
    let mut r = cx.session.read.r;
    let mut w = cx.session.write.w;
    let mut i = 1;
    while i < args.len() {
        let name = args.get(i);
        let target = if name.eq_ignore_ascii_case(b"R") {
            &mut r
        } else if name.eq_ignore_ascii_case(b"W") {
            &mut w
        } else {
            cx.arg_error(&format!(
                "ERR RINGKV.CONSISTENCY: unknown option '{}' (expected R or W)",
                super::quote(name, 64)
            ));
            return;
        };
        if i + 1 >= args.len() {
            cx.arg_error("ERR syntax error: RINGKV.CONSISTENCY [R level] [W level]");
            return;
        }
        let value = args.get(i + 1);
        if value.eq_ignore_ascii_case(b"default") {
            *target = None;
        } else {
            match parse_level(value) {
                Ok(level) => *target = Some(level),
                Err(e) => {
                    cx.arg_error(&format!("ERR {e}"));
                    return;
                }
            }
        }
        i += 2;
    }
    cx.session.read.r = r;
    cx.session.write.w = w;
    cx.out.ok();
}

fn level_name(level: Option<Consistency>) -> String {
    match level {
        Some(level) => level.to_string(),
        None => "default".to_string(),
    }
}
