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

pub fn status(conn: &Connection) -> anyhow::Result<()> {
    let resp = conn.send(conn.request(reqwest::Method::GET, "/v1/cluster")?)?;
    if !resp.status().is_success() {
        return Err(fail(resp));
    }
    let body: serde_json::Value = resp.json()?;
    println!(
        "cluster: n={} r={} w={} partitions={} durability={}",
        body["n"], body["r"], body["w"], body["partitions"], body["durability"]
    );
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
            m["weight"],
            text(&m["status"]),
            if m["down"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            format!("{}ms", m["heartbeat_age_ms"].as_u64().unwrap_or(0)),
            m["partitions_held"],
            // Hints the answering node holds for this member, to deliver when it is back.
            m["hints_pending"].as_u64().unwrap_or(0)
        );
    }
    // The answering node's anti-entropy: partitions it replicates that had a successful
    // exchange since it started, and how long ago the oldest of those was.
    let ae = &body["anti_entropy"];
    if ae.is_object() {
        let oldest = match ae["oldest_exchange_age_ms"].as_u64() {
            Some(ms) => format!("oldest {} s ago", ms / 1000),
            None => "none yet".to_string(),
        };
        println!(
            "anti-entropy: {}/{} partitions exchanged, {oldest}, {} repairs",
            ae["exchanged_ever"].as_u64().unwrap_or(0),
            ae["partitions"].as_u64().unwrap_or(0),
            ae["repairs"].as_u64().unwrap_or(0)
        );
    }
    Ok(())
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
            n["partitions"],
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
