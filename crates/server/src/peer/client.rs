//! The calling side: a pool of authenticated connections, one (or a few) per peer address, dialed
//! on first use, redialed after failure with exponential backoff.

use super::connection::{CallFailure, Connection, ConnectionLimits};
use super::connector::{Connector, TcpConnector};
use super::error::PeerError;
use super::frame::{DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES, HEADER_BYTES};
use super::handshake::{self, HandshakeError};
use super::identity::PeerIdentity;
use super::log_limit::{LogLimiter, DEFAULT_LOG_INTERVAL};
use super::stats::{inc, PeerStats};
use super::wire::FrameReader;
use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_core::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Client settings; the defaults suit a LAN cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Longest wait for the TCP (or simulated) connection to open.
    pub connect_timeout: Duration,
    /// Longest wait for the handshake once connected.
    pub handshake_timeout: Duration,
    /// Calls (and queued one-way messages) in flight per connection. A call past it waits for a
    /// slot until its deadline, then fails with `Overloaded`; a one-way send fails at once.
    pub max_in_flight_per_connection: usize,
    /// Connections per peer address, used round-robin. 1 is enough unless one TCP stream's
    /// head-of-line blocking (a large streaming frame ahead of small RPCs) matters.
    pub connections_per_peer: usize,
    /// Largest frame sent or received (header + payload). Must not exceed the peers' limit.
    pub max_frame_bytes: usize,
    /// Wait after the first failed dial to an address; doubles per failure up to `backoff_max`.
    /// Calls during the wait fail at once with `Connect` instead of piling up on a dead address.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Close a connection when a call times out and nothing arrived on it since that call was
    /// sent: catches peers that vanished without a TCP reset (see the module docs).
    pub reset_on_silent_timeout: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(5),
            max_in_flight_per_connection: 1024,
            connections_per_peer: 1,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            reset_on_silent_timeout: true,
        }
    }
}

/// Calls peers by address. Cheap to clone (all clones share the pool).
#[derive(Clone)]
pub struct PeerClient {
    inner: Arc<Inner>,
}

struct Inner {
    identity: PeerIdentity,
    opts: ClientOptions,
    connector: Arc<dyn Connector>,
    // A blocking lock over the address map: held for a lookup or insert only.
    peers: Mutex<HashMap<String, Arc<PeerSlots>>>,
    stats: Arc<PeerStats>,
    closed: AtomicBool,
    log: LogLimiter,
}

/// The connections to one address.
struct PeerSlots {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

struct Slot {
    // Fast path: the live connection, if any (a blocking lock, never held across an await).
    conn: Mutex<Option<Arc<Connection>>>,
    // Slow path: one dialer at a time per slot (an async lock: held across the dial), so a
    // burst of calls to a fresh address opens one connection, not one each.
    dial: tokio::sync::Mutex<DialState>,
}

#[derive(Default)]
struct DialState {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<PeerError>,
}

impl PeerClient {
    /// A client over TCP.
    pub fn new(identity: PeerIdentity, opts: ClientOptions) -> PeerClient {
        PeerClient::with_connector(identity, opts, Arc::new(TcpConnector))
    }

    /// A client over any stream source (a simulator's network).
    pub fn with_connector(
        identity: PeerIdentity,
        mut opts: ClientOptions,
        connector: Arc<dyn Connector>,
    ) -> PeerClient {
        opts.connections_per_peer = opts.connections_per_peer.max(1);
        opts.max_in_flight_per_connection = opts.max_in_flight_per_connection.max(1);
        PeerClient {
            inner: Arc::new(Inner {
                identity,
                opts,
                connector,
                peers: Mutex::new(HashMap::new()),
                stats: Arc::new(PeerStats::default()),
                closed: AtomicBool::new(false),
                log: LogLimiter::new(DEFAULT_LOG_INTERVAL),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<PeerStats> {
        &self.inner.stats
    }

    pub fn identity(&self) -> &PeerIdentity {
        &self.inner.identity
    }

    /// Sends `payload` to the handler for `tag` at `addr` and waits for its answer. Returns the
    /// id of the node that answered (proved by the handshake), so the caller can check it is who
    /// membership says lives at `addr`. `timeout` bounds everything, dialing included.
    pub async fn call(
        &self,
        addr: &str,
        tag: u16,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(NodeId, Bytes), PeerError> {
        self.check_size(&payload)?;
        let deadline = Instant::now() + timeout;
        // A call that finds its pooled connection already dead was never sent: retry it once
        // on a fresh connection rather than fail a request the peer never saw.
        for _ in 0..2 {
            let conn = self.connection(addr, deadline).await?;
            match conn.call(tag, payload.clone(), deadline).await {
                Ok(answer) => return Ok((conn.peer().clone(), answer)),
                Err(CallFailure::Failed(e)) => return Err(e),
                Err(CallFailure::NotSent) => self.forget_dead(addr),
            }
        }
        Err(PeerError::ConnectionLost)
    }

    /// Sends a one-way message (gossip): returns once it is queued on a connection, with the id
    /// of the node it goes to. Delivery is not confirmed; a full connection refuses it with
    /// `Overloaded` rather than buffering it.
    pub async fn send(&self, addr: &str, tag: u16, payload: Bytes) -> Result<NodeId, PeerError> {
        self.check_size(&payload)?;
        let o = &self.inner.opts;
        let deadline = Instant::now() + o.connect_timeout + o.handshake_timeout;
        for _ in 0..2 {
            let conn = self.connection(addr, deadline).await?;
            match conn.send(tag, payload.clone()) {
                Ok(()) => return Ok(conn.peer().clone()),
                Err(CallFailure::Failed(e)) => return Err(e),
                Err(CallFailure::NotSent) => self.forget_dead(addr),
            }
        }
        Err(PeerError::ConnectionLost)
    }

    /// Dials `addr` now if no connection is open (e.g. to check a seed), returning its node id.
    pub async fn connect(&self, addr: &str, timeout: Duration) -> Result<NodeId, PeerError> {
        let conn = self.connection(addr, Instant::now() + timeout).await?;
        Ok(conn.peer().clone())
    }

    /// Closes and forgets the connections to `addr` (a member that left); calls in flight on
    /// them fail with `ConnectionLost`.
    pub fn disconnect(&self, addr: &str) {
        let slots = self.inner.peers.lock().remove(addr);
        if let Some(slots) = slots {
            for slot in &slots.slots {
                if let Some(c) = slot.conn.lock().take() {
                    c.close();
                }
            }
        }
    }

    /// Closes every connection; later calls fail with `Closed`.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let all: Vec<_> = self.inner.peers.lock().drain().collect();
        for (_, slots) in all {
            for slot in &slots.slots {
                if let Some(c) = slot.conn.lock().take() {
                    c.close();
                }
            }
        }
    }

    /// The live connections: `(address, node id)`.
    pub fn connected_peers(&self) -> Vec<(String, NodeId)> {
        let peers = self.inner.peers.lock();
        let mut out = Vec::new();
        for (addr, slots) in peers.iter() {
            for slot in &slots.slots {
                if let Some(c) = slot.conn.lock().as_ref().filter(|c| c.is_alive()) {
                    out.push((addr.clone(), c.peer().clone()));
                }
            }
        }
        out
    }

    /// Calls awaiting an answer on the connections to `addr` (tests, diagnostics).
    pub fn pending_calls(&self, addr: &str) -> usize {
        let Some(slots) = self.inner.peers.lock().get(addr).cloned() else {
            return 0;
        };
        slots
            .slots
            .iter()
            .filter_map(|s| s.conn.lock().as_ref().map(|c| c.pending_calls()))
            .sum()
    }

    fn check_size(&self, payload: &Bytes) -> Result<(), PeerError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(PeerError::Closed);
        }
        let len = HEADER_BYTES + payload.len();
        let max = self.inner.opts.max_frame_bytes;
        if len > max {
            return Err(PeerError::FrameTooLarge { len, max });
        }
        Ok(())
    }

    fn slots(&self, addr: &str) -> Arc<PeerSlots> {
        let mut peers = self.inner.peers.lock();
        if let Some(s) = peers.get(addr) {
            return s.clone();
        }
        let n = self.inner.opts.connections_per_peer;
        let slots = Arc::new(PeerSlots {
            slots: (0..n)
                .map(|_| Slot {
                    conn: Mutex::new(None),
                    dial: tokio::sync::Mutex::new(DialState::default()),
                })
                .collect(),
            next: AtomicUsize::new(0),
        });
        peers.insert(addr.to_string(), slots.clone());
        slots
    }

    /// Drops dead connections to `addr` from the pool so the next lookup dials.
    fn forget_dead(&self, addr: &str) {
        if let Some(slots) = self.inner.peers.lock().get(addr) {
            for slot in &slots.slots {
                let mut conn = slot.conn.lock();
                if conn.as_ref().is_some_and(|c| !c.is_alive()) {
                    *conn = None;
                }
            }
        }
    }

    /// A live connection to `addr`, dialing if needed.
    async fn connection(
        &self,
        addr: &str,
        deadline: Instant,
    ) -> Result<Arc<Connection>, PeerError> {
        let slots = self.slots(addr);
        let i = if slots.slots.len() == 1 {
            0
        } else {
            slots.next.fetch_add(1, Ordering::Relaxed) % slots.slots.len()
        };
        let slot = &slots.slots[i];
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        let mut state = tokio::time::timeout_at(deadline, slot.dial.lock())
            .await
            .map_err(|_| PeerError::Connect {
                addr: addr.to_string(),
                reason: "call deadline passed while another call was dialing".into(),
            })?;
        // Someone else may have connected while we waited for the dial lock.
        if let Some(c) = live(slot) {
            return Ok(c);
        }
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(PeerError::Closed);
        }
        let now = Instant::now();
        if let Some(retry_at) = state.retry_at.filter(|t| *t > now) {
            return Err(match &state.last_error {
                Some(
                    e @ (PeerError::Unauthorized(_)
                    | PeerError::SettingsMismatch(_)
                    | PeerError::Handshake(_)),
                ) => e.clone(),
                other => PeerError::Connect {
                    addr: addr.to_string(),
                    reason: format!(
                        "backing off {} ms after {} failed attempts{}",
                        (retry_at - now).as_millis(),
                        state.failures,
                        other
                            .as_ref()
                            .map(|e| format!(" (last: {e})"))
                            .unwrap_or_default()
                    ),
                },
            });
        }
        match self.dial(addr, deadline).await {
            Ok(conn) => {
                *state = DialState::default();
                let conn = Arc::new(conn);
                *slot.conn.lock() = Some(conn.clone());
                Ok(conn)
            }
            Err(DialFailure::CallerDeadline(e)) => Err(e),
            Err(DialFailure::Failed(e)) => {
                inc(&self.inner.stats.connections_refused);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + self.backoff(state.failures));
                state.last_error = Some(e.clone());
                if let Some(suppressed) = self.inner.log.check(addr) {
                    tracing::warn!(%addr, error = %e, suppressed,
                        "cannot open a peer connection");
                }
                Err(e)
            }
        }
    }

    fn backoff(&self, failures: u32) -> Duration {
        let o = &self.inner.opts;
        let exp = o
            .backoff_initial
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16));
        let base = exp.min(o.backoff_max);
        // +-25% jitter so a restarted node is not redialed by the whole cluster in lockstep.
        let r = getrandom::u64().unwrap_or(0) % 1000;
        base.mul_f64(0.75 + r as f64 / 2000.0)
    }

    async fn dial(&self, addr: &str, deadline: Instant) -> Result<Connection, DialFailure> {
        let o = &self.inner.opts;
        let stats = &self.inner.stats;
        let connect_err = |reason: String| PeerError::Connect {
            addr: addr.to_string(),
            reason,
        };
        let limit = Instant::now() + o.connect_timeout;
        let stream =
            match tokio::time::timeout_at(limit.min(deadline), self.inner.connector.connect(addr))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(DialFailure::Failed(connect_err(e.to_string()))),
                Err(_) if deadline < limit => {
                    return Err(DialFailure::CallerDeadline(connect_err(
                        "call deadline passed while connecting".into(),
                    )))
                }
                Err(_) => {
                    return Err(DialFailure::Failed(connect_err(format!(
                        "connect timed out after {:?}",
                        o.connect_timeout
                    ))))
                }
            };
        let open = stats.open_connection();
        let mut reader = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, stats.clone());
        let limit = Instant::now() + o.handshake_timeout;
        let shake = tokio::time::timeout_at(
            limit.min(deadline),
            handshake::dial(&mut reader, &self.inner.identity, stats),
        )
        .await;
        let peer = match shake {
            Ok(Ok(peer)) => peer,
            Err(_) if deadline < limit => {
                return Err(DialFailure::CallerDeadline(PeerError::Handshake(format!(
                    "{addr}: call deadline passed during the handshake"
                ))))
            }
            Ok(Err(e)) => return Err(DialFailure::Failed(self.handshake_failed(addr, e))),
            Err(_) => {
                return Err(DialFailure::Failed(
                    self.handshake_failed(addr, HandshakeError::Timeout),
                ))
            }
        };
        inc(&stats.connections_total);
        reader.set_max_frame_bytes(o.max_frame_bytes);
        tracing::debug!(%addr, %peer, "peer connection open");
        let limits = ConnectionLimits {
            max_in_flight: o.max_in_flight_per_connection,
            max_frame_bytes: o.max_frame_bytes,
            reset_on_silent_timeout: o.reset_on_silent_timeout,
        };
        Ok(Connection::start(
            reader,
            peer,
            addr.to_string(),
            limits,
            stats.clone(),
            open,
        ))
    }

    fn handshake_failed(&self, addr: &str, e: HandshakeError) -> PeerError {
        e.count(&self.inner.stats);
        e.into_peer_error(addr)
    }
}

enum DialFailure {
    /// The dial failed on its own terms: counts toward backoff.
    Failed(PeerError),
    /// The caller's own deadline cut it short: says nothing about the peer.
    CallerDeadline(PeerError),
}

fn live(slot: &Slot) -> Option<Arc<Connection>> {
    slot.conn.lock().as_ref().filter(|c| c.is_alive()).cloned()
}
