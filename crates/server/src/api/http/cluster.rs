//! What operators and orchestrators read: `/healthz`, `/metrics`, `/v1/cluster`, `/v1/ring`;
//! and what they do: `POST /v1/admin/leave`, `POST /v1/admin/remove/{id}`.
//!
//! Every figure comes from the node's live state ([`Node::info`], the gossip membership and the
//! ring built from it, its metrics registry).

use crate::cluster::anti_entropy::AntiEntropySummary;
use crate::Node;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ringkv_core::{MemberStatus, MembershipError, NodeId};
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

/// The cluster as this node sees it: every member of the gossip table with this node's view of
/// its health, and the partitions the current ring gives it.
pub(crate) async fn cluster(State(node): State<Node>) -> Response {
    let info = node.info();
    let cluster = node.cluster();
    let ring = cluster.ring();
    let tick_ms = node.config().gossip_interval_ms;
    let n = node.replicas_per_key();
    let ae_ages = node
        .anti_entropy()
        .exchange_ages(&crate::cluster::anti_entropy::replicated_partitions(&node));
    let ae = AntiEntropySummary::of(&ae_ages);
    // Per partition this node replicates (ascending): the other replicas it exchanges with
    // and the age of its last successful exchange (null: none since this node started).
    let ae_partitions: Vec<_> = ae_ages
        .iter()
        .map(|e| {
            let peers: Vec<String> = ring
                .preference_list(e.partition, n)
                .into_iter()
                .filter(|id| id != &info.node_id)
                .map(|id| id.as_str().to_string())
                .collect();
            json!({
                "partition": e.partition.0,
                "peers": peers,
                "last_exchange_age_ms": e.age_ms,
            })
        })
        .collect();
    let members: Vec<_> = cluster
        .view()
        .into_iter()
        .map(|v| {
            let m = &v.member;
            let mut entry = json!({
                "id": m.id.as_str(),
                "peer_addr": m.peer_addr,
                "resp_addr": m.resp_addr,
                "http_addr": m.http_addr,
                "dc": m.dc,
                "rack": m.rack,
                "weight": m.weight,
                "status": m.status.as_str(),
                "generation": m.generation.0,
                "heartbeat": m.heartbeat,
                "down": v.down,
                "suspected": v.suspected,
                "self": v.is_self,
                "heartbeat_age_ms": v.heartbeat_age.0.saturating_mul(tick_ms),
                "partitions_held": ring.partitions_of(&m.id).len(),
                // Hints this node holds for that member (writes it took while it was down).
                "hints_pending": node.hints_pending_for(&m.id),
            });
            if v.is_self {
                // Only this node's key count is known here.
                entry["keys"] = json!(info.keys);
            }
            entry
        })
        .collect();
    axum::Json(json!({
        "node_id": info.node_id.as_str(),
        "version": info.version,
        "n": info.n,
        "r": info.r,
        "w": info.w,
        "replicas_per_key": n,
        // Replicas per data center (empty: n spread over every data center), and where this
        // node is: `local_quorum` here means a majority of a key's replicas in `dc`.
        "replication": node.config().replication,
        "dc": node.config().dc,
        "rack": node.config().rack,
        "partitions": info.partitions,
        "durability": info.durability,
        "hints_pending": info.hints_pending,
        // This node's anti-entropy: partitions it replicates, how many had a successful
        // exchange (InSync or Repaired) since start, the oldest such exchange's age, and
        // the repair and byte counters; `per_partition` details each of those partitions.
        "anti_entropy": {
            "partitions": ae.partitions,
            "exchanged_ever": ae.exchanged_ever,
            "oldest_exchange_age_ms": ae.oldest_exchange_age_ms,
            "repairs": node.metrics().anti_entropy_repairs.get(),
            "bytes": node.metrics().anti_entropy_bytes.get(),
            "per_partition": ae_partitions,
        },
        // Partition streaming: what this node pulls (join, remove, a ring change) and, while
        // leaving, how many of its partitions every new owner has confirmed.
        "transfers": node.streaming().status(),
        "members": members,
    }))
    .into_response()
}

/// `POST /v1/admin/leave` (`ringkv leave`): this node goes `Leaving`; the new owners of its
/// partitions stream them in, and it goes `Left` once they all confirmed (watch `/v1/cluster`).
/// `202` when started (or already leaving), `409` when it is the last member or already left.
pub(crate) async fn leave(State(node): State<Node>) -> Response {
    let cluster = node.cluster();
    let status = cluster.me().status;
    let others = cluster.with_membership(|m, _| {
        m.members()
            .filter(|x| x.id != *m.id() && x.status != MemberStatus::Left)
            .count()
    });
    if status == MemberStatus::Left {
        return conflict("this node has already left the cluster");
    }
    if others == 0 {
        return conflict("this node is the last member: there is nobody to hand its data to");
    }
    crate::cluster::streaming::set_status(&node, MemberStatus::Leaving);
    node.streaming().wake();
    (
        StatusCode::ACCEPTED,
        axum::Json(json!({ "node_id": node.node_id().as_str(), "status": "leaving" })),
    )
        .into_response()
}

/// `POST /v1/admin/remove/{id}` (`ringkv remove ID`): takes a dead member out of the cluster;
/// the remaining replicas stream its partitions in to restore N copies. `404` for an unknown
/// member, `409` when it is not down here (a live node leaves by itself) or is this node.
pub(crate) async fn remove(
    State(node): State<Node>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Ok(id) = NodeId::new(id.clone()) else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": format!("{id:?} is not a node id") })),
        )
            .into_response();
    };
    let cluster = node.cluster();
    match cluster.with_membership(|m, now| m.remove(now, &id)) {
        Ok(envelopes) => {
            if let Some(client) = cluster.client() {
                crate::cluster::gossip::send_all(client, envelopes);
            }
            cluster.mark_dirty();
            node.streaming().wake();
            (
                StatusCode::OK,
                axum::Json(json!({ "node_id": id.as_str(), "status": "left" })),
            )
                .into_response()
        }
        Err(e @ MembershipError::UnknownMember(_)) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": e.to_string() })),
        )
            .into_response(),
        Err(e) => conflict(&e.to_string()),
    }
}

fn conflict(why: &str) -> Response {
    (StatusCode::CONFLICT, axum::Json(json!({ "error": why }))).into_response()
}

/// Partition ownership from the current ring: how many of the Q partitions each node owns
/// (first of their preference list) and its share; `load` adds, per node, the partitions it is
/// a replica of at the effective N, and the share its weight aims at.
pub(crate) async fn ring(State(node): State<Node>) -> Response {
    let ring = node.cluster().ring();
    let summary = ring.summary(node.replicas_per_key());
    let nodes: Vec<_> = summary
        .iter()
        .map(|l| json!({ "id": l.id.as_str(), "partitions": l.primary, "share": l.share }))
        .collect();
    axum::Json(json!({
        "partitions": ring.partitions(),
        "replication": node.config().replication,
        "nodes": nodes,
        "load": summary,
    }))
    .into_response()
}
