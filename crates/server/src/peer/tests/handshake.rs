//! Mutual authentication over real sockets.

use super::*;
use crate::peer::frame::HANDSHAKE_MAX_FRAME_BYTES;
use crate::peer::handshake as hs;
use crate::peer::wire::{write_frame, FrameReader};

#[tokio::test]
async fn both_sides_learn_each_others_id() {
    let srv = TestServer::start("srv-1", SECRET, ServerOptions::default()).await;
    let c = client("cli-1", SECRET);
    let (who, answer) = c.call(&srv.addr, WHO, Bytes::new(), T).await.unwrap();
    assert_eq!(who, id("srv-1"), "the dialer learns the acceptor's id");
    assert_eq!(answer, "cli-1", "the acceptor learns the dialer's id");
    assert_eq!(c.connected_peers(), vec![(srv.addr.clone(), id("srv-1"))]);
    assert_eq!(c.connect(&srv.addr, T).await.unwrap(), id("srv-1"));
    assert_eq!(c.stats().snapshot().connections_total, 1);
    srv.stop().await;
}

#[tokio::test]
async fn default_secret_on_both_sides_works() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let shutdown = CancellationToken::new();
    let handler: Arc<dyn PeerHandler> = Arc::new(test_handler(Arc::default()));
    let me = PeerIdentity::new(id("a"), ClusterSecret::from_config(None));
    let task = tokio::spawn(serve(listener, me, handler, shutdown.clone()));
    let c = PeerClient::new(
        PeerIdentity::new(id("b"), ClusterSecret::from_config(None)),
        ClientOptions::default(),
    );
    assert_eq!(
        c.call(&addr, ECHO, Bytes::from("x"), T).await.unwrap().0,
        id("a")
    );
    // A node with a real secret cannot talk to the unauthenticated one.
    let err = client("c", SECRET)
        .call(&addr, ECHO, Bytes::new(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Unauthorized(_)), "{err}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn wrong_secret_is_refused_and_detected_by_the_acceptor() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let c = client("intruder", "not-the-secret-at-all");
    let err = c
        .call(&srv.addr, ECHO, Bytes::from("x"), T)
        .await
        .unwrap_err();
    assert!(matches!(err, PeerError::Unauthorized(_)), "{err}");
    assert!(!err.is_retryable());
    let s = srv.stats();
    assert_eq!((s.handshake_failures, s.auth_failures), (1, 1));
    assert_eq!(s.requests_received, 0, "nothing reached the handler");
    let cs = c.stats().snapshot();
    assert_eq!((cs.handshake_failures, cs.auth_failures), (1, 1));
    // While backing off, the same clear error comes back without a new dial.
    let again = c.call(&srv.addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(matches!(again, PeerError::Unauthorized(_)), "{again}");
    assert_eq!(srv.stats().handshake_failures, 1);
    srv.stop().await;
}

/// An impostor acceptor that does not know the secret: it skips checking the dialer and answers
/// with a proof made with the wrong key. The dialer must notice.
#[tokio::test]
async fn wrong_secret_is_detected_by_the_dialer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let impostor = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let stats = PeerStats::default();
        let mut r = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
        let server_nonce = [3u8; 32];
        write_frame(r.get_mut(), &hs::hello(&server_nonce), 1024, &stats)
            .await
            .unwrap();
        let auth = r.next().await.unwrap().unwrap();
        let client_nonce = hs::parse_auth(&auth.payload).unwrap().client_nonce;
        let wrong = ClusterSecret::new("guessed-secret");
        let proof = hs::acceptor_proof(&wrong, &client_nonce, &server_nonce, b"", b"victim");
        write_frame(
            r.get_mut(),
            &hs::welcome(&proof, &ClusterLayout::default(), &id("victim")),
            1024,
            &stats,
        )
        .await
        .unwrap();
        // Keep the socket open: the dialer must hang up by itself.
        let _ = r.next().await;
    });
    let c = client("n1", SECRET);
    let err = c.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, PeerError::Unauthorized(_)), "{err}");
    assert!(err.to_string().contains("prove"), "{err}");
    assert_eq!(c.stats().snapshot().auth_failures, 1);
    tokio::time::timeout(T, impostor).await.unwrap().unwrap();
}

/// A replayed `Auth` (recorded from a real handshake) fails against a fresh server nonce.
#[tokio::test]
async fn recorded_handshake_cannot_be_replayed() {
    let srv = TestServer::start("srv", SECRET, ServerOptions::default()).await;
    let me = identity("n1", SECRET);
    let stats = PeerStats::default();
    // A genuine handshake, recording our Auth.
    let stream = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let mut r = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
    let hello = r.next().await.unwrap().unwrap();
    let server_nonce = hs::parse_hello(&hello.payload).unwrap();
    let client_nonce = [9u8; 32];
    let proof = hs::dialer_proof(&me.secret, &server_nonce, &client_nonce, b"", b"n1");
    let recorded = hs::auth(&client_nonce, &proof, &me.layout, &me.node_id);
    write_frame(r.get_mut(), &recorded, 1024, &stats)
        .await
        .unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().kind, FrameKind::Welcome);
    // The replay, on a new connection.
    let stream = tokio::net::TcpStream::connect(&srv.addr).await.unwrap();
    let mut r = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
    let _hello = r.next().await.unwrap().unwrap();
    write_frame(r.get_mut(), &recorded, 1024, &stats)
        .await
        .unwrap();
    assert_eq!(r.next().await.unwrap().unwrap().kind, FrameKind::Refused);
    assert_eq!(srv.stats().auth_failures, 1);
    srv.stop().await;
}

fn with_layout(node: &str, partitions: u32, n: usize) -> PeerIdentity {
    identity(node, SECRET)
        .with_layout(ClusterLayout::new(partitions, n, &ringkv_core::DcReplication::new()).unwrap())
}

/// A member started with other cluster settings (here `partitions`) is refused with both layouts
/// named, counted on both sides, and not redialed in a tight loop; equal settings connect.
#[tokio::test]
async fn different_cluster_settings_are_refused_with_both_layouts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = PeerServer::new(
        with_layout("srv", 1024, 3),
        Arc::new(test_handler(Arc::default())),
        ServerOptions::default(),
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (server, shutdown) = (server.clone(), shutdown.clone());
        async move { server.serve(listener, shutdown).await }
    });

    let same = PeerClient::new(with_layout("same", 1024, 3), ClientOptions::default());
    let (who, _) = same.call(&addr, ECHO, Bytes::new(), T).await.unwrap();
    assert_eq!(who, id("srv"));

    let other = PeerClient::new(with_layout("other", 2048, 3), ClientOptions::default());
    let err = other.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(matches!(err, PeerError::SettingsMismatch(_)), "{err}");
    assert!(!err.is_retryable());
    let msg = err.to_string();
    for part in ["partitions=1024", "partitions=2048", "srv", "other", &addr] {
        assert!(msg.contains(part), "{part} missing from: {msg}");
    }
    let s = server.stats().snapshot();
    assert_eq!((s.handshake_failures, s.settings_mismatches), (1, 1));
    assert_eq!(s.auth_failures, 0, "the secret was right");
    assert_eq!(s.requests_received, 1, "only the matching member's call");
    let cs = other.stats().snapshot();
    assert_eq!((cs.handshake_failures, cs.settings_mismatches), (1, 1));
    // While backing off (as for a wrong secret), the same clear error comes back at once,
    // without a new dial.
    let again = other.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert_eq!(again, err);
    assert_eq!(server.stats().snapshot().handshake_failures, 1);

    // `n` is part of the layout too.
    let n5 = PeerClient::new(with_layout("n5", 1024, 5), ClientOptions::default());
    let err = n5.call(&addr, ECHO, Bytes::new(), T).await.unwrap_err();
    assert!(err.to_string().contains("n=5"), "{err}");
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
