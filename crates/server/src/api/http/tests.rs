//! In-process tests of the routes: requests go straight into [`router`] with `oneshot`, no
//! socket. The socket-level defences are tested in `socket_tests.rs`.

use super::*;
use crate::metrics::ErrorLabels;
use crate::Config;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ringkv_core::{Context, NodeId, VersionVector};
use ringkv_storage::{Engine, KeyValue, Keyspace, MemEngine, StorageError, Store, WriteBatch};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

pub(super) async fn test_node(config: Config) -> Node {
    Node::with_store(&config, Store::in_memory(Default::default()))
        .await
        .unwrap()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        assert_eq!(
            self.headers["content-type"], "application/json",
            "{:?}",
            self.body
        );
        serde_json::from_slice(&self.body).unwrap()
    }

    fn context(&self) -> String {
        self.headers[CONTEXT_HEADER].to_str().unwrap().to_string()
    }
}

async fn send(node: &Node, req: Request<Body>) -> Reply {
    let response = router(node.clone()).oneshot(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn req(method: Method, uri: &str, context: Option<&str>, body: &[u8]) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(c) = context {
        b = b.header(CONTEXT_HEADER, c);
    }
    b.body(Body::from(body.to_vec())).unwrap()
}

async fn get(node: &Node, uri: &str) -> Reply {
    send(node, req(Method::GET, uri, None, b"")).await
}

async fn put(node: &Node, uri: &str, context: Option<&str>, value: &[u8]) -> Reply {
    send(node, req(Method::PUT, uri, context, value)).await
}

async fn delete(node: &Node, uri: &str, context: Option<&str>) -> Reply {
    send(node, req(Method::DELETE, uri, context, b"")).await
}

fn errors(node: &Node, kind: &'static str) -> u64 {
    node.metrics()
        .client_errors
        .get(&ErrorLabels {
            api: crate::metrics::Api::Http,
            kind,
        })
        .map_or(0, |c| c.get())
}

fn sibling_values(json: &Value) -> Vec<Option<Vec<u8>>> {
    let mut values: Vec<Option<Vec<u8>>> = json["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().map(|v| STANDARD.decode(v).unwrap()))
        .collect();
    values.sort();
    values
}

#[tokio::test]
async fn put_then_get_round_trips_with_context_and_acks() {
    let node = test_node(Config::default()).await;
    let written = put(&node, "/v1/kv/greeting", None, b"hello").await;
    assert_eq!(written.status, StatusCode::OK);
    let json = written.json();
    let me = node.node_id().as_str();
    assert_eq!(json["siblings"], 1);
    assert_eq!(json["acked_by"], serde_json::json!([me]));
    assert_eq!(json["w"], 1, "one member: every level needs its one ack");
    assert_eq!(json["context"], written.context());
    assert_eq!(written.headers[ACKED_BY_HEADER], me);
    Context::decode(&written.context()).unwrap();

    let read = get(&node, "/v1/kv/greeting").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(&read.body[..], b"hello");
    assert_eq!(read.headers["content-type"], "application/octet-stream");
    assert_eq!(read.context(), written.context());

    // A blind overwrite replaces the value: no sibling.
    assert_eq!(
        put(&node, "/v1/kv/greeting", None, b"hi").await.json()["siblings"],
        1
    );
    assert_eq!(&get(&node, "/v1/kv/greeting").await.body[..], b"hi");

    // HEAD answers like GET, without the body.
    let head = send(&node, req(Method::HEAD, "/v1/kv/greeting", None, b"")).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert!(head.headers.contains_key(CONTEXT_HEADER));
}

#[tokio::test]
async fn missing_and_deleted_keys_are_404_with_a_context() {
    let node = test_node(Config::default()).await;
    let missing = get(&node, "/v1/kv/nothing").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("not found"));
    assert!(Context::decode(&missing.context()).unwrap().is_empty());
    // Nothing to delete, no context: 404, nothing written.
    assert_eq!(
        delete(&node, "/v1/kv/nothing", None).await.status,
        StatusCode::NOT_FOUND
    );

    put(&node, "/v1/kv/k", None, b"v").await;
    let deleted = delete(&node, "/v1/kv/k", None).await;
    assert_eq!(deleted.status, StatusCode::OK);
    let json = deleted.json();
    assert_eq!(json["siblings"], 1, "the tombstone");
    assert_eq!(json["acked_by"].as_array().unwrap().len(), 1);
    assert!(deleted.headers.contains_key(ACKED_BY_HEADER));

    let gone = get(&node, "/v1/kv/k").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let tombstone_ctx = gone.context();
    assert!(!Context::decode(&tombstone_ctx).unwrap().is_empty());
    // Deleting again without a context finds nothing live.
    assert_eq!(
        delete(&node, "/v1/kv/k", None).await.status,
        StatusCode::NOT_FOUND
    );
    // Writing over the tombstone with its context supersedes it: one version, no sibling.
    let again = put(&node, "/v1/kv/k", Some(&tombstone_ctx), b"back").await;
    assert_eq!(again.json()["siblings"], 1);
    assert_eq!(&get(&node, "/v1/kv/k").await.body[..], b"back");
}

#[tokio::test]
async fn concurrent_writes_become_siblings_and_resolve_with_the_merged_context() {
    let node = test_node(Config::default()).await;
    put(&node, "/v1/kv/cart", None, b"v0").await;
    let seen = get(&node, "/v1/kv/cart").await.context();
    // Two clients read the same version and both write through this node.
    assert_eq!(
        put(&node, "/v1/kv/cart", Some(&seen), b"a").await.json()["siblings"],
        1
    );
    assert_eq!(
        put(&node, "/v1/kv/cart", Some(&seen), b"b").await.json()["siblings"],
        2
    );

    let read = get(&node, "/v1/kv/cart").await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES);
    let json = read.json();
    assert_eq!(
        json["context"],
        read.context(),
        "same context in header and body"
    );
    assert_eq!(
        sibling_values(&json),
        vec![Some(b"a".to_vec()), Some(b"b".to_vec())]
    );
    for s in json["siblings"].as_array().unwrap() {
        assert_eq!(s["deleted"], false);
        assert!(s["timestamp_ms"].as_u64().unwrap() > 0);
    }
    let resolved = put(&node, "/v1/kv/cart", Some(&read.context()), b"a+b").await;
    assert_eq!(resolved.json()["siblings"], 1);
    let read = get(&node, "/v1/kv/cart").await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(&read.body[..], b"a+b");
}

/// A delete concurrent with a write is a conflict the client must see: the tombstone is a
/// sibling (`"value": null, "deleted": true`).
#[tokio::test]
async fn a_concurrent_delete_shows_as_a_tombstone_sibling() {
    let node = test_node(Config::default()).await;
    put(&node, "/v1/kv/k", None, b"v0").await;
    let seen = get(&node, "/v1/kv/k").await.context();
    put(&node, "/v1/kv/k", Some(&seen), b"new").await;
    assert_eq!(
        delete(&node, "/v1/kv/k", Some(&seen)).await.json()["siblings"],
        2
    );
    let read = get(&node, "/v1/kv/k").await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES);
    let json = read.json();
    assert_eq!(sibling_values(&json), vec![None, Some(b"new".to_vec())]);
    let tomb = json["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["deleted"] == true)
        .unwrap();
    assert!(tomb["value"].is_null());
}

/// The seed's example, D1 -> D5, through the HTTP API of one node: D3 and D4 are written over D2
/// by two clients that do not see each other's write, the reader gets both, resolves them into
/// D5, and a client still holding D2's context adds a sibling rather than erasing D5.
#[tokio::test]
async fn seed_example_d1_to_d5() {
    let node = test_node(Config::default()).await;
    let uri = "/v1/kv/seed-D";
    let d1 = put(&node, uri, None, b"D1").await.context();
    let d2 = put(&node, uri, Some(&d1), b"D2").await.context();
    assert_eq!(
        &get(&node, uri).await.body[..],
        b"D2",
        "D2 descends from D1"
    );
    put(&node, uri, Some(&d2), b"D3").await;
    put(&node, uri, Some(&d2), b"D4").await;
    let read = get(&node, uri).await;
    assert_eq!(read.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(
        sibling_values(&read.json()),
        vec![Some(b"D3".to_vec()), Some(b"D4".to_vec())]
    );
    let d5 = put(&node, uri, Some(&read.context()), b"D5").await;
    assert_eq!(d5.json()["siblings"], 1);
    assert_eq!(&get(&node, uri).await.body[..], b"D5");
    // A stale writer (context D2) is concurrent with D5: both survive, nothing is lost.
    put(&node, uri, Some(&d2), b"late").await;
    let read = get(&node, uri).await;
    assert_eq!(
        sibling_values(&read.json()),
        vec![Some(b"D5".to_vec()), Some(b"late".to_vec())]
    );
}

#[tokio::test]
async fn keys_are_bytes_decoded_exactly_once() {
    let node = test_node(Config::default()).await;
    put(&node, "/v1/kv/%00%FF", None, b"binary").await;
    assert_eq!(&get(&node, "/v1/kv/%00%ff").await.body[..], b"binary");
    let direct = node.get(b"\x00\xff", Default::default()).await.unwrap();
    assert_eq!(
        direct.winner().unwrap().value.as_deref(),
        Some(&b"binary"[..])
    );

    // An encoded and an unencoded slash name the same key.
    put(&node, "/v1/kv/users/42", None, b"slash").await;
    assert_eq!(&get(&node, "/v1/kv/users%2F42").await.body[..], b"slash");
    assert!(node
        .get(b"users/42", Default::default())
        .await
        .unwrap()
        .winner()
        .is_some());
    // Decoded once: %252F is the three bytes "%2F", another key.
    assert_eq!(
        get(&node, "/v1/kv/users%252F42").await.status,
        StatusCode::NOT_FOUND
    );
    put(&node, "/v1/kv/users%252F42", None, b"literal").await;
    assert!(node
        .get(b"users%2F42", Default::default())
        .await
        .unwrap()
        .winner()
        .is_some());
    // Dots are bytes, not directions.
    put(&node, "/v1/kv/..%2F..%2Fetc%2Fpasswd", None, b"dots").await;
    assert_eq!(
        &get(&node, "/v1/kv/../../etc/passwd").await.body[..],
        b"dots"
    );
    // A key that is only a slash.
    put(&node, "/v1/kv//", None, b"root").await;
    assert_eq!(&get(&node, "/v1/kv/%2F").await.body[..], b"root");
}

#[tokio::test]
async fn bad_keys_are_refused() {
    let node = test_node(Config::default()).await;
    for uri in ["/v1/kv/%G1", "/v1/kv/abc%", "/v1/kv/a%2"] {
        let r = put(&node, uri, None, b"v").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(r.json()["error"]
            .as_str()
            .unwrap()
            .contains("percent-encoding"));
    }
    assert_eq!(errors(&node, "argument"), 3);
    for uri in ["/v1/kv/", "/v1/kv"] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let r = send(&node, req(method.clone(), uri, None, b"v")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {uri}");
            assert!(r.json()["error"].as_str().unwrap().starts_with("empty key"));
        }
    }
    let long = format!("/v1/kv/{}", "k".repeat(1025));
    assert_eq!(
        put(&node, &long, None, b"v").await.status,
        StatusCode::URI_TOO_LONG
    );
    assert_eq!(get(&node, &long).await.status, StatusCode::URI_TOO_LONG);
    let at_limit = format!("/v1/kv/{}", "%41".repeat(1024));
    assert_eq!(
        put(&node, &at_limit, None, b"v").await.status,
        StatusCode::OK
    );
    assert_eq!(errors(&node, "limit"), 6 + 2);
    assert_eq!(
        node.info().keys,
        1,
        "nothing but the key at the limit was written"
    );
}

/// A body without a length: the limit is enforced while it streams in.
struct Chunks(Vec<Bytes>);

impl HttpBody for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let next = if self.0.is_empty() {
            None
        } else {
            Some(Ok(hyper::body::Frame::data(self.0.remove(0))))
        };
        std::task::Poll::Ready(next)
    }
}

#[tokio::test]
async fn values_over_the_limit_are_413_and_change_nothing() {
    let node = test_node(Config {
        max_value_bytes: 100,
        ..Config::default()
    })
    .await;
    assert_eq!(
        put(&node, "/v1/kv/k", None, &[7; 100]).await.status,
        StatusCode::OK
    );
    let over = put(&node, "/v1/kv/k", None, &[8; 101]).await;
    assert_eq!(over.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(over.json()["error"]
        .as_str()
        .unwrap()
        .contains("value too large"));
    assert_eq!(over.headers["connection"], "close");

    // Declared too large: refused on the header alone (the body here is empty).
    let declared = Request::put("/v1/kv/k")
        .header("content-length", "1000000")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&node, declared).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // No length: cut off once the running total passes the limit.
    let chunks = (0..50).map(|_| Bytes::from_static(&[9; 10])).collect();
    let streamed = Request::put("/v1/kv/k")
        .body(Body::new(Chunks(chunks)))
        .unwrap();
    assert_eq!(
        send(&node, streamed).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let chunks = (0..10).map(|_| Bytes::from_static(&[5; 10])).collect();
    let streamed = Request::put("/v1/kv/k2")
        .body(Body::new(Chunks(chunks)))
        .unwrap();
    assert_eq!(send(&node, streamed).await.status, StatusCode::OK);
    assert_eq!(&get(&node, "/v1/kv/k2").await.body[..], &[5; 100]);

    assert_eq!(
        &get(&node, "/v1/kv/k").await.body[..],
        &[7; 100],
        "unchanged"
    );
    assert_eq!(errors(&node, "limit"), 3);
}

fn context_with(entries: usize) -> String {
    let mut clock = VersionVector::new();
    for i in 0..entries {
        clock.witness(&NodeId::new(format!("node-{i}")).unwrap(), 1, 0);
    }
    Context::from_clock(&clock).encode()
}

#[tokio::test]
async fn malformed_contexts_are_400_and_write_nothing() {
    let node = test_node(Config::default()).await;
    let good = put(&node, "/v1/kv/k", None, b"v").await.context();
    let truncated = &good[..good.len() - 3];
    let mut forged: Vec<char> = good.chars().collect();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    let huge = context_with(10_000);
    let many = context_with(300);
    assert!(
        many.len() < ringkv_core::version::MAX_CONTEXT_LEN,
        "entry count, not length"
    );
    for (what, ctx) in [
        ("not base64", "!!!not base64!!!"),
        ("truncated", truncated),
        ("forged", &forged),
        ("10,000 entries", &huge),
        ("300 entries", &many),
        ("empty", ""),
    ] {
        for method in [Method::PUT, Method::DELETE] {
            let r = send(&node, req(method.clone(), "/v1/kv/k", Some(ctx), b"x")).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what} {method}");
            assert!(
                r.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("invalid context"),
                "{what}"
            );
        }
    }
    assert_eq!(errors(&node, "context"), 12);
    // Two contexts, or bytes that cannot be a context at all.
    let two = Request::put("/v1/kv/k")
        .header(CONTEXT_HEADER, &good)
        .header(CONTEXT_HEADER, &good)
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(send(&node, two).await.status, StatusCode::BAD_REQUEST);
    let binary = Request::put("/v1/kv/k")
        .header(
            CONTEXT_HEADER,
            axum::http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        )
        .body(Body::from("x"))
        .unwrap();
    assert_eq!(send(&node, binary).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        &get(&node, "/v1/kv/k").await.body[..],
        b"v",
        "nothing was written"
    );
}

#[tokio::test]
async fn consistency_levels_are_checked() {
    let node = test_node(Config::default()).await;
    for uri in [
        "/v1/kv/k?w=one",
        "/v1/kv/k?w=quorum",
        "/v1/kv/k?w=all",
        "/v1/kv/k?w=1",
        // A node alone is one data center with one quorum.
        "/v1/kv/k?w=local_quorum",
        "/v1/kv/k?w=each_quorum",
    ] {
        let r = put(&node, uri, None, b"v").await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
        assert_eq!(r.json()["w"], 1);
    }
    for uri in [
        "/v1/kv/k?r=one",
        "/v1/kv/k?r=QUORUM",
        "/v1/kv/k?r=1",
        "/v1/kv/k?r=local_quorum",
        "/v1/kv/k?r=EACH_QUORUM",
    ] {
        assert_eq!(get(&node, uri).await.status, StatusCode::OK, "{uri}");
    }
    for uri in [
        "/v1/kv/k?w=most",
        "/v1/kv/k?w=0",
        "/v1/kv/k?w=1&w=1",
        "/v1/kv/k?r=1",
        "/v1/kv/k?consistency=all",
    ] {
        let r = put(&node, uri, None, b"v").await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        r.json();
    }
    let r = put(&node, "/v1/kv/k?w=local", None, b"v").await;
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("local_quorum, each_quorum"), "{error}");
    // More than the replicas a key has in a one-node cluster: valid, but cannot be met.
    let r = put(&node, "/v1/kv/k?w=2", None, b"v").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json()["needed"], 2);
    assert_eq!(
        get(&node, "/v1/kv/k?r=-1").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&node, "/v1/kv/k?w=1").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        delete(&node, "/v1/kv/k?w=9", None).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn too_many_siblings_is_409_and_keeps_them_all() {
    let node = test_node(Config {
        max_siblings: 3,
        sibling_warn: 2,
        ..Config::default()
    })
    .await;
    put(&node, "/v1/kv/bomb", None, b"v0").await;
    let ctx = get(&node, "/v1/kv/bomb").await.context();
    for v in ["a", "b", "c"] {
        assert_eq!(
            put(&node, "/v1/kv/bomb", Some(&ctx), v.as_bytes())
                .await
                .status,
            StatusCode::OK
        );
    }
    let refused = put(&node, "/v1/kv/bomb", Some(&ctx), b"d").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("too many siblings"));
    assert_eq!(errors(&node, "siblings"), 1);
    let read = get(&node, "/v1/kv/bomb").await;
    assert_eq!(read.json()["siblings"].as_array().unwrap().len(), 3);
    // Resolving with the merged context is always possible.
    let resolved = put(&node, "/v1/kv/bomb", Some(&read.context()), b"one").await;
    assert_eq!(resolved.json()["siblings"], 1);
}

#[tokio::test]
async fn password_guards_v1_but_not_probes() {
    let node = test_node(Config {
        password: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let with_auth = |method: Method, uri: &str, auth: Option<&str>| {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(Body::from("v")).unwrap()
    };
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cre"),
        Some("Basic s3cret"),
        Some("s3cret"),
    ] {
        for uri in ["/v1/kv/k", "/v1/cluster", "/v1/ring", "/v1/nope"] {
            let r = send(&node, with_auth(Method::GET, uri, auth)).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri} {auth:?}");
            assert!(r.headers.contains_key("www-authenticate"));
            r.json();
        }
    }
    assert_eq!(errors(&node, "auth"), 20);
    let ok = send(
        &node,
        with_auth(Method::PUT, "/v1/kv/k", Some("Bearer s3cret")),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let ok = send(
        &node,
        with_auth(Method::GET, "/v1/kv/k", Some("Bearer s3cret")),
    )
    .await;
    assert_eq!(&ok.body[..], b"v");
    assert_eq!(get(&node, "/healthz").await.status, StatusCode::OK);
    assert_eq!(get(&node, "/metrics").await.status, StatusCode::OK);
}

#[tokio::test]
async fn cluster_ring_health_and_metrics_reflect_the_node() {
    let node = test_node(Config {
        node_id: Some("n1".into()),
        partitions: 64,
        dc: "eu".into(),
        ..Config::default()
    })
    .await;
    put(&node, "/v1/kv/a", None, b"1").await;
    put(&node, "/v1/kv/b", None, b"2").await;

    let cluster = get(&node, "/v1/cluster").await.json();
    assert_eq!(cluster["node_id"], "n1");
    assert_eq!(
        (
            cluster["n"].as_u64(),
            cluster["r"].as_u64(),
            cluster["w"].as_u64()
        ),
        (Some(3), Some(2), Some(2))
    );
    assert_eq!(cluster["partitions"], 64);
    assert_eq!(cluster["durability"], "sync");
    assert_eq!(cluster["version"], env!("CARGO_PKG_VERSION"));
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    let me = &members[0];
    assert_eq!(me["id"], "n1");
    assert_eq!(me["dc"], "eu");
    assert_eq!(me["status"], "up");
    assert_eq!(me["keys"], 2);
    assert_eq!(me["partitions_held"], 64);
    assert_eq!(me["http_addr"], "127.0.0.1:7380");
    for field in ["resp_addr", "peer_addr", "rack", "weight"] {
        assert!(!me[field].is_null(), "{field}");
    }

    let ring = get(&node, "/v1/ring").await.json();
    assert_eq!(ring["partitions"], 64);
    assert_eq!(
        ring["nodes"],
        serde_json::json!([{"id": "n1", "partitions": 64, "share": 1.0}])
    );

    let health = get(&node, "/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(
        health.json(),
        serde_json::json!({"status": "ok", "node_id": "n1"})
    );

    let metrics = get(&node, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let requests = node
        .metrics()
        .requests
        .get_or_create(&crate::metrics::ApiLabels {
            api: crate::metrics::Api::Http,
        })
        .get();
    assert_eq!(requests, 6, "every request is counted, this one included");
    assert!(
        text.contains("ringkv_requests_total{api=\"http\"} 6"),
        "{text}"
    );
    assert!(text.contains("ringkv_ops_total{op=\"put\"} 2"), "{text}");

    node.shutdown().unwrap();
    let health = get(&node, "/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "shutting_down");
    assert_eq!(
        put(&node, "/v1/kv/c", None, b"3").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let node = test_node(Config::default()).await;
    let r = get(&node, "/v2/kv/k").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"], "no such route");
    assert_eq!(get(&node, "/").await.status, StatusCode::NOT_FOUND);
    let r = send(&node, req(Method::POST, "/v1/kv/k", None, b"v")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET,HEAD,PUT,DELETE");
    r.json();
    let r = send(&node, req(Method::DELETE, "/v1/cluster", None, b"")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET,HEAD");
    assert_eq!(errors(&node, "unknown_command"), 4);
    assert_eq!(
        get(&node, "/v1/kv/k").await.status,
        StatusCode::NOT_FOUND,
        "POST wrote nothing"
    );
}

/// An engine whose fsync or writes can be made to fail, to see storage errors on the wire.
#[derive(Default)]
struct FaultyEngine {
    inner: MemEngine,
    fail_sync: AtomicBool,
    disk_full: AtomicBool,
}

impl Engine for FaultyEngine {
    fn get(&self, ks: Keyspace, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(ks, key)
    }
    fn write(&self, batch: &WriteBatch) -> Result<(), StorageError> {
        if self.disk_full.load(Ordering::SeqCst) {
            return Err(StorageError::DiskFull {
                free_bytes: 0,
                needed_bytes: 1,
            });
        }
        self.inner.write(batch)
    }
    fn sync(&self) -> Result<(), StorageError> {
        if self.fail_sync.load(Ordering::SeqCst) {
            return Err(StorageError::Io(std::io::Error::other(
                "injected fsync failure",
            )));
        }
        self.inner.sync()
    }
    fn scan(
        &self,
        ks: Keyspace,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan(ks, start, end, limit)
    }
    fn disk_bytes(&self) -> u64 {
        0
    }
}

#[tokio::test]
async fn storage_failures_map_to_507_and_500_and_poison_health() {
    let engine = Arc::new(FaultyEngine::default());
    let store = Store::with_engine(engine.clone(), Default::default());
    let node = Node::with_store(&Config::default(), store).await.unwrap();

    engine.disk_full.store(true, Ordering::SeqCst);
    let full = put(&node, "/v1/kv/k", None, b"v").await;
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(full.json()["error"].as_str().unwrap().contains("disk full"));
    assert_eq!(full.headers["retry-after"], "1");
    engine.disk_full.store(false, Ordering::SeqCst);
    assert_eq!(
        put(&node, "/v1/kv/k", None, b"v").await.status,
        StatusCode::OK
    );

    engine.fail_sync.store(true, Ordering::SeqCst);
    let failed = put(&node, "/v1/kv/k2", None, b"v").await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    failed.json();
    let health = get(&node, "/healthz").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "poisoned");
    assert_eq!(errors(&node, "storage"), 2);
}
