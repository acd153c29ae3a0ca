//! The Redis protocol (RESP2 and RESP3) on port 7379, for redis-cli, redis-benchmark and client
//! libraries (DESIGN.md "Interfaces").
//!
//! Layout (after mini-redis, minus its copies):
//! - [`frame`]: the pure, incremental, bounded request parser (arrays of bulks, inline commands).
//! - [`reply`]: the RESP2/RESP3 reply writer, straight into the connection's output buffer.
//! - [`connection`]: one task per client: read, parse all, execute in order, write once;
//!   coalesced pipelined `SET`s; the output bound; idle timeout; shutdown.
//! - [`cmd`]: the command table and dispatcher, one file per command family.
//! - this file: the accept loop with the connection cap and graceful shutdown.
//!
//! Errors: a protocol error is answered (`-ERR Protocol error: ...`) and the connection closed,
//! as Redis does; anything else (unknown command, wrong arity, a node error) is answered and the
//! connection stays open. Every refusal is counted in `ringkv_client_errors{api="resp",kind}`.
//!
//! Shutdown: when the token is cancelled the listener stops accepting, each connection finishes
//! the command in progress, sends its replies and closes, and `serve` returns once all have.
//!
//! IMPLEMENTATION CAVEATS: one database (`SELECT 0`); no TTLs, conditional `SET`s, transactions,
//! pub/sub or scripting; inline commands do not support quoting; `CLIENT LIST` shows only the
//! calling connection.

pub mod cmd;
pub mod connection;
pub mod frame;
pub mod reply;

#[cfg(test)]
mod tests;

use crate::api::limit::ConnectionLimit;
use crate::metrics::{Api, ApiLabels};
use crate::Node;
use prometheus_client::metrics::counter::Counter;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every connection of one listener shares.
pub struct Shared {
    pub node: Node,
    /// `CLIENT ID`s, unique per listener, from 1.
    pub next_client_id: AtomicU64,
    /// The listener's address (`INFO`, `CLIENT INFO`, `CONFIG GET port`).
    pub local_addr: SocketAddr,
    /// `ringkv_requests{api="resp"}`, resolved once rather than looked up per command.
    pub requests: Counter,
    /// Set once shutdown began: connections stop after the command in progress. An atomic
    /// rather than `CancellationToken::is_cancelled`, which takes a mutex, checked per command.
    pub stopping: AtomicBool,
}

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors), so it
/// does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The reply to a connection over the cap, before it is closed (Redis's text).
const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";

/// Serves RESP clients on `listener` until `shutdown` is cancelled, then waits for the open
/// connections to finish their command in progress and close.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let local_addr = listener.local_addr()?;
    let limit = ConnectionLimit::new(node.config().max_connections, Api::Resp);
    let requests = node
        .metrics()
        .requests
        .get_or_create(&ApiLabels { api: Api::Resp })
        .clone();
    let shared = Arc::new(Shared {
        node,
        next_client_id: AtomicU64::new(1),
        local_addr,
        requests,
        stopping: AtomicBool::new(false),
    });
    let tracker = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE, ENFILE, ECONNABORTED...: the listener itself is fine; back off briefly.
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let Some(slot) = limit.try_acquire(shared.node.metrics()) else {
            // A fresh socket's send buffer is empty: this cannot block, and a client that does
            // not read cannot hold the accept loop.
            let _ = stream.try_write(MAX_CLIENTS_REPLY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection::run(
            stream,
            peer,
            shared.clone(),
            shutdown.child_token(),
            slot,
        ));
    }
    shared.stopping.store(true, Ordering::Relaxed);
    drop(listener);
    tracker.close();
    tracker.wait().await;
    Ok(())
}
