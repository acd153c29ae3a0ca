//! Runs a node: opens storage, binds the listeners, serves until SIGTERM or SIGINT, then shuts
//! down in order so that nothing acknowledged is lost.
//!
//! Shutdown order: stop accepting connections and let in-flight requests finish (bounded), then
//! refuse new writes and make everything written durable (periodic mode's window), then close
//! storage. A write acknowledged in `sync` mode was already durable before its ack.

use crate::cluster::{anti_entropy, gossip, handoff, replication, streaming, tombstones};
use crate::peer::{
    tags, ClientOptions, ClusterLayout, ClusterSecret, PeerClient, PeerIdentity, PeerServer,
    ServerOptions, TagRouter,
};
use crate::{api, Config, Node};
use anyhow::Context as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long in-flight requests get to finish once a shutdown signal arrives.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A started node with its listeners bound; [`Running::wait`] serves until shutdown.
pub struct Running {
    pub node: Node,
    pub resp_addr: std::net::SocketAddr,
    pub http_addr: std::net::SocketAddr,
    pub peer_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<std::io::Result<()>>,
}

/// Opens the node and binds its listeners. Errors say which address or directory failed.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    config.validate()?;
    // The settings the ring is computed from, which every member must share: peers with
    // different ones are refused at the handshake.
    let layout = ClusterLayout::new(config.partitions, config.n, &config.replication)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    let node = Node::open(&config)
        .await
        .with_context(|| format!("cannot open data directory {}", config.data_dir.display()))?;
    let resp = TcpListener::bind(&config.resp_addr)
        .await
        .with_context(|| format!("cannot listen for RESP on {}", config.resp_addr))?;
    let http = TcpListener::bind(&config.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", config.http_addr))?;
    let peer = TcpListener::bind(&config.peer_addr)
        .await
        .with_context(|| format!("cannot listen for peers on {}", config.peer_addr))?;
    let resp_addr = resp.local_addr()?;
    let http_addr = http.local_addr()?;
    let peer_addr = peer.local_addr()?;
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();

    // The peer side: one identity (the persisted node id, the cluster secret, and the cluster
    // layout: the settings the ring is computed from, which every member must share) for the
    // listener and the client; gossip and replica traffic each on their own tag.
    let identity = PeerIdentity::new(
        node.node_id().clone(),
        ClusterSecret::from_config(config.cluster_secret.as_deref()),
    )
    .with_layout(layout.clone());
    let client = PeerClient::new(identity.clone(), ClientOptions::default());
    let cluster = node.cluster().clone();
    cluster.set_client(client.clone());
    let router = TagRouter::new()
        .route(
            tags::GOSSIP,
            gossip::handler(cluster.clone(), client.clone()),
        )
        .route(tags::REPLICA, replication::handler(node.clone()))
        .route(tags::HANDOFF, handoff::handler(node.clone()))
        .route(tags::ANTI_ENTROPY, anti_entropy::handler(node.clone()))
        .route(tags::TOMBSTONE, tombstones::handler(node.clone()))
        .route(tags::STREAMING, streaming::handler(node.clone()));
    let peer_server = PeerServer::new(identity, Arc::new(router), ServerOptions::default());
    node.cluster().set_server_stats(peer_server.stats().clone());
    let peer_shutdown = shutdown.clone();
    tasks.spawn(async move { peer_server.serve(peer, peer_shutdown).await });
    tasks.spawn(gossip::run(
        cluster,
        client,
        node.store().clone(),
        config.gossip_interval(),
        shutdown.clone(),
    ));

    tasks.spawn(handoff::run(node.clone(), shutdown.clone()));
    tasks.spawn(anti_entropy::run(node.clone(), shutdown.clone()));
    tasks.spawn(tombstones::run(node.clone(), shutdown.clone()));
    tasks.spawn(streaming::run(node.clone(), shutdown.clone()));
    tasks.spawn(api::resp::serve(resp, node.clone(), shutdown.clone()));
    tasks.spawn(api::http::serve(http, node.clone(), shutdown.clone()));
    tracing::info!(
        node_id = %node.node_id(),
        %resp_addr,
        %http_addr,
        %peer_addr,
        seeds = ?config.seeds,
        data_dir = %config.data_dir.display(),
        durability = ?config.durability,
        %layout,
        "ringkv node started"
    );
    Ok(Running {
        node,
        resp_addr,
        http_addr,
        peer_addr,
        shutdown,
        tasks,
    })
}

impl Running {
    /// A token that stops the node when cancelled (tests use it instead of a signal).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until a signal (or the shutdown token), then shuts down cleanly.
    pub async fn wait(mut self) -> anyhow::Result<()> {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!("shutdown signal received"),
            _ = self.shutdown.cancelled() => {}
            Some(res) = self.tasks.join_next() => {
                // A listener ended on its own: that is a failure, not a shutdown.
                self.shutdown.cancel();
                let _ = self.node.shutdown();
                return Err(match res {
                    Ok(Ok(())) => anyhow::anyhow!("a listener stopped unexpectedly"),
                    Ok(Err(e)) => anyhow::Error::new(e).context("listener failed"),
                    Err(e) => anyhow::Error::new(e).context("listener panicked"),
                });
            }
        }
        self.shutdown.cancel();
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}");
        }
        self.node.shutdown()?;
        tracing::info!("ringkv node stopped; all writes are durable");
        Ok(())
    }
}

/// Runs a node until a signal stops it.
pub async fn run(config: Config) -> anyhow::Result<()> {
    start(config).await?.wait().await
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
