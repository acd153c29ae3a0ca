//! The coordinator shell: carries out what the pure `ringkv_core::coordinator` state machines
//! decide, over the peer transport (tag `REPLICA`), for client writes and reads in cluster mode.
//!
//! - **Write** ([`write_one`]): the key's preference list (N = `min(n, members)`) from the
//!   ring ([`KeyPlan`]); [`route_write`]: off the list, forward as `ForwardPut` to a replica
//!   (healthy ones first, this node's data center's first among them; the next one only when the
//!   previous never saw the request; the client's level travels as a `Need`); on the list,
//!   `Replica::apply_write` (durable), then a `PutCoordinator` that replicates with
//!   `PeerClient::call` and answers once its `Quorum` (W durable acks, or per data center for
//!   `local_quorum`/`each_quorum`) is met, or at `request_timeout_ms`. A replica the write does
//!   not reach gets a hint here (`HintOnFailure`).
//! - **Read** ([`read`]): a `GetCoordinator` over the N replicas, local data center first (only
//!   those at `local_quorum`; this node's own copy answered from the replica directly) in a task
//!   of its own: the client gets the outcome at R replies, and the task keeps listening until all
//!   asked answered or the repair deadline, then sends the merged set to each stale replica
//!   (`Repair`, counted in `read_repairs`).
//! - **Replica side** ([`handler`]): `Replicate` -> `Replica::merge` (durable) -> ack; `Read` ->
//!   the local set; `Repair` -> merge; `ForwardPut` -> coordinate as a local client write.
//!
//! A transport failure on a call counts as that replica refusing: the state machine then fails
//! early when W or R can no longer be reached, instead of waiting for the deadline.
//!
//! IMPLEMENTATION CAVEATS
//! - Sloppy quorum ([`Plan`], in the core) substitutes only members gossip marks *down* (two sources agree);
//!   a merely suspected replica is still asked and counts as a refusal if it does not answer.
//! - A stand-in that coordinates a write itself stores the hint in a commit of its own right
//!   after its local write (both durable before the ack), not in the same batch.
//! - A forward that timed out is not retried elsewhere: it may still be applied when the slow
//!   node wakes up, so the client is told the write may have been stored.

use super::{handoff, Cluster};
use crate::error::NodeError;
use crate::node::{Node, ReadResult, WriteResult};
use crate::peer::{tags, HandlerFuture, PeerRequest};
use crate::replica::WriteOp;
use bytes::Bytes;
use ringkv_core::coordinator::{
    route_write, Envelope, ForwardPut, ForwardPutReply, ForwardedPut, GetRequest, Message, Need,
    Plan, PutRequest, Quorum, ReadReply, ReplicaError, ReplicateAck, Route,
};
use ringkv_core::{
    Context, GetCoordinator, GetOutcome, NodeId, PutCoordinator, PutOutcome, QuorumError, Ring,
    SiblingSet,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

type Replies = mpsc::UnboundedSender<(NodeId, Message)>;

/// Milliseconds since `t0`: the state machines' clock for one request.
fn ms_since(t0: Instant, at: Instant) -> u64 {
    at.saturating_duration_since(t0).as_millis() as u64
}

/// The sloppy-quorum plan ([`Plan`]) of one key as this node sees the ring and gossip, with
/// the rings it was made from (for the data centers of its nodes).
pub(crate) struct KeyPlan {
    pub plan: Plan,
    read: Arc<Ring>,
    write: Arc<Ring>,
}

impl KeyPlan {
    pub(crate) fn of(node: &Node, key: &[u8]) -> KeyPlan {
        let cluster = node.cluster();
        let (read, write) = (cluster.ring(), cluster.write_ring());
        let plan = Plan::with_pending(
            &read,
            &write,
            read.partition_of_key(key),
            node.replicas_per_key(),
            |id| cluster.is_down(id),
        );
        KeyPlan { plan, read, write }
    }

    /// A node's data center: from the read ring, or the write ring for a joining node.
    fn dc_of<'a>(&'a self) -> impl Fn(&NodeId) -> Option<&'a str> {
        move |id| self.read.dc_of(id).or_else(|| self.write.dc_of(id))
    }

    fn write_quorum(&self, need: &Need) -> Quorum {
        self.plan.write_quorum(need, self.dc_of())
    }

    /// The replicas a forward may go to: healthy ones before unhealthy ones and, within each,
    /// this node's data center first (a `local_quorum` write should not cross to another data
    /// center to be coordinated, and the local ones are nearer anyway).
    fn forward_order(&self, cluster: &Cluster, local_dc: &str) -> Vec<NodeId> {
        let dc_of = self.dc_of();
        let mut order = self.plan.targets.clone();
        order.sort_by_key(|id| (cluster.is_unhealthy(id), dc_of(id) != Some(local_dc)));
        order
    }
}

/// Turns a failed quorum into the client's error.
fn write_failed(needed: usize, got: usize, dc: Option<String>) -> NodeError {
    NodeError::Quorum(QuorumError::WriteUnavailable { needed, got, dc })
}

/// The acks a write needs, for errors that come before any quorum is known.
fn needed_of(need: &Need) -> usize {
    match need {
        Need::Count(w) => *w,
        _ => 1,
    }
}

/// One client write in cluster mode: coordinated here, or forwarded to a replica.
pub(crate) async fn write_one(
    node: &Node,
    op: WriteOp,
    need: Need,
) -> Result<WriteResult, NodeError> {
    let deadline = Instant::now() + node.config().request_timeout();
    let plan = KeyPlan::of(node, &op.key);
    match route_write(&plan.plan.targets, node.node_id()) {
        Route::Local => {
            let (set, outcome) = coordinate(node, op, &need, plan, deadline).await?;
            match outcome {
                PutOutcome::Acked { acked_by } => Ok(WriteResult { set, acked_by }),
                PutOutcome::Failed {
                    needed, got, dc, ..
                } => Err(write_failed(needed, got, dc)),
            }
        }
        Route::Forward(_) => forward(node, op, need, plan, deadline).await,
        Route::NoReplica => Err(write_failed(needed_of(&need), 0, None)),
    }
}

/// Applies a write here (durably, with a hint when this node stands in for a down one), then
/// replicates it until W acks or the deadline; stand-ins get it as a hinted write on tag
/// `HANDOFF`. Returns the key's set after the local write and the quorum outcome.
async fn coordinate(
    node: &Node,
    op: WriteOp,
    need: &Need,
    key_plan: KeyPlan,
    deadline: Instant,
) -> Result<(Arc<SiblingSet>, PutOutcome), NodeError> {
    let quorum = key_plan.write_quorum(need);
    let plan = key_plan.plan;
    let key = op.key.clone();
    let set = node
        .replica()
        .apply_write(std::slice::from_ref(&op))
        .await?
        .remove(0)
        .set;
    if let Some(intended) = plan.intended_for(node.node_id()) {
        let ticket = node
            .hints()
            .store(intended, &key, &set, crate::replica::now_ms())?;
        node.metrics().hints_stored.inc();
        node.store().durable(ticket).await?;
    }
    let t0 = Instant::now();
    let cluster = node.cluster();
    let mut put = PutCoordinator::new(PutRequest {
        request: cluster.next_request(),
        coordinator: node.node_id().clone(),
        key,
        set: SiblingSet::clone(&set),
        // New owners still streaming the partition in get the write too, and must ack it on
        // top of W (see `Plan::pending`).
        others: plan.write_targets(),
        quorum,
        deadline_ms: ms_since(t0, deadline),
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    for env in put.drain_outbound() {
        let hinted = plan.intended_for(&env.to).cloned();
        // A replica (or stand-in) this write cannot reach gets a hint here, for the node the
        // write was meant for: no stand-in exists when a whole data center is cut off.
        let on_failure = HintOnFailure {
            node: node.clone(),
            intended: hinted.clone().unwrap_or_else(|| env.to.clone()),
            set: set.clone(),
        };
        spawn_call(cluster, env, hinted, deadline, tx.clone(), Some(on_failure));
    }
    drop(tx);
    loop {
        if let Some(outcome) = put.outcome() {
            // Replicates still in flight keep going in their own tasks (see the coordinator's
            // quorum semantics): they are stored and acked, and change nothing here.
            return Ok((set, outcome.clone()));
        }
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((from, Message::ReplicateAck(ack))) => { put.step(&from, ack); }
                Some(_) => {}
                None => put.tick(u64::MAX),
            },
            _ = tokio::time::sleep_until(deadline) => put.tick(ms_since(t0, Instant::now())),
        }
    }
}

/// Sends a client write to a replica of its key. Healthy replicas are tried first, this node's
/// data center's first among them; the next one only when the previous certainly never saw the
/// request.
async fn forward(
    node: &Node,
    op: WriteOp,
    need: Need,
    plan: KeyPlan,
    deadline: Instant,
) -> Result<WriteResult, NodeError> {
    let cluster = node.cluster();
    let unavailable = || write_failed(needed_of(&need), 0, None);
    let Some(client) = cluster.client() else {
        return Err(unavailable());
    };
    for target in plan.forward_order(cluster, &node.config().dc) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let Some(addr) = cluster.peer_addr(&target) else {
            continue;
        };
        // The coordinator answers a little before our own deadline, so its reply (even a
        // failure with its count of acks) reaches us instead of a bare timeout.
        let budget = remaining - remaining / 10;
        let env = Envelope {
            from: node.node_id().clone(),
            to: target.clone(),
            msg: Message::ForwardPut(ForwardPut {
                request: cluster.next_request(),
                key: op.key.clone(),
                value: op.value.clone(),
                context: op.context.as_ref().map(Context::encode),
                need: need.clone(),
                timeout_ms: budget.as_millis() as u64,
            }),
        };
        match client
            .call(&addr, tags::REPLICA, Bytes::from(env.encode()), remaining)
            .await
        {
            Ok((_, bytes)) => {
                let reply = Envelope::decode(&bytes).map_err(|e| {
                    tracing::warn!(%target, error = %e, "malformed forward reply");
                    unavailable()
                })?;
                let Message::ForwardPutReply(ForwardPutReply { result, .. }) = reply.msg else {
                    return Err(unavailable());
                };
                return match result {
                    Ok(ForwardedPut {
                        set,
                        outcome: PutOutcome::Acked { acked_by },
                    }) => Ok(WriteResult {
                        set: Arc::new(set),
                        acked_by,
                    }),
                    Ok(ForwardedPut {
                        outcome:
                            PutOutcome::Failed {
                                needed, got, dc, ..
                            },
                        ..
                    }) => Err(write_failed(needed, got, dc)),
                    Err(ReplicaError::Rejected(m)) => Err(NodeError::Rejected(m)),
                    // Storage failed or the node is stopping before the write was applied.
                    Err(e) => {
                        tracing::debug!(%target, error = %e, "forward refused, trying the next replica");
                        continue;
                    }
                };
            }
            Err(e) if !e.maybe_delivered() => {
                tracing::debug!(%target, error = %e, "forward not delivered, trying the next replica");
            }
            Err(e) => {
                tracing::debug!(%target, error = %e, "forward outcome unknown");
                return Err(unavailable());
            }
        }
    }
    Err(unavailable())
}

/// One client read in cluster mode: the outcome at R replies (or the data-center quorums);
/// read repair continues in the background. `local_quorum` asks only this node's data center.
pub(crate) async fn read(node: &Node, key: Bytes, need: Need) -> Result<ReadResult, NodeError> {
    let t0 = Instant::now();
    let timeout = node.config().request_timeout();
    let deadline = t0 + timeout;
    let plan = KeyPlan::of(node, &key);
    let quorum = plan.plan.read_quorum(&need, plan.dc_of());
    let replicas = plan
        .plan
        .read_targets(&need, &node.config().dc, plan.dc_of());
    let needed = quorum.total;
    let get = GetCoordinator::new(GetRequest {
        request: node.cluster().next_request(),
        coordinator: node.node_id().clone(),
        key,
        replicas,
        quorum,
        deadline_ms: ms_since(t0, deadline),
        // Slow replicas get as long again to answer, so they can be repaired too.
        repair_deadline_ms: ms_since(t0, deadline + timeout),
    });
    let (otx, orx) = oneshot::channel();
    tokio::spawn(drive_get(node.clone(), get, t0, otx));
    match orx.await {
        Ok(GetOutcome::Done { set, replied }) => Ok(ReadResult {
            set: Arc::new(set),
            replicas: replied,
        }),
        Ok(outcome @ GetOutcome::Failed { .. }) => Err(NodeError::Quorum(
            outcome.error().expect("a failed read has an error"),
        )),
        Err(_) => Err(NodeError::unavailable(needed, 0)),
    }
}

/// Runs a read to its end: answers the client through `answer` at the outcome, then sends the
/// read repairs once every replica answered or the repair deadline passed.
async fn drive_get(
    node: Node,
    mut get: GetCoordinator,
    t0: Instant,
    answer: oneshot::Sender<GetOutcome>,
) {
    let cluster = node.cluster().clone();
    let me = node.node_id().clone();
    let mut answer = Some(answer);
    let (tx, mut rx) = mpsc::unbounded_channel();
    loop {
        for env in get.drain_outbound() {
            match env.msg {
                Message::Read(read) if env.to == me => {
                    let result = node
                        .replica()
                        .read(&read.key)
                        .map(|s| SiblingSet::clone(&s))
                        .map_err(replica_error);
                    let reply = ReadReply {
                        request: read.request,
                        result,
                    };
                    let _ = tx.send((me.clone(), Message::ReadReply(reply)));
                }
                Message::Read(_) => {
                    let deadline = t0 + Duration::from_millis(get.next_deadline().unwrap_or(0));
                    spawn_call(&cluster, env, None, deadline, tx.clone(), None);
                }
                Message::Repair(repair) => {
                    node.metrics().read_repairs.inc();
                    if env.to == me {
                        let node = node.clone();
                        tokio::spawn(async move {
                            if let Err(e) = node.replica().merge(&repair.key, &repair.set).await {
                                tracing::warn!(error = %e, "local read repair failed");
                            }
                        });
                    } else {
                        let env = Envelope {
                            from: env.from,
                            to: env.to,
                            msg: Message::Repair(repair),
                        };
                        send_one_way(&cluster, env);
                    }
                }
                _ => {}
            }
        }
        if let Some(outcome) = get.outcome() {
            if let Some(a) = answer.take() {
                let _ = a.send(outcome.clone());
            }
        }
        let Some(next) = get.next_deadline() else {
            return;
        };
        let at = t0 + Duration::from_millis(next);
        tokio::select! {
            Some((from, msg)) = rx.recv() => {
                if let Message::ReadReply(reply) = msg {
                    get.step(&from, reply);
                }
            }
            _ = tokio::time::sleep_until(at) => get.tick(ms_since(t0, Instant::now())),
        }
    }
}

/// Where a write that did not reach a replica leaves a hint: on the coordinator, for the node
/// the write was meant for, with the coordinator's set (Cassandra's coordinator hints). The
/// handoff worker delivers it once gossip shows that node reachable.
struct HintOnFailure {
    node: Node,
    intended: NodeId,
    set: Arc<SiblingSet>,
}

impl HintOnFailure {
    /// Stores the hint (not waited on: a hint lost in a crash leaves the key to read repair and
    /// anti-entropy, as before this hint existed).
    fn store(&self, key: &[u8], why: &str) {
        match self
            .node
            .hints()
            .store(&self.intended, key, &self.set, crate::replica::now_ms())
        {
            Ok(_) => {
                self.node.metrics().hints_stored.inc();
                tracing::debug!(intended = %self.intended, why, "replica unreachable: hint stored");
            }
            Err(e) => tracing::warn!(intended = %self.intended, error = %e, "hint not stored"),
        }
    }
}

/// True when a replica's answer means "try again later" rather than "this write is invalid":
/// worth a hint.
fn worth_a_hint(msg: &Message) -> bool {
    match msg {
        Message::ReplicateAck(ReplicateAck { result: Err(e), .. }) => {
            !matches!(e, ReplicaError::Rejected(_))
        }
        _ => false,
    }
}

/// Calls the envelope's target and hands its reply (or, on a transport failure, a refusal) to
/// `replies`. With `hinted`, a `Replicate` goes to a stand-in as a hinted write for that node
/// (tag `HANDOFF`); the stand-in answers with the same `ReplicateAck`. With `on_failure`, a
/// `Replicate` that does not reach its target (or that it refuses for a passing reason: storage,
/// shutdown) leaves a hint.
fn spawn_call(
    cluster: &Cluster,
    env: Envelope,
    hinted: Option<NodeId>,
    deadline: Instant,
    replies: Replies,
    on_failure: Option<HintOnFailure>,
) {
    let addr = cluster.peer_addr(&env.to);
    let client = cluster.client().cloned();
    tokio::spawn(async move {
        let to = env.to.clone();
        let failed = |why: String| {
            if let (Some(h), Message::Replicate(r)) = (&on_failure, &env.msg) {
                h.store(&r.key, &why);
            }
            refusal(&env.msg, why)
        };
        let msg = match (addr, client) {
            (Some(addr), Some(client)) => {
                let timeout = deadline.saturating_duration_since(Instant::now());
                let (tag, payload) = match (&hinted, &env.msg) {
                    (Some(intended), Message::Replicate(r)) => {
                        (tags::HANDOFF, handoff::hinted_request(intended.clone(), r))
                    }
                    _ => (tags::REPLICA, Bytes::from(env.encode())),
                };
                match client.call(&addr, tag, payload, timeout).await {
                    Ok((who, bytes)) if who == to => match Envelope::decode(&bytes) {
                        Ok(reply) => {
                            if let (Some(h), Message::Replicate(r)) = (&on_failure, &env.msg) {
                                if worth_a_hint(&reply.msg) {
                                    h.store(&r.key, "replica refused for now");
                                }
                            }
                            reply.msg
                        }
                        Err(e) => failed(e.to_string()),
                    },
                    Ok((who, _)) => failed(format!("{addr} is now node {who}, not {to}")),
                    Err(e) => failed(e.to_string()),
                }
            }
            _ => failed("no peer address or transport".into()),
        };
        let _ = replies.send((to, msg));
    });
}

/// The answer a replica that could not be reached is counted as.
fn refusal(msg: &Message, why: String) -> Message {
    let result = Err(ReplicaError::Rejected(format!("unreachable: {why}")));
    match msg {
        Message::Read(m) => Message::ReadReply(ReadReply {
            request: m.request,
            result,
        }),
        other => Message::ReplicateAck(ReplicateAck {
            request: other.request(),
            result: result.map(|_: SiblingSet| ()),
        }),
    }
}

fn send_one_way(cluster: &Cluster, env: Envelope) {
    let (Some(addr), Some(client)) = (cluster.peer_addr(&env.to), cluster.client().cloned()) else {
        return;
    };
    tokio::spawn(async move {
        if let Err(e) = client
            .send(&addr, tags::REPLICA, Bytes::from(env.encode()))
            .await
        {
            tracing::debug!(%addr, error = %e, "read repair not sent");
        }
    });
}

fn replica_error(e: NodeError) -> ReplicaError {
    match e {
        NodeError::ShuttingDown => ReplicaError::ShuttingDown,
        NodeError::Storage(e) => ReplicaError::Storage(e.to_string()),
        other => ReplicaError::Rejected(other.to_string()),
    }
}

/// The handler for tag `REPLICA`: the replica side of the read and write paths.
pub fn handler(node: Node) -> impl Fn(PeerRequest) -> HandlerFuture + Send + Sync + 'static {
    move |req: PeerRequest| {
        let node = node.clone();
        Box::pin(async move {
            let env = Envelope::decode(&req.payload).map_err(|e| e.to_string())?;
            // The transport proved who sent it; a payload that claims otherwise is refused.
            if env.from != req.from {
                return Err(format!("sender {} claims to be {}", req.from, env.from));
            }
            let msg = match answer(&node, env.msg).await {
                Some(msg) => msg,
                None => return Ok(Bytes::new()),
            };
            let reply = Envelope {
                from: node.node_id().clone(),
                to: env.from,
                msg,
            };
            Ok(Bytes::from(reply.encode()))
        }) as HandlerFuture
    }
}

async fn answer(node: &Node, msg: Message) -> Option<Message> {
    let stopping = node.is_shutting_down();
    let check = |key: &[u8]| -> Result<(), ReplicaError> {
        if stopping {
            return Err(ReplicaError::ShuttingDown);
        }
        node.limits()
            .check_key(key)
            .map_err(|e| ReplicaError::Rejected(e.to_string()))
    };
    Some(match msg {
        Message::Replicate(m) => {
            let result = match check(&m.key) {
                Ok(()) => node
                    .replica()
                    .merge(&m.key, &m.set)
                    .await
                    .map(|_| ())
                    .map_err(replica_error),
                Err(e) => Err(e),
            };
            node.note_keys();
            Message::ReplicateAck(ReplicateAck {
                request: m.request,
                result,
            })
        }
        Message::Read(m) => {
            let result = check(&m.key).and_then(|()| {
                node.replica()
                    .read(&m.key)
                    .map(|s| SiblingSet::clone(&s))
                    .map_err(replica_error)
            });
            Message::ReadReply(ReadReply {
                request: m.request,
                result,
            })
        }
        Message::Repair(m) => {
            if check(&m.key).is_ok() {
                if let Err(e) = node.replica().merge(&m.key, &m.set).await {
                    tracing::warn!(error = %e, "read repair failed");
                }
                node.note_keys();
            }
            return None;
        }
        Message::ForwardPut(f) => Message::ForwardPutReply(ForwardPutReply {
            request: f.request,
            result: coordinate_forwarded(node, f).await,
        }),
        // Replies travel as call answers, never as requests.
        Message::ReplicateAck(_) | Message::ReadReply(_) | Message::ForwardPutReply(_) => {
            return None
        }
    })
}

/// A forwarded client write, coordinated here as our own. Never forwarded again, even if our
/// ring view says we are not a replica: views converge through gossip, a second hop could loop.
async fn coordinate_forwarded(node: &Node, f: ForwardPut) -> Result<ForwardedPut, ReplicaError> {
    if node.is_shutting_down() {
        return Err(ReplicaError::ShuttingDown);
    }
    let limits = node.limits();
    limits
        .check_key(&f.key)
        .map_err(|e| ReplicaError::Rejected(e.to_string()))?;
    if let Some(v) = &f.value {
        limits
            .check_value_len(v.len())
            .map_err(|e| ReplicaError::Rejected(e.to_string()))?;
    }
    let context = f
        .context
        .as_deref()
        .map(Context::decode)
        .transpose()
        .map_err(|e| ReplicaError::Rejected(e.to_string()))?;
    let deadline = Instant::now() + Duration::from_millis(f.timeout_ms);
    let plan = KeyPlan::of(node, &f.key);
    let op = WriteOp {
        key: f.key,
        value: f.value,
        context,
    };
    let (set, outcome) = coordinate(node, op, &f.need, plan, deadline)
        .await
        .map_err(replica_error)?;
    node.note_keys();
    Ok(ForwardedPut {
        set: SiblingSet::clone(&set),
        outcome,
    })
}
