//! Commands: the table of what ringkv answers, the dispatcher, and one file per family.
//!
//! - [`kv`]: `GET SET DEL EXISTS MGET MSET`, the Redis view of the store (one winner per key).
//! - [`ringkv`]: `RINGKV.GET/PUT/DEL/CONSISTENCY`, the full model (siblings, contexts, levels).
//! - [`session`]: `PING ECHO HELLO AUTH SELECT QUIT`, the connection's own state.
//! - [`client`]: `CLIENT ...`.
//! - [`info`], [`command`], [`config`]: `INFO`, `COMMAND`, `CONFIG`: what tools ask a server.
//!
//! Dispatch compares names as bytes, case-insensitively, without allocating: the name is
//! upper-cased into a stack buffer and matched. Unknown commands and wrong arity get Redis's
//! error texts and leave the connection open (BAD-INPUT 10). When a password is set, every
//! command but `AUTH`, `HELLO` and `QUIT` is refused until the client authenticates.

pub mod client;
pub mod command;
pub mod config;
pub mod info;
pub mod kv;
pub mod ringkv;
pub mod session;

use super::frame::Span;
use super::reply::Reply;
use super::Shared;
use crate::error::NodeError;
use crate::metrics::Api;
use crate::{Node, ReadOptions, WriteOptions};
use bytes::Bytes;
use ringkv_core::{Consistency, ConsistencyError};
use std::net::SocketAddr;
use std::time::Instant;

/// Most keys one `MGET`, `DEL`, `EXISTS` or `MSET` may name (BAD-INPUT 11).
pub const MAX_KEYS: usize = 10_000;

/// What the connection does after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Send the replies so far, then close (`QUIT`, protocol errors).
    Close,
    /// Close at once without sending what is buffered (a client over its output bound).
    Abort,
}

/// The arguments of one command: views into the connection's read buffer.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    buf: &'a [u8],
    spans: &'a [Span],
}

impl<'a> Args<'a> {
    pub fn new(buf: &'a [u8], spans: &'a [Span]) -> Args<'a> {
        Args { buf, spans }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i` (0 is the command name). Panics past the end: callers check arity first.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let s = self.spans[i];
        &self.buf[s.start..s.end]
    }

    /// Arguments `from..` as byte slices.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
        let buf = self.buf;
        self.spans[from..].iter().map(move |s| &buf[s.start..s.end])
    }

    /// Copies arguments `first..=last` out of the read buffer in one allocation, so that keys and
    /// values can outlive the request (the node keeps `Bytes`) without one allocation each.
    pub fn to_owned_range(&self, first: usize, last: usize) -> OwnedArgs<'a> {
        let start = self.spans[first].start;
        let end = self.spans[last].end;
        OwnedArgs {
            bytes: Bytes::copy_from_slice(&self.buf[start..end]),
            base: start,
            spans: self.spans,
        }
    }
}

/// Arguments copied out by [`Args::to_owned_range`].
pub struct OwnedArgs<'a> {
    bytes: Bytes,
    base: usize,
    spans: &'a [Span],
}

impl OwnedArgs<'_> {
    /// Argument `i` (within the copied range) as shared bytes.
    pub fn get(&self, i: usize) -> Bytes {
        let s = self.spans[i];
        self.bytes.slice(s.start - self.base..s.end - self.base)
    }
}

/// A connection's state that commands read and change.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub peer: SocketAddr,
    pub authenticated: bool,
    pub name: Option<Vec<u8>>,
    pub lib_name: Option<Vec<u8>>,
    pub lib_ver: Option<Vec<u8>>,
    /// Defaults for plain commands, set by `RINGKV.CONSISTENCY`.
    pub read: ReadOptions,
    pub write: WriteOptions,
    pub connected_at: Instant,
    pub last_command_at: Instant,
}

impl Session {
    pub fn new(id: u64, peer: SocketAddr, password_required: bool) -> Session {
        let now = Instant::now();
        Session {
            id,
            peer,
            authenticated: !password_required,
            name: None,
            lib_name: None,
            lib_ver: None,
            read: ReadOptions::default(),
            write: WriteOptions::default(),
            connected_at: now,
            last_command_at: now,
        }
    }
}

/// Everything a command handler works with.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub session: &'a mut Session,
    pub out: &'a mut Reply,
}

impl Ctx<'_> {
    pub fn node(&self) -> &Node {
        &self.shared.node
    }

    /// An error reply, counted under `kind` (one of [`crate::metrics::ERROR_KINDS`]).
    pub fn fail(&mut self, kind: &'static str, msg: &str) {
        self.shared.node.metrics().client_error(Api::Resp, kind);
        self.out.error(msg);
    }

    /// A malformed request: bad option, bad number, wrong use.
    pub fn arg_error(&mut self, msg: &str) {
        self.fail("argument", msg);
    }

    /// A node error as `-ERR <message>`, counted with its kind.
    pub fn node_error(&mut self, e: NodeError) {
        self.fail(e.kind(), &format!("ERR {e}"));
    }

    pub fn wrong_arity(&mut self, name: &str) {
        self.arg_error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        ));
    }

    pub fn syntax_error(&mut self) {
        self.arg_error("ERR syntax error");
    }

    pub fn unknown_subcommand(&mut self, sub: &[u8], command: &str) {
        self.fail(
            "unknown_command",
            &format!(
                "ERR unknown subcommand '{}'. Try {command} HELP.",
                quote(sub, 128)
            ),
        );
    }

    /// Refuses a command naming more than [`MAX_KEYS`] keys.
    pub fn check_key_count(&mut self, keys: usize) -> bool {
        if keys > MAX_KEYS {
            self.fail(
                "limit",
                &format!("ERR too many keys: {keys}, at most {MAX_KEYS} per command"),
            );
            return false;
        }
        true
    }
}

/// Every command ringkv knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Get,
    Set,
    Del,
    Exists,
    Mget,
    Mset,
    Info,
    Command,
    Config,
    Client,
    RingkvGet,
    RingkvPut,
    RingkvDel,
    RingkvConsistency,
}

/// What `COMMAND` reports about a command, and what dispatch checks.
#[derive(Debug)]
pub struct Spec {
    pub cmd: Cmd,
    /// Lower case, as Redis prints names in errors and `COMMAND`.
    pub name: &'static str,
    /// Redis's convention: `n` = exactly n arguments (name included), `-n` = at least n.
    pub arity: i64,
    pub flags: &'static [&'static str],
    /// First key, last key (-1 = the last argument), step.
    pub keys: (i64, i64, i64),
    pub group: &'static str,
    pub summary: &'static str,
    /// Allowed before authentication.
    pub no_auth: bool,
}

impl Spec {
    fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }
}

macro_rules! spec {
    ($cmd:ident, $name:literal, $arity:literal, [$($flag:literal),*], $keys:expr, $group:literal, $summary:literal, $no_auth:literal) => {
        Spec {
            cmd: Cmd::$cmd,
            name: $name,
            arity: $arity,
            flags: &[$($flag),*],
            keys: $keys,
            group: $group,
            summary: $summary,
            no_auth: $no_auth,
        }
    };
}

/// The command table, in [`Cmd`] order (a test checks it).
pub static COMMANDS: &[Spec] = &[
    spec!(Ping, "ping", -1, ["fast", "stale"], (0, 0, 0), "connection", "Returns the server's liveliness response.", false),
    spec!(Echo, "echo", 2, ["fast", "stale"], (0, 0, 0), "connection", "Returns the given string.", false),
    spec!(Hello, "hello", -1, ["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), "connection", "Handshakes with the server: protocol version, authentication, name.", true),
    spec!(Auth, "auth", -2, ["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), "connection", "Authenticates the connection.", true),
    spec!(Select, "select", 2, ["loading", "stale", "fast"], (0, 0, 0), "connection", "Selects the database: only 0 exists.", false),
    spec!(Quit, "quit", -1, ["noscript", "loading", "stale", "fast", "no_auth"], (0, 0, 0), "connection", "Closes the connection.", true),
    spec!(Get, "get", 2, ["readonly", "fast"], (1, 1, 1), "string", "Returns the value of a key (the latest sibling when there are several).", false),
    spec!(Set, "set", -3, ["write", "denyoom"], (1, 1, 1), "string", "Sets the value of a key (no options: TTLs and conditions are not supported).", false),
    spec!(Del, "del", -2, ["write"], (1, -1, 1), "generic", "Deletes keys; returns how many held a value.", false),
    spec!(Exists, "exists", -2, ["readonly", "fast"], (1, -1, 1), "generic", "Counts the given keys that hold a value.", false),
    spec!(Mget, "mget", -2, ["readonly", "fast"], (1, -1, 1), "string", "Returns the values of several keys.", false),
    spec!(Mset, "mset", -3, ["write", "denyoom"], (1, -1, 2), "string", "Sets several keys atomically.", false),
    spec!(Info, "info", -1, ["loading", "stale"], (0, 0, 0), "server", "Returns information and statistics about the node.", false),
    spec!(Command, "command", -1, ["loading", "stale"], (0, 0, 0), "server", "Returns information about the commands.", false),
    spec!(Config, "config", -2, ["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "Reads configuration parameters (CONFIG GET).", false),
    spec!(Client, "client", -2, ["noscript", "loading", "stale"], (0, 0, 0), "connection", "Client connection commands (SETNAME, GETNAME, SETINFO, ID, INFO, LIST).", false),
    spec!(RingkvGet, "ringkv.get", -2, ["readonly"], (1, 1, 1), "string", "RINGKV.GET key [R level]: the context, then every sibling's value.", false),
    spec!(RingkvPut, "ringkv.put", -3, ["write", "denyoom"], (1, 1, 1), "string", "RINGKV.PUT key value [CONTEXT c] [W level]: writes over a context; returns the new context.", false),
    spec!(RingkvDel, "ringkv.del", -2, ["write"], (1, 1, 1), "generic", "RINGKV.DEL key [CONTEXT c] [W level]: writes a tombstone; 1 if one was written.", false),
    spec!(RingkvConsistency, "ringkv.consistency", -1, ["fast"], (0, 0, 0), "connection", "RINGKV.CONSISTENCY [R level] [W level]: this connection's defaults for plain commands.", false),
];

/// Longest command name, for the stack buffer dispatch upper-cases into.
const MAX_NAME: usize = 20;

/// The command named `name`, compared case-insensitively without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > MAX_NAME {
        return None;
    }
    let mut upper = [0u8; MAX_NAME];
    let upper = &mut upper[..name.len()];
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    let cmd = match &*upper {
        b"GET" => Cmd::Get,
        b"SET" => Cmd::Set,
        b"PING" => Cmd::Ping,
        b"ECHO" => Cmd::Echo,
        b"HELLO" => Cmd::Hello,
        b"AUTH" => Cmd::Auth,
        b"SELECT" => Cmd::Select,
        b"QUIT" => Cmd::Quit,
        b"DEL" => Cmd::Del,
        b"EXISTS" => Cmd::Exists,
        b"MGET" => Cmd::Mget,
        b"MSET" => Cmd::Mset,
        b"INFO" => Cmd::Info,
        b"COMMAND" => Cmd::Command,
        b"CONFIG" => Cmd::Config,
        b"CLIENT" => Cmd::Client,
        b"RINGKV.GET" => Cmd::RingkvGet,
        b"RINGKV.PUT" => Cmd::RingkvPut,
        b"RINGKV.DEL" => Cmd::RingkvDel,
        b"RINGKV.CONSISTENCY" => Cmd::RingkvConsistency,
        _ => return None,
    };
    Some(&COMMANDS[cmd as usize])
}

/// Runs one command (never empty) and writes its reply.
pub async fn execute(cx: &mut Ctx<'_>, args: Args<'_>) -> Flow {
    let Some(spec) = lookup(args.get(0)) else {
        unknown_command(cx, args);
        return Flow::Continue;
    };
    if !spec.arity_ok(args.len()) {
        cx.wrong_arity(spec.name);
        return Flow::Continue;
    }
    if !cx.session.authenticated && !spec.no_auth {
        cx.fail("auth", "NOAUTH Authentication required.");
        return Flow::Continue;
    }
    match spec.cmd {
        Cmd::Get => kv::get(cx, args).await,
        Cmd::Set => kv::set(cx, args).await,
        Cmd::Del => kv::del(cx, args).await,
        Cmd::Exists => kv::exists(cx, args).await,
        Cmd::Mget => kv::mget(cx, args).await,
        Cmd::Mset => kv::mset(cx, args).await,
        Cmd::Ping => session::ping(cx, args),
        Cmd::Echo => cx.out.bulk(args.get(1)),
        Cmd::Hello => session::hello(cx, args),
        Cmd::Auth => session::auth(cx, args),
        Cmd::Select => session::select(cx, args),
        Cmd::Quit => {
            cx.out.ok();
            return Flow::Close;
        }
        Cmd::Info => info::info(cx, args),
        Cmd::Command => command::command(cx, args),
        Cmd::Config => config::config(cx, args),
        Cmd::Client => client::client(cx, args),
        Cmd::RingkvGet => ringkv::get(cx, args).await,
        Cmd::RingkvPut => ringkv::put(cx, args).await,
        Cmd::RingkvDel => ringkv::del(cx, args).await,
        Cmd::RingkvConsistency => ringkv::consistency(cx, args),
    }
    Flow::Continue
}

/// Redis's text: `unknown command 'x', with args beginning with: 'a' 'b' `.
fn unknown_command(cx: &mut Ctx<'_>, args: Args<'_>) {
    let mut listed = String::new();
    for arg in args.iter_from(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&quote(arg, room));
        listed.push_str("' ");
    }
    let msg = format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        quote(args.get(0), 128)
    );
    cx.fail("unknown_command", &msg);
}

/// Client bytes for an error message: at most `max` bytes, lossy UTF-8 (the reply writer
/// replaces CR and LF).
pub fn quote(bytes: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned()
}

/// A consistency level argument (`one`, `quorum`, `all`, a number).
pub fn parse_level(arg: &[u8]) -> Result<Consistency, ConsistencyError> {
    match std::str::from_utf8(arg) {
        Ok(text) => Consistency::parse(text),
        Err(_) => Err(ConsistencyError::Unknown(quote(arg, 64))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_enum_order_and_names_resolve() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(spec.cmd as usize, i, "{}", spec.name);
            assert!(spec.name.len() <= MAX_NAME);
            assert_eq!(lookup(spec.name.as_bytes()).unwrap().cmd, spec.cmd);
            assert_eq!(
                lookup(spec.name.to_uppercase().as_bytes()).unwrap().cmd,
                spec.cmd
            );
        }
        assert_eq!(lookup(b"gEt").unwrap().cmd, Cmd::Get);
        assert!(lookup(b"GETX").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(&[b'A'; 1000]).is_none());
    }

    #[test]
    fn arity_follows_redis_convention() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let del = lookup(b"del").unwrap();
        assert!(!del.arity_ok(1) && del.arity_ok(2) && del.arity_ok(50));
    }
}
