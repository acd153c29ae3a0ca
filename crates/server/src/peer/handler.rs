//! What the server calls for each request: a [`PeerHandler`], usually a [`TagRouter`] that sends
//! each [tag](tags) to the layer that owns it. The transport never looks inside payloads.

use bytes::Bytes;
use ringkv_core::NodeId;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Channel numbers: which upper layer a frame belongs to. Assigned here, in one place, so two
/// layers can never pick the same number. A tag is part of the wire format: never renumber one,
/// only add. `0` is reserved (handshake frames carry it).
pub mod tags {
    /// Membership gossip (one-way member-list exchanges).
    pub const GOSSIP: u16 = 1;
    /// Coordinator <-> replica RPC: replicated puts and gets, read repair, forwarded writes.
    pub const REPLICA: u16 = 2;
    /// Hinted handoff: delivering hints to their node.
    pub const HANDOFF: u16 = 3;
    /// Anti-entropy: Merkle root and subtree exchanges, and the repairs they find.
    pub const ANTI_ENTROPY: u16 = 4;
    /// Partition streaming on join and leave.
    pub const STREAMING: u16 = 5;
    /// Operator and admin requests between nodes (join, leave, remove, status).
    pub const ADMIN: u16 = 6;
    /// Tombstone purge: which replicas hold a tombstone past grace, and the purge itself.
    pub const TOMBSTONE: u16 = 7;

    /// A name for logs and metrics labels.
    pub fn name(tag: u16) -> &'static str {
        match tag {
            GOSSIP => "gossip",
            REPLICA => "replica",
            HANDOFF => "handoff",
            ANTI_ENTROPY => "anti_entropy",
            STREAMING => "streaming",
            ADMIN => "admin",
            TOMBSTONE => "tombstone",
            _ => "unknown",
        }
    }
}

/// One request as the server hands it to a handler.
#[derive(Debug, Clone)]
pub struct PeerRequest {
    /// The authenticated sender (proved by the handshake, not claimed by the payload).
    pub from: NodeId,
    pub tag: u16,
    pub payload: Bytes,
    /// A one-way message: whatever the handler returns is dropped (errors are logged at debug).
    pub one_way: bool,
}

/// A handler's answer: the response payload, or an error message that reaches the caller as
/// [`PeerError::Remote`](super::PeerError::Remote).
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send + 'static>>;

/// Serves peer requests. Each request runs in its own task (so many are in flight per
/// connection, and responses go out as they complete); the future must be `'static`, so a handler
/// clones what it needs (an `Arc` of the node) into it.
///
/// Any `Fn(PeerRequest) -> impl Future<Output = Result<Bytes, String>>` is a handler.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, req: PeerRequest) -> HandlerFuture;
}

impl<F, Fut> PeerHandler for F
where
    F: Fn(PeerRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, String>> + Send + 'static,
{
    fn handle(&self, req: PeerRequest) -> HandlerFuture {
        Box::pin(self(req))
    }
}

/// Routes requests to one handler per tag; an unknown tag is answered with an error (and a
/// one-way message with an unknown tag is dropped).
#[derive(Default, Clone)]
pub struct TagRouter {
    routes: HashMap<u16, Arc<dyn PeerHandler>>,
}

impl TagRouter {
    pub fn new() -> TagRouter {
        TagRouter::default()
    }

    /// Adds the handler for `tag`. Registering a tag twice is a programming error, caught at
    /// startup.
    pub fn route(mut self, tag: u16, handler: impl PeerHandler) -> TagRouter {
        let previous = self.routes.insert(tag, Arc::new(handler));
        assert!(previous.is_none(), "peer tag {tag} registered twice");
        self
    }
}

impl PeerHandler for TagRouter {
    fn handle(&self, req: PeerRequest) -> HandlerFuture {
        match self.routes.get(&req.tag) {
            Some(h) => h.handle(req),
            None => {
                let tag = req.tag;
                Box::pin(async move { Err(format!("no handler for peer tag {tag}")) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(tag: u16) -> PeerRequest {
        PeerRequest {
            from: NodeId::new("n1").unwrap(),
            tag,
            payload: Bytes::from_static(b"x"),
            one_way: false,
        }
    }

    #[tokio::test]
    async fn router_dispatches_by_tag() {
        let r = TagRouter::new()
            .route(tags::GOSSIP, |_req: PeerRequest| async {
                Ok(Bytes::from_static(b"g"))
            })
            .route(
                tags::REPLICA,
                |req: PeerRequest| async move { Ok(req.payload) },
            );
        assert_eq!(r.handle(req(tags::GOSSIP)).await.unwrap(), "g");
        assert_eq!(r.handle(req(tags::REPLICA)).await.unwrap(), "x");
        assert!(r.handle(req(99)).await.unwrap_err().contains("99"));
        assert_eq!(tags::name(tags::ANTI_ENTROPY), "anti_entropy");
    }
}
