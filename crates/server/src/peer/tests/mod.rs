//! Socket tests of the peer transport: real TCP on 127.0.0.1, each test a few hundred ms at most.

mod abuse;
mod backpressure;
mod calls;
mod handshake;
mod perf;

use super::*;
use bytes::Bytes;
use ringkv_core::NodeId;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(super) const SECRET: &str = "test-cluster-secret-0123456789";

/// Tags the test handler understands.
pub(super) const ECHO: u16 = 1;
/// Echo after a pseudo-random delay of 0-3 ms (answers come back out of order).
pub(super) const ECHO_JITTER: u16 = 2;
/// Sleeps 30 s (a hung handler).
pub(super) const HANG: u16 = 3;
pub(super) const FAIL: u16 = 4;
pub(super) const PANIC: u16 = 5;
/// Answers with a payload of the length asked for (u32 BE in the request).
pub(super) const BIG: u16 = 6;
/// Echoes the caller's node id.
pub(super) const WHO: u16 = 7;

pub(super) fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

pub(super) fn identity(node: &str, secret: &str) -> PeerIdentity {
    PeerIdentity::new(id(node), ClusterSecret::new(secret))
}

/// Counts one-way messages it receives.
#[derive(Default)]
pub(super) struct Seen {
    pub one_way: AtomicUsize,
}

pub(super) fn test_handler(seen: Arc<Seen>) -> impl PeerHandler {
    move |req: PeerRequest| {
        let seen = seen.clone();
        async move {
            if req.one_way {
                seen.one_way.fetch_add(1, Ordering::SeqCst);
                return Ok(Bytes::new());
            }
            match req.tag {
                ECHO => Ok(req.payload),
                ECHO_JITTER => {
                    let mut x = req.payload.iter().fold(0x9e37_79b9u64, |h, b| {
                        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
                    });
                    x ^= x >> 29;
                    tokio::time::sleep(Duration::from_micros(x % 3000)).await;
                    Ok(req.payload)
                }
                HANG => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(req.payload)
                }
                FAIL => Err("boom".to_string()),
                PANIC => panic!("handler panic (expected by the test)"),
                BIG => {
                    let n = u32::from_be_bytes(req.payload[..4].try_into().unwrap()) as usize;
                    Ok(Bytes::from(vec![7u8; n]))
                }
                WHO => Ok(Bytes::from(req.from.to_string())),
                other => Err(format!("unknown tag {other}")),
            }
        }
    }
}

pub(super) struct TestServer {
    pub addr: String,
    pub server: PeerServer,
    pub seen: Arc<Seen>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(node: &str, secret: &str, opts: ServerOptions) -> TestServer {
        TestServer::start_on("127.0.0.1:0", node, secret, opts).await
    }

    pub async fn start_on(bind: &str, node: &str, secret: &str, opts: ServerOptions) -> TestServer {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Seen::default());
        let server = PeerServer::new(
            identity(node, secret),
            Arc::new(test_handler(seen.clone())),
            opts,
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let server = server.clone();
            let shutdown = shutdown.clone();
            async move { server.serve(listener, shutdown).await }
        });
        TestServer {
            addr,
            server,
            seen,
            shutdown,
            task,
        }
    }

    pub fn stats(&self) -> PeerStatsSnapshot {
        self.server.stats().snapshot()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server shut down in time")
            .unwrap()
            .unwrap();
    }
}

/// Server options whose shutdown does not wait for the tests' hung handlers.
pub(super) fn quick_drain() -> ServerOptions {
    ServerOptions {
        drain_timeout: Duration::from_millis(100),
        ..ServerOptions::default()
    }
}

pub(super) fn client(node: &str, secret: &str) -> PeerClient {
    PeerClient::new(identity(node, secret), ClientOptions::default())
}

/// Polls `cond` for up to 2 s.
pub(super) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) const T: Duration = Duration::from_secs(5);
