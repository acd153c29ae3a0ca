//! `INFO [section ...]`: real figures from `Node::info()` and the metrics registry, in Redis's
//! `field:value` layout so that tools that parse `INFO` keep working.
//!
//! Sections: `server` (with `redis_version:7.2.0` for client compatibility, `ringkv_version`,
//! `node_id`, uptime), `clients`, `persistence` (durability mode, fsyncs), `stats` (commands,
//! operations per kind, errors per kind), `replication` (always `role:master`: every ringkv node
//! takes writes), `keyspace` (`db0:keys=N,expires=0,avg_ttl=0`). No argument, `default`, `all`
//! or `everything` give them all; an unknown section gives nothing, as in Redis.

use super::{Args, Ctx};
use crate::metrics::{Api, ApiLabels, ErrorLabels, ERROR_KINDS};
use std::fmt::Write as _;

const SECTIONS: &[&str] = &[
    "server",
    "clients",
    "persistence",
    "stats",
    "replication",
    "keyspace",
];

pub fn info(cx: &mut Ctx<'_>, args: Args<'_>) {
    let mut wanted = [false; SECTIONS.len()];
    if args.len() == 1 {
        wanted = [true; SECTIONS.len()];
    }
    for arg in args.iter_from(1) {
        if [&b"all"[..], b"default", b"everything"]
            .iter()
            .any(|a| a.eq_ignore_ascii_case(arg))
        {
            wanted = [true; SECTIONS.len()];
        } else if let Some(i) = SECTIONS
            .iter()
            .position(|s| s.as_bytes().eq_ignore_ascii_case(arg))
        {
            wanted[i] = true;
        }
    }
    let text = render(cx, &wanted);
    cx.out.verbatim(text.as_bytes());
}

fn render(cx: &Ctx<'_>, wanted: &[bool]) -> String {
    let node = cx.node();
    let info = node.info();
    let m = node.metrics();
    let resp = ApiLabels { api: Api::Resp };
    let mut out = String::with_capacity(1024);
    // Writing to a String cannot fail.
    macro_rules! line {
        ($($arg:tt)*) => {{ let _ = write!(out, $($arg)*); out.push_str("\r\n"); }};
    }
    for (i, section) in SECTIONS.iter().enumerate() {
        if !wanted[i] {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        match *section {
            "server" => {
                line!("# Server");
                line!("redis_version:{}", super::session::REDIS_COMPAT_VERSION);
                line!("ringkv_version:{}", info.version);
                line!("redis_mode:standalone");
                line!("os:{} {}", std::env::consts::OS, std::env::consts::ARCH);
                line!("arch_bits:{}", usize::BITS);
                line!("process_id:{}", std::process::id());
                line!("tcp_port:{}", cx.shared.local_addr.port());
                line!("node_id:{}", info.node_id);
                line!("uptime_in_seconds:{}", info.uptime_secs);
                line!("uptime_in_days:{}", info.uptime_secs / 86_400);
                line!("replication_factor:{}", info.n);
                let config = node.config();
                line!(
                    "replication_per_dc:{}",
                    crate::config::format_replication(&config.replication)
                );
                line!("dc:{}", config.dc);
                line!("rack:{}", config.rack);
                line!("default_r:{}", info.r);
                line!("default_w:{}", info.w);
                line!("partitions:{}", info.partitions);
            }
            "clients" => {
                line!("# Clients");
                line!(
                    "connected_clients:{}",
                    m.connections.get_or_create(&resp).get()
                );
                line!("maxclients:{}", node.config().max_connections);
                line!(
                    "client_output_buffer_limit_bytes:{}",
                    node.config().max_client_output_bytes
                );
            }
            "persistence" => {
                line!("# Persistence");
                line!("loading:0");
                line!(
                    "durability:{}",
                    match info.durability {
                        crate::DurabilityMode::Sync => "sync",
                        crate::DurabilityMode::Periodic => "periodic",
                    }
                );
                line!("sync_interval_ms:{}", info.sync_interval_ms);
                line!("storage_writes:{}", info.storage_writes);
                line!("fsyncs:{}", info.fsyncs);
                line!("disk_bytes:{}", info.disk_bytes);
                line!("storage_poisoned:{}", info.poisoned as u8);
            }
            "stats" => {
                line!("# Stats");
                line!(
                    "total_connections_received:{}",
                    m.connections_total.get_or_create(&resp).get()
                );
                line!(
                    "total_commands_processed:{}",
                    m.requests.get_or_create(&resp).get()
                );
                line!(
                    "rejected_connections:{}",
                    m.connections_refused.get_or_create(&resp).get()
                );
                line!("ops_get:{}", info.gets);
                line!("ops_put:{}", info.puts);
                line!("ops_delete:{}", info.deletes);
                line!("total_error_replies:{}", m.client_error_total(Api::Resp));
                for kind in ERROR_KINDS {
                    let labels = ErrorLabels {
                        api: Api::Resp,
                        kind,
                    };
                    let count = m.client_errors.get(&labels).map(|c| c.get()).unwrap_or(0);
                    line!("errors_{kind}:{count}");
                }
                line!("sibling_warnings:{}", m.sibling_warnings.get());
                line!("read_repairs:{}", m.read_repairs.get());
                line!("hints_pending:{}", info.hints_pending);
                line!("hints_delivered:{}", m.hints_delivered.get());
                line!("hints_dropped:{}", m.hints_dropped.get());
                line!("anti_entropy_repairs:{}", m.anti_entropy_repairs.get());
                line!("anti_entropy_bytes:{}", m.anti_entropy_bytes.get());
                line!("tombstones_purged:{}", m.tombstones_purged.get());
                line!("tombstones_deferred:{}", m.tombstones_deferred.get());
            }
            "replication" => {
                line!("# Replication");
                line!("role:master");
                line!("connected_slaves:0");
            }
            "keyspace" => {
                line!("# Keyspace");
                line!("db0:keys={},expires=0,avg_ttl=0", info.keys);
            }
            _ => {}
        }
    }
    out
}
