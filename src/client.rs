//! The user and operator commands that talk to a node's HTTP API: `get`, `put`, `delete`,
//! `status`, `ring`. Values go to stdout as raw bytes; contexts and other notes go to stderr,
//! so `ringkv get k > file` saves exactly the value.

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use std::io::{Read, Write};

const CONTEXT_HEADER: &str = "x-ringkv-context";

/// Everything but unreserved characters is percent-encoded, so any key reaches the node intact.
const KEY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Where the node is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// The node's HTTP address, host:port.
    #[arg(long, env = "RINGKV_HTTP", default_value = "127.0.0.1:7380")]
    http: String,
    /// Client password, if the node has one.
    #[arg(long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,
}

impl Connection {
    /// A connection to `http` without a password (the local cluster's nodes have none).
    pub fn new(http: String) -> Connection {
        Connection {
            http,
            password: None,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<RequestBuilder> {
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let mut req = client.request(method, format!("http://{}{}", self.http, path));
        if let Some(p) = &self.password {
            req = req.bearer_auth(p);
        }
        Ok(req)
    }

    fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        req.send()
            .with_context(|| format!("cannot reach ringkv at {}", self.http))
    }
}

fn kv_path(key: &str, query: &[(&str, Option<&str>)]) -> String {
    let mut path = format!("/v1/kv/{}", utf8_percent_encode(key, KEY_ENCODE));
    let mut sep = '?';
    for (name, value) in query {
        if let Some(v) = value {
            path.push_str(&format!(
                "{sep}{name}={}",
                utf8_percent_encode(v, KEY_ENCODE)
            ));
            sep = '&';
        }
    }
    path
}

/// Turns an error answer into a message that says what the node said.
fn fail(resp: Response) -> anyhow::Error {
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or(body);
    anyhow::anyhow!("{status}: {msg}")
}

pub fn get(conn: &Connection, key: &str, r: Option<&str>) -> anyhow::Result<()> {
    let resp = conn.send(conn.request(reqwest::Method::GET, &kv_path(key, &[("r", r)]))?)?;
    let context = header(&resp, CONTEXT_HEADER);
    match resp.status() {
        StatusCode::OK => {
            let body = resp.bytes()?;
            std::io::stdout().write_all(&body)?;
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                println!();
            }
            eprintln!("context: {context}");
            Ok(())
        }
        StatusCode::MULTIPLE_CHOICES => {
            let body: serde_json::Value = resp.json()?;
            let siblings = body["siblings"].as_array().cloned().unwrap_or_default();
            eprintln!(
                "{} siblings (write back with the context to resolve them):",
                siblings.len()
            );
            for (i, s) in siblings.iter().enumerate() {
                let ts = s["timestamp_ms"].as_u64().unwrap_or(0);
                if s["deleted"].as_bool().unwrap_or(false) {
                    println!("{}) <deleted> (timestamp_ms {ts})", i + 1);
                } else {
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(s["value"].as_str().unwrap_or(""))
                        .unwrap_or_default();
                    println!(
                        "{}) {} (timestamp_ms {ts})",
                        i + 1,
                        String::from_utf8_lossy(&raw)
                    );
                }
            }
            eprintln!("context: {}", body["context"].as_str().unwrap_or(&context));
            Ok(())
        }
        StatusCode::NOT_FOUND => {
            eprintln!("(not found)");
            if !context.is_empty() {
                eprintln!("context: {context}");
            }
            std::process::exit(1);
        }
        _ => Err(fail(resp)),
    }
}

pub fn put(
    conn: &Connection,
    key: &str,
    value: &str,
    context: Option<&str>,
    w: Option<&str>,
) -> anyhow::Result<()> {
    let body = if value == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        buf
    } else {
        value.as_bytes().to_vec()
    };
    let mut req = conn
        .request(reqwest::Method::PUT, &kv_path(key, &[("w", w)]))?
        .body(body);
    if let Some(c) = context {
        req = req.header(CONTEXT_HEADER, c);
    }
    report_write(conn.send(req)?)
}

pub fn delete(
    conn: &Connection,
    key: &str,
    context: Option<&str>,
    w: Option<&str>,
) -> anyhow::Result<()> {
    let mut req = conn.request(reqwest::Method::DELETE, &kv_path(key, &[("w", w)]))?;
    if let Some(c) = context {
        req = req.header(CONTEXT_HEADER, c);
    }
    let resp = conn.send(req)?;
    if resp.status() == StatusCode::NOT_FOUND {
        eprintln!("(not found)");
        std::process::exit(1);
    }
    report_write(resp)
}

fn report_write(resp: Response) -> anyhow::Result<()> {
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    let body: serde_json::Value = resp.json().context("unexpected answer from the node")?;
    let acked: Vec<&str> = body["acked_by"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    println!("OK (acknowledged by {})", acked.join(", "));
    if let Some(n) = body["siblings"].as_u64().filter(|n| *n > 1) {
        println!("the key now has {n} siblings");
    }
    eprintln!("context: {}", body["context"].as_str().unwrap_or(""));
    Ok(())
}

/// How many partitions `ringkv status` lists unless asked for all of them.
pub const STATUS_PARTITION_LINES: usize = 20;

/// `ringkv status` with the anti-entropy listing cut to the [`STATUS_PARTITION_LINES`] stalest
/// partitions.
pub fn status(conn: &Connection) -> anyhow::Result<()> {
    status_with(conn, Some(STATUS_PARTITION_LINES))
}

/// `ringkv status`, listing at most `partition_lines` partitions (`None`: every one).
pub fn status_with(conn: &Connection, partition_lines: Option<usize>) -> anyhow::Result<()> {
    let resp = conn.send(conn.request(reqwest::Method::GET, "/v1/cluster")?)?;
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    let body: serde_json::Value = resp.json()?;
    println!(
        "cluster: n={} r={} w={} partitions={} durability={}",
        body["n"], body["r"], body["w"], body["partitions"], body["durability"]
    );
    // Per-data-center replication, when set: where `local_quorum` counts.
    if let Some(per_dc) = body["replication"].as_object().filter(|m| !m.is_empty()) {
        let per_dc: Vec<String> = per_dc.iter().map(|(dc, n)| format!("{dc}={n}")).collect();
        println!(
            "replication: {} (this node is in {})",
            per_dc.join(","),
            text(&body["dc"])
        );
    }
    let members = body["members"].as_array().cloned().unwrap_or_default();
    if members.is_empty() {
        bail!("the node reported no members");
    }
    println!(
        "{:<16} {:<22} {:<22} {:<6} {:<6} {:>6} {:<8} {:<5} {:>9} {:>10} {:>7}",
        "ID",
        "PEER",
        "HTTP",
        "DC",
        "RACK",
        "WEIGHT",
        "STATUS",
        "DOWN",
        "HB AGE",
        "PARTITIONS",
        "HINTS"
    );
    for m in members {
        let me = if m["self"].as_bool().unwrap_or(false) {
            "*"
        } else {
            ""
        };
        println!(
            "{:<16} {:<22} {:<22} {:<6} {:<6} {:>6} {:<8} {:<5} {:>9} {:>10} {:>7}",
            format!("{}{me}", text(&m["id"])),
            text(&m["peer_addr"]),
            text(&m["http_addr"]),
            text(&m["dc"]),
            text(&m["rack"]),
            // serde_json's Display ignores widths: format numbers as strings.
            text(&m["weight"]),
            text(&m["status"]),
            if m["down"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            format!("{}ms", m["heartbeat_age_ms"].as_u64().unwrap_or(0)),
            text(&m["partitions_held"]),
            // Hints the answering node holds for this member, to deliver when it is back.
            m["hints_pending"].as_u64().unwrap_or(0)
        );
    }
    for line in transfer_lines(&body["transfers"]) {
        println!("{line}");
    }
    // The answering node's anti-entropy: partitions it replicates that had a successful
    // exchange since it started, and how long ago the oldest of those was.
    let ae = &body["anti_entropy"];
    if ae.is_object() {
        let oldest = match ae["oldest_exchange_age_ms"].as_u64() {
            Some(ms) => format!("oldest {} ago", fmt_age(ms)),
            None => "none yet".to_string(),
        };
        println!(
            "anti-entropy: {}/{} partitions exchanged, {oldest}, {} repairs",
            ae["exchanged_ever"].as_u64().unwrap_or(0),
            ae["partitions"].as_u64().unwrap_or(0),
            ae["repairs"].as_u64().unwrap_or(0)
        );
        let listed = ae["per_partition"].as_array().cloned().unwrap_or_default();
        for line in partition_lines_of(&listed, partition_lines) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// A text progress bar of `done` out of `total`, with the percentage: `[#####---------------]  25%`.
pub(crate) fn progress(done: u64, total: u64) -> String {
    let pct = (done * 100).checked_div(total).unwrap_or(100).min(100);
    let filled = (pct / 5) as usize;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        "-".repeat(20 - filled)
    )
}

/// The answering node's partition transfers, as `ringkv status` prints them (nothing when none).
fn transfer_lines(t: &serde_json::Value) -> Vec<String> {
    let get = |k: &str| t[k].as_u64().unwrap_or(0);
    let mut out = Vec::new();
    let (to_pull, pulled) = (get("partitions_to_pull"), get("partitions_pulled"));
    if to_pull > 0 {
        let now = match t["pulling"].as_u64() {
            Some(p) => format!(", pulling p{p}"),
            None => String::new(),
        };
        out.push(format!(
            "streaming in: {} {pulled}/{to_pull} partitions, {} keys, {} KiB{now}",
            progress(pulled, to_pull),
            get("keys_received"),
            get("bytes_received") / 1024
        ));
    }
    let (handoff, confirmed) = (get("handoff_partitions"), get("handoff_confirmed"));
    if handoff > 0 {
        out.push(format!(
            "handing off:  {} {confirmed}/{handoff} partitions confirmed by their new owners",
            progress(confirmed, handoff)
        ));
    }
    out
}

/// `ringkv leave`: asks the node to leave, then follows its handoff until it is `left` (or
/// `timeout_secs` pass: the node keeps going; run `ringkv status` to watch).
pub fn leave(conn: &Connection, timeout_secs: u64) -> anyhow::Result<()> {
    let resp = conn.send(conn.request(reqwest::Method::POST, "/v1/admin/leave")?)?;
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    println!("leaving: the new owners of this node's partitions are streaming them in");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    loop {
        let resp = conn.send(conn.request(reqwest::Method::GET, "/v1/cluster")?)?;
        let body: serde_json::Value = resp.json()?;
        let me = body["members"]
            .as_array()
            .and_then(|ms| {
                ms.iter()
                    .find(|m| m["self"].as_bool() == Some(true))
                    .cloned()
            })
            .unwrap_or_default();
        if me["status"].as_str() == Some("left") {
            println!("left: every partition is with its new owners; the node can be stopped");
            return Ok(());
        }
        for line in transfer_lines(&body["transfers"]) {
            println!("{line}");
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "still leaving after {timeout_secs}s; the handoff continues (see `ringkv status`)"
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// `ringkv remove NODE`: takes a dead member out; the others restore N copies of its data.
pub fn remove(conn: &Connection, id: &str) -> anyhow::Result<()> {
    let path = format!(
        "/v1/admin/remove/{}",
        percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC)
    );
    let resp = conn.send(conn.request(reqwest::Method::POST, &path)?)?;
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    println!("removed {id}: its partitions are being streamed to their new replicas (see `ringkv status`)");
    Ok(())
}

/// The per-partition anti-entropy listing of `ringkv status`, stalest first.
///
/// With a `limit` (the default view): the partitions never exchanged since the node started
/// collapse into one line of ids (at most `limit` of them), then one line per exchanged
/// partition, oldest first, at most `limit`, then how many more there are. Without: one line per
/// partition, the never-exchanged ones first.
fn partition_lines_of(partitions: &[serde_json::Value], limit: Option<usize>) -> Vec<String> {
    let mut rows: Vec<(u64, Option<u64>, String)> = partitions
        .iter()
        .map(|p| {
            let peers: Vec<String> = p["peers"]
                .as_array()
                .map(|a| a.iter().map(text).collect())
                .unwrap_or_default();
            (
                p["partition"].as_u64().unwrap_or(0),
                p["last_exchange_age_ms"].as_u64(),
                peers.join(", "),
            )
        })
        .collect();
    // None (never) first, then the largest age; ties by partition id.
    rows.sort_by_key(|(id, age, _)| (age.map(std::cmp::Reverse), *id));
    let line = |(id, age, peers): &(u64, Option<u64>, String)| {
        let when = match age {
            Some(ms) => format!("last exchange {} ago", fmt_age(*ms)),
            None => "never exchanged".to_string(),
        };
        let with = if peers.is_empty() {
            "no other replica".to_string()
        } else {
            format!("with {peers}")
        };
        format!("{:<6} {when:<28} ({with})", format!("p{id}"))
    };
    let Some(limit) = limit else {
        return rows.iter().map(line).collect();
    };
    let split = rows.iter().take_while(|(_, age, _)| age.is_none()).count();
    let (never, exchanged) = rows.split_at(split);
    let mut lines = Vec::new();
    if !never.is_empty() {
        let ids: Vec<String> = never
            .iter()
            .take(limit)
            .map(|(id, ..)| format!("p{id}"))
            .collect();
        let more = never.len() - ids.len();
        lines.push(format!(
            "never exchanged since start ({}): {}{}",
            never.len(),
            ids.join(" "),
            if more > 0 {
                format!(" ... and {more} more")
            } else {
                String::new()
            }
        ));
    }
    lines.extend(exchanged.iter().take(limit).map(line));
    if exchanged.len() > limit {
        lines.push(format!(
            "... and {} more exchanged more recently; `ringkv status --all-partitions` lists every \
             partition",
            exchanged.len() - limit
        ));
    }
    lines
}

/// `850ms`, `3.2s`, `4m05s`, `2h07m`.
fn fmt_age(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", s, (ms % 1000) / 100),
        60_000..3_600_000 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub fn ring(conn: &Connection) -> anyhow::Result<()> {
    let resp = conn.send(conn.request(reqwest::Method::GET, "/v1/ring")?)?;
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    let body: serde_json::Value = resp.json()?;
    println!("partitions: {}", body["partitions"]);
    println!("{:<20} {:>10} {:>8}", "NODE", "PARTITIONS", "SHARE");
    for n in body["nodes"].as_array().cloned().unwrap_or_default() {
        let share = n["share"].as_f64().unwrap_or(0.0) * 100.0;
        println!(
            "{:<20} {:>10} {:>7.1}%",
            text(&n["id"]),
            text(&n["partitions"]),
            share
        );
    }
    Ok(())
}

fn header(resp: &Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn text(v: &serde_json::Value) -> String {
    v.as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partition_listing_is_stalest_first_and_truncated() {
        let ps = [
            json!({"partition": 4, "peers": ["n2", "n3"], "last_exchange_age_ms": 3_200}),
            json!({"partition": 9, "peers": ["n3"], "last_exchange_age_ms": null}),
            json!({"partition": 2, "peers": [], "last_exchange_age_ms": 65_000}),
            json!({"partition": 1, "peers": ["n2"], "last_exchange_age_ms": 10}),
            json!({"partition": 7, "peers": ["n3"], "last_exchange_age_ms": null}),
        ];
        let all = partition_lines_of(&ps, None);
        assert_eq!(all.len(), 5);
        assert!(all[0].starts_with("p7 ") && all[0].contains("never exchanged"));
        assert!(
            all[1].starts_with("p9 ") && all[1].ends_with("(with n3)"),
            "{}",
            all[1]
        );
        assert!(all[2].contains("last exchange 1m05s ago") && all[2].contains("no other"));
        assert!(all[3].starts_with("p4 ") && all[3].contains("last exchange 3.2s ago"));
        assert!(all[4].contains("10ms ago"), "{}", all[4]);
        let cut = partition_lines_of(&ps, Some(1));
        assert_eq!(cut.len(), 3, "{cut:?}");
        assert_eq!(cut[0], "never exchanged since start (2): p7 ... and 1 more");
        assert!(cut[1].starts_with("p2 "), "{}", cut[1]);
        assert!(cut[2].starts_with("... and 2 more exchanged"), "{}", cut[2]);
        assert_eq!(fmt_age(7_322_000), "2h02m");
    }
}
