//! `CLIENT SETNAME | GETNAME | SETINFO | ID | INFO | LIST | HELP`.
//!
//! IMPLEMENTATION CAVEATS: `CLIENT LIST` shows only the calling connection (connections keep no
//! shared registry: one would cost a lock on every connect, name change and disconnect);
//! `CLIENT KILL`, `PAUSE`, `REPLY`, `TRACKING` and the rest are not supported.

use super::{Args, Ctx, Session};
use std::fmt::Write as _;

pub const BAD_NAME: &str =
    "ERR Client names cannot contain spaces, newlines or special characters.";

/// Redis's rule for names and library info: printable ASCII without spaces.
pub fn valid_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

pub fn client(cx: &mut Ctx<'_>, args: Args<'_>) {
    let sub = args.get(1);
    let argc = args.len();
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("SETNAME") {
        if argc != 3 {
            return cx.wrong_arity("client|setname");
        }
        let name = args.get(2);
        if !valid_name(name) {
            return cx.arg_error(BAD_NAME);
        }
        cx.session.name = (!name.is_empty()).then(|| name.to_vec());
        cx.out.ok();
    } else if is("GETNAME") {
        if argc != 2 {
            return cx.wrong_arity("client|getname");
        }
        match &cx.session.name {
            Some(name) => cx.out.bulk(name),
            None => cx.out.null(),
        }
    } else if is("SETINFO") {
        if argc != 4 {
            return cx.wrong_arity("client|setinfo");
        }
        let (attr, value) = (args.get(2), args.get(3));
        if !valid_name(value) {
            return cx.arg_error(&format!(
                "ERR {} cannot contain spaces, newlines or special characters.",
                super::quote(attr, 32)
            ));
        }
        let value = (!value.is_empty()).then(|| value.to_vec());
        if attr.eq_ignore_ascii_case(b"LIB-NAME") {
            cx.session.lib_name = value;
        } else if attr.eq_ignore_ascii_case(b"LIB-VER") {
            cx.session.lib_ver = value;
        } else {
            return cx.arg_error(&format!(
                "ERR Unrecognized option '{}'",
                super::quote(attr, 64)
            ));
        }
        cx.out.ok();
    } else if is("ID") {
        if argc != 2 {
            return cx.wrong_arity("client|id");
        }
        cx.out.integer(cx.session.id as i64);
    } else if is("INFO") {
        if argc != 2 {
            return cx.wrong_arity("client|info");
        }
        let line = info_line(cx, "client|info");
        cx.out.verbatim(line.as_bytes());
    } else if is("LIST") {
        let line = info_line(cx, "client|list");
        cx.out.verbatim(line.as_bytes());
    } else if is("HELP") {
        let lines = [
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "SETNAME <name>, GETNAME, SETINFO <LIB-NAME|LIB-VER> <value>, ID, INFO, LIST, HELP",
        ];
        cx.out.array(lines.len());
        for line in lines {
            cx.out.simple(line);
        }
    } else {
        cx.unknown_subcommand(sub, "CLIENT");
    }
}

/// One line in Redis's `CLIENT LIST` format (the fields ringkv can fill).
fn info_line(cx: &Ctx<'_>, cmd: &str) -> String {
    let s: &Session = cx.session;
    let text = |v: &Option<Vec<u8>>| {
        v.as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let mut line = String::new();
    let _ = writeln!(
        line,
        "id={} addr={} laddr={} fd=-1 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 obl=0 oll=0 omem=0 events=r cmd={cmd} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        s.id,
        s.peer,
        cx.shared.local_addr,
        text(&s.name),
        s.connected_at.elapsed().as_secs(),
        s.last_command_at.elapsed().as_secs(),
        cx.out.proto.version(),
        text(&s.lib_name),
        text(&s.lib_ver),
    );
    line
}
