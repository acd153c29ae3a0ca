//! The accepting side: authenticates each connection, then runs every request in its own task
//! and writes answers as they complete, matched to their request by id.
//!
//! Back-pressure: each connection has `max_in_flight_per_connection` slots. A request takes one
//! before its handler runs and gives it back only once its answer is written to the socket, so
//! when handlers are slow, or the peer does not read its answers, the reader stops reading and
//! TCP flow control pushes back on the sender. Memory per connection is bounded by the slots
//! times the frame limit, never by what the peer sends.

use super::frame::{
    Frame, FrameKind, DEFAULT_MAX_FRAME_BYTES, HANDSHAKE_MAX_FRAME_BYTES, HEADER_BYTES,
};
use super::handler::{PeerHandler, PeerRequest};
use super::handshake::{self, HandshakeError, REFUSED_BUSY};
use super::identity::PeerIdentity;
use super::log_limit::{LogLimiter, DEFAULT_LOG_INTERVAL};
use super::stats::{inc, PeerStats};
use super::wire::{self, FrameReader, Outgoing, ReadError};
use bytes::Bytes;
use ringkv_core::NodeId;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Longest error message sent back to a caller.
const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// Server settings; the defaults suit a LAN cluster.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Peer connections open at once (authenticated or not); past it new ones are refused.
    /// A cluster of N nodes needs about N x `connections_per_peer` here.
    pub max_connections: usize,
    /// Requests whose handler is running, or whose answer is not yet written, per connection.
    pub max_in_flight_per_connection: usize,
    /// Largest frame accepted or sent after the handshake (header + payload).
    pub max_frame_bytes: usize,
    /// Longest a connection may take to authenticate.
    pub handshake_timeout: Duration,
    /// Close a connection that sent nothing for this long while no request was in flight
    /// (`None` = never). Pooled clients simply redial.
    pub idle_timeout: Option<Duration>,
    /// On shutdown, how long in-flight requests get to finish and be answered.
    pub drain_timeout: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1024,
            max_in_flight_per_connection: 1024,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Serves peer connections. Cheap to clone.
#[derive(Clone)]
pub struct PeerServer {
    inner: Arc<Inner>,
}

struct Inner {
    identity: PeerIdentity,
    handler: Arc<dyn PeerHandler>,
    opts: ServerOptions,
    stats: Arc<PeerStats>,
    connections: Arc<Semaphore>,
    log: LogLimiter,
}

/// Serves `listener` with default options until `shutdown` is cancelled. Use [`PeerServer`] to
/// set options or read the statistics.
pub async fn serve(
    listener: TcpListener,
    identity: PeerIdentity,
    handler: Arc<dyn PeerHandler>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    PeerServer::new(identity, handler, ServerOptions::default())
        .serve(listener, shutdown)
        .await
}

impl PeerServer {
    pub fn new(
        identity: PeerIdentity,
        handler: Arc<dyn PeerHandler>,
        mut opts: ServerOptions,
    ) -> PeerServer {
        opts.max_connections = opts.max_connections.max(1);
        opts.max_in_flight_per_connection = opts.max_in_flight_per_connection.max(1);
        PeerServer {
            inner: Arc::new(Inner {
                identity,
                handler,
                connections: Arc::new(Semaphore::new(opts.max_connections)),
                opts,
                stats: Arc::new(PeerStats::default()),
                log: LogLimiter::new(DEFAULT_LOG_INTERVAL),
            }),
        }
    }

    pub fn stats(&self) -> &Arc<PeerStats> {
        &self.inner.stats
    }

    /// Accepts TCP connections until `shutdown`, then waits for open connections to drain (each
    /// bounded by `drain_timeout`). Logs a warning first if the cluster is unauthenticated.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> io::Result<()> {
        self.inner.identity.secret.warn_if_weak("peer listener");
        let tracker = TaskTracker::new();
        loop {
            let (stream, remote) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: transient; do not spin, do not stop serving.
                        if let Some(suppressed) = self.inner.log.check("accept") {
                            tracing::warn!(error = %e, suppressed, "peer accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                this.serve_connection(stream, remote.to_string(), shutdown)
                    .await
            });
        }
        drop(listener);
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    /// Serves one already-accepted stream to completion: connection cap, handshake, requests.
    /// Public so a simulator with its own listener can feed streams in. `remote` names the peer
    /// in logs and keys the log rate limit (its IP address, ideally).
    pub async fn serve_connection<S>(&self, stream: S, remote: String, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = &*self.inner;
        let stats = &inner.stats;
        let log_key = log_key(&remote);
        let mut reader = FrameReader::new(stream, HANDSHAKE_MAX_FRAME_BYTES, stats.clone());
        let Ok(slot) = inner.connections.clone().try_acquire_owned() else {
            inc(&stats.connections_refused);
            if let Some(suppressed) = inner.log.check(log_key) {
                tracing::warn!(%remote, suppressed, max = inner.opts.max_connections,
                    "peer connection refused: connection cap reached");
            }
            // Tell the dialer why, briefly; it may not be listening.
            let busy = handshake::refused(REFUSED_BUSY, "too many peer connections");
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                wire::write_frame(reader.get_mut(), &busy, HANDSHAKE_MAX_FRAME_BYTES, stats),
            )
            .await;
            return;
        };
        let _open = stats.open_connection();
        inc(&stats.connections_total);
        let shake = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(
                inner.opts.handshake_timeout,
                handshake::accept(&mut reader, &inner.identity, stats),
            ) => r.unwrap_or(Err(HandshakeError::Timeout)),
        };
        let peer = match shake {
            Ok(peer) => peer,
            Err(e) => {
                e.count(stats);
                if let Some(suppressed) = inner.log.check(log_key) {
                    tracing::warn!(%remote, error = %e, suppressed,
                        "peer connection refused at handshake");
                }
                return;
            }
        };
        tracing::debug!(%remote, %peer, "peer connection authenticated");
        reader.set_max_frame_bytes(inner.opts.max_frame_bytes);
        self.run(reader, peer, &remote, shutdown).await;
        drop(slot);
    }

    /// The request loop of one authenticated connection.
    async fn run<S>(
        &self,
        reader: FrameReader<S>,
        peer: NodeId,
        remote: &str,
        shutdown: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let inner = &*self.inner;
        let opts = &inner.opts;
        let stats = &inner.stats;
        let max_in_flight = opts.max_in_flight_per_connection;
        let (stream, leftover) = reader.into_parts();
        let (rd, wr) = tokio::io::split(stream);
        let mut reader =
            FrameReader::with_buffer(rd, leftover, opts.max_frame_bytes, stats.clone());
        let (tx, rx) = mpsc::channel::<Outgoing>(max_in_flight);
        let stop_writer = CancellationToken::new();
        let mut writer = tokio::spawn(wire::write_loop(
            wr,
            rx,
            stop_writer.clone(),
            opts.max_frame_bytes,
            stats.clone(),
        ));
        let mut writer_done = false;
        let in_flight = Arc::new(Semaphore::new(max_in_flight));
        // Clamped so `now + idle_limit` cannot overflow whatever the configuration says.
        let idle_limit = opts
            .idle_timeout
            .unwrap_or(Duration::MAX)
            .min(Duration::from_secs(86_400 * 365));
        let idle = tokio::time::sleep(idle_limit);
        tokio::pin!(idle);

        let why: String = loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break "server shutting down".into(),
                w = &mut writer => {
                    writer_done = true;
                    break match w {
                        Ok(Ok(())) => "writer stopped".into(),
                        Ok(Err(e)) => format!("write failed: {e}"),
                        Err(e) => format!("writer task failed: {e}"),
                    };
                }
                _ = &mut idle, if opts.idle_timeout.is_some() => {
                    if in_flight.available_permits() == max_in_flight {
                        break "idle".into();
                    }
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_limit);
                    continue;
                }
                r = reader.next() => r,
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break "closed by peer".into(),
                Err(ReadError::Io(e)) => break format!("read failed: {e}"),
                Err(ReadError::Frame(e)) => {
                    inc(&stats.frame_errors);
                    if let Some(suppressed) = inner.log.check(log_key(remote)) {
                        tracing::warn!(%remote, %peer, error = %e, suppressed,
                            "bad frame from peer; closing the connection");
                    }
                    break e.to_string();
                }
            };
            if opts.idle_timeout.is_some() {
                idle.as_mut()
                    .reset(tokio::time::Instant::now() + idle_limit);
            }
            let one_way = match frame.kind {
                FrameKind::Request => false,
                FrameKind::OneWay => true,
                other => {
                    inc(&stats.frame_errors);
                    if let Some(suppressed) = inner.log.check(log_key(remote)) {
                        tracing::warn!(%remote, %peer, kind = ?other, suppressed,
                            "unexpected frame kind from peer; closing the connection");
                    }
                    break format!("unexpected {other:?} frame");
                }
            };
            // Back-pressure: no slot, no more reading.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break "server shutting down".into(),
                p = in_flight.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break "closed".into(),
                },
            };
            inc(if one_way {
                &stats.one_way_received
            } else {
                &stats.requests_received
            });
            self.spawn_request(frame, one_way, peer.clone(), permit, tx.clone());
        };
        tracing::debug!(%remote, %peer, reason = %why, "peer connection closing");

        // Stop reading; let running requests finish and their answers go out, within bounds.
        drop(tx);
        let all = u32::try_from(max_in_flight).unwrap_or(u32::MAX);
        if !writer_done {
            let drained =
                tokio::time::timeout(opts.drain_timeout, in_flight.acquire_many(all)).await;
            if drained.is_err() {
                tracing::debug!(%remote, %peer, "in-flight peer requests did not finish in time");
            }
            stop_writer.cancel();
            if tokio::time::timeout(opts.drain_timeout, &mut writer)
                .await
                .is_err()
            {
                writer.abort();
            }
        }
    }

    fn spawn_request(
        &self,
        frame: Frame,
        one_way: bool,
        from: NodeId,
        permit: OwnedSemaphorePermit,
        tx: mpsc::Sender<Outgoing>,
    ) {
        let inner = self.inner.clone();
        let Frame {
            tag, id, payload, ..
        } = frame;
        let req = PeerRequest {
            from,
            tag,
            payload,
            one_way,
        };
        tokio::spawn(async move {
            let mut reply = Reply {
                tx,
                id,
                tag,
                permit: Some(permit),
                answered: one_way,
                max_frame_bytes: inner.opts.max_frame_bytes,
            };
            let from = req.from.clone();
            let result = inner.handler.handle(req).await;
            if one_way {
                if let Err(e) = result {
                    tracing::debug!(%from, tag, error = %e, "one-way peer message failed");
                }
                return;
            }
            if result.is_err() {
                inc(&inner.stats.remote_errors);
            }
            reply.send(result).await;
        });
    }
}

/// The answer to one request. If its task ends without answering (the handler panicked), `Drop`
/// answers with an error so the caller is not left waiting for its timeout.
struct Reply {
    tx: mpsc::Sender<Outgoing>,
    id: u64,
    tag: u16,
    permit: Option<OwnedSemaphorePermit>,
    answered: bool,
    max_frame_bytes: usize,
}

impl Reply {
    fn frame(&self, result: Result<Bytes, String>) -> Frame {
        match result {
            Ok(payload) if HEADER_BYTES + payload.len() <= self.max_frame_bytes => {
                Frame::new(FrameKind::Response, self.tag, self.id, payload)
            }
            Ok(payload) => self.error(format!(
                "response of {} bytes exceeds the peer frame limit of {}",
                payload.len(),
                self.max_frame_bytes
            )),
            Err(msg) => self.error(msg),
        }
    }

    fn error(&self, mut msg: String) -> Frame {
        if msg.len() > MAX_ERROR_MESSAGE_BYTES {
            let mut cut = MAX_ERROR_MESSAGE_BYTES;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        Frame::new(FrameKind::Error, self.tag, self.id, Bytes::from(msg))
    }

    async fn send(&mut self, result: Result<Bytes, String>) {
        self.answered = true;
        let frame = self.frame(result);
        let permit = self.permit.take();
        // Fails only when the connection is closing; the caller then sees ConnectionLost.
        let _ = self.tx.send(Outgoing { frame, permit }).await;
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.answered {
            let frame = self.error("peer handler panicked".into());
            let permit = self.permit.take();
            let _ = self.tx.try_send(Outgoing { frame, permit });
        }
    }
}

/// Rate-limit key for a remote address: its IP, so reconnecting from new ports does not evade it.
fn log_key(remote: &str) -> &str {
    match remote.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => remote,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_key_is_the_ip() {
        assert_eq!(super::log_key("10.0.0.1:5555"), "10.0.0.1");
        assert_eq!(super::log_key("[::1]:5555"), "[::1]");
        assert_eq!(super::log_key("sim-host"), "sim-host");
    }
}
