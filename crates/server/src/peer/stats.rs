//! Counters of the peer transport, as plain atomics so the transport does not depend on the
//! metrics registry; the node mirrors a [`PeerStatsSnapshot`] into Prometheus when scraped.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one [`PeerServer`](super::PeerServer) or [`PeerClient`](super::PeerClient).
/// All `Relaxed`: they are statistics, nothing synchronizes through them.
#[derive(Debug, Default)]
pub struct PeerStats {
    /// Requests (calls) sent by a client / received by a server.
    pub requests_sent: AtomicU64,
    pub requests_received: AtomicU64,
    /// One-way messages sent / received.
    pub one_way_sent: AtomicU64,
    pub one_way_received: AtomicU64,
    /// Calls answered with a remote handler error (client) / handler errors sent (server).
    pub remote_errors: AtomicU64,
    /// Calls that timed out (client).
    pub timeouts: AtomicU64,
    /// Calls failed because their connection died (client).
    pub connection_lost: AtomicU64,
    /// Calls or sends refused because the in-flight bound stayed full (client).
    pub overloaded: AtomicU64,
    /// Responses that arrived after their call had given up (client).
    pub late_responses: AtomicU64,
    /// Bytes read and written on the wire, frame headers included.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Handshakes that failed for any reason (timeout, garbage, wrong secret).
    pub handshake_failures: AtomicU64,
    /// The subset of `handshake_failures` where the secret was wrong.
    pub auth_failures: AtomicU64,
    /// The subset of `handshake_failures` where the peer's cluster settings (its
    /// [`ClusterLayout`](super::ClusterLayout)) differed from ours.
    pub settings_mismatches: AtomicU64,
    /// Malformed frames after the handshake (each closed its connection).
    pub frame_errors: AtomicU64,
    /// Connections currently open (authenticated or still handshaking).
    pub connections_open: AtomicU64,
    /// Connections accepted (server) / dialed successfully (client), ever.
    pub connections_total: AtomicU64,
    /// Connections refused at the connection cap (server) / dials that failed (client).
    pub connections_refused: AtomicU64,
}

/// A copy of [`PeerStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStatsSnapshot {
    pub requests_sent: u64,
    pub requests_received: u64,
    pub one_way_sent: u64,
    pub one_way_received: u64,
    pub remote_errors: u64,
    pub timeouts: u64,
    pub connection_lost: u64,
    pub overloaded: u64,
    pub late_responses: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub handshake_failures: u64,
    pub auth_failures: u64,
    pub settings_mismatches: u64,
    pub frame_errors: u64,
    pub connections_open: u64,
    pub connections_total: u64,
    pub connections_refused: u64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn add(c: &AtomicU64, n: usize) {
    c.fetch_add(n as u64, Ordering::Relaxed);
}

impl PeerStats {
    pub fn snapshot(&self) -> PeerStatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PeerStatsSnapshot {
            requests_sent: g(&self.requests_sent),
            requests_received: g(&self.requests_received),
            one_way_sent: g(&self.one_way_sent),
            one_way_received: g(&self.one_way_received),
            remote_errors: g(&self.remote_errors),
            timeouts: g(&self.timeouts),
            connection_lost: g(&self.connection_lost),
            overloaded: g(&self.overloaded),
            late_responses: g(&self.late_responses),
            bytes_in: g(&self.bytes_in),
            bytes_out: g(&self.bytes_out),
            handshake_failures: g(&self.handshake_failures),
            auth_failures: g(&self.auth_failures),
            settings_mismatches: g(&self.settings_mismatches),
            frame_errors: g(&self.frame_errors),
            connections_open: g(&self.connections_open),
            connections_total: g(&self.connections_total),
            connections_refused: g(&self.connections_refused),
        }
    }

    /// Counts an open connection until the guard drops.
    pub(crate) fn open_connection(self: &std::sync::Arc<Self>) -> OpenConnection {
        inc(&self.connections_open);
        OpenConnection(self.clone())
    }
}

/// Keeps `connections_open` honest whichever way a connection ends.
pub(crate) struct OpenConnection(std::sync::Arc<PeerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}
