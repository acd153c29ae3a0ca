//! The HTTP connection loop, built on hyper's HTTP/1 connection directly rather than
//! `axum::serve`, whose defaults leave a slow client free to hold a connection forever.
//!
//! Defences (BAD-INPUT 16-19), each with its knob in [`ServeOptions`]:
//! - **Slow headers (slowloris)**: hyper's header read timeout (off unless a timer is set). The
//!   same timer runs while a keep-alive connection waits for its next request, so it is also the
//!   idle timeout: an idle connection holds a slot for at most that long.
//! - **Slow bodies**: a hard deadline on the whole request body (tower-http `DeadlineBody`),
//!   counted from the end of the headers. A body that dribbles in past it gets `408` and close.
//! - **Slow reads**: a response write that makes no progress for a while ends the connection
//!   (see `write_stall`), so a client that stops reading cannot pin a slot and a value forever.
//! - **Header floods and giant headers**: a cap on header count and on header bytes; hyper
//!   answers `431` and closes.
//! - **Connection floods**: [`ConnectionLimit`]; past the cap a connection gets a canned `503`
//!   and is closed at once, so it neither holds a file descriptor nor waits in the backlog.
//! - **Request smuggling**: framing is hyper's (never hand-rolled): conflicting lengths are
//!   `400` and close; see the module caveats in [`super`] for `Transfer-Encoding` + length.
//! - **Accept errors** (e.g. out of file descriptors): logged, then a short pause; never fatal.
//!
//! Shutdown is graceful: on `shutdown` the listener is dropped (new connections are refused by
//! the kernel), every connection is told to finish its in-flight request and close (idle ones
//! close at once), and [`serve`] returns when the last one has. Bounding the whole drain is the
//! caller's job (`server.rs` gives it `DRAIN_TIMEOUT`).

use super::router;
use super::write_stall::WriteStallTimeout;
use crate::api::limit::{ConnectionLimit, ConnectionSlot};
use crate::metrics::Api;
use crate::Node;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::timeout::RequestBodyDeadlineLayer;

/// Time a client has to send a request's headers, and to start its next request on a kept-alive
/// connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a whole request body once its headers are in. Generous for the
/// largest value (1 MiB) on a slow link; a client dribbling bytes to hold a slot is cut off.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time a response write may make no progress before the connection is dropped: a client that
/// stops reading ("slow read") frees its slot and the response it pins.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Most header lines in one request. ringkv's own clients send fewer than ten.
pub const MAX_HEADERS: usize = 64;
/// Most bytes in a request line plus its headers. Room for the longest key (1024 bytes, each
/// percent-encoded to three characters) and the longest context (8 KiB), with slack.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors), so a persistent failure does
/// not spin a core while connections close and free descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The answer to a connection past the cap: complete, closing, and small enough to fit the
/// socket buffer of a fresh connection, so one non-blocking write sends it.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 33\r\n\
retry-after: 1\r\n\
connection: close\r\n\
\r\n\
{\"error\":\"too many connections\"}\n";

/// Timeouts and limits of the HTTP listener. Defaults are the constants above.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// See [`HEADER_READ_TIMEOUT`]; also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body_timeout: Duration,
    /// See [`WRITE_STALL_TIMEOUT`].
    pub write_stall_timeout: Duration,
    /// See [`MAX_HEADERS`].
    pub max_headers: usize,
    /// See [`MAX_HEADER_BYTES`].
    pub max_header_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            header_read_timeout: HEADER_READ_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
            max_headers: MAX_HEADERS,
            max_header_bytes: MAX_HEADER_BYTES,
        }
    }
}

/// Serves HTTP clients on `listener` until `shutdown` is cancelled, then drains (see the module
/// docs) and returns.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, node, shutdown, ServeOptions::default()).await
}

/// [`serve`] with explicit timeouts and limits (tests shorten them).
pub async fn serve_with(
    listener: TcpListener,
    node: Node,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> std::io::Result<()> {
    let limit = ConnectionLimit::new(node.config().max_connections, Api::Http);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_headers(options.max_headers)
        .max_header_size(options.max_header_bytes)
        .keep_alive(true);
    let app = router(node.clone());
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            // Shutdown first: once it is asked for, take no more connections.
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = limit.try_acquire(node.metrics()) else {
            refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_connection(
            stream,
            node.clone(),
            builder.clone(),
            app.clone(),
            options,
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Answers a connection past the cap with a canned `503` and closes it, without reading from it.
fn refuse(stream: TcpStream) {
    // Best effort: if the socket cannot take the bytes right now the client just sees a close.
    let _ = stream.try_write(TOO_MANY_CONNECTIONS);
    drop(stream);
}

/// Runs one connection to its end. `_slot` holds its place under the connection cap.
async fn serve_connection(
    stream: TcpStream,
    node: Node,
    builder: http1::Builder,
    app: Router,
    options: ServeOptions,
    shutdown: CancellationToken,
    _slot: ConnectionSlot,
) {
    let app = ServiceBuilder::new()
        .layer(RequestBodyDeadlineLayer::new(options.body_timeout))
        .service(app);
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        ServiceExt::<hyper::Request<Incoming>>::oneshot(app.clone(), req)
    });
    let io = WriteStallTimeout::new(stream, options.write_stall_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.cancelled() => {
            // Finish the request in flight (if any), then close; an idle connection closes now.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts, parse errors (already answered with 400/431) and resets: the client's doing.
        // hyper answers these itself, before any handler runs, so they are counted here
        // (BAD-INPUT: every refused input is visible in metrics).
        tracing::debug!(error = %e, "http connection ended with an error");
        if e.is_parse() || e.is_parse_too_large() {
            node.metrics().client_error(Api::Http, "protocol");
        } else if e.is_timeout() {
            node.metrics().client_error(Api::Http, "timeout");
        }
    }
}
