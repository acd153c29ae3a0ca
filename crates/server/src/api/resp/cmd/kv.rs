//! `GET SET DEL EXISTS MGET MSET`: the Redis view of the store.
//!
//! A Redis client sees one value per key: `GET` returns the deterministic winner among the
//! siblings (latest timestamp, ties broken by dot; DESIGN.md "Data model"), and `SET`, `DEL` and
//! `MSET` are blind writes (no context), which supersede whatever the coordinator holds. Reads
//! and writes use the connection's defaults from `RINGKV.CONSISTENCY`, else the node's.
//!
//! `SET` takes no options: TTLs (`EX PX EXAT PXAT KEEPTTL`) and conditions (`NX XX GET`) would
//! need semantics a leaderless store cannot give cheaply, and ignoring them silently would lie to
//! the client, so they are refused by name.
//!
//! Consecutive plain `SET`s of one pipelined batch reach [`set_many`], which writes them with one
//! `Node::write` (one durability wait instead of one each); see the connection module.

use super::{Args, Ctx, MAX_KEYS};
use crate::WriteOp;
use bytes::Bytes;

pub async fn get(cx: &mut Ctx<'_>, args: Args<'_>) {
    let opts = cx.session.read;
    match cx.shared.node.get(args.get(1), opts).await {
        Ok(read) => match read.winner().and_then(|v| v.value.as_ref()) {
            Some(value) => cx.out.bulk(value),
            None => cx.out.null(),
        },
        Err(e) => cx.node_error(e),
    }
}

pub async fn set(cx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() > 3 {
        let option = super::quote(args.get(3), 64).to_uppercase();
        cx.arg_error(&format!(
            "ERR SET option '{option}' is not supported by ringkv (no TTLs or conditional writes); use a plain SET key value"
        ));
        return;
    }
    let owned = args.to_owned_range(1, 2);
    set_many(cx, &[(owned.get(1), owned.get(2))]).await;
}

/// Plain `SET`s, in order: one atomic write for all of them; if that fails (one key over a
/// limit, too many siblings...), each is retried alone so each gets its own answer. A refused
/// batch wrote nothing, so the retry cannot apply anything twice.
pub async fn set_many(cx: &mut Ctx<'_>, pairs: &[(Bytes, Bytes)]) {
    let opts = cx.session.write;
    let shared = cx.shared;
    let node = &shared.node;
    if pairs.len() > 1 {
        let ops = pairs
            .iter()
            .map(|(key, value)| WriteOp {
                key: key.clone(),
                value: Some(value.clone()),
                context: None,
            })
            .collect();
        if node.write(ops, opts).await.is_ok() {
            for _ in pairs {
                cx.out.ok();
            }
            return;
        }
    }
    for (key, value) in pairs {
        match node.put(key.clone(), value.clone(), None, opts).await {
            Ok(_) => cx.out.ok(),
            Err(e) => cx.node_error(e),
        }
    }
}

/// `DEL key...`: how many of the keys held a value; all are deleted in one atomic write.
pub async fn del(cx: &mut Ctx<'_>, args: Args<'_>) {
    let keys = args.len() - 1;
    if !cx.check_key_count(keys) {
        return;
    }
    let keys = args.iter_from(1).map(Bytes::copy_from_slice).collect();
    match cx.shared.node.delete_many(keys, cx.session.write).await {
        Ok(deleted) => cx.out.integer(deleted as i64),
        Err(e) => cx.node_error(e),
    }
}

/// `EXISTS key...`: how many of the keys hold a value (a key named twice counts twice, as in
/// Redis).
pub async fn exists(cx: &mut Ctx<'_>, args: Args<'_>) {
    if !cx.check_key_count(args.len() - 1) {
        return;
    }
    let opts = cx.session.read;
    let mut count = 0i64;
    for key in args.iter_from(1) {
        match cx.shared.node.get(key, opts).await {
            Ok(read) => count += !read.is_missing() as i64,
            Err(e) => return cx.node_error(e),
        }
    }
    cx.out.integer(count);
}

/// `MGET key...`. Refused, rather than half-sent, when its reply would pass the client's output
/// bound: the client gets an error it can act on instead of a closed connection.
pub async fn mget(cx: &mut Ctx<'_>, args: Args<'_>) {
    let keys = args.len() - 1;
    if !cx.check_key_count(keys) {
        return;
    }
    let opts = cx.session.read;
    let bound = cx.shared.node.config().max_client_output_bytes;
    let mark = cx.out.len();
    cx.out.array(keys);
    for key in args.iter_from(1) {
        match cx.shared.node.get(key, opts).await {
            Ok(read) => match read.winner().and_then(|v| v.value.as_ref()) {
                Some(value) => cx.out.bulk(value),
                None => cx.out.null(),
            },
            Err(e) => {
                cx.out.buf.truncate(mark);
                return cx.node_error(e);
            }
        }
        if cx.out.len() > bound {
            cx.out.buf.truncate(mark);
            cx.fail(
                "output_buffer",
                &format!(
                    "ERR MGET reply would exceed this client's output limit of {bound} bytes; ask for fewer keys"
                ),
            );
            return;
        }
    }
}

/// `MSET key value [key value ...]`: all pairs in one atomic write.
pub async fn mset(cx: &mut Ctx<'_>, args: Args<'_>) {
    if (args.len() - 1) % 2 != 0 {
        cx.wrong_arity("mset");
        return;
    }
    let pairs = (args.len() - 1) / 2;
    if !cx.check_key_count(pairs) {
        return;
    }
    debug_assert!(pairs <= MAX_KEYS);
    let owned = args.to_owned_range(1, args.len() - 1);
    let ops = (0..pairs)
        .map(|i| WriteOp {
            key: owned.get(1 + 2 * i),
            value: Some(owned.get(2 + 2 * i)),
            context: None,
        })
        .collect();
    let opts = cx.session.write;
    match cx.shared.node.write(ops, opts).await {
        Ok(_) => cx.out.ok(),
        Err(e) => cx.node_error(e),
    }
}
