//! Real-socket tests of [`serve_with`]: raw bytes over loopback against hostile and slow clients
//! (BAD-INPUT 16-19) and graceful shutdown. Timeouts are shortened so each test takes about a
//! second at most.

use super::tests::test_node;
use super::*;
use crate::Config;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough not to fire by accident on a loaded machine, short enough to keep tests fast.
const SHORT: Duration = Duration::from_millis(300);
/// Upper bound for anything the tests wait for.
const PATIENCE: Duration = Duration::from_secs(3);

struct Server {
    addr: SocketAddr,
    node: Node,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(config: Config, options: ServeOptions) -> Server {
    let node = test_node(config).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(serve_with(
        listener,
        node.clone(),
        shutdown.clone(),
        options,
    ));
    Server {
        addr,
        node,
        shutdown,
        task,
    }
}

fn short_timeouts() -> ServeOptions {
    ServeOptions {
        header_read_timeout: SHORT,
        body_timeout: SHORT,
        write_stall_timeout: SHORT,
        ..ServeOptions::default()
    }
}

async fn connect(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// One response: status, head (lower-cased), body (by Content-Length).
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

async fn read_response(s: &mut TcpStream) -> Response {
    tokio::time::timeout(PATIENCE, async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.expect("read response");
            assert!(
                n > 0,
                "closed before a response: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |v| v.trim().parse().unwrap());
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-body");
            buf.extend_from_slice(&chunk[..n]);
        }
        Response {
            status,
            head,
            body: buf[head_end..head_end + len].to_vec(),
        }
    })
    .await
    .expect("no response in time")
}

/// Everything the server still sends, if it closes the connection within `within`.
async fn rest_until_closed(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[tokio::test]
async fn binary_keys_round_trip_over_a_socket() {
    let server = start(Config::default(), ServeOptions::default()).await;
    let mut s = connect(
        server.addr,
        &request("PUT", "/v1/kv/dir/%00%FF", b"\x01\x02"),
    )
    .await;
    let put = read_response(&mut s).await;
    assert_eq!(put.status, 200, "{}", put.head);
    assert!(put.head.contains("x-ringkv-acked-by: "));
    s.write_all(&request("GET", "/v1/kv/dir%2f%00%ff", b""))
        .await
        .unwrap();
    let got = read_response(&mut s).await;
    assert_eq!(got.status, 200, "{}", got.head);
    assert_eq!(got.body, b"\x01\x02");
    let direct = server
        .node
        .get(b"dir/\x00\xff", Default::default())
        .await
        .unwrap();
    assert!(direct.winner().is_some());
}

#[tokio::test]
async fn header_floods_and_giant_headers_get_431_and_close() {
    let server = start(Config::default(), ServeOptions::default()).await;
    let mut flood = String::from("GET /healthz HTTP/1.1\r\nHost: t\r\n");
    for i in 0..(MAX_HEADERS + 10) {
        flood.push_str(&format!("X-Flood-{i}: y\r\n"));
    }
    flood.push_str("\r\n");
    let mut s = connect(server.addr, flood.as_bytes()).await;
    assert_eq!(read_response(&mut s).await.status, 431);
    assert!(
        rest_until_closed(&mut s, PATIENCE).await.is_some(),
        "closed after the 431"
    );

    let giant = format!(
        "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Giant: {}\r\n\r\n",
        "g".repeat(MAX_HEADER_BYTES + 1024)
    );
    let mut s = connect(server.addr, giant.as_bytes()).await;
    assert_eq!(read_response(&mut s).await.status, 431);
    assert!(rest_until_closed(&mut s, PATIENCE).await.is_some());
    // hyper refused both before any handler ran; they are still counted.
    let refused = server
        .node
        .metrics()
        .client_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            api: crate::metrics::Api::Http,
            kind: "protocol",
        })
        .get();
    assert_eq!(refused, 2, "both header floods are counted");

    // The server is fine afterwards.
    let mut s = connect(server.addr, &request("GET", "/healthz", b"")).await;
    assert_eq!(read_response(&mut s).await.status, 200);
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_cut_off() {
    let server = start(Config::default(), short_timeouts()).await;
    // Slowloris: a header line every 50 ms, never the blank line that ends them.
    let s = connect(server.addr, b"GET /healthz HTTP/1.1\r\n").await;
    let (mut reader, mut writer) = s.into_split();
    let dribble = tokio::spawn(async move {
        for i in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer
                .write_all(format!("X-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "slowloris connection still open");
    assert!(
        started.elapsed() >= SHORT - Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    dribble.abort();

    // A kept-alive connection that sends nothing more is closed after the same timeout.
    let mut s = connect(server.addr, &request("GET", "/healthz", b"")).await;
    assert_eq!(read_response(&mut s).await.status, 200);
    let started = Instant::now();
    assert_eq!(rest_until_closed(&mut s, PATIENCE).await, Some(Vec::new()));
    assert!(started.elapsed() >= SHORT - Duration::from_millis(50));
}

#[tokio::test]
async fn a_dribbled_body_gets_408_and_writes_nothing() {
    let server = start(Config::default(), short_timeouts()).await;
    let s = connect(
        server.addr,
        b"PUT /v1/kv/slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
    )
    .await;
    let (mut reader, mut writer) = s.into_split();
    // A byte every 50 ms: never idle long, but the whole body would take 5 s.
    let dribble = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut buf)).await;
    dribble.abort();
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 408"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert!(server
        .node
        .get(b"slow", Default::default())
        .await
        .unwrap()
        .is_missing());
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped() {
    let config = Config {
        max_value_bytes: 1 << 20,
        ..Config::default()
    };
    let server = start(config, short_timeouts()).await;
    let value = bytes::Bytes::from(vec![7u8; 1 << 20]);
    server
        .node
        .put("big".into(), value, None, Default::default())
        .await
        .unwrap();
    // A small receive window and twenty pipelined 1 MiB reads that are never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(server.addr).await.unwrap();
    let pipelined: Vec<u8> = (0..20)
        .flat_map(|_| request("GET", "/v1/kv/big", b""))
        .collect();
    s.write_all(&pipelined).await.unwrap();
    let open = || {
        server
            .node
            .metrics()
            .connections
            .get_or_create(&crate::metrics::ApiLabels {
                api: crate::metrics::Api::Http,
            })
            .get()
    };
    let started = Instant::now();
    while open() == 0 {
        assert!(started.elapsed() < PATIENCE, "never accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    while open() != 0 {
        assert!(
            started.elapsed() < PATIENCE,
            "a stalled connection keeps its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let received = rest_until_closed(&mut s, PATIENCE).await.expect("closed");
    assert!(
        received.len() < 20 << 20,
        "everything was delivered: nothing stalled"
    );
}

#[tokio::test]
async fn smuggling_attempts_are_refused_or_closed() {
    let server = start(Config::default(), ServeOptions::default()).await;
    server
        .node
        .put("victim".into(), "safe".into(), None, Default::default())
        .await
        .unwrap();
    let attempts: [&[u8]; 4] = [
        // Two different lengths.
        b"PUT /v1/kv/s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        // A final transfer coding other than chunked has no defined length.
        b"PUT /v1/kv/s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        // Whitespace before the colon.
        b"PUT /v1/kv/s HTTP/1.1\r\nHost: t\r\nContent-Length : 3\r\n\r\nabc",
        // Raw non-ASCII in the request line.
        b"GET /v1/kv/\xff HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for bytes in attempts {
        let mut s = connect(server.addr, bytes).await;
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bytes));
        assert!(
            rest_until_closed(&mut s, PATIENCE).await.is_some(),
            "closed after the 400"
        );
    }
    assert!(server
        .node
        .get(b"s", Default::default())
        .await
        .unwrap()
        .is_missing());

    // Both lengths: framed by the chunked coding (an empty body), answered once, then closed,
    // so the DELETE hidden where a Content-Length reader would see a body is never run.
    let mut s = connect(
        server.addr,
        b"PUT /v1/kv/front HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nDELETE /v1/kv/victim HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .await;
    let first = read_response(&mut s).await;
    assert_eq!(first.status, 200, "{}", first.head);
    assert!(first.head.contains("connection: close"), "{}", first.head);
    let rest = rest_until_closed(&mut s, PATIENCE).await.expect("closed");
    assert!(
        rest.is_empty(),
        "a second response: {:?}",
        String::from_utf8_lossy(&rest)
    );
    let victim = server
        .node
        .get(b"victim", Default::default())
        .await
        .unwrap();
    assert_eq!(
        victim.winner().unwrap().value.as_deref(),
        Some(&b"safe"[..])
    );
}

#[tokio::test]
async fn an_oversized_content_length_is_refused_before_the_body_is_sent() {
    let server = start(Config::default(), ServeOptions::default()).await;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let head = format!(
            "PUT /v1/kv/big HTTP/1.1\r\nHost: t\r\n{expect}Content-Length: 2000000\r\n\r\n"
        );
        // Headers only: the answer must not wait for the two megabytes.
        let mut s = connect(server.addr, head.as_bytes()).await;
        let started = Instant::now();
        let r = read_response(&mut s).await;
        assert_eq!(r.status, 413, "{}", r.head);
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(r.head.contains("connection: close"));
        assert!(String::from_utf8_lossy(&r.body).contains("value too large"));
        assert!(rest_until_closed(&mut s, PATIENCE).await.is_some());
    }
    assert!(server
        .node
        .get(b"big", Default::default())
        .await
        .unwrap()
        .is_missing());
}

#[tokio::test]
async fn the_connection_cap_refuses_the_excess_and_keeps_serving_the_rest() {
    let config = Config {
        max_connections: 2,
        ..Config::default()
    };
    let server = start(config, ServeOptions::default()).await;
    let mut a = connect(server.addr, &request("GET", "/healthz", b"")).await;
    assert_eq!(read_response(&mut a).await.status, 200);
    let mut b = connect(server.addr, &request("GET", "/healthz", b"")).await;
    assert_eq!(read_response(&mut b).await.status, 200);

    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let refused = read_response(&mut c).await;
    assert_eq!(refused.status, 503);
    assert!(String::from_utf8_lossy(&refused.body).contains("too many connections"));
    assert!(rest_until_closed(&mut c, PATIENCE).await.is_some());
    let refusals = server
        .node
        .metrics()
        .connections_refused
        .get_or_create(&crate::metrics::ApiLabels {
            api: crate::metrics::Api::Http,
        })
        .get();
    assert_eq!(refusals, 1);

    // The connections already in keep working.
    a.write_all(&request("PUT", "/v1/kv/k", b"v"))
        .await
        .unwrap();
    assert_eq!(read_response(&mut a).await.status, 200);

    // A closed connection frees its slot.
    drop(b);
    let started = Instant::now();
    loop {
        let mut d = connect(server.addr, &request("GET", "/healthz", b"")).await;
        if read_response(&mut d).await.status == 200 {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "slot never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let server = start(Config::default(), ServeOptions::default()).await;
    let mut idle = connect(server.addr, &request("GET", "/healthz", b"")).await;
    assert_eq!(read_response(&mut idle).await.status, 200);
    let mut busy = connect(
        server.addr,
        b"PUT /v1/kv/inflight HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhe",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.shutdown.cancel();
    // New connections are refused once the listener is gone.
    let started = Instant::now();
    while TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            started.elapsed() < PATIENCE,
            "still accepting after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The idle connection is closed; the busy one gets to finish.
    assert!(rest_until_closed(&mut idle, PATIENCE).await.is_some());
    assert!(
        !server.task.is_finished(),
        "returned before the in-flight request finished"
    );
    busy.write_all(b"llo").await.unwrap();
    let r = read_response(&mut busy).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(rest_until_closed(&mut busy, PATIENCE).await.is_some());
    tokio::time::timeout(PATIENCE, server.task)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    let read = server
        .node
        .get(b"inflight", Default::default())
        .await
        .unwrap();
    assert_eq!(read.winner().unwrap().value.as_deref(), Some(&b"hello"[..]));
}
