//! One client connection: read, parse every complete command, execute them in order into one
//! output buffer, write it with one call, repeat.
//!
//! Buffers: one read buffer and one output buffer per connection, reused for its life (shrunk
//! back after an unusually large request or reply). Arguments are views into the read buffer;
//! only what must outlive the request (keys and values handed to the node) is copied, in one
//! allocation per command.
//!
//! Write coalescing: consecutive plain `SET`s of one batch (what `redis-benchmark -P 16 -t set`
//! and any pipelining client send) are collected and written with one `Node::write`: one storage
//! batch and one durability wait (an fsync in `sync` mode) instead of one each. They are
//! acknowledged together, once all are durable, which is also when the batch's replies would have
//! been sent anyway. Any other command first flushes the collected `SET`s, so every command sees
//! the writes sent before it (read-your-writes within a pipeline holds).
//!
//! The output bound (BAD-INPUT 9): a client that pipelines without reading its replies makes the
//! output buffer grow while the batch executes. Once it passes 64 KiB the connection pushes what
//! the socket takes without waiting; if what remains unwritten passes
//! `max_client_output_bytes`, the client is closed (counted as `output_buffer`). At the end of a
//! batch the connection waits for the socket, but a write that makes no progress for
//! [`WRITE_STALL`] closes the client too. Either way only that client's task is involved: others
//! are served meanwhile.
//!
//! Shutdown: the connection finishes the command in progress, sends the replies it has, and
//! closes; an idle connection closes at once.

use super::cmd::{self, Args, Ctx, Flow, Session};
use super::frame::{self, Parser, Status};
use super::reply::Reply;
use super::Shared;
use crate::api::limit::ConnectionSlot;
use crate::metrics::Api;
use bytes::{Buf, Bytes, BytesMut};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Read buffer size at the start, and the least free room before a read.
const READ_BUFFER: usize = 16 * 1024;
/// Output buffer size at the start; it grows with the replies of a batch.
const OUT_BUFFER: usize = 4 * 1024;
const MIN_READ_ROOM: usize = 4 * 1024;
/// Buffers larger than this are replaced by fresh small ones once empty.
const SHRINK_ABOVE: usize = 1024 * 1024;
/// Output size at which the connection pushes replies to the socket mid-batch.
const EARLY_FLUSH: usize = 64 * 1024;
/// A write that makes no progress for this long closes the client.
pub const WRITE_STALL: Duration = Duration::from_secs(30);
/// The same once shutdown has begun: a client that does not read does not hold the node up.
const WRITE_STALL_SHUTDOWN: Duration = Duration::from_secs(1);
/// Most `SET`s written as one batch.
const MAX_COALESCED_SETS: usize = 256;

/// Serves one client until it leaves, breaks the protocol, or the node shuts down.
pub(crate) async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    slot: ConnectionSlot,
) {
    let password_required = shared.node.config().password.is_some();
    let id = shared.next_client_id.fetch_add(1, Ordering::Relaxed);
    let mut conn = Connection {
        stream,
        parser: Parser::new(if password_required {
            frame::Limits::UNAUTHENTICATED
        } else {
            frame::Limits::DEFAULT
        }),
        rbuf: BytesMut::with_capacity(READ_BUFFER),
        out: Reply::new(OUT_BUFFER),
        session: Session::new(id, peer, password_required),
        pending_sets: Vec::new(),
        consumed: 0,
        written: 0,
        shared,
        shutdown,
    };
    if let Err(e) = conn.serve().await {
        tracing::debug!(client = id, %peer, error = %e, "RESP connection ended with an error");
    }
    drop(slot);
}

struct Connection {
    stream: TcpStream,
    parser: Parser,
    rbuf: BytesMut,
    out: Reply,
    session: Session,
    /// Plain `SET`s waiting to be written together (key, value).
    pending_sets: Vec<(Bytes, Bytes)>,
    /// Bytes of requests consumed and of replies written in the last batch: a batch over
    /// [`SHRINK_ABOVE`] means a buffer grew large and is replaced once empty.
    consumed: usize,
    written: usize,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl Connection {
    async fn serve(&mut self) -> io::Result<()> {
        let idle = match self.shared.node.config().client_idle_timeout_secs {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        // One registration for the connection's life, not one per read.
        let cancelled = self.shutdown.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let flow = self.process().await;
            if flow == Flow::Abort {
                return Ok(());
            }
            self.flush().await?;
            if flow == Flow::Close || self.shared.stopping.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.shrink_buffers();
            if self.rbuf.capacity() - self.rbuf.len() < MIN_READ_ROOM {
                self.rbuf.reserve(READ_BUFFER);
            }
            let read = self.stream.read_buf(&mut self.rbuf);
            let n = tokio::select! {
                biased;
                _ = &mut cancelled => return Ok(()),
                n = async {
                    match idle {
                        None => read.await,
                        Some(idle) => tokio::time::timeout(idle, read)
                            .await
                            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())),
                    }
                } => n,
            };
            match n {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Executes every complete command in the read buffer, appending replies to the output.
    async fn process(&mut self) -> Flow {
        let Connection {
            stream,
            parser,
            rbuf,
            out,
            session,
            pending_sets,
            shared,
            ..
        } = self;
        let shared: &Shared = shared;
        let bound = shared.node.config().max_client_output_bytes;
        let early_flush = EARLY_FLUSH.min(bound);
        let mut offset = 0;
        let mut commands = 0u64;
        let flow = loop {
            // Once shutdown began, finish the command in progress, not the whole pipeline.
            if offset > 0 && shared.stopping.load(Ordering::Relaxed) {
                break Flow::Close;
            }
            let status = parser.parse(&rbuf[offset..]);
            let len = match status {
                Ok(Status::Complete(len)) => len,
                Ok(Status::Incomplete) => break Flow::Continue,
                Err(e) => {
                    let mut cx = Ctx {
                        shared,
                        session: &mut *session,
                        out: &mut *out,
                    };
                    flush_sets(&mut cx, pending_sets).await;
                    cx.fail("protocol", &format!("ERR {e}"));
                    break Flow::Close;
                }
            };
            // A batch of commands that never wait (reads) must still let other connections on
            // this worker thread run: one unit of tokio's cooperative budget per command.
            if offset > 0 {
                tokio::task::consume_budget().await;
            }
            let frame = &rbuf[offset..offset + len];
            offset += len;
            let args = Args::new(frame, parser.args());
            if args.is_empty() {
                continue;
            }
            commands += 1;
            let mut cx = Ctx {
                shared,
                session: &mut *session,
                out: &mut *out,
            };
            if args.len() == 3
                && cx.session.authenticated
                && args.get(0).eq_ignore_ascii_case(b"SET")
            {
                let owned = args.to_owned_range(1, 2);
                pending_sets.push((owned.get(1), owned.get(2)));
                if pending_sets.len() >= MAX_COALESCED_SETS {
                    flush_sets(&mut cx, pending_sets).await;
                }
                continue;
            }
            flush_sets(&mut cx, pending_sets).await;
            let was_authenticated = cx.session.authenticated;
            let flow = cmd::execute(&mut cx, args).await;
            if cx.session.authenticated != was_authenticated {
                parser.set_limits(frame::Limits::DEFAULT);
            }
            if flow != Flow::Continue {
                break flow;
            }
            if out.len() >= early_flush && !push_nonblocking(stream, out, shared, bound) {
                break Flow::Abort;
            }
        };
        if flow != Flow::Abort {
            let mut cx = Ctx {
                shared,
                session: &mut *session,
                out: &mut *out,
            };
            flush_sets(&mut cx, pending_sets).await;
            if flow == Flow::Continue
                && out.len() >= early_flush
                && !push_nonblocking(stream, out, shared, bound)
            {
                rbuf.advance(offset);
                return Flow::Abort;
            }
        }
        pending_sets.clear();
        rbuf.advance(offset);
        self.consumed = offset;
        if commands > 0 {
            shared.requests.inc_by(commands);
            session.last_command_at = Instant::now();
        }
        flow
    }

    /// Writes the whole output buffer, waiting for the socket; closes a client whose socket
    /// accepts nothing for [`WRITE_STALL`].
    async fn flush(&mut self) -> io::Result<()> {
        self.written = self.out.len();
        while !self.out.buf.is_empty() {
            // Usually the socket takes it all at once: no timer needed.
            match self.stream.try_write(&self.out.buf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.buf.advance(n);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let stall = if self.shutdown.is_cancelled() {
                WRITE_STALL_SHUTDOWN
            } else {
                WRITE_STALL
            };
            let written = tokio::select! {
                r = tokio::time::timeout(stall, self.stream.write(&self.out.buf)) => r,
                // Shutdown began during a long wait: retry with the short stall.
                _ = self.shutdown.cancelled(), if stall == WRITE_STALL => continue,
            };
            match written {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => self.out.buf.advance(n),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.shared
                        .node
                        .metrics()
                        .client_error(Api::Resp, "output_buffer");
                    tracing::info!(
                        client = self.session.id,
                        peer = %self.session.peer,
                        unwritten = self.out.len(),
                        "closing a RESP client that has not read its replies for {stall:?}"
                    );
                    return Err(io::ErrorKind::TimedOut.into());
                }
            }
        }
        self.out.buf.clear();
        Ok(())
    }

    /// Gives back the memory of an unusually large request or reply. (`capacity()` cannot tell:
    /// after `advance` it counts only the room past the cursor, not the allocation.)
    fn shrink_buffers(&mut self) {
        if self.rbuf.is_empty() && self.consumed > SHRINK_ABOVE {
            self.rbuf = BytesMut::with_capacity(READ_BUFFER);
        }
        if self.out.buf.is_empty() && self.written > SHRINK_ABOVE {
            self.out.buf = BytesMut::with_capacity(OUT_BUFFER);
        }
    }
}

/// Writes the collected `SET`s and appends their replies.
async fn flush_sets(cx: &mut Ctx<'_>, pending: &mut Vec<(Bytes, Bytes)>) {
    if !pending.is_empty() {
        cmd::kv::set_many(cx, pending).await;
        pending.clear();
    }
}

/// Pushes what the socket takes now without waiting. False (and counted) when the client's
/// unwritten replies are still over `bound` afterwards: close it.
fn push_nonblocking(stream: &TcpStream, out: &mut Reply, shared: &Shared, bound: usize) -> bool {
    while !out.buf.is_empty() {
        match stream.try_write(&out.buf) {
            Ok(0) => break,
            Ok(n) => out.buf.advance(n),
            Err(_) => break,
        }
    }
    if out.len() > bound {
        shared
            .node
            .metrics()
            .client_error(Api::Resp, "output_buffer");
        tracing::info!(
            unwritten = out.len(),
            bound,
            "closing a RESP client over its output buffer limit (pipelining without reading replies?)"
        );
        return false;
    }
    true
}
