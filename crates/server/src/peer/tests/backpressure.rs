//! Bounded in-flight work on both ends: slow handlers or a full connection make callers wait or
//! fail fast, never grow memory without bound.

use super::*;
use tokio::sync::Semaphore;

/// A handler that blocks on a gate and records how many run at once.
struct Gated {
    gate: Arc<Semaphore>,
    running: AtomicUsize,
    max_running: AtomicUsize,
}

impl PeerHandler for Arc<Gated> {
    fn handle(&self, req: PeerRequest) -> HandlerFuture {
        let me = self.clone();
        Box::pin(async move {
            let now = me.running.fetch_add(1, Ordering::SeqCst) + 1;
            me.max_running.fetch_max(now, Ordering::SeqCst);
            let permit = me.gate.acquire().await.map_err(|e| e.to_string())?;
            permit.forget();
            me.running.fetch_sub(1, Ordering::SeqCst);
            Ok(req.payload)
        })
    }
}

async fn gated_server(max_in_flight: usize) -> (String, Arc<Gated>, CancellationToken) {
    let gated = Arc::new(Gated {
        gate: Arc::new(Semaphore::new(0)),
        running: AtomicUsize::new(0),
        max_running: AtomicUsize::new(0),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = PeerServer::new(
        identity("srv", SECRET),
        Arc::new(gated.clone()),
        ServerOptions {
            max_in_flight_per_connection: max_in_flight,
            drain_timeout: Duration::from_millis(200),
            ..ServerOptions::default()
        },
    );
    let shutdown = CancellationToken::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move { server.serve(listener, shutdown).await }
    });
    (addr, gated, shutdown)
}

#[tokio::test]
async fn client_bound_makes_calls_wait_then_overload() {
    let (addr, gated, shutdown) = gated_server(1024).await;
    let c = PeerClient::new(
        identity("cli", SECRET),
        ClientOptions {
            max_in_flight_per_connection: 8,
            ..ClientOptions::default()
        },
    );
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..8 {
        let c = c.clone();
        let addr = addr.clone();
        calls.spawn(async move { c.call(&addr, ECHO, Bytes::from(format!("{i}")), T).await });
    }
    eventually("eight handlers running", || {
        gated.running.load(Ordering::SeqCst) == 8
    })
    .await;
    // The ninth waits for a slot until its deadline, then gives up without sending.
    let started = tokio::time::Instant::now();
    let err = c
        .call(&addr, ECHO, Bytes::new(), Duration::from_millis(150))
        .await
        .unwrap_err();
    assert_eq!(err, PeerError::Overloaded);
    assert!(err.is_retryable() && !err.maybe_delivered());
    assert!(started.elapsed() >= Duration::from_millis(140));
    // A one-way send is refused at once.
    assert_eq!(
        c.send(&addr, tags::GOSSIP, Bytes::new()).await.unwrap_err(),
        PeerError::Overloaded
    );
    assert_eq!(c.stats().snapshot().overloaded, 2);
    // A waiting call gets through as soon as a slot frees.
    let waiter = {
        let c = c.clone();
        let addr = addr.clone();
        tokio::spawn(async move { c.call(&addr, ECHO, Bytes::from("late"), T).await })
    };
    gated.gate.add_permits(100);
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
    }
    assert_eq!(waiter.await.unwrap().unwrap().1, "late");
    assert!(gated.max_running.load(Ordering::SeqCst) <= 8);
    shutdown.cancel();
}

#[tokio::test]
async fn server_bound_stops_reading_when_handlers_are_busy() {
    let (addr, gated, shutdown) = gated_server(4).await;
    let c = client("cli", SECRET);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..64 {
        let c = c.clone();
        let addr = addr.clone();
        calls.spawn(async move { c.call(&addr, ECHO, Bytes::from(format!("{i}")), T).await });
    }
    eventually("four handlers running", || {
        gated.running.load(Ordering::SeqCst) == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        gated.max_running.load(Ordering::SeqCst),
        4,
        "never more handlers than the per-connection bound"
    );
    gated.gate.add_permits(1000);
    let mut n = 0;
    while let Some(r) = calls.join_next().await {
        r.unwrap().unwrap();
        n += 1;
    }
    assert_eq!(n, 64);
    assert_eq!(gated.max_running.load(Ordering::SeqCst), 4);
    shutdown.cancel();
}
