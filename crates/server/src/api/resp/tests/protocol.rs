//! Framing over real sockets: pipelining, protocol errors, RESP2/RESP3, inline commands.

use super::{encode, TestServer, Value};

#[tokio::test]
async fn ping_echo_and_inline_commands() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    assert_eq!(c.call(&["ping", "hello"]).await, Value::bulk("hello"));
    assert_eq!(c.call(&["ECHO", "a\r\nb"]).await, Value::bulk("a\r\nb"));
    // Inline, as typed into telnet; a blank line is ignored.
    c.send(b"\r\nset  greeting\thello\r\nGET greeting\nPING\r\n")
        .await;
    assert_eq!(c.read().await, Value::ok());
    assert_eq!(c.read().await, Value::bulk("hello"));
    assert_eq!(c.read().await, Value::Simple("PONG".into()));
    // Empty and null arrays are ignored too.
    c.send(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n").await;
    assert_eq!(c.read().await, Value::Simple("PONG".into()));
}

#[tokio::test]
async fn pipelined_sets_and_gets_answer_in_order() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode(&[
            b"SET",
            format!("key:{i}").as_bytes(),
            format!("value-{i}").as_bytes(),
        ]));
    }
    let writes_before = server.node.info().storage_writes;
    c.send(&batch).await; // one write
    for _ in 0..100 {
        assert_eq!(c.read().await, Value::ok());
    }
    // Consecutive SETs of a batch are coalesced into few storage writes (one per read, at most
    // one per 256 SETs), not one each.
    let writes = server.node.info().storage_writes - writes_before;
    assert!(
        (1..10).contains(&writes),
        "{writes} storage writes for 100 pipelined SETs"
    );
    // The writes reached the node, and a mixed pipeline sees them in order.
    let mut batch = Vec::new();
    for i in 0..100 {
        batch.extend(encode(&[b"GET", format!("key:{i}").as_bytes()]));
        batch.extend(encode(&[b"SET", format!("key:{i}").as_bytes(), b"new"]));
        batch.extend(encode(&[b"GET", format!("key:{i}").as_bytes()]));
    }
    c.send(&batch).await;
    for i in 0..100 {
        assert_eq!(c.read().await, Value::bulk(format!("value-{i}")));
        assert_eq!(c.read().await, Value::ok());
        assert_eq!(c.read().await, Value::bulk("new"));
    }
    assert_eq!(server.node.info().keys, 100);
    let requests = server
        .node
        .metrics()
        .requests
        .get_or_create(&crate::metrics::ApiLabels {
            api: crate::metrics::Api::Resp,
        })
        .get();
    assert_eq!(requests, 400);
}

#[tokio::test]
async fn a_command_split_across_writes_is_reassembled() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let cmd = encode(&[b"SET", b"k", b"0123456789"]);
    for chunk in cmd.chunks(3) {
        c.send(chunk).await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(c.read().await, Value::ok());
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("0123456789"));
}

/// BAD-INPUT 1-8: each protocol error is answered with Redis's text, the connection closed,
/// and counted; another client keeps being served and earlier data is intact.
#[tokio::test]
async fn protocol_errors_are_answered_then_closed() {
    let server = TestServer::start().await;
    let mut bystander = server.client().await;
    assert_eq!(
        bystander.call(&["SET", "safe", "intact"]).await,
        Value::ok()
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"*2\r\n$3\r\nSET\r\n$600000000\r\n".to_vec(),
            "invalid bulk length",
        ),
        (b"*2000000\r\n".to_vec(), "invalid multibulk length"),
        (b"*1\r\n$-5\r\n".to_vec(), "invalid bulk length"),
        (b"*-3\r\n".to_vec(), "invalid multibulk length"),
        (
            b"*1\r\n$99999999999999999999\r\n".to_vec(),
            "invalid bulk length",
        ),
        (b"*1\r\n$12a\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$+5\r\n".to_vec(), "invalid bulk length"),
        (b"*1\r\n$ 5\r\n".to_vec(), "invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n$3\r\nsafex\r\n".to_vec(), "CRLF"),
        (
            b"*3\r\n$3\r\nSET\r\n$4\r\nsafe\r\n$9\r\nabc\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "CRLF",
        ),
        (vec![b'a'; 70 * 1024], "too big inline request"),
        (
            [&b"*1\r\n$"[..], &[b'1'; 70 * 1024][..]].concat(),
            "too big bulk count string",
        ),
        (
            b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            "expected '$', got '*'",
        ),
        (b"*1\r\n+OK\r\n".to_vec(), "expected '$', got '+'"),
        (b"*1\r\n:1\r\n".to_vec(), "expected '$', got ':'"),
    ];
    let before = server.errors("protocol");
    for (i, (input, expected)) in cases.iter().enumerate() {
        let mut c = server.client().await;
        // Commands before the bad one in the same write are still executed and answered.
        let mut bytes = encode(&[b"PING"]);
        bytes.extend_from_slice(input);
        c.send(&bytes).await;
        assert_eq!(c.read().await, Value::Simple("PONG".into()), "case {i}");
        let reply = c.read().await;
        let text = reply.as_error();
        assert!(text.starts_with("ERR Protocol error: "), "case {i}: {text}");
        assert!(text.contains(expected), "case {i}: {text}");
        let rest = c.expect_closed().await;
        assert!(rest.is_empty(), "case {i}: bytes after the error: {rest:?}");
        // The bystander is still served, and nothing was overwritten.
        assert_eq!(
            bystander.call(&["GET", "safe"]).await,
            Value::bulk("intact"),
            "case {i}"
        );
    }
    assert_eq!(server.errors("protocol") - before, cases.len() as u64);
    assert_eq!(server.node.info().keys, 1);
}

#[tokio::test]
async fn hello_3_switches_to_resp3_and_back() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // RESP2 null.
    c.send(&encode(&[b"GET", b"missing"])).await;
    assert_eq!(c.read_raw(5).await, b"$-1\r\n");
    let hello = c.call(&["HELLO", "3"]).await;
    let Value::Map(pairs) = hello else {
        panic!("HELLO 3 must answer a RESP3 map, got {hello:?}")
    };
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| *key == Value::bulk(k))
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("server"), Value::bulk("ringkv"));
    assert_eq!(get("proto"), Value::Int(3));
    assert_eq!(get("mode"), Value::bulk("standalone"));
    assert_eq!(get("role"), Value::bulk("master"));
    assert_eq!(get("modules"), Value::Array(vec![]));
    assert!(matches!(get("id"), Value::Int(n) if n >= 1));
    // RESP3 null for a missing key, and in MGET.
    c.send(&encode(&[b"GET", b"missing"])).await;
    assert_eq!(c.read_raw(3).await, b"_\r\n");
    c.call(&["SET", "k", "v"]).await;
    c.send(&encode(&[b"MGET", b"k", b"missing"])).await;
    assert_eq!(c.read_raw(14).await, b"*2\r\n$1\r\nv\r\n_\r\n");
    // Every reply type works in RESP3: maps, verbatim text, sets.
    assert!(matches!(
        c.call(&["CONFIG", "GET", "save"]).await,
        Value::Map(p) if p == vec![(Value::bulk("save"), Value::bulk(""))]
    ));
    assert!(
        matches!(c.call(&["INFO"]).await, Value::Verbatim(t) if t.contains("redis_version:7.2.0"))
    );
    let info = c.call(&["COMMAND", "INFO", "get"]).await;
    assert!(
        matches!(&info.as_array()[0].as_array()[2], Value::Set(_)),
        "{info:?}"
    );
    assert!(matches!(
        c.call(&["RINGKV.CONSISTENCY"]).await,
        Value::Map(_)
    ));
    // Back to RESP2.
    let hello = c.call(&["HELLO", "2"]).await;
    assert_eq!(hello.as_array().len(), 14);
    c.send(&encode(&[b"GET", b"missing"])).await;
    assert_eq!(c.read_raw(5).await, b"$-1\r\n");
    // Unsupported versions.
    assert_eq!(
        c.call(&["HELLO", "4"]).await,
        Value::Error("NOPROTO unsupported protocol version".into())
    );
    assert!(c
        .call(&["HELLO", "x"])
        .await
        .as_error()
        .contains("not an integer"));
    // HELLO SETNAME names the connection.
    c.call(&["HELLO", "3", "SETNAME", "worker-1"]).await;
    assert_eq!(
        c.call(&["CLIENT", "GETNAME"]).await,
        Value::bulk("worker-1")
    );
}

#[tokio::test]
async fn binary_keys_and_values_round_trip() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let key = b"\x00\xff\r\nkey";
    let value: Vec<u8> = (0..=255u8).collect();
    assert_eq!(c.cmd(&[b"SET", key, &value]).await, Value::ok());
    assert_eq!(c.cmd(&[b"GET", key]).await, Value::Bulk(value));
}

/// BAD-INPUT 26: a client that disconnects mid-request leaves nothing half-applied.
#[tokio::test]
async fn disconnect_mid_request_applies_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let cmd = encode(&[b"MSET", b"a", b"1", b"b", b"2"]);
    c.send(&cmd[..cmd.len() - 3]).await;
    drop(c);
    let mut other = server.client().await;
    assert_eq!(
        other.call(&["MGET", "a", "b"]).await,
        Value::Array(vec![Value::Null, Value::Null])
    );
    assert_eq!(server.node.info().keys, 0);
}
