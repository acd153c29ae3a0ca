//! Real clients against the real binary: redis-cli (one-shot and interactive), redis-benchmark,
//! redis-py, curl and ringkv's own CLI. Each tool missing here skips loudly (fails in CI).

mod common;

use common::{bin, require_tool, NodeProc};
use std::io::Write;
use std::process::{Command, Stdio};

fn redis_cli(node: &NodeProc, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(out.status.success(), "redis-cli {args:?} failed: {:?}", out);
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn redis_cli_one_shot_and_interactive() {
    if !require_tool("redis-cli") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    assert_eq!(redis_cli(&node, &["PING"]), "PONG");
    assert_eq!(redis_cli(&node, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(redis_cli(&node, &["GET", "greeting"]), "hello world");
    assert_eq!(redis_cli(&node, &["EXISTS", "greeting", "nope"]), "1");
    assert_eq!(redis_cli(&node, &["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(redis_cli(&node, &["MGET", "a", "b", "c"]), "1\n2");
    assert_eq!(redis_cli(&node, &["DEL", "a", "c"]), "1");
    let err = redis_cli(&node, &["SET", "k", "v", "EX", "10"]);
    assert!(err.contains("not supported"), "{err}");
    let info = redis_cli(&node, &["INFO"]);
    assert!(info.contains("ringkv_version:"), "{info}");
    assert!(
        info.contains("db0:keys=2"),
        "INFO should count the 2 live keys: {info}"
    );

    // Interactive: redis-cli reading commands from a terminal-less stdin, as a user pipes them.
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SET inter active\nGET inter\nNOSUCHCOMMAND x\nGET greeting\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // redis-cli prints a blank line after an error reply; only the replies matter here.
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines[0], "OK", "{text}");
    assert_eq!(lines[1], "active", "{text}");
    assert!(lines[2].contains("unknown command"), "{text}");
    assert_eq!(lines[3], "hello world", "{text}");
}

#[test]
fn redis_benchmark_runs_unchanged() {
    if !require_tool("redis-benchmark") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &["--durability", "periodic"]);
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &node.resp.port().to_string()])
            .args(["-c", "10", "-n", "2000", "-r", "1000", "-d", "100", "-q"])
            .args(["-t", "ping,set,get,mset", "-P", pipeline])
            .output()
            .expect("run redis-benchmark");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "redis-benchmark -P {pipeline} failed: {text}"
        );
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "MSET (10 keys)"] {
            assert!(
                completed(&text, test),
                "redis-benchmark -P {pipeline} did not complete {test}: {text}"
            );
        }
        assert!(
            !text.contains("ERR"),
            "errors during redis-benchmark: {text}"
        );
    }
}

/// True when redis-benchmark's output has `TEST: <number> requests per second` (its final line
/// for a test; progress updates in between are separated by carriage returns and padding).
fn completed(output: &str, test: &str) -> bool {
    let label = format!("{test}: ");
    output.match_indices(&label).any(|(at, _)| {
        let rest = &output[at + label.len()..];
        let number: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        !number.is_empty() && rest[number.len()..].starts_with(" requests per second")
    })
}

#[test]
fn redis_py_works_unchanged() {
    if !require_tool("python3") {
        return;
    }
    let has_module = Command::new("python3")
        .args(["-c", "import redis"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has_module {
        assert!(
            !common::in_ci(),
            "python3 -m pip install redis is required in CI"
        );
        eprintln!("\n*** SKIPPED: Python's redis package is not installed ***\n");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/redis_py_check.py"
    );
    let out = Command::new("python3")
        .args([script, "127.0.0.1", &node.resp.port().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-py checks failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cli(node: &NodeProc, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .args(["--http", &node.http.to_string()])
        .output()
        .unwrap()
}

#[test]
fn ringkv_cli_get_put_delete_with_siblings() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let out = cli(&node, &["put", "cart", "apples"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("acknowledged by"));
    let out = cli(&node, &["get", "cart"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "apples");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let context = stderr
        .lines()
        .find_map(|l| l.strip_prefix("context: "))
        .expect("get prints the context")
        .to_string();
    // Two writers over the same read: siblings.
    assert!(cli(
        &node,
        &["put", "cart", "apples,pears", "--context", &context]
    )
    .status
    .success());
    assert!(cli(
        &node,
        &["put", "cart", "apples,plums", "--context", &context]
    )
    .status
    .success());
    let out = cli(&node, &["get", "cart"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains("apples,pears") && stdout.contains("apples,plums"),
        "{stdout}"
    );
    let merged = String::from_utf8_lossy(&out.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("context: ").map(String::from))
        .expect("siblings come with a context");
    assert!(cli(
        &node,
        &["put", "cart", "apples,pears,plums", "--context", &merged]
    )
    .status
    .success());
    let out = cli(&node, &["get", "cart"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "apples,pears,plums"
    );
    assert!(cli(&node, &["delete", "cart"]).status.success());
    let out = cli(&node, &["get", "cart"]);
    assert_eq!(out.status.code(), Some(1), "a deleted key is not found");
    let out = cli(&node, &["status"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up"));
}

#[test]
fn curl_speaks_the_http_api() {
    if !require_tool("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProc::start(dir.path(), &[]);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-i"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let put = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "hello",
        &node.url("/v1/kv/user%2F1"),
    ]);
    assert!(put.starts_with("HTTP/1.1 200"), "{put}");
    assert!(
        put.to_ascii_lowercase().contains("x-ringkv-context:"),
        "{put}"
    );
    let get = curl(&[&node.url("/v1/kv/user%2F1")]);
    assert!(
        get.starts_with("HTTP/1.1 200") && get.ends_with("hello"),
        "{get}"
    );
    let missing = curl(&[&node.url("/v1/kv/nope")]);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    let big = "x".repeat(20_000);
    let too_big = curl(&["-X", "PUT", "--data-binary", &big, &node.url("/v1/kv/big")]);
    assert!(too_big.starts_with("HTTP/1.1 413"), "{too_big}");
    let health = curl(&[&node.url("/healthz")]);
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let metrics = curl(&[&node.url("/metrics")]);
    assert!(metrics.contains("ringkv_ops_total"), "{metrics}");
    // The same bytes are the same key on both APIs.
    let mut con = node.redis();
    let v: Option<String> = redis::cmd("GET").arg("user/1").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("hello"));
}
