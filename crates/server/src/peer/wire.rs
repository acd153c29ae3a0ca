//! Moving frames over any byte stream: a reader that never allocates more than the frame limit,
//! and a writer task that batches queued frames into few syscalls. Both are generic over
//! `AsyncRead`/`AsyncWrite`, so TCP, an in-memory duplex and a simulator's sockets all work.

use super::frame::{self, Frame, FrameError, LEN_PREFIX_BYTES};
use super::stats::{add, PeerStats};
use bytes::BytesMut;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// Bytes asked of the socket per read. A frame larger than this is read in several steps, and
/// the buffer grows only as its bytes actually arrive (a claimed length alone allocates nothing).
const READ_CHUNK: usize = 64 * 1024;

/// Write buffer; frames smaller than this are coalesced into one syscall.
const WRITE_BUFFER: usize = 64 * 1024;

/// Why reading the next frame failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// Reads frames off a stream. Cancel-safe: all state lives in `buf`, so it can sit in a
/// `select!` branch.
pub(crate) struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max_frame_bytes: usize,
    stats: Arc<PeerStats>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(inner: R, max_frame_bytes: usize, stats: Arc<PeerStats>) -> Self {
        FrameReader::with_buffer(inner, BytesMut::new(), max_frame_bytes, stats)
    }

    /// Continues from bytes already read (after the handshake, when the stream is split).
    pub(crate) fn with_buffer(
        inner: R,
        buf: BytesMut,
        max_frame_bytes: usize,
        stats: Arc<PeerStats>,
    ) -> Self {
        FrameReader {
            inner,
            buf,
            max_frame_bytes,
            stats,
        }
    }

    /// Raises the limit once the peer is authenticated.
    pub(crate) fn set_max_frame_bytes(&mut self, max: usize) {
        self.max_frame_bytes = max;
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    pub(crate) fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }

    /// The next frame; `Ok(None)` when the peer closed the stream between frames.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(f) = frame::decode(&mut self.buf, self.max_frame_bytes)? {
                return Ok(Some(f));
            }
            // Ask for what the current frame still needs (its length is already checked against
            // the limit), at most one chunk: memory follows bytes received, not bytes claimed.
            let want = match frame::peek_len(&self.buf, self.max_frame_bytes)? {
                Some(len) => (LEN_PREFIX_BYTES + len - self.buf.len()).min(READ_CHUNK),
                None => READ_CHUNK,
            };
            self.buf.reserve(want.max(4096));
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                frame::check_eof(&self.buf)?;
                return Ok(None);
            }
            add(&self.stats.bytes_in, n);
        }
    }
}

/// Writes one frame and flushes (handshake messages, refusals).
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &Frame,
    max_frame_bytes: usize,
    stats: &PeerStats,
) -> Result<(), ReadError> {
    let bytes = frame.encode(max_frame_bytes)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    add(&stats.bytes_out, bytes.len());
    Ok(())
}

/// A frame queued for the writer task. The permit, when there is one, is released only once the
/// frame has been handed to the socket, so queued-but-unwritten frames count against the
/// connection's in-flight bound (a peer that stops reading cannot make us buffer without end).
pub(crate) struct Outgoing {
    pub(crate) frame: Frame,
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Drains `rx` onto `w` until the channel closes or `stop` fires, then writes what is already
/// queued, flushes and shuts the write side down. Frames queued together go out in one flush.
/// An owner that must stop at once (a dead connection) aborts the task instead.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::Receiver<Outgoing>,
    stop: CancellationToken,
    max_frame_bytes: usize,
    stats: Arc<PeerStats>,
) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER, w);
    loop {
        let first = tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            _ = stop.cancelled() => {
                while let Ok(item) = rx.try_recv() {
                    write_one(&mut w, item, max_frame_bytes, &stats).await?;
                }
                break;
            }
        };
        write_one(&mut w, first, max_frame_bytes, &stats).await?;
        // Coalesce whatever else is already queued, up to a bound so one flush is not delayed
        // behind an endless stream.
        let mut batched = 0usize;
        while batched < 4 * WRITE_BUFFER {
            match rx.try_recv() {
                Ok(item) => {
                    batched += item.frame.wire_len();
                    write_one(&mut w, item, max_frame_bytes, &stats).await?;
                }
                Err(_) => break,
            }
        }
        w.flush().await?;
    }
    w.flush().await?;
    w.shutdown().await
}

async fn write_one<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    item: Outgoing,
    max_frame_bytes: usize,
    stats: &PeerStats,
) -> io::Result<()> {
    let Outgoing { frame, permit } = item;
    // Producers check sizes before queueing; a frame that still does not fit is dropped rather
    // than sent with a length the peer would refuse (which would kill the whole connection).
    let head = match frame.encode_head(max_frame_bytes) {
        Ok(head) => head,
        Err(e) => {
            tracing::error!(error = %e, "peer frame dropped before sending");
            return Ok(());
        }
    };
    w.write_all(&head).await?;
    w.write_all(&frame.payload).await?;
    add(&stats.bytes_out, frame.wire_len());
    drop(permit);
    Ok(())
}
