//! `COMMAND`, `COMMAND COUNT | LIST | INFO [name...] | DOCS [name...] | HELP`, from the command
//! table. redis-cli sends `COMMAND DOCS` when it starts interactively (for its hints); cluster-aware
//! clients read `COMMAND` for key positions.

use super::{lookup, Args, Ctx, Spec, COMMANDS};

pub fn command(cx: &mut Ctx<'_>, args: Args<'_>) {
    if args.len() == 1 {
        cx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            write_info(cx, spec);
        }
        return;
    }
    let sub = args.get(1);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    if is("COUNT") {
        cx.out.integer(COMMANDS.len() as i64);
    } else if is("LIST") {
        cx.out.array(COMMANDS.len());
        for spec in COMMANDS {
            cx.out.bulk(spec.name.as_bytes());
        }
    } else if is("INFO") {
        if args.len() == 2 {
            cx.out.array(COMMANDS.len());
            for spec in COMMANDS {
                write_info(cx, spec);
            }
        } else {
            cx.out.array(args.len() - 2);
            for name in args.iter_from(2) {
                match lookup(name) {
                    Some(spec) => write_info(cx, spec),
                    None => cx.out.null(),
                }
            }
        }
    } else if is("DOCS") {
        let specs: Vec<&Spec> = if args.len() == 2 {
            COMMANDS.iter().collect()
        } else {
            args.iter_from(2).filter_map(lookup).collect()
        };
        cx.out.map(specs.len());
        for spec in specs {
            cx.out.bulk(spec.name.as_bytes());
            cx.out.map(3);
            cx.out.bulk(b"summary");
            cx.out.bulk(spec.summary.as_bytes());
            cx.out.bulk(b"since");
            cx.out.bulk(b"1.0.0");
            cx.out.bulk(b"group");
            cx.out.bulk(spec.group.as_bytes());
        }
    } else if is("HELP") {
        let lines = [
            "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "(no subcommand), COUNT, LIST, INFO [<command-name> ...], DOCS [<command-name> ...], HELP",
        ];
        cx.out.array(lines.len());
        for line in lines {
            cx.out.simple(line);
        }
    } else {
        cx.unknown_subcommand(sub, "COMMAND");
    }
}

/// One command in Redis 7's `COMMAND INFO` shape: name, arity, flags, first key, last key, step,
/// ACL categories, tips, key specifications, subcommands (the last four empty).
fn write_info(cx: &mut Ctx<'_>, spec: &Spec) {
    let out = &mut *cx.out;
    out.array(10);
    out.bulk(spec.name.as_bytes());
    out.integer(spec.arity);
    out.set(spec.flags.len());
    for flag in spec.flags {
        out.simple(flag);
    }
    out.integer(spec.keys.0);
    out.integer(spec.keys.1);
    out.integer(spec.keys.2);
    out.set(0);
    out.set(0);
    out.array(0);
    out.array(0);
}
