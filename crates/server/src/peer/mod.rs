//! The peer transport: how cluster members talk to each other on the peer port (default `7381`)
//! — internal RPC (coordinator <-> replicas, handoff, anti-entropy, streaming) and gossip.
//!
//! It carries **opaque payloads** between **authenticated members**. The message types of the
//! upper layers (gossip, coordinator, ...) live elsewhere and encode themselves with postcard into
//! `Bytes`; this module never looks inside them, so it does not change when they do.
//!
//! # What it provides
//! - [`PeerServer`] (or the [`serve`] shorthand): accepts connections, authenticates them, runs
//!   each request in its own task through a [`PeerHandler`] (usually a [`TagRouter`]) and writes
//!   answers as they complete, out of order, matched by request id.
//! - [`PeerClient`]: `call(addr, tag, payload, timeout) -> (answering NodeId, payload)` and
//!   one-way `send(addr, tag, payload)`, over a pool of multiplexed connections (one per peer
//!   address by default), redialed with exponential backoff after failures.
//! - [`PeerStats`]: atomics the node mirrors into Prometheus.
//!
//! # Wire format ([`frame`])
//! `u32` big-endian length, then `version u8 = 1`, `kind u8`, `tag u16 BE`, `request id u64 BE`,
//! then the payload. Kinds: request, response, error (UTF-8 message), one-way, and the four
//! handshake messages. The length is checked against the limit (16 MiB by default; 1 KiB before
//! the handshake completes) before anything is allocated, and memory grows only as bytes arrive.
//! A bad version, unknown kind, oversize or truncated frame closes that connection, logged (rate
//! limited) and counted in [`PeerStats::frame_errors`]; it never panics.
//!
//! The **tag** says which upper layer a frame belongs to ([`tags`]): the transport routes on it,
//! and the payload's own enum routes within the layer.
//!
//! # Authentication ([`handshake`])
//! A mutual HMAC-SHA256 challenge-response over fresh 32-byte nonces from both sides; the secret
//! never crosses the wire and a recorded handshake cannot be replayed. After it, both sides know
//! the other's [`NodeId`](ringkv_core::NodeId) — proved, not claimed — and a handler sees it as
//! [`PeerRequest::from`]. A stranger, a member with a different secret, or garbage is refused at
//! the handshake (BAD-INPUT 22), logged at most once per address per 10 s with a count of the
//! warnings suppressed, and counted (`handshake_failures`, `auth_failures`). The handshake must
//! finish within 5 s.
//!
//! **Cluster settings**: both sides also state their [`ClusterLayout`] (ring algorithm version,
//! `partitions`, `n`, `replication`: what the ring is computed from), covered by the proofs. A
//! member whose layout differs from the acceptor's is refused (`REFUSED_SETTINGS`) with a reason
//! naming both layouts; both sides log a warning naming the peer, count it
//! (`settings_mismatches`), and the dialer gets [`PeerError::SettingsMismatch`], which is not
//! retryable and is backed off like `Unauthorized`. So a node started with other settings never
//! joins, instead of silently placing data on the wrong replicas.
//!
//! **No secret configured**: the transport then uses a well-known default secret
//! ([`DEFAULT_INSECURE_SECRET`]) rather than refusing to start, so that `ringkv server` with no
//! flags and `ringkv cluster up` work out of the box; [`PeerServer::serve`] logs a warning at
//! startup that the cluster is unauthenticated. Nodes with and without a configured secret
//! cannot talk to each other, which fails loudly (`Unauthorized`) rather than silently.
//!
//! # Connections, concurrency and back-pressure
//! Each node dials each peer it talks to, so a pair of nodes has two connections, one per
//! direction; a connection carries requests from dialer to acceptor only. On one connection:
//! - the client holds at most `max_in_flight_per_connection` calls; past it a call waits for a
//!   slot until its deadline (then `Overloaded`), and a one-way send is refused at once;
//! - the server runs at most `max_in_flight_per_connection` handlers; when all are busy (or the
//!   caller does not read its answers) it stops reading, and TCP pushes back on the caller;
//! - a call's timeout covers dialing too, and its pending entry is removed however it ends;
//! - when a connection dies, every call pending on it fails at once with `ConnectionLost`, and
//!   the next call redials. A call that finds its pooled connection already dead was never sent
//!   and is retried once on a fresh connection.
//! - a call that times out while nothing at all arrived on its connection since it was sent
//!   closes that connection (`reset_on_silent_timeout`): a vanished host is noticed in one
//!   timeout instead of TCP's minutes.
//!
//! # Simulation
//! All connection logic is generic over `AsyncRead + AsyncWrite + Unpin + Send` streams. The
//! client dials through a [`Connector`] (default [`TcpConnector`], Nagle off), and
//! [`PeerServer::serve_connection`] takes any accepted stream, so a turmoil simulation supplies
//! its own sockets without touching this code. (Turmoil's TCP does not retransmit a dropped
//! message: model loss with hold/release, or in a `Connector` wrapper.)
//!
//! # Errors
//! [`PeerError`] says what the caller should do: `is_retryable()`, and `maybe_delivered()` to
//! tell a request the peer never saw (`Connect`, `Handshake`, `Unauthorized`, `Overloaded`,
//! `FrameTooLarge`, `Closed`) from one whose outcome is unknown (`Timeout`, `ConnectionLost`).
//!
//! # IMPLEMENTATION CAVEATS
//! - **No encryption or per-frame integrity.** The handshake authenticates the *connection's
//!   start*; an on-path attacker can read traffic, and one who can inject into the TCP stream can
//!   hijack it after the handshake, or relay a handshake between two members (no channel
//!   binding). Use a private network; TLS (rustls, see DEPENDENCIES.md) is the next step.
//! - **No version negotiation.** A frame whose version byte is not 1 closes the connection. A v2
//!   must keep v1's `Hello` decodable, or run on a new port. The handshake's own messages are at
//!   `ringkv-peer-v2` (v2 added the cluster layout); a v1 node and a v2 node refuse each other
//!   (as a wrong secret, or a malformed `Auth`), so upgrade a cluster all at once.
//! - **The node id is checked, not the address**: `call` returns who answered at an address;
//!   comparing it with membership (and what to do with a mismatch, e.g. an address reused by a
//!   new node) is the caller's job. Dialing our own address is not refused.
//! - **One-way messages are fire-and-forget**: queued is not delivered, and a full connection
//!   drops them (`Overloaded`). Fine for gossip, which repeats; nothing durable may use them.
//! - **Head-of-line blocking**: one TCP stream per peer means a large frame (streaming) delays
//!   small RPCs queued behind it. `connections_per_peer` > 1 spreads calls round-robin, not by
//!   priority; a dedicated streaming connection would be better.
//! - **The pool never forgets an address by itself**: entries stay until
//!   [`PeerClient::disconnect`]; the server's idle timeout (10 min) closes the connections
//!   themselves. Membership should call `disconnect` for removed members.
//! - **No keep-alive pings**: a silent dead peer is noticed by call timeouts
//!   (`reset_on_silent_timeout`), or on the server side by the idle timeout.
//! - **Handler cancellation**: on shutdown or connection loss, handlers already running are not
//!   cancelled; they run to completion (bounded by the drain timeout for the *answer*, not for the
//!   work), and their answers are dropped if the connection is gone.

pub mod client;
mod connection;
pub mod connector;
pub mod error;
pub mod frame;
pub mod handler;
pub mod handshake;
pub mod identity;
mod log_limit;
pub mod server;
pub mod stats;
pub mod versioned;
mod wire;

#[cfg(test)]
mod tests;

pub use client::{ClientOptions, PeerClient};
pub use connector::{BoxStream, ConnectFuture, Connector, PeerStream, TcpConnector};
pub use error::PeerError;
pub use frame::{Frame, FrameError, FrameKind, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION};
pub use handler::{tags, HandlerFuture, PeerHandler, PeerRequest, TagRouter};
pub use identity::{ClusterLayout, ClusterSecret, PeerIdentity, DEFAULT_INSECURE_SECRET};
pub use server::{serve, PeerServer, ServerOptions};
pub use stats::{PeerStats, PeerStatsSnapshot};
