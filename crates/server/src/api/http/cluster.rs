//! What operators and orchestrators read: `/healthz`, `/metrics`, `/v1/cluster`, `/v1/ring`.
//!
//! Every figure comes from the node's live state ([`Node::info`], the config it runs with, its
//! metrics registry). Today the cluster is this one node, so the member list has one entry that
//! holds every partition; when membership lands these handlers read it instead, and the JSON
//! shapes stay the same.

use crate::Node;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `200 {"status":"ok"}`, or `503` with the reason when the node cannot take writes: it is
/// shutting down, or a failed fsync poisoned storage (an orchestrator should restart it).
pub(crate) async fn healthz(State(node): State<Node>) -> Response {
    let info = node.info();
    let (status, word) = if node.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if info.poisoned {
        (StatusCode::SERVICE_UNAVAILABLE, "poisoned")
    } else {
        (StatusCode::OK, "ok")
    };
    (
        status,
        axum::Json(json!({ "status": word, "node_id": info.node_id.as_str() })),
    )
        .into_response()
}

/// Prometheus text exposition of the node's registry.
pub(crate) async fn metrics(State(node): State<Node>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        node.render_metrics(),
    )
        .into_response()
}

/// The cluster as this node sees it.
pub(crate) async fn cluster(State(node): State<Node>) -> Response {
    let info = node.info();
    let config = node.config();
    let me = json!({
        "id": info.node_id.as_str(),
        "resp_addr": config.resp_addr,
        "http_addr": config.http_addr,
        "peer_addr": config.peer_addr,
        "dc": config.dc,
        "rack": config.rack,
        "weight": config.weight,
        "status": "up",
        "keys": info.keys,
        "partitions_held": info.partitions,
    });
    axum::Json(json!({
        "node_id": info.node_id.as_str(),
        "version": info.version,
        "n": info.n,
        "r": info.r,
        "w": info.w,
        "partitions": info.partitions,
        "durability": info.durability,
        "members": [me],
    }))
    .into_response()
}

/// Partition ownership: how many of the Q partitions each node holds, and its share.
pub(crate) async fn ring(State(node): State<Node>) -> Response {
    let partitions = node.config().partitions;
    axum::Json(json!({
        "partitions": partitions,
        "nodes": [{
            "id": node.node_id().as_str(),
            "partitions": partitions,
            "share": 1.0,
        }],
    }))
    .into_response()
}
