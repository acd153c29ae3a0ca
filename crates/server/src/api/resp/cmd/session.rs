//! `PING ECHO HELLO AUTH SELECT QUIT`: the connection's own state.
//!
//! Authentication follows Redis 6+ with one user, `default`, whose password is the node's
//! `password` setting. With no password configured, `AUTH pass` gets Redis's "no password
//! configured" error and `AUTH default <anything>` succeeds (Redis's `nopass` default user).
//! Before a client authenticates on a node with a password, its requests are also held to
//! tighter protocol bounds (see `frame::Limits::UNAUTHENTICATED`).

use super::{Args, Ctx};
use crate::api::resp::frame::parse_len;
use crate::api::resp::reply::Protocol;

/// The Redis version ringkv reports (`HELLO`, `INFO`): clients gate features on it, and ringkv
/// speaks the subset of Redis 7.2 its commands need.
pub const REDIS_COMPAT_VERSION: &str = "7.2.0";

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

pub fn ping(cx: &mut Ctx<'_>, args: Args<'_>) {
    match args.len() {
        1 => cx.out.simple("PONG"),
        2 => cx.out.bulk(args.get(1)),
        _ => cx.wrong_arity("ping"),
    }
}

pub fn select(cx: &mut Ctx<'_>, args: Args<'_>) {
    match parse_len(args.get(1)) {
        Some(0) => cx.out.ok(),
        Some(_) => cx.arg_error("ERR DB index is out of range"),
        None => cx.arg_error("ERR value is not an integer or out of range"),
    }
}

/// `AUTH password` or `AUTH username password`.
pub fn auth(cx: &mut Ctx<'_>, args: Args<'_>) {
    let (user, pass) = match args.len() {
        2 => (None, args.get(1)),
        3 => (Some(args.get(1)), args.get(2)),
        _ => return cx.syntax_error(),
    };
    if user.is_none() && cx.node().config().password.is_none() {
        cx.fail(
            "auth",
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        );
        return;
    }
    if check_credentials(cx, user, pass) {
        cx.session.authenticated = true;
        cx.out.ok();
    } else {
        cx.fail("auth", WRONGPASS);
    }
}

/// True when `user` (default: `default`) and `pass` match. A node without a password accepts
/// any password for `default`, as Redis's `nopass` user does.
fn check_credentials(cx: &Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> bool {
    if let Some(user) = user {
        if user != b"default" {
            return false;
        }
    }
    match &cx.node().config().password {
        None => true,
        Some(expected) => constant_time_eq(expected.as_bytes(), pass),
    }
}

/// Compares without an early exit on the first differing byte (length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
pub fn hello(cx: &mut Ctx<'_>, args: Args<'_>) {
    let mut proto = cx.out.proto;
    if args.len() >= 2 {
        proto = match parse_len(args.get(1)) {
            Some(2) => Protocol::Resp2,
            Some(3) => Protocol::Resp3,
            Some(_) => return cx.fail("argument", "NOPROTO unsupported protocol version"),
            None => return cx.arg_error("ERR Protocol version is not an integer or out of range"),
        };
    }
    let mut credentials = None;
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        let opt = args.get(i);
        if opt.eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
            credentials = Some((args.get(i + 1), args.get(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && i + 1 < args.len() {
            name = Some(args.get(i + 1));
            i += 2;
        } else {
            return cx.arg_error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                super::quote(opt, 64)
            ));
        }
    }
    if let Some((user, pass)) = credentials {
        if !check_credentials(cx, Some(user), pass) {
            return cx.fail("auth", WRONGPASS);
        }
        cx.session.authenticated = true;
    }
    if !cx.session.authenticated {
        return cx.fail(
            "auth",
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
    }
    if let Some(name) = name {
        if !super::client::valid_name(name) {
            return cx.arg_error(super::client::BAD_NAME);
        }
        cx.session.name = (!name.is_empty()).then(|| name.to_vec());
    }
    cx.out.proto = proto;
    let out = &mut *cx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"ringkv");
    out.bulk(b"version");
    out.bulk(REDIS_COMPAT_VERSION.as_bytes());
    out.bulk(b"proto");
    out.integer(proto.version());
    out.bulk(b"id");
    out.integer(cx.session.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn password_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(constant_time_eq(b"", b""));
    }
}
