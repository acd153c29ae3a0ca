//! Abuse over real sockets: output flood, key-count caps, connection cap, idle timeout, shutdown.

use super::{encode, Client, TestServer, Value};
use crate::Config;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// BAD-INPUT 9: a client pipelining GETs of a 10 KiB value without reading the replies is
/// closed once its unwritten replies pass the bound; another client is served meanwhile.
#[tokio::test]
async fn output_buffer_flood_closes_the_flooder_only() {
    let config = Config {
        max_client_output_bytes: 256 * 1024,
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let mut other = server.client().await;
    let value = vec![b'x'; 10 * 1024];
    assert_eq!(other.cmd(&[b"SET", b"big", &value]).await, Value::ok());

    const GETS: usize = 5000;
    let one = encode(&[b"GET", b"big"]);
    let flood: Vec<u8> = one.repeat(GETS);
    let mut flooder = Client::connect(server.addr).await;
    let (mut reader, mut writer) = flooder.stream.split();
    // Write everything without reading a byte (the server may close before it took all).
    let write = async {
        use tokio::io::AsyncWriteExt;
        let _ = writer.write_all(&flood).await;
    };
    let served = async {
        // Meanwhile the other client is answered promptly.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(other.call(&["PING"]).await, Value::Simple("PONG".into()));
            assert_eq!(
                other.cmd(&[b"GET", b"big"]).await,
                Value::Bulk(value.clone())
            );
            assert!(started.elapsed() < Duration::from_millis(500));
        }
    };
    tokio::join!(write, served);
    // Now read what the server sent before it gave up: far less than all the replies, then EOF.
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received += n,
            Err(_) => panic!("the flooding client was not closed ({received} bytes received)"),
        }
    }
    let full = GETS * (value.len() + 10);
    assert!(received < full / 2, "received {received} of {full} bytes");
    assert!(server.errors("output_buffer") >= 1);
    // The server is fine.
    assert_eq!(other.call(&["PING"]).await, Value::Simple("PONG".into()));
}

/// BAD-INPUT 11: commands naming too many keys are refused without touching the store.
#[tokio::test]
async fn too_many_keys_are_refused() {
    let server = TestServer::start().await;
    let mut c = server.client().await;
    let keys: Vec<String> = (0..10_001).map(|i| format!("k{i}")).collect();
    for cmd in ["MGET", "DEL", "EXISTS"] {
        let mut args: Vec<&[u8]> = vec![cmd.as_bytes()];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let reply = c.cmd(&args).await;
        assert_eq!(
            reply,
            Value::Error("ERR too many keys: 10001, at most 10000 per command".into()),
            "{cmd}"
        );
    }
    // At the limit it works.
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(keys[..10_000].iter().map(|k| k.as_bytes()));
    assert_eq!(c.cmd(&args).await.as_array().len(), 10_000);
    // Past the parser's argument cap it is a protocol error.
    c.send(b"*2000000\r\n").await;
    assert!(c
        .read()
        .await
        .as_error()
        .contains("invalid multibulk length"));
    c.expect_closed().await;
    assert_eq!(server.errors("limit"), 3);
}

#[tokio::test]
async fn mget_reply_over_the_output_bound_is_refused() {
    let config = Config {
        max_client_output_bytes: 64 * 1024,
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    let value = vec![b'v'; 10 * 1024];
    c.cmd(&[b"SET", b"big", &value]).await;
    let args: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
        .chain([&b"big"[..]; 10])
        .collect();
    let reply = c.cmd(&args).await;
    assert!(reply.as_error().contains("output limit"), "{reply:?}");
    assert_eq!(c.cmd(&[b"MGET", b"big", b"big"]).await.as_array().len(), 2);
}

/// BAD-INPUT 18: past the connection cap a client is told and closed; others are unaffected.
#[tokio::test]
async fn connection_cap() {
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    assert_eq!(a.call(&["PING"]).await, Value::Simple("PONG".into()));
    assert_eq!(b.call(&["PING"]).await, Value::Simple("PONG".into()));
    let mut refused = server.client().await;
    assert_eq!(
        refused.expect_closed().await,
        b"-ERR max number of clients reached\r\n"
    );
    assert_eq!(a.call(&["PING"]).await, Value::Simple("PONG".into()));
    // A slot frees when a client leaves.
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut c = server.client().await;
        c.send(&encode(&[b"PING"])).await;
        let mut reply = [0u8; 7];
        if c.stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was not reused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn idle_clients_are_closed_after_the_timeout() {
    let config = Config {
        client_idle_timeout_secs: 1,
        ..Config::default()
    };
    let server = TestServer::with_config(config).await;
    let mut c = server.client().await;
    assert_eq!(c.call(&["PING"]).await, Value::Simple("PONG".into()));
    let started = Instant::now();
    assert!(c.expect_closed().await.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
}

#[tokio::test]
async fn shutdown_closes_connections_and_returns() {
    let server = TestServer::start().await;
    let mut idle = server.client().await;
    let mut busy = server.client().await;
    assert_eq!(idle.call(&["PING"]).await, Value::Simple("PONG".into()));
    // A pipeline in flight is answered up to the command in progress, then closed.
    let mut batch = Vec::new();
    for i in 0..50 {
        batch.extend(encode(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
    }
    busy.send(&batch).await;
    assert_eq!(busy.read().await, Value::ok());
    server.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(2), server.handle)
        .await
        .expect("serve did not return after shutdown")
        .unwrap()
        .unwrap();
    idle.expect_closed().await;
    busy.expect_closed().await;
    // Whatever was acknowledged is stored.
    assert!(server.node.info().keys >= 1);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}
