//! Calls over pooled, multiplexed connections: matching, timeouts, reconnects, lost connections.

use super::*;
use crate::peer::frame::HANDSHAKE_MAX_FRAME_BYTES;
use crate::peer::handshake as hs;
use crate::peer::wire::FrameReader;

#[tokio::test]
async fn thousand_concurrent_calls_share_one_connection_and_match_out_of_order() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("cli", SECRET);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let c = c.clone();
        let addr = srv.addr.clone();
        tasks.spawn(async move {
            let payload = Bytes::from(format!("request-{i}"));
            let (who, answer) = c
                .call(&addr, ECHO_JITTER, payload.clone(), T)
                .await
                .unwrap();
            assert_eq!(who, id("srv"));
            assert_eq!(answer, payload, "call {i} got someone else's answer");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let cs = c.stats().snapshot();
    assert_eq!(cs.connections_total, 1, "one pooled connection");
    assert_eq!(cs.requests_sent, 1000);
    assert_eq!(cs.late_responses, 0);
    assert_eq!(srv.stats().requests_received, 1000);
    assert_eq!(c.pending_calls(&srv.addr), 0);
    srv.stop().await;
}

#[tokio::test]
async fn timeout_cleans_up_its_pending_entry() {
    let srv = TestServer::start("srv", SECRET, quick_drain()).await;
    let c = client("cli", SECRET);
    c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    let started = tokio::time::Instant::now();
    let err = c
        .call(&srv.addr, HANG, Bytes::new(), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert_eq!(err, PeerError::Timeout);
    assert!(err.is_retryable() && err.maybe_delivered());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(c.pending_calls(&srv.addr), 0);
    assert_eq!(c.stats().snapshot().timeouts, 1);
    // Nothing arrived on the connection while the call waited: it is presumed dead and closed,
    // and the next call dials afresh.
    assert!(c.connected_peers().is_empty());
    // A call dropped by its caller (here: an outer timeout) cleans up too.
    let _ = tokio::time::timeout(
        Duration::from_millis(50),
        c.call(&srv.addr, HANG, Bytes::new(), T),
    )
    .await;
    assert_eq!(c.pending_calls(&srv.addr), 0);
    // And the client still works.
    assert_eq!(
        c.call(&srv.addr, ECHO, Bytes::from("a"), T)
            .await
            .unwrap()
            .1,
        "a"
    );
    assert!(c.stats().snapshot().connections_total >= 2);
    srv.stop().await;
}

#[tokio::test]
async fn timeout_on_a_busy_connection_keeps_it() {
    let srv = TestServer::start("srv", SECRET, quick_drain()).await;
    let c = client("cli", SECRET);
    c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    // Answers keep arriving on the connection while the slow call times out, so the connection
    // is not presumed dead: only silence closes it.
    let slow = {
        let c = c.clone();
        let addr = srv.addr.clone();
        tokio::spawn(async move {
            c.call(&addr, HANG, Bytes::new(), Duration::from_millis(150))
                .await
        })
    };
    eventually("the slow request to reach the server", || {
        srv.stats().requests_received == 2
    })
    .await;
    while !slow.is_finished() {
        c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(slow.await.unwrap().unwrap_err(), PeerError::Timeout);
    assert_eq!(
        c.connected_peers().len(),
        1,
        "the busy connection stays open"
    );
    assert_eq!(c.stats().snapshot().connections_total, 1);
    srv.stop().await;
}

#[tokio::test]
async fn remote_errors_and_panics_are_answered() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("cli", SECRET);
    let err = c.call(&srv.addr, FAIL, Bytes::new(), T).await.unwrap_err();
    assert_eq!(err, PeerError::Remote("boom".into()));
    assert!(!err.is_retryable());
    let err = c.call(&srv.addr, PANIC, Bytes::new(), T).await.unwrap_err();
    assert!(
        matches!(err, PeerError::Remote(ref m) if m.contains("panicked")),
        "{err}"
    );
    let err = c.call(&srv.addr, 999, Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, PeerError::Remote(_)), "{err}");
    // The connection survived all of it.
    assert_eq!(
        c.call(&srv.addr, ECHO, Bytes::from("a"), T)
            .await
            .unwrap()
            .1,
        "a"
    );
    assert_eq!(c.stats().snapshot().connections_total, 1);
    assert_eq!(c.stats().snapshot().remote_errors, 3);
    srv.stop().await;
}

#[tokio::test]
async fn one_way_messages_arrive() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("cli", SECRET);
    for i in 0..100 {
        let to = c
            .send(&srv.addr, tags::GOSSIP, Bytes::from(format!("g{i}")))
            .await;
        assert_eq!(to.unwrap(), id("srv"));
    }
    let seen = srv.seen.clone();
    eventually("100 one-way messages", || {
        seen.one_way.load(Ordering::SeqCst) == 100
    })
    .await;
    assert_eq!(c.stats().snapshot().one_way_sent, 100);
    assert_eq!(srv.stats().one_way_received, 100);
    srv.stop().await;
}

#[tokio::test]
async fn frame_limit_is_enforced_on_both_ends() {
    let opts = ServerOptions {
        max_frame_bytes: 64 * 1024,
        ..ServerOptions::default()
    };
    let srv = TestServer::start("srv", SECRET, opts).await;
    let c = PeerClient::new(
        identity("cli", SECRET),
        ClientOptions {
            max_frame_bytes: 64 * 1024,
            ..ClientOptions::default()
        },
    );
    // Too large to send: refused locally, nothing on the wire.
    let err = c
        .call(&srv.addr, ECHO, Bytes::from(vec![0; 64 * 1024]), T)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::FrameTooLarge { .. }), "{err}");
    assert!(!err.maybe_delivered());
    // Too large to answer: the server sends an error instead.
    let ask = Bytes::copy_from_slice(&(100_000u32).to_be_bytes());
    let err = c.call(&srv.addr, BIG, ask, T).await.unwrap_err();
    assert!(
        matches!(err, PeerError::Remote(ref m) if m.contains("exceeds")),
        "{err}"
    );
    // Just under the limit is fine both ways.
    let n = 64 * 1024 - crate::peer::frame::HEADER_BYTES;
    let ask = Bytes::copy_from_slice(&(n as u32).to_be_bytes());
    assert_eq!(c.call(&srv.addr, BIG, ask, T).await.unwrap().1.len(), n);
    let (_, back) = c
        .call(&srv.addr, ECHO, Bytes::from(vec![1; n]), T)
        .await
        .unwrap();
    assert_eq!(back.len(), n);
    srv.stop().await;
}

#[tokio::test]
async fn server_restart_then_client_reconnects() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let addr = srv.addr.clone();
    let c = PeerClient::new(
        identity("cli", SECRET),
        ClientOptions {
            backoff_initial: Duration::from_millis(20),
            ..ClientOptions::default()
        },
    );
    assert_eq!(
        c.call(&addr, ECHO, Bytes::from("1"), T).await.unwrap().1,
        "1"
    );
    srv.stop().await;
    // The client notices the server's close by itself (a call racing with that notice gets
    // `ConnectionLost`, which is retryable).
    eventually("the client to notice the close", || {
        c.stats().snapshot().connections_open == 0
    })
    .await;
    // Down: a clear, retryable connect error, then a fast failure while backing off.
    let err = c.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, PeerError::Connect { .. }), "{err}");
    assert!(err.is_retryable() && !err.maybe_delivered());
    let err = c.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(err.to_string().contains("backing off"), "{err}");
    // Back on the same port: the next call after the backoff reconnects.
    let srv = TestServer::start_on(&addr, "srv", SECRET, ServerOptions::default()).await;
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert_eq!(
        c.call(&addr, ECHO, Bytes::from("2"), T).await.unwrap().1,
        "2"
    );
    assert_eq!(c.stats().snapshot().connections_total, 2);
    // A restart without a failed call in between: the dead connection is noticed and replaced.
    srv.stop().await;
    eventually("the client to notice the close", || {
        c.stats().snapshot().connections_open == 0
    })
    .await;
    let srv = TestServer::start_on(&addr, "srv", SECRET, ServerOptions::default()).await;
    assert_eq!(
        c.call(&addr, ECHO, Bytes::from("3"), T).await.unwrap().1,
        "3"
    );
    assert_eq!(c.stats().snapshot().connections_total, 3);
    srv.stop().await;
}

/// A peer that authenticates, takes requests, then drops the connection: every pending call
/// fails at once with `ConnectionLost`, long before its timeout.
#[tokio::test]
async fn connection_dropped_mid_flight_fails_pending_calls_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let peer = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let stats = PeerStats::default();
        let mut r = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
        hs::accept(&mut r, &identity("flaky", SECRET), &stats)
            .await
            .unwrap();
        r.set_max_frame_bytes(DEFAULT_MAX_FRAME_BYTES);
        for _ in 0..10 {
            assert_eq!(r.next().await.unwrap().unwrap().kind, FrameKind::Request);
        }
        // Drop the socket with ten calls unanswered.
    });
    let c = client("cli", SECRET);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let c = c.clone();
        let addr = addr.clone();
        calls.spawn(async move {
            c.call(
                &addr,
                ECHO,
                Bytes::from(format!("{i}")),
                Duration::from_secs(30),
            )
            .await
        });
    }
    let started = tokio::time::Instant::now();
    peer.await.unwrap();
    while let Some(r) = calls.join_next().await {
        assert_eq!(r.unwrap().unwrap_err(), PeerError::ConnectionLost);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failed at once, not at the timeout"
    );
    assert_eq!(c.pending_calls(&addr), 0);
    assert_eq!(c.stats().snapshot().connection_lost, 10);
    eventually("the connection to be counted closed", || {
        c.stats().snapshot().connections_open == 0
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_answers_in_flight_requests() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("cli", SECRET);
    c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let c = c.clone();
        let addr = srv.addr.clone();
        calls.spawn(async move {
            c.call(&addr, ECHO_JITTER, Bytes::from(format!("{i}")), T)
                .await
        });
    }
    eventually("the requests to reach the server", || {
        srv.stats().requests_received == 51
    })
    .await;
    srv.stop().await;
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
}

#[tokio::test]
async fn several_connections_per_peer_are_used_round_robin() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = PeerClient::new(
        identity("cli", SECRET),
        ClientOptions {
            connections_per_peer: 3,
            ..ClientOptions::default()
        },
    );
    for i in 0..9 {
        let p = Bytes::from(format!("{i}"));
        assert_eq!(c.call(&srv.addr, ECHO, p.clone(), T).await.unwrap().1, p);
    }
    assert_eq!(c.stats().snapshot().connections_total, 3);
    assert_eq!(c.connected_peers().len(), 3);
    c.disconnect(&srv.addr);
    assert!(c.connected_peers().is_empty());
    c.close();
    assert_eq!(
        c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap_err(),
        PeerError::Closed
    );
    srv.stop().await;
}
