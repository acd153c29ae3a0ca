//! Commands over real sockets: behaviour and error texts.

use super::{TestServer, Value};
use crate::Config;

#[tokio::test]
async fn unknown_command_and_wrong_arity_keep_the_connection() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(
        c.call(&["FLUSHALL", "now", "please"]).await,
        Value::Error(
            "ERR unknown command 'FLUSHALL', with args beginning with: 'now' 'please' ".into()
        )
    );
    assert_eq!(
        c.call(&["get"]).await,
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        c.call(&["GET", "a", "b"]).await,
        Value::Error("ERR wrong number of arguments for 'get' command".into())
    );
    assert_eq!(
        c.call(&["MSET", "a", "1", "b"]).await,
        Value::Error("ERR wrong number of arguments for 'mset' command".into())
    );
    // CR/LF in a quoted name cannot break the reply.
    let reply = c.cmd(&[b"x\r\n+OK"]).await;
    assert!(reply.as_error().starts_with("ERR unknown command 'x  +OK'"));
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    assert_eq!(server.errors("unknown_command"), 2);
    assert_eq!(server.errors("argument"), 3);
}

#[tokio::test]
async fn set_options_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    for opt in ["EX", "px", "NX", "XX", "KEEPTTL", "GET", "EXAT", "PXAT"] {
        let reply = c.call(&["SET", "k", "v", opt, "10"]).await;
        let text = reply.as_error();
        assert!(
            text.contains(&format!(
                "SET option '{}' is not supported by ringkv",
                opt.to_uppercase()
            )),
            "{text}"
        );
    }
    assert_eq!(c.call(&["GET", "k"]).await, Value::Null);
    assert_eq!(server.node.info().keys, 0);
}

#[tokio::test]
async fn get_set_del_exists() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(c.call(&["GET", "a"]).await, Value::Null);
    assert_eq!(c.call(&["set", "a", "1"]).await, Value::ok());
    assert_eq!(c.call(&["SET", "a", "2"]).await, Value::ok());
    assert_eq!(c.call(&["GET", "a"]).await, Value::bulk("2"));
    assert_eq!(c.call(&["SET", "b", "x"]).await, Value::ok());
    assert_eq!(c.call(&["EXISTS", "a", "b", "c", "a"]).await, Value::Int(3));
    assert_eq!(c.call(&["DEL", "a", "b", "c", "a"]).await, Value::Int(2));
    assert_eq!(c.call(&["EXISTS", "a", "b"]).await, Value::Int(0));
    assert_eq!(c.call(&["DEL", "a"]).await, Value::Int(0));
    assert_eq!(c.call(&["SET", "a", "3"]).await, Value::ok());
    assert_eq!(c.call(&["DEL", "a"]).await, Value::Int(1));
    assert_eq!(c.call(&["GET", "a"]).await, Value::Null);
    // Limits come back as clear errors and change nothing.
    let big = "v".repeat(11 * 1024);
    let reply = c.call(&["SET", "big", &big]).await;
    assert!(
        reply
            .as_error()
            .starts_with("ERR value too large: 11264 bytes"),
        "{reply:?}"
    );
    assert!(c
        .call(&["SET", "", "v"])
        .await
        .as_error()
        .starts_with("ERR empty key"));
    assert_eq!(c.call(&["GET", "big"]).await, Value::Null);
    assert_eq!(server.errors("limit"), 2);
}

#[tokio::test]
async fn mset_is_atomic() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert_eq!(
        c.call(&["MSET", "a", "1", "b", "2", "a", "3"]).await,
        Value::ok()
    );
    assert_eq!(
        c.call(&["MGET", "a", "b", "c"]).await,
        Value::Array(vec![Value::bulk("3"), Value::bulk("2"), Value::Null])
    );
    // One pair over the value limit: nothing of the batch is written.
    let big = "v".repeat(20 * 1024);
    let reply = c.call(&["MSET", "x", "1", "y", &big, "z", "3"]).await;
    assert!(reply.as_error().contains("value too large"), "{reply:?}");
    assert_eq!(
        c.call(&["MGET", "x", "y", "z"]).await,
        Value::Array(vec![Value::Null, Value::Null, Value::Null])
    );
}

#[tokio::test]
async fn pipelined_sets_with_one_bad_value_answer_each() {
    // Coalesced SETs fall back to one write each when the batch is refused.
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let big = vec![b'v'; 20 * 1024];
    let mut batch = super::encode(&[b"SET", b"a", b"1"]);
    batch.extend(super::encode(&[b"SET", b"b", &big]));
    batch.extend(super::encode(&[b"SET", b"c", b"3"]));
    batch.extend(super::encode(&[b"MGET", b"a", b"b", b"c"]));
    c.send(&batch).await;
    assert_eq!(c.read().await, Value::ok());
    assert!(c.read().await.as_error().contains("value too large"));
    assert_eq!(c.read().await, Value::ok());
    assert_eq!(
        c.read().await,
        Value::Array(vec![Value::bulk("1"), Value::Null, Value::bulk("3")])
    );
}

#[tokio::test]
async fn ringkv_contexts_make_and_resolve_siblings() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    // A missing key answers its (empty) context alone.
    let read = c.call(&["RINGKV.GET", "doc"]).await;
    assert_eq!(read.as_array().len(), 1);
    let ctx0 = c.call(&["RINGKV.PUT", "doc", "v0"]).await;
    let ctx0 = ctx0.as_text();
    let read = c.call(&["RINGKV.GET", "doc"]).await;
    assert_eq!(read.as_array(), &[Value::bulk(&ctx0), Value::bulk("v0")]);
    // Two writers who read the same version: two siblings.
    c.call(&["RINGKV.PUT", "doc", "left", "CONTEXT", &ctx0])
        .await
        .as_bulk();
    c.call(&["ringkv.put", "doc", "right", "context", &ctx0, "W", "one"])
        .await
        .as_bulk();
    let read = c.call(&["RINGKV.GET", "doc", "R", "quorum"]).await;
    let items = read.as_array();
    assert_eq!(items.len(), 3, "{read:?}");
    let mut values: Vec<&[u8]> = items[1..].iter().map(|v| v.as_bulk()).collect();
    values.sort();
    assert_eq!(values, vec![&b"left"[..], b"right"]);
    // Plain GET picks one winner.
    let winner = c.call(&["GET", "doc"]).await;
    assert!(winner == Value::bulk("left") || winner == Value::bulk("right"));
    // Writing back with the merged context resolves them.
    let merged = items[0].as_text();
    let ctx = c
        .call(&["RINGKV.PUT", "doc", "resolved", "CONTEXT", &merged])
        .await
        .as_text();
    let read = c.call(&["RINGKV.GET", "doc"]).await;
    assert_eq!(
        read.as_array(),
        &[Value::bulk(&ctx), Value::bulk("resolved")]
    );
    // Delete with the context: the key reads as its context alone.
    assert_eq!(
        c.call(&["RINGKV.DEL", "doc", "CONTEXT", &ctx]).await,
        Value::Int(1)
    );
    assert_eq!(c.call(&["RINGKV.GET", "doc"]).await.as_array().len(), 1);
    assert_eq!(c.call(&["GET", "doc"]).await, Value::Null);
    assert_eq!(c.call(&["RINGKV.DEL", "doc"]).await, Value::Int(0));
}

/// BAD-INPUT 15: malformed, truncated or forged contexts are refused and change nothing.
#[tokio::test]
async fn invalid_contexts_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let good = c.call(&["RINGKV.PUT", "k", "v"]).await.as_text();
    let mut forged = good.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let cases: Vec<Vec<u8>> = vec![
        b"garbage!!".to_vec(),
        good.as_bytes()[..good.len() - 2].to_vec(),
        forged.into_bytes(),
        b"\xff\xfe".to_vec(),
        vec![b'A'; 9000],
        Vec::new(),
    ];
    for ctx in &cases {
        for cmd in [&b"RINGKV.PUT"[..], b"RINGKV.DEL"] {
            let mut args: Vec<&[u8]> = vec![cmd, b"k"];
            if cmd == b"RINGKV.PUT" {
                args.push(b"overwritten");
            }
            args.extend([&b"CONTEXT"[..], ctx]);
            let reply = c.cmd(&args).await;
            assert!(
                reply.as_error().starts_with("ERR invalid context"),
                "{reply:?}"
            );
        }
    }
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("v"));
    assert_eq!(server.errors("context"), 2 * cases.len() as u64);
    // Other option errors.
    assert!(c
        .call(&["RINGKV.PUT", "k", "v", "TTL", "5"])
        .await
        .as_error()
        .contains("unknown option 'TTL'"));
    assert!(c
        .call(&["RINGKV.PUT", "k", "v", "CONTEXT"])
        .await
        .as_error()
        .contains("needs a value"));
    assert!(c
        .call(&["RINGKV.GET", "k", "R", "most"])
        .await
        .as_error()
        .contains("invalid consistency level"));
}

#[tokio::test]
async fn connection_consistency_defaults() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let current = c.call(&["RINGKV.CONSISTENCY"]).await;
    assert_eq!(
        current.as_array(),
        &[
            Value::bulk("r"),
            Value::bulk("default"),
            Value::bulk("w"),
            Value::bulk("default")
        ]
    );
    assert_eq!(
        c.call(&["RINGKV.CONSISTENCY", "R", "quorum", "w", "ONE"])
            .await,
        Value::ok()
    );
    assert_eq!(
        c.call(&["RINGKV.CONSISTENCY"]).await.as_array(),
        &[
            Value::bulk("r"),
            Value::bulk("quorum"),
            Value::bulk("w"),
            Value::bulk("one")
        ]
    );
    assert_eq!(c.call(&["SET", "k", "v"]).await, Value::ok());
    // A level above the replication factor (n=3) makes plain commands fail clearly.
    assert_eq!(c.call(&["RINGKV.CONSISTENCY", "R", "4"]).await, Value::ok());
    let reply = c.call(&["GET", "k"]).await;
    assert!(
        reply.as_error().contains("exceeds the replication factor"),
        "{reply:?}"
    );
    // Explicit options beat the connection's defaults.
    assert_eq!(
        c.call(&["RINGKV.GET", "k", "R", "1"])
            .await
            .as_array()
            .len(),
        2
    );
    assert_eq!(
        c.call(&["RINGKV.CONSISTENCY", "R", "default"]).await,
        Value::ok()
    );
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("v"));
    // Bad input leaves the settings unchanged.
    assert!(c
        .call(&["RINGKV.CONSISTENCY", "W", "all", "R", "bogus"])
        .await
        .as_error()
        .contains("invalid consistency"));
    assert!(c
        .call(&["RINGKV.CONSISTENCY", "X", "1"])
        .await
        .as_error()
        .contains("unknown option"));
    assert_eq!(
        c.call(&["RINGKV.CONSISTENCY"]).await.as_array()[3],
        Value::bulk("one")
    );
    // Another connection keeps its own defaults.
    let mut other = server.client().await;
    assert_eq!(
        other.call(&["RINGKV.CONSISTENCY"]).await.as_array()[3],
        Value::bulk("default")
    );
}

#[tokio::test]
async fn auth_flow_with_a_password() {
    let config = Config {
        password: Some("s3cret".into()),
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    assert_eq!(
        c.call(&["GET", "k"]).await,
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert_eq!(
        c.call(&["SET", "k", "v"]).await,
        Value::Error("NOAUTH Authentication required.".into())
    );
    assert!(c
        .call(&["HELLO", "3"])
        .await
        .as_error()
        .starts_with("NOAUTH HELLO must be called"));
    let wrong =
        Value::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.call(&["AUTH", "nope"]).await, wrong);
    assert_eq!(c.call(&["AUTH", "admin", "s3cret"]).await, wrong);
    assert_eq!(
        c.call(&["HELLO", "3", "AUTH", "default", "nope"]).await,
        wrong
    );
    assert_eq!(c.call(&["AUTH", "s3cret"]).await, Value::ok());
    assert_eq!(c.call(&["SET", "k", "v"]).await, Value::ok());
    assert_eq!(c.call(&["GET", "k"]).await, Value::bulk("v"));
    // HELLO with AUTH authenticates and switches protocol in one step.
    let mut c2 = server.client().await;
    assert!(matches!(
        c2.call(&["HELLO", "3", "AUTH", "default", "s3cret"]).await,
        Value::Map(_)
    ));
    assert_eq!(c2.call(&["GET", "k"]).await, Value::bulk("v"));
    // Before authenticating, requests are held to tight bounds.
    let mut c3 = server.client().await;
    c3.send(b"*20\r\n").await;
    assert!(c3
        .read()
        .await
        .as_error()
        .contains("invalid multibulk length"));
    c3.expect_closed().await;
    // QUIT is allowed unauthenticated.
    let mut c4 = server.client().await;
    assert_eq!(c4.call(&["QUIT"]).await, Value::ok());
    c4.expect_closed().await;
    assert!(server.errors("auth") >= 6);
}

#[tokio::test]
async fn auth_without_a_configured_password() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    assert!(c.call(&["AUTH", "pw"]).await.as_error().starts_with(
        "ERR AUTH <password> called without any password configured for the default user"
    ));
    // Redis's default user has no password: any password is accepted for it.
    assert_eq!(c.call(&["AUTH", "default", "anything"]).await, Value::ok());
}

#[tokio::test]
async fn info_config_command_client_select() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    c.call(&["SET", "a", "1"]).await;
    c.call(&["SET", "b", "2"]).await;
    let info = c.call(&["INFO"]).await.as_text();
    for needle in [
        "# Server\r\n",
        "redis_version:7.2.0\r\n",
        &format!("ringkv_version:{}\r\n", env!("CARGO_PKG_VERSION")),
        &format!("node_id:{}\r\n", server.node.node_id()),
        "connected_clients:1\r\n",
        "durability:sync\r\n",
        "total_commands_processed:2\r\n",
        "ops_put:2\r\n",
        "db0:keys=2,expires=0,avg_ttl=0\r\n",
        "role:master\r\n",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle:?}:\n{info}");
    }
    let keyspace = c.call(&["INFO", "keyspace"]).await.as_text();
    assert_eq!(keyspace, "# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n");
    assert_eq!(c.call(&["INFO", "nosuchsection"]).await.as_text(), "");
    // What redis-benchmark asks.
    assert_eq!(
        c.call(&["CONFIG", "GET", "save"]).await.as_array(),
        &[Value::bulk("save"), Value::bulk("")]
    );
    assert_eq!(
        c.call(&["CONFIG", "GET", "appendonly"]).await.as_array(),
        &[Value::bulk("appendonly"), Value::bulk("no")]
    );
    assert!(
        c.call(&["CONFIG", "GET", "ringkv-*"])
            .await
            .as_array()
            .len()
            >= 10
    );
    assert!(c
        .call(&["CONFIG", "SET", "save", ""])
        .await
        .as_error()
        .contains("not supported by ringkv"));
    // What redis-cli and redis-py ask.
    assert!(matches!(
        c.call(&["COMMAND", "DOCS"]).await,
        Value::Array(_)
    ));
    assert_eq!(
        c.call(&["COMMAND", "COUNT"]).await,
        Value::Int(super::super::cmd::COMMANDS.len() as i64)
    );
    let info = c.call(&["COMMAND", "INFO", "mset", "nosuch"]).await;
    let items = info.as_array();
    assert_eq!(items[0].as_array()[0], Value::bulk("mset"));
    assert_eq!(items[0].as_array()[1], Value::Int(-3));
    assert_eq!(items[1], Value::Null);
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]).await,
        Value::ok()
    );
    assert_eq!(
        c.call(&["CLIENT", "SETINFO", "LIB-VER", "8.0.0"]).await,
        Value::ok()
    );
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::Null);
    assert_eq!(c.call(&["CLIENT", "SETNAME", "app"]).await, Value::ok());
    assert!(c
        .call(&["CLIENT", "SETNAME", "a b"])
        .await
        .as_error()
        .contains("cannot contain spaces"));
    assert_eq!(c.call(&["CLIENT", "GETNAME"]).await, Value::bulk("app"));
    assert!(matches!(c.call(&["CLIENT", "ID"]).await, Value::Int(n) if n >= 1));
    let list = c.call(&["CLIENT", "LIST"]).await.as_text();
    assert!(
        list.contains("name=app") && list.contains("lib-name=redis-py"),
        "{list}"
    );
    assert!(c
        .call(&["CLIENT", "KILL", "x"])
        .await
        .as_error()
        .contains("unknown subcommand"));
    assert_eq!(c.call(&["SELECT", "0"]).await, Value::ok());
    assert_eq!(
        c.call(&["SELECT", "1"]).await,
        Value::Error("ERR DB index is out of range".into())
    );
    assert!(c
        .call(&["SELECT", "x"])
        .await
        .as_error()
        .contains("not an integer"));
    assert_eq!(c.call(&["QUIT"]).await, Value::ok());
    c.expect_closed().await;
}
