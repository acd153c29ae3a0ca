//! One authenticated, multiplexed client connection: many calls in flight, matched to their
//! answers by request id, in whatever order the server finishes them.
//!
//! Two tasks per connection: a writer (see [`wire::write_loop`]) and a reader that completes
//! pending calls. When either ends, the connection is dead: every pending call fails at once with
//! [`PeerError::ConnectionLost`], and calls that had not been queued yet are told so (they were
//! never sent, and the client retries them on a fresh connection).

use super::error::PeerError;
use super::frame::{Frame, FrameKind};
use super::stats::{inc, OpenConnection, PeerStats};
use super::wire::{self, FrameReader, Outgoing, ReadError};
use bytes::Bytes;
use parking_lot::Mutex;
use ringkv_core::NodeId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

type Reply = Result<Bytes, PeerError>;

/// Settings a connection needs from the client's options.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionLimits {
    pub(crate) max_in_flight: usize,
    pub(crate) max_frame_bytes: usize,
    pub(crate) reset_on_silent_timeout: bool,
}

/// Why a call did not get an answer.
#[derive(Debug)]
pub(crate) enum CallFailure {
    /// The connection was already dead: the request never left this process.
    NotSent,
    Failed(PeerError),
}

struct Pending {
    calls: HashMap<u64, oneshot::Sender<Reply>>,
    /// Set once the connection is dead; no call is registered after that.
    closed: bool,
}

struct Shared {
    peer: NodeId,
    addr: String,
    tx: mpsc::Sender<Outgoing>,
    // A blocking lock: held only to insert or remove one entry, never across an await.
    pending: Mutex<Pending>,
    next_id: AtomicU64,
    in_flight: Arc<Semaphore>,
    closed: CancellationToken,
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the last frame arrived.
    last_recv: AtomicU64,
    limits: ConnectionLimits,
    stats: Arc<PeerStats>,
}

/// A handle on a live connection; dropping the last handle closes it.
pub(crate) struct Connection {
    shared: Arc<Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.closed.cancel();
    }
}

impl Shared {
    fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Marks the connection dead and fails every pending call.
    fn fail_all(&self) {
        self.closed.cancel();
        let calls = {
            let mut p = self.pending.lock();
            p.closed = true;
            std::mem::take(&mut p.calls)
        };
        for (_, tx) in calls {
            if tx.send(Err(PeerError::ConnectionLost)).is_ok() {
                inc(&self.stats.connection_lost);
            }
        }
    }

    fn complete(&self, id: u64, reply: Reply) {
        let waiter = self.pending.lock().calls.remove(&id);
        match waiter {
            Some(tx) => {
                // The caller may have just given up; then the answer is simply late.
                if tx.send(reply).is_err() {
                    inc(&self.stats.late_responses);
                }
            }
            None => inc(&self.stats.late_responses),
        }
    }
}

/// Removes a call's pending entry however the call ends (answer, timeout, or the caller's future
/// being dropped), so abandoned calls never accumulate.
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.pending.lock().calls.remove(&self.id);
    }
}

impl Connection {
    /// Starts the tasks of a connection whose handshake is done. `reader` still holds the whole
    /// stream and any bytes read past the handshake.
    pub(crate) fn start<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        reader: FrameReader<S>,
        peer: NodeId,
        addr: String,
        limits: ConnectionLimits,
        stats: Arc<PeerStats>,
        open: OpenConnection,
    ) -> Connection {
        let (stream, leftover) = reader.into_parts();
        let (rd, wr) = tokio::io::split(stream);
        let reader = FrameReader::with_buffer(rd, leftover, limits.max_frame_bytes, stats.clone());
        let (tx, rx) = mpsc::channel(limits.max_in_flight.max(1));
        let shared = Arc::new(Shared {
            peer,
            addr,
            tx,
            pending: Mutex::new(Pending {
                calls: HashMap::new(),
                closed: false,
            }),
            next_id: AtomicU64::new(1),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            closed: CancellationToken::new(),
            epoch: Instant::now(),
            last_recv: AtomicU64::new(0),
            limits,
            stats: stats.clone(),
        });
        let writer = tokio::spawn(wire::write_loop(
            wr,
            rx,
            shared.closed.clone(),
            limits.max_frame_bytes,
            stats,
        ));
        tokio::spawn(run_reader(shared.clone(), reader, writer, open));
        Connection { shared }
    }

    pub(crate) fn peer(&self) -> &NodeId {
        &self.shared.peer
    }

    pub(crate) fn is_alive(&self) -> bool {
        !self.shared.closed.is_cancelled()
    }

    /// Calls waiting for an answer (tests, diagnostics).
    pub(crate) fn pending_calls(&self) -> usize {
        self.shared.pending.lock().calls.len()
    }

    pub(crate) fn close(&self) {
        self.shared.fail_all();
    }

    /// Sends a request and waits for its answer until `deadline`.
    pub(crate) async fn call(
        &self,
        tag: u16,
        payload: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, CallFailure> {
        let s = &*self.shared;
        // Back-pressure: wait for a slot, but not past the caller's deadline.
        let permit =
            match tokio::time::timeout_at(deadline, s.in_flight.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                Ok(Err(_)) => return Err(CallFailure::NotSent),
                Err(_) => {
                    inc(&s.stats.overloaded);
                    return Err(CallFailure::Failed(PeerError::Overloaded));
                }
            };
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = s.pending.lock();
            if p.closed {
                return Err(CallFailure::NotSent);
            }
            p.calls.insert(id, tx);
        }
        let _guard = PendingGuard { shared: s, id };
        let frame = Frame::new(FrameKind::Request, tag, id, payload);
        match tokio::time::timeout_at(
            deadline,
            s.tx.send(Outgoing {
                frame,
                permit: None,
            }),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(CallFailure::NotSent),
            Err(_) => {
                inc(&s.stats.overloaded);
                return Err(CallFailure::Failed(PeerError::Overloaded));
            }
        }
        inc(&s.stats.requests_sent);
        let sent_at = s.now_nanos();
        let result = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => reply,
            // The sender was dropped without an answer: only `fail_all` does that.
            Ok(Err(_)) => Err(PeerError::ConnectionLost),
            Err(_) => {
                inc(&s.stats.timeouts);
                self.maybe_reset_after_timeout(sent_at);
                Err(PeerError::Timeout)
            }
        };
        drop(permit);
        if let Err(PeerError::Remote(_)) = &result {
            inc(&s.stats.remote_errors);
        }
        result.map_err(CallFailure::Failed)
    }

    /// Queues a one-way message without waiting: a full connection refuses it (`Overloaded`)
    /// rather than buffer it, since gossip is periodic and the next round supersedes it.
    pub(crate) fn send(&self, tag: u16, payload: Bytes) -> Result<(), CallFailure> {
        let s = &*self.shared;
        if !self.is_alive() {
            return Err(CallFailure::NotSent);
        }
        let Ok(permit) = s.in_flight.clone().try_acquire_owned() else {
            inc(&s.stats.overloaded);
            return Err(CallFailure::Failed(PeerError::Overloaded));
        };
        let id = s.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = Frame::new(FrameKind::OneWay, tag, id, payload);
        match s.tx.try_send(Outgoing {
            frame,
            permit: Some(permit),
        }) {
            Ok(()) => {
                inc(&s.stats.one_way_sent);
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                inc(&s.stats.overloaded);
                Err(CallFailure::Failed(PeerError::Overloaded))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(CallFailure::NotSent),
        }
    }

    /// A call timed out and nothing at all has arrived on this connection since it was sent:
    /// the peer is gone (host down, cable cut: TCP may not notice for minutes) or wedged. Close
    /// the connection so the next call dials afresh instead of queueing behind a dead socket.
    fn maybe_reset_after_timeout(&self, sent_at: u64) {
        let s = &*self.shared;
        if s.limits.reset_on_silent_timeout && s.last_recv.load(Ordering::Relaxed) < sent_at {
            tracing::debug!(peer = %s.peer, addr = %s.addr,
                "peer call timed out with the connection silent; closing it");
            s.fail_all();
        }
    }
}

async fn run_reader<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut reader: FrameReader<R>,
    mut writer: tokio::task::JoinHandle<std::io::Result<()>>,
    _open: OpenConnection,
) {
    let why: String = tokio::select! {
        r = read_loop(&shared, &mut reader) => match r {
            Ok(()) => "closed by peer".into(),
            Err(e) => e,
        },
        w = &mut writer => match w {
            Ok(Ok(())) => "writer stopped".into(),
            Ok(Err(e)) => format!("write failed: {e}"),
            Err(e) => format!("writer task failed: {e}"),
        },
        _ = shared.closed.cancelled() => "closed locally".into(),
    };
    shared.fail_all();
    writer.abort();
    tracing::debug!(peer = %shared.peer, addr = %shared.addr, reason = %why,
        "peer connection ended");
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: &Shared,
    reader: &mut FrameReader<R>,
) -> Result<(), String> {
    loop {
        let frame = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(format!("read failed: {e}")),
            Err(ReadError::Frame(e)) => {
                inc(&shared.stats.frame_errors);
                tracing::warn!(peer = %shared.peer, addr = %shared.addr, error = %e,
                    "bad frame from peer; closing the connection");
                return Err(e.to_string());
            }
        };
        shared
            .last_recv
            .store(shared.now_nanos().max(1), Ordering::Relaxed);
        match frame.kind {
            FrameKind::Response => shared.complete(frame.id, Ok(frame.payload)),
            FrameKind::Error => {
                let msg = String::from_utf8_lossy(&frame.payload).into_owned();
                shared.complete(frame.id, Err(PeerError::Remote(msg)));
            }
            other => {
                // Connections are one-directional: the acceptor never sends requests on them.
                inc(&shared.stats.frame_errors);
                tracing::warn!(peer = %shared.peer, addr = %shared.addr, kind = ?other,
                    "unexpected frame kind from peer; closing the connection");
                return Err(format!("unexpected {other:?} frame"));
            }
        }
    }
}
