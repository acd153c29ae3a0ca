//! The gossip shell: drives [`Membership`] over the peer transport and keeps it across restarts.
//!
//! It owns three jobs and nothing else:
//! - **Start** ([`open`]): pick this incarnation's generation (one more than the persisted one,
//!   or the wall-clock seconds if larger, so a lost `meta` keyspace still moves forward), build
//!   this node's own record, restore the persisted member table (so a restarted node rejoins
//!   without seeds), and pick the starting status: the persisted one on a restart, `Up` for a
//!   new node with no seeds, `Joining` otherwise (`cluster::streaming` moves it on).
//! - **Tick** ([`run`]): every `gossip_interval_ms`, `Membership::tick`, and send each envelope
//!   fire-and-forget with `PeerClient::send` on tag `GOSSIP` (gossip repeats, so a lost message
//!   costs only freshness); persist the table when it changed in a way that matters.
//! - **Receive** ([`handler`]): decode, and `Membership::step` with the sender id the transport
//!   authenticated (never a claimed one); replies go out the same way.
//!
//! Persistence is in the `meta` keyspace: `gossip_generation` (decimal), `gossip_status` (this
//! node's own status) and `gossip_members` (the others, JSON, readable with any tool). Only the gossip task writes them, so writes never race.

use super::Cluster;
use crate::error::NodeError;
use crate::peer::{tags, PeerClient, PeerRequest};
use bytes::Bytes;
use ringkv_core::membership::{Envelope, Event, GossipConfig};
use ringkv_core::{Generation, GossipMessage, Member, MemberStatus, Membership, NodeId};
use ringkv_storage::{Keyspace, Store, WriteBatch};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const META_GENERATION: &[u8] = b"gossip_generation";
const META_MEMBERS: &[u8] = b"gossip_members";
/// This node's own status (`joining`, `up`, `leaving`, `left`): the member list above holds
/// only the others, and a restart must resume in the status it had.
const META_STATUS: &[u8] = b"gossip_status";

/// Builds this node's membership: a new generation (persisted before it is used, so two starts
/// never share one), its own record, and the members persisted by the last run.
pub async fn open(
    config: &crate::Config,
    store: &Store,
    id: NodeId,
) -> Result<Membership, NodeError> {
    let stored = store
        .get(Keyspace::Meta, META_GENERATION)?
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let generation = (stored + 1).max(wall);
    let mut batch = WriteBatch::new();
    batch.put(
        Keyspace::Meta,
        META_GENERATION.to_vec(),
        generation.to_string().into_bytes(),
    );
    store.commit(&batch).await?;

    let mut me = Member::new(id, config.peer_addr.clone(), Generation(generation));
    me.resp_addr = config.resp_addr.clone();
    me.http_addr = config.http_addr.clone();
    me.dc = config.dc.clone();
    me.rack = config.rack.clone();
    me.weight = config.weight;
    let seed = xxhash_rust::xxh3::xxh3_64(format!("{}-{generation}", me.id).as_bytes());
    let mut membership = Membership::new(me, GossipConfig::default(), seed)
        .map_err(|e| NodeError::Startup(e.to_string()))?;
    let persisted: Vec<Member> = store
        .get(Keyspace::Meta, META_MEMBERS)?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let now = ringkv_core::membership::Ticks(0);
    let own = store
        .get(Keyspace::Meta, META_STATUS)?
        .and_then(|b| match b.as_slice() {
            b"joining" => Some(MemberStatus::Joining),
            b"up" => Some(MemberStatus::Up),
            b"leaving" => Some(MemberStatus::Leaving),
            b"left" => Some(MemberStatus::Left),
            _ => None,
        });
    let alone = config.seeds.is_empty() && persisted.iter().all(|m| m.id == *membership.id());
    membership.restore(now, persisted);
    // A restart keeps its status (its data is on disk; a transfer resumes). A node alone with
    // no seeds is a new single-node cluster: up at once. Anything else joins: `Joining` until
    // the streaming worker has pulled its partitions (`cluster::streaming`). The envelopes are
    // dropped: the first tick gossips the same news.
    let start = match own {
        Some(s @ (MemberStatus::Joining | MemberStatus::Up | MemberStatus::Leaving)) => s,
        _ if alone => MemberStatus::Up,
        _ => MemberStatus::Joining,
    };
    for step in [MemberStatus::Up, MemberStatus::Leaving] {
        if step <= start {
            membership
                .set_status(now, step)
                .map_err(|e| NodeError::Startup(e.to_string()))?;
        }
    }
    for seed in &config.seeds {
        membership
            .add_seed(seed.clone())
            .map_err(|e| NodeError::Startup(e.to_string()))?;
    }
    Ok(membership)
}

/// Ticks the membership every `interval` until `shutdown`.
pub async fn run(
    cluster: Cluster,
    client: PeerClient,
    store: Store,
    interval: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut timer = tokio::time::interval(interval);
    // A stalled loop does not catch up with a burst of ticks: Ticks are this node's own time.
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = timer.tick() => {}
        }
        let now = cluster.advance();
        let (envelopes, events) = cluster.with_membership(|m, _| (m.tick(now), m.drain_events()));
        send_all(&client, envelopes);
        for event in &events {
            log_event(event);
            if matches!(event, Event::Recovered { .. } | Event::Restarted { .. }) {
                // A member is back: deliver the hints kept for it now, not at the next sweep.
                cluster.handoff_wake().notify_one();
            }
        }
        if !events.is_empty() {
            cluster.mark_dirty();
        }
        if cluster.take_dirty() {
            if let Err(e) = persist(&cluster, &store).await {
                tracing::warn!(error = %e, "cannot persist the member table");
                cluster.mark_dirty();
            }
        }
    }
    Ok(())
}

/// The handler for tag `GOSSIP`: one-way messages from authenticated peers.
pub fn handler(
    cluster: Cluster,
    client: PeerClient,
) -> impl Fn(PeerRequest) -> std::future::Ready<Result<Bytes, String>> + Send + Sync + 'static {
    move |req: PeerRequest| {
        let msg: GossipMessage = match postcard::from_bytes(&req.payload) {
            Ok(m) => m,
            Err(e) => return std::future::ready(Err(format!("malformed gossip message: {e}"))),
        };
        let replies = cluster.with_membership(|m, now| m.step(now, &req.from, msg));
        send_all(&client, replies);
        std::future::ready(Ok(Bytes::new()))
    }
}

/// Sends envelopes fire-and-forget, each in its own task so a dial to a dead address never
/// delays the tick (the client's backoff makes repeated dials to it fail fast).
pub(crate) fn send_all(client: &PeerClient, envelopes: Vec<Envelope>) {
    for env in envelopes {
        let client = client.clone();
        let payload = Bytes::from(postcard::to_stdvec(&env.msg).expect("gossip serializes"));
        tokio::spawn(async move {
            let addr = env.to.addr().to_string();
            if let Err(e) = client.send(&addr, tags::GOSSIP, payload).await {
                tracing::debug!(%addr, error = %e, "gossip send failed");
            }
        });
    }
}

async fn persist(cluster: &Cluster, store: &Store) -> Result<(), NodeError> {
    let (generation, status, members) = cluster.with_membership(|m, _| {
        (
            m.generation(),
            m.me().status,
            m.members()
                .filter(|x| x.id != *m.id())
                .cloned()
                .collect::<Vec<_>>(),
        )
    });
    let mut batch = WriteBatch::new();
    batch.put(
        Keyspace::Meta,
        META_GENERATION.to_vec(),
        generation.0.to_string().into_bytes(),
    );
    batch.put(
        Keyspace::Meta,
        META_STATUS.to_vec(),
        status.as_str().as_bytes().to_vec(),
    );
    batch.put(
        Keyspace::Meta,
        META_MEMBERS.to_vec(),
        serde_json::to_vec(&members).expect("members serialize"),
    );
    store.commit(&batch).await?;
    Ok(())
}

fn log_event(event: &Event) {
    match event {
        Event::Down { id } => tracing::warn!(%id, "member marked down"),
        Event::Recovered { id } => tracing::info!(%id, "member recovered"),
        other => tracing::info!(event = ?other, "membership"),
    }
}
