//! Strangers and broken peers (BAD-INPUT 21-22): each is closed and counted, nobody else notices.

use super::*;
use crate::peer::frame::HANDSHAKE_MAX_FRAME_BYTES;
use crate::peer::handshake as hs;
use crate::peer::wire::{write_frame, FrameReader};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; fails if it stays open for a second.
async fn expect_closed(stream: &mut TcpStream) {
    let mut buf = vec![0u8; 4096];
    tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection");
}

#[tokio::test]
async fn strangers_are_closed_and_the_server_keeps_serving() {
    let opts = ServerOptions {
        handshake_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let srv = TestServer::start("srv", SECRET, opts).await;
    let member = client("member", SECRET);
    let inputs: &[&[u8]] = &[
        b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff\xff\xff\xff",
        b"*1\r\n$4\r\nPING\r\n",
        // A well-formed frame of a kind the acceptor does not expect first.
        b"\x00\x00\x00\x0c\x01\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        // Wrong protocol version.
        b"\x00\x00\x00\x0c\x07\x11\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
    ];
    // An Auth frame with made-up nonce, proof, (empty) layout and node id.
    let forged = [&[b'a'; 64][..], &[0, 0], b"aaaa"].concat();
    let forged = Frame::new(FrameKind::Auth, 0, 0, Bytes::from(forged))
        .encode(1024)
        .unwrap();
    let inputs: Vec<&[u8]> = inputs.iter().copied().chain([&forged[..]]).collect();
    let mut strangers = Vec::new();
    for input in &inputs {
        let mut s = TcpStream::connect(&srv.addr).await.unwrap();
        s.write_all(input).await.unwrap();
        strangers.push(s);
    }
    // One that says nothing at all: the handshake timeout closes it.
    let mut silent = TcpStream::connect(&srv.addr).await.unwrap();
    // A member is served while all of that goes on.
    let (who, echo) = member
        .call(&srv.addr, ECHO, Bytes::from("still here"), T)
        .await
        .unwrap();
    assert_eq!((who, echo), (id("srv"), Bytes::from("still here")));
    for s in &mut strangers {
        expect_closed(s).await;
    }
    expect_closed(&mut silent).await;
    assert_eq!(
        member
            .call(&srv.addr, ECHO, Bytes::from("x"), T)
            .await
            .unwrap()
            .1,
        "x"
    );
    let s = srv.stats();
    assert_eq!(s.handshake_failures, inputs.len() as u64 + 1);
    assert_eq!(
        s.auth_failures, 1,
        "only the forged Auth got as far as a proof check"
    );
    assert_eq!(s.requests_received, 2);
    eventually("stranger connections to close", || {
        srv.stats().connections_open == 1
    })
    .await;
    srv.stop().await;
}

/// An authenticated member that then sends a bad frame: that connection closes, others live on.
#[tokio::test]
async fn bad_frames_after_the_handshake_close_only_that_connection() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let good = client("good", SECRET);
    good.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    let bad_frames: &[&[u8]] = &[
        // Claims 4 GiB: refused from the prefix, nothing allocated.
        b"\xff\xff\xff\xf0\x01\x01",
        // Just over the 16 MiB limit.
        b"\x01\x00\x00\x0d\x01\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        // Bad version.
        b"\x00\x00\x00\x0c\x02\x01\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        // Unknown kind.
        b"\x00\x00\x00\x0c\x01\x99\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        // Shorter than a header.
        b"\x00\x00\x00\x02\x01\x01",
        // A response sent to the acceptor.
        b"\x00\x00\x00\x0c\x01\x02\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01",
        // Truncated: announces 100 bytes, sends 10, then hangs up (below).
        b"\x00\x00\x00\x64\x01\x01\x00\x01\x00\x00\x00\x00\x00\x00",
    ];
    let me = identity("rogue", SECRET);
    for (i, bytes) in bad_frames.iter().enumerate() {
        let stream = TcpStream::connect(&srv.addr).await.unwrap();
        let mut r = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
        let peer = hs::dial(&mut r, &me, &PeerStats::default()).await.unwrap();
        assert_eq!(peer, id("srv"));
        let (mut stream, _) = r.into_parts();
        stream.write_all(bytes).await.unwrap();
        if i == bad_frames.len() - 1 {
            stream.shutdown().await.unwrap();
        }
        expect_closed(&mut stream).await;
    }
    assert_eq!(srv.stats().frame_errors, bad_frames.len() as u64);
    assert_eq!(
        good.call(&srv.addr, ECHO, Bytes::from("ok"), T)
            .await
            .unwrap()
            .1,
        "ok"
    );
    srv.stop().await;
}

#[tokio::test]
async fn connection_cap_refuses_the_excess_with_a_reason() {
    let opts = ServerOptions {
        max_connections: 1,
        ..ServerOptions::default()
    };
    let srv = TestServer::start("srv", SECRET, opts).await;
    let first = client("a", SECRET);
    first.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    let second = client("b", SECRET);
    let err = second
        .call(&srv.addr, ECHO, Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Handshake(_)), "{err}");
    assert!(err.to_string().contains("too many"), "{err}");
    assert!(err.is_retryable());
    assert_eq!(srv.stats().connections_refused, 1);
    // The existing connection is unaffected.
    first.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    srv.stop().await;
}

/// A well-behaved stream of frames over an in-memory duplex: the connection logic is generic
/// over the stream (what a simulator relies on).
#[tokio::test]
async fn serves_any_stream_not_just_tcp() {
    let server = PeerServer::new(
        identity("srv", SECRET),
        Arc::new(test_handler(Arc::default())),
        ServerOptions::default(),
    );
    let (a, b) = tokio::io::duplex(64 * 1024);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let server = server.clone();
        let shutdown = shutdown.clone();
        async move { server.serve_connection(a, "sim:1".into(), shutdown).await }
    });
    let stats = PeerStats::default();
    let mut r = FrameReader::new(b, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
    assert_eq!(
        hs::dial(&mut r, &identity("c", SECRET), &stats)
            .await
            .unwrap(),
        id("srv")
    );
    r.set_max_frame_bytes(DEFAULT_MAX_FRAME_BYTES);
    let req = Frame::new(FrameKind::Request, ECHO, 77, Bytes::from("over a duplex"));
    write_frame(r.get_mut(), &req, DEFAULT_MAX_FRAME_BYTES, &stats)
        .await
        .unwrap();
    let resp = r.next().await.unwrap().unwrap();
    assert_eq!(
        (resp.kind, resp.id, resp.payload),
        (FrameKind::Response, 77, Bytes::from("over a duplex"))
    );
    shutdown.cancel();
    task.await.unwrap();
}
