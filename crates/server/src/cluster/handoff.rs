//! Hinted handoff over peer tag `HANDOFF`: the stand-in side of a sloppy-quorum write, and the
//! worker that delivers hints to their node once it is back.
//!
//! The core `Message` enum has no field for the node a write was meant for, so this module
//! speaks its own small protocol on its own tag (postcard, a format byte first):
//! - [`HandoffRequest::Hinted`]: a coordinator's replicate to a stand-in, with the intended
//!   node. The stand-in stores the hint (keyspace `hints`) and merges the set into its own
//!   replica, both durably, before it answers with a core `ReplicateAck` envelope, so the
//!   coordinator's `PutCoordinator` counts it like any replica's ack.
//! - [`HandoffRequest::Deliver`]: a batch of hinted sets for the receiving node. It merges each
//!   one into its replica durably, then answers [`HandoffReply::Delivered`]; only then does the
//!   sender delete the batch's hints (one batch, compare-and-delete, see [`super::hints`]).
//!
//! The worker ([`run`]) wakes on gossip's `Recovered`/`Restarted` events and every
//! [`SWEEP_EVERY`], and for each target with pending hints that gossip does not show down or
//! suspected, streams its hints in batches of [`BATCH`], the targets concurrently (one that
//! stopped answering delays only its own hints). Hints last updated more than
//! `hint_window_secs` ago are deleted instead (counted in `hints_dropped`): anti-entropy repairs
//! those keys. Targets that stay down get an expiry-only pass every [`EXPIRY_EVERY`] sweeps.

use super::hints::Hint;
use crate::error::NodeError;
use crate::node::Node;
use crate::peer::versioned::{self, encode};
use crate::peer::{tags, HandlerFuture, PeerRequest};
use crate::replica::now_ms;
use bytes::Bytes;
use ringkv_core::coordinator::{
    Envelope, Message, ReplicaError, Replicate, ReplicateAck, RequestId,
};
use ringkv_core::handoff::HintWindow;
use ringkv_core::{NodeId, SiblingSet};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Hints per `Deliver` call.
pub use ringkv_core::handoff::BATCH;
/// Period of the handoff sweep when no gossip event wakes it sooner.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Sweeps between expiry passes over targets that stay down.
const EXPIRY_EVERY: u64 = 30;
/// How long a `Deliver` call may take.
const DELIVER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub enum HandoffRequest {
    /// Store `set` for `key` here and as a hint for `intended`.
    Hinted {
        intended: NodeId,
        request: RequestId,
        key: Vec<u8>,
        set: SiblingSet,
    },
    /// Hinted sets meant for the receiver: merge each.
    Deliver { hints: Vec<(Vec<u8>, SiblingSet)> },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum HandoffReply {
    /// How many were merged durably, or why the batch was refused.
    Delivered(Result<u32, ReplicaError>),
}

fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    versioned::decode(bytes, "handoff")
}

/// The `Hinted` request a coordinator sends a stand-in instead of a core `Replicate`.
pub(crate) fn hinted_request(intended: NodeId, replicate: &Replicate) -> Bytes {
    encode(&HandoffRequest::Hinted {
        intended,
        request: replicate.request,
        key: replicate.key.to_vec(),
        set: replicate.set.clone(),
    })
}

fn replica_error(e: NodeError) -> ReplicaError {
    match e {
        NodeError::ShuttingDown => ReplicaError::ShuttingDown,
        NodeError::Storage(e) => ReplicaError::Storage(e.to_string()),
        other => ReplicaError::Rejected(other.to_string()),
    }
}

/// Stores `set` as a hint for `intended` and merges it into this node's replica, both durable
/// when this returns. The hint goes to storage first: a crash in between leaves a hint whose
/// delivery is an idempotent merge.
pub(crate) async fn store_hinted(
    node: &Node,
    intended: &NodeId,
    key: &[u8],
    set: &SiblingSet,
) -> Result<(), NodeError> {
    let ticket = node.hints().store(intended, key, set, now_ms())?;
    node.metrics().hints_stored.inc();
    let merged = node.replica().merge(key, set).await;
    node.store().durable(ticket).await?;
    merged?;
    node.note_keys();
    Ok(())
}

/// The handler for tag `HANDOFF`.
pub fn handler(node: Node) -> impl Fn(PeerRequest) -> HandlerFuture + Send + Sync + 'static {
    move |req: PeerRequest| {
        let node = node.clone();
        Box::pin(async move {
            let msg: HandoffRequest = decode(&req.payload)?;
            let check = |key: &[u8]| -> Result<(), ReplicaError> {
                if node.is_shutting_down() {
                    return Err(ReplicaError::ShuttingDown);
                }
                node.limits()
                    .check_key(key)
                    .map_err(|e| ReplicaError::Rejected(e.to_string()))
            };
            match msg {
                HandoffRequest::Hinted {
                    intended,
                    request,
                    key,
                    set,
                } => {
                    let result = match check(&key) {
                        Err(e) => Err(e),
                        // A hint for ourselves is just a replicate.
                        Ok(()) if &intended == node.node_id() => node
                            .replica()
                            .merge(&key, &set)
                            .await
                            .map(|_| node.note_keys())
                            .map_err(replica_error),
                        Ok(()) => store_hinted(&node, &intended, &key, &set)
                            .await
                            .map_err(replica_error),
                    };
                    let reply = Envelope {
                        from: node.node_id().clone(),
                        to: req.from,
                        msg: Message::ReplicateAck(ReplicateAck { request, result }),
                    };
                    Ok(Bytes::from(reply.encode()))
                }
                HandoffRequest::Deliver { hints } => {
                    for (key, _) in &hints {
                        if let Err(e) = check(key) {
                            return Ok(encode(&HandoffReply::Delivered(Err(e))));
                        }
                    }
                    // Merged concurrently so the fsyncs are shared (group commit).
                    let mut tasks = tokio::task::JoinSet::new();
                    for (key, set) in hints {
                        let node = node.clone();
                        tasks.spawn(async move { node.replica().merge(&key, &set).await });
                    }
                    let mut merged = 0u32;
                    let mut failure = None;
                    while let Some(r) = tasks.join_next().await {
                        match r {
                            Ok(Ok(_)) => merged += 1,
                            Ok(Err(e)) => failure = Some(replica_error(e)),
                            Err(e) => failure = Some(ReplicaError::Rejected(e.to_string())),
                        }
                    }
                    node.note_keys();
                    let result = match failure {
                        Some(e) => Err(e),
                        None => Ok(merged),
                    };
                    Ok(encode(&HandoffReply::Delivered(result)))
                }
            }
        }) as HandlerFuture
    }
}

/// The handoff worker of one node, until `shutdown`.
pub async fn run(node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let wake = node.cluster().handoff_wake();
    let mut sweeps = 0u64;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
        sweeps += 1;
        let expiry_only_due = sweeps % EXPIRY_EVERY == 0;
        // One task per target: a target that stopped answering (a data center just cut off,
        // before gossip suspects it) holds up only its own delivery, for one call timeout.
        let mut deliveries = tokio::task::JoinSet::new();
        for (target, _) in node.hints().pending() {
            let reachable = !node.cluster().is_unhealthy(&target)
                && node.cluster().peer_addr(&target).is_some();
            if !reachable && !expiry_only_due {
                continue;
            }
            let node = node.clone();
            deliveries.spawn(async move {
                match deliver_to(&node, &target, reachable).await {
                    Ok((delivered, dropped)) if delivered + dropped > 0 => {
                        tracing::info!(%target, delivered, dropped, "hinted handoff");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(%target, error = %e, "hinted handoff paused"),
                }
            });
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = async { while deliveries.join_next().await.is_some() {} } => {}
        }
        node.metrics()
            .hints_pending
            .set(node.hints().total() as i64);
    }
    Ok(())
}

/// Streams `target`'s hints to it (or, when `deliver` is false, only drops expired ones).
/// Returns (delivered, dropped).
async fn deliver_to(node: &Node, target: &NodeId, deliver: bool) -> Result<(u64, u64), String> {
    let window = HintWindow {
        window_ms: node.config().hint_window_secs.saturating_mul(1000),
    };
    let (mut delivered, mut dropped) = (0u64, 0u64);
    let mut after: Option<Vec<u8>> = None;
    loop {
        let batch = node
            .hints()
            .load(target, after.as_deref(), BATCH)
            .map_err(|e| e.to_string())?;
        let Some(last) = batch.last() else {
            break;
        };
        after = Some(last.record_key.clone());
        let full = batch.len() == BATCH;
        let (expired, live) = window.split(batch, now_ms(), |h: &Hint| h.updated_at_ms);
        if !expired.is_empty() {
            let n = node
                .hints()
                .remove(target, &expired)
                .await
                .map_err(|e| e.to_string())?;
            node.metrics().hints_dropped.inc_by(n);
            dropped += n;
        }
        if deliver && !live.is_empty() {
            send_batch(node, target, &live).await?;
            let n = node
                .hints()
                .remove(target, &live)
                .await
                .map_err(|e| e.to_string())?;
            node.metrics().hints_delivered.inc_by(n);
            delivered += n;
        }
        node.metrics()
            .hints_pending
            .set(node.hints().total() as i64);
        if !full {
            break;
        }
    }
    Ok((delivered, dropped))
}

/// One `Deliver` call; Ok once the target merged every hint of the batch durably.
async fn send_batch(node: &Node, target: &NodeId, hints: &[Hint]) -> Result<(), String> {
    let cluster = node.cluster();
    let client = cluster.client().ok_or("no peer transport")?;
    let addr = cluster.peer_addr(target).ok_or("no peer address")?;
    let payload = encode(&HandoffRequest::Deliver {
        hints: hints
            .iter()
            .map(|h| (h.key.clone(), h.set.clone()))
            .collect(),
    });
    let (who, bytes) = client
        .call(&addr, tags::HANDOFF, payload, DELIVER_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    if &who != target {
        return Err(format!("{addr} is now node {who}, not {target}"));
    }
    match decode::<HandoffReply>(&bytes)? {
        HandoffReply::Delivered(Ok(n)) if n as usize == hints.len() => Ok(()),
        HandoffReply::Delivered(Ok(n)) => Err(format!("{n} of {} merged", hints.len())),
        HandoffReply::Delivered(Err(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_formats_are_refused() {
        let req = HandoffRequest::Deliver {
            hints: vec![(b"k".to_vec(), SiblingSet::new())],
        };
        let bytes = encode(&req);
        match decode::<HandoffRequest>(&bytes).unwrap() {
            HandoffRequest::Deliver { hints } => assert_eq!(hints.len(), 1),
            other => panic!("{other:?}"),
        }
        assert!(decode::<HandoffRequest>(&[9, 1, 2]).is_err());
        assert!(decode::<HandoffRequest>(&[]).is_err());
    }
}
