//! Mutual authentication of two cluster members: each proves it knows the cluster secret with an
//! HMAC-SHA256 over both sides' fresh nonces, so the secret never crosses the wire and a recorded
//! handshake cannot be replayed. Each also states its [`ClusterLayout`] (ring algorithm version,
//! `partitions`, `n`, `replication`: what the ring is computed from), covered by its proof, and
//! members with different layouts are refused: they would compute different rings.
//!
//! ```text
//! acceptor                                                    dialer
//!    | -- Hello   { server_nonce[32] } -------------------------> |
//!    | <-- Auth   { client_nonce[32], mac_d[32], layout, node_id } |
//!    |   checks mac_d, then the node id, then the layout;
//!    |   on failure sends Refused { code, reason } and closes
//!    | -- Welcome { mac_a[32], layout, node_id } ---------------> |
//!    |                    checks mac_a, then the node id and layout |
//!
//! layout = len u16 BE || UTF-8 text (at most ClusterLayout::MAX_BYTES)
//! mac_d = HMAC(secret, "ringkv-peer-v2/dialer"   || server_nonce || client_nonce
//!                                                 || layout_d (len-prefixed) || dialer_id)
//! mac_a = HMAC(secret, "ringkv-peer-v2/acceptor" || client_nonce || server_nonce
//!                                                 || layout_a (len-prefixed) || acceptor_id)
//! ```
//!
//! The labels differ, so one side's proof can never be reflected back as the other's; each proof
//! covers the nonce the verifier just chose, so it is fresh; the node id is covered, so a member
//! cannot be impersonated by an outsider; the layout is covered, so it cannot be altered in
//! flight. Nonces have a fixed size, the layout is length-prefixed and the node id comes last, so
//! the concatenation is unambiguous. The MAC is compared in constant time
//! (`Mac::verify_slice`). The acceptor checks the proof before anything else, so a stranger learns
//! neither our node id nor our layout; a member whose layout differs is told both layouts
//! (`REFUSED_SETTINGS`), so its operator sees what to fix. A well-framed but malformed or
//! unexpected message (a bad length prefix, a layout over the bound, text that is not UTF-8) is
//! answered with `REFUSED_PROTOCOL` before closing; bytes that are not frames at all just close.
//!
//! `v2` added the layout: a v1 node and a v2 node fail each other's proof check (the v2 side
//! also cannot parse the v1 `Auth`), so mixed versions never form a cluster.
//!
//! Handshake frames use the normal frame header (tag 0, id 0) with their own kinds, and are
//! limited to [`HANDSHAKE_MAX_FRAME_BYTES`]: an unauthenticated peer cannot make us buffer more.

use super::frame::{Frame, FrameError, FrameKind, HANDSHAKE_MAX_FRAME_BYTES, HEADER_BYTES};
use super::identity::{ClusterLayout, ClusterSecret, PeerIdentity};
use super::stats::{inc, PeerStats};
use super::wire::{write_frame, FrameReader, ReadError};
use super::PeerError;
use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use ringkv_core::NodeId;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncWrite};

pub(crate) const NONCE_BYTES: usize = 32;
pub(crate) const MAC_BYTES: usize = 32;
/// Bytes of a layout's length prefix.
const LAYOUT_LEN_BYTES: usize = 2;
const DIALER_LABEL: &[u8] = b"ringkv-peer-v2/dialer";
const ACCEPTOR_LABEL: &[u8] = b"ringkv-peer-v2/acceptor";

/// First byte of a `Refused` payload: why.
pub(crate) const REFUSED_UNAUTHORIZED: u8 = 1;
pub(crate) const REFUSED_BUSY: u8 = 2;
pub(crate) const REFUSED_PROTOCOL: u8 = 3;
/// The dialer's [`ClusterLayout`] differs from the acceptor's; the reason names both.
pub(crate) const REFUSED_SETTINGS: u8 = 4;

/// Longest reason in a `Refused` frame: room for two layouts and two node ids.
const MAX_REASON_BYTES: usize = 720;
const _: () = assert!(HEADER_BYTES + 1 + MAX_REASON_BYTES <= HANDSHAKE_MAX_FRAME_BYTES);
const _: () = assert!(
    // `settings_reason`: two layouts, two node ids, and its wording.
    2 * ClusterLayout::MAX_BYTES + 2 * ringkv_core::node_id::MAX_NODE_ID_LEN + 64
        <= MAX_REASON_BYTES
);
const _: () = assert!(
    HEADER_BYTES
        + NONCE_BYTES
        + MAC_BYTES
        + LAYOUT_LEN_BYTES
        + ClusterLayout::MAX_BYTES
        + ringkv_core::node_id::MAX_NODE_ID_LEN
        <= HANDSHAKE_MAX_FRAME_BYTES
);

type HmacSha256 = Hmac<Sha256>;

pub(crate) type Nonce = [u8; NONCE_BYTES];

/// Why a handshake failed, on either side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("handshake timed out")]
    Timeout,
    #[error("i/o error during handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame during handshake: {0}")]
    Frame(#[from] FrameError),
    #[error("connection closed during handshake")]
    Closed,
    #[error("unexpected {0:?} frame during handshake")]
    Unexpected(FrameKind),
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("invalid node id in handshake")]
    BadNodeId,
    #[error("invalid cluster layout in handshake")]
    BadLayout,
    #[error("peer failed to prove it knows the cluster secret")]
    BadProof,
    /// An authenticated member with a different [`ClusterLayout`].
    #[error("cluster settings differ: this node ({me}) has {ours}, peer {peer} has {theirs}")]
    SettingsMismatch {
        me: NodeId,
        peer: NodeId,
        ours: ClusterLayout,
        theirs: ClusterLayout,
    },
    #[error("refused by peer: {reason}")]
    Refused { code: u8, reason: String },
    #[error("cannot generate a nonce: {0}")]
    Random(String),
}

impl From<ReadError> for HandshakeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => HandshakeError::Io(e),
            ReadError::Frame(e) => HandshakeError::Frame(e),
        }
    }
}

impl HandshakeError {
    /// A wrong secret (ours or theirs), as opposed to a broken or slow peer.
    pub(crate) fn is_auth(&self) -> bool {
        matches!(
            self,
            HandshakeError::BadProof
                | HandshakeError::Refused {
                    code: REFUSED_UNAUTHORIZED,
                    ..
                }
        )
    }

    /// Different cluster settings (ours or theirs found out).
    pub(crate) fn is_settings(&self) -> bool {
        matches!(
            self,
            HandshakeError::SettingsMismatch { .. }
                | HandshakeError::Refused {
                    code: REFUSED_SETTINGS,
                    ..
                }
        )
    }

    /// Counts a failed handshake in `stats`: every one, and the wrong-secret and
    /// wrong-settings subsets.
    pub(crate) fn count(&self, stats: &PeerStats) {
        inc(&stats.handshake_failures);
        if self.is_auth() {
            inc(&stats.auth_failures);
        }
        if self.is_settings() {
            inc(&stats.settings_mismatches);
        }
    }

    pub(crate) fn into_peer_error(self, addr: &str) -> PeerError {
        if self.is_auth() {
            PeerError::Unauthorized(format!("{addr}: {self}"))
        } else if self.is_settings() {
            PeerError::SettingsMismatch(format!("{addr}: {self}"))
        } else {
            PeerError::Handshake(format!("{addr}: {self}"))
        }
    }
}

pub(crate) fn fresh_nonce() -> Result<Nonce, HandshakeError> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

/// The length prefix of a layout. Layouts are at most [`ClusterLayout::MAX_BYTES`] (checked when
/// built and when parsed), so it cannot overflow.
fn layout_len(layout: &[u8]) -> [u8; LAYOUT_LEN_BYTES] {
    u16::try_from(layout.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes()
}

fn mac(
    secret: &ClusterSecret,
    label: &[u8],
    first: &Nonce,
    second: &Nonce,
    layout: &[u8],
    id: &[u8],
) -> HmacSha256 {
    // HMAC accepts keys of any length (long ones are hashed first): this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    m.update(label);
    m.update(first);
    m.update(second);
    m.update(&layout_len(layout));
    m.update(layout);
    m.update(id);
    m
}

/// The dialer's proof.
pub(crate) fn dialer_proof(
    secret: &ClusterSecret,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    layout: &[u8],
    dialer_id: &[u8],
) -> [u8; MAC_BYTES] {
    mac(
        secret,
        DIALER_LABEL,
        server_nonce,
        client_nonce,
        layout,
        dialer_id,
    )
    .finalize()
    .into_bytes()
    .into()
}

/// The acceptor's proof.
pub(crate) fn acceptor_proof(
    secret: &ClusterSecret,
    client_nonce: &Nonce,
    server_nonce: &Nonce,
    layout: &[u8],
    acceptor_id: &[u8],
) -> [u8; MAC_BYTES] {
    mac(
        secret,
        ACCEPTOR_LABEL,
        client_nonce,
        server_nonce,
        layout,
        acceptor_id,
    )
    .finalize()
    .into_bytes()
    .into()
}

fn verify_dialer(
    secret: &ClusterSecret,
    server_nonce: &Nonce,
    client_nonce: &Nonce,
    layout: &[u8],
    dialer_id: &[u8],
    proof: &[u8],
) -> bool {
    mac(
        secret,
        DIALER_LABEL,
        server_nonce,
        client_nonce,
        layout,
        dialer_id,
    )
    .verify_slice(proof)
    .is_ok()
}

fn verify_acceptor(
    secret: &ClusterSecret,
    client_nonce: &Nonce,
    server_nonce: &Nonce,
    layout: &[u8],
    acceptor_id: &[u8],
    proof: &[u8],
) -> bool {
    mac(
        secret,
        ACCEPTOR_LABEL,
        client_nonce,
        server_nonce,
        layout,
        acceptor_id,
    )
    .verify_slice(proof)
    .is_ok()
}

// ---- message layouts (pure) ----

/// A parsed `Auth`: raw layout and node id, validated only after the proof checks out, so a
/// stranger learns nothing from which check failed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct AuthMsg<'a> {
    pub client_nonce: Nonce,
    pub proof: &'a [u8],
    pub layout: &'a [u8],
    pub node_id: &'a [u8],
}

/// A parsed `Welcome`, raw as [`AuthMsg`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct WelcomeMsg<'a> {
    pub proof: &'a [u8],
    pub layout: &'a [u8],
    pub node_id: &'a [u8],
}

pub(crate) fn hello(server_nonce: &Nonce) -> Frame {
    Frame::new(FrameKind::Hello, 0, 0, Bytes::copy_from_slice(server_nonce))
}

pub(crate) fn parse_hello(payload: &[u8]) -> Result<Nonce, HandshakeError> {
    payload
        .try_into()
        .map_err(|_| HandshakeError::Malformed("hello"))
}

fn put_layout_and_id(b: &mut BytesMut, layout: &ClusterLayout, node_id: &NodeId) {
    let layout = layout.as_str().as_bytes();
    b.put_slice(&layout_len(layout));
    b.put_slice(layout);
    b.put_slice(node_id.as_str().as_bytes());
}

/// `len u16 BE || layout || node id`, with a layout of at most [`ClusterLayout::MAX_BYTES`] and a
/// non-empty node id.
fn split_layout_and_id(rest: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = rest.split_first_chunk::<LAYOUT_LEN_BYTES>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > ClusterLayout::MAX_BYTES || rest.len() <= len {
        return None;
    }
    Some(rest.split_at(len))
}

pub(crate) fn auth(
    client_nonce: &Nonce,
    proof: &[u8; MAC_BYTES],
    layout: &ClusterLayout,
    node_id: &NodeId,
) -> Frame {
    let mut b = BytesMut::with_capacity(
        NONCE_BYTES + MAC_BYTES + LAYOUT_LEN_BYTES + layout.as_str().len() + node_id.as_str().len(),
    );
    b.put_slice(client_nonce);
    b.put_slice(proof);
    put_layout_and_id(&mut b, layout, node_id);
    Frame::new(FrameKind::Auth, 0, 0, b.freeze())
}

pub(crate) fn parse_auth(payload: &[u8]) -> Result<AuthMsg<'_>, HandshakeError> {
    let bad = || HandshakeError::Malformed("auth");
    let (client_nonce, rest) = payload.split_first_chunk::<NONCE_BYTES>().ok_or_else(bad)?;
    let (proof, rest) = rest.split_at_checked(MAC_BYTES).ok_or_else(bad)?;
    let (layout, node_id) = split_layout_and_id(rest).ok_or_else(bad)?;
    Ok(AuthMsg {
        client_nonce: *client_nonce,
        proof,
        layout,
        node_id,
    })
}

pub(crate) fn welcome(proof: &[u8; MAC_BYTES], layout: &ClusterLayout, node_id: &NodeId) -> Frame {
    let mut b = BytesMut::with_capacity(
        MAC_BYTES + LAYOUT_LEN_BYTES + layout.as_str().len() + node_id.as_str().len(),
    );
    b.put_slice(proof);
    put_layout_and_id(&mut b, layout, node_id);
    Frame::new(FrameKind::Welcome, 0, 0, b.freeze())
}

pub(crate) fn parse_welcome(payload: &[u8]) -> Result<WelcomeMsg<'_>, HandshakeError> {
    let bad = || HandshakeError::Malformed("welcome");
    let (proof, rest) = payload.split_at_checked(MAC_BYTES).ok_or_else(bad)?;
    let (layout, node_id) = split_layout_and_id(rest).ok_or_else(bad)?;
    Ok(WelcomeMsg {
        proof,
        layout,
        node_id,
    })
}

pub(crate) fn refused(code: u8, reason: &str) -> Frame {
    let mut cut = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut b = BytesMut::with_capacity(1 + cut);
    b.put_u8(code);
    b.put_slice(&reason.as_bytes()[..cut]);
    Frame::new(FrameKind::Refused, 0, 0, b.freeze())
}

pub(crate) fn parse_refused(payload: &[u8]) -> HandshakeError {
    let code = payload.first().copied().unwrap_or(0);
    let reason = String::from_utf8_lossy(payload.get(1..).unwrap_or_default()).into_owned();
    HandshakeError::Refused { code, reason }
}

/// What the acceptor tells a member whose layout differs: both layouts, both node ids.
pub(crate) fn settings_reason(
    me: &NodeId,
    ours: &ClusterLayout,
    peer: &NodeId,
    theirs: &ClusterLayout,
) -> String {
    format!("cluster settings differ: node {me} has {ours}, you ({peer}) have {theirs}")
}

fn node_id(raw: &[u8]) -> Result<NodeId, HandshakeError> {
    let s = std::str::from_utf8(raw).map_err(|_| HandshakeError::BadNodeId)?;
    NodeId::new(s).map_err(|_| HandshakeError::BadNodeId)
}

fn layout(raw: &[u8]) -> Result<ClusterLayout, HandshakeError> {
    ClusterLayout::from_wire(raw).ok_or(HandshakeError::BadLayout)
}

// ---- the two sides (IO) ----

/// Runs the acceptor's side; returns the authenticated dialer's id. The caller bounds it with a
/// timeout. Every refusal is told to the dialer (`Refused`) before we close, so its operator sees
/// "unauthorized", "cluster settings differ: ..." or "protocol" rather than a bare disconnect;
/// nothing about our state is revealed before the dialer's proof checks out.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    identity: &PeerIdentity,
    stats: &PeerStats,
) -> Result<NodeId, HandshakeError> {
    let max = HANDSHAKE_MAX_FRAME_BYTES;
    // Best effort: the dialer may already be gone.
    async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(
        reader: &mut FrameReader<S>,
        stats: &PeerStats,
        code: u8,
        reason: &str,
    ) {
        let _ = write_frame(
            reader.get_mut(),
            &refused(code, reason),
            HANDSHAKE_MAX_FRAME_BYTES,
            stats,
        )
        .await;
    }
    let server_nonce = fresh_nonce()?;
    write_frame(reader.get_mut(), &hello(&server_nonce), max, stats).await?;
    let f = reader.next().await?.ok_or(HandshakeError::Closed)?;
    if f.kind != FrameKind::Auth {
        refuse(reader, stats, REFUSED_PROTOCOL, "expected an Auth message").await;
        return Err(HandshakeError::Unexpected(f.kind));
    }
    let msg = match parse_auth(&f.payload) {
        Ok(m) => m,
        Err(e) => {
            let why = "malformed Auth message (this node speaks the ringkv-peer-v2 handshake)";
            refuse(reader, stats, REFUSED_PROTOCOL, why).await;
            return Err(e);
        }
    };
    if !verify_dialer(
        &identity.secret,
        &server_nonce,
        &msg.client_nonce,
        msg.layout,
        msg.node_id,
        msg.proof,
    ) {
        let why = "unauthorized: wrong cluster secret";
        refuse(reader, stats, REFUSED_UNAUTHORIZED, why).await;
        return Err(HandshakeError::BadProof);
    }
    let peer = match node_id(msg.node_id) {
        Ok(id) => id,
        Err(e) => {
            refuse(reader, stats, REFUSED_PROTOCOL, "invalid node id").await;
            return Err(e);
        }
    };
    let theirs = match layout(msg.layout) {
        Ok(l) => l,
        Err(e) => {
            refuse(reader, stats, REFUSED_PROTOCOL, "invalid cluster layout").await;
            return Err(e);
        }
    };
    if theirs != identity.layout {
        let me = &identity.node_id;
        let why = settings_reason(me, &identity.layout, &peer, &theirs);
        refuse(reader, stats, REFUSED_SETTINGS, &why).await;
        return Err(HandshakeError::SettingsMismatch {
            me: me.clone(),
            peer,
            ours: identity.layout.clone(),
            theirs,
        });
    }
    let my_id = identity.node_id.as_str().as_bytes();
    let my_layout = identity.layout.as_str().as_bytes();
    let client_nonce = msg.client_nonce;
    let proof = acceptor_proof(
        &identity.secret,
        &client_nonce,
        &server_nonce,
        my_layout,
        my_id,
    );
    let welcome = welcome(&proof, &identity.layout, &identity.node_id);
    write_frame(reader.get_mut(), &welcome, max, stats).await?;
    Ok(peer)
}

/// Runs the dialer's side; returns the authenticated acceptor's id. The acceptor compares the
/// layouts first; the dialer checks the acceptor's too, so neither side relies on the other.
pub(crate) async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    reader: &mut FrameReader<S>,
    identity: &PeerIdentity,
    stats: &PeerStats,
) -> Result<NodeId, HandshakeError> {
    let max = HANDSHAKE_MAX_FRAME_BYTES;
    let f = reader.next().await?.ok_or(HandshakeError::Closed)?;
    let server_nonce = match f.kind {
        FrameKind::Hello => parse_hello(&f.payload)?,
        FrameKind::Refused => return Err(parse_refused(&f.payload)),
        other => return Err(HandshakeError::Unexpected(other)),
    };
    let client_nonce = fresh_nonce()?;
    let my_id = identity.node_id.as_str().as_bytes();
    let my_layout = identity.layout.as_str().as_bytes();
    let proof = dialer_proof(
        &identity.secret,
        &server_nonce,
        &client_nonce,
        my_layout,
        my_id,
    );
    let auth = auth(&client_nonce, &proof, &identity.layout, &identity.node_id);
    write_frame(reader.get_mut(), &auth, max, stats).await?;
    let f = reader.next().await?.ok_or(HandshakeError::Closed)?;
    let msg = match f.kind {
        FrameKind::Welcome => parse_welcome(&f.payload)?,
        FrameKind::Refused => return Err(parse_refused(&f.payload)),
        other => return Err(HandshakeError::Unexpected(other)),
    };
    if !verify_acceptor(
        &identity.secret,
        &client_nonce,
        &server_nonce,
        msg.layout,
        msg.node_id,
        msg.proof,
    ) {
        return Err(HandshakeError::BadProof);
    }
    let peer = node_id(msg.node_id)?;
    let theirs = layout(msg.layout)?;
    if theirs != identity.layout {
        return Err(HandshakeError::SettingsMismatch {
            me: identity.node_id.clone(),
            peer,
            ours: identity.layout.clone(),
            theirs,
        });
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s)
    }

    fn layout_of(text: &str) -> ClusterLayout {
        ClusterLayout::from_wire(text.as_bytes()).unwrap()
    }

    const L1: &str = "ring=1;partitions=1024;n=3;replication=";
    const L2: &str = "ring=1;partitions=1024;n=5;replication=dc1=3,dc2=2";

    fn hex(mac: [u8; MAC_BYTES]) -> String {
        mac.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn proofs_depend_on_everything_they_cover() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let s = secret("s3cret-s3cret-s3cret");
        let l = L1.as_bytes();
        let p = dialer_proof(&s, &a, &b, l, b"n1");
        assert!(verify_dialer(&s, &a, &b, l, b"n1", &p));
        assert!(!verify_dialer(&secret("other"), &a, &b, l, b"n1", &p));
        assert!(
            !verify_dialer(&s, &b, &a, l, b"n1", &p),
            "nonce order matters"
        );
        assert!(
            !verify_dialer(&s, &a, &b, l, b"n2", &p),
            "node id is covered"
        );
        assert!(
            !verify_dialer(&s, &a, &b, L2.as_bytes(), b"n1", &p),
            "layout is covered"
        );
        assert!(
            !verify_dialer(&s, &a, &b, b"", b"n1", &p),
            "layout is covered"
        );
        // Moving bytes between the layout and the node id changes the proof (length prefix).
        let q = dialer_proof(&s, &a, &b, b"ab", b"c");
        assert!(!verify_dialer(&s, &a, &b, b"a", b"bc", &q));
        assert!(
            !verify_dialer(&s, &a, &b, l, b"n1", &p[..31]),
            "truncated proof"
        );
        // A dialer's proof is not an acceptor's proof for the same inputs (no reflection).
        assert!(!verify_acceptor(&s, &a, &b, l, b"n1", &p));
        assert!(!verify_acceptor(&s, &b, &a, l, b"n1", &p));
        let pa = acceptor_proof(&s, &b, &a, l, b"n1");
        assert!(verify_acceptor(&s, &b, &a, l, b"n1", &pa));
        assert!(!verify_acceptor(&s, &b, &a, L2.as_bytes(), b"n1", &pa));
        // Known answers, computed independently with Python's hmac module:
        //   L = b"ring=1;partitions=1024;n=3;replication="
        //   hmac.new(b"k", b"ringkv-peer-v2/dialer" + bytes(64)
        //            + len(L).to_bytes(2, "big") + L + b"n1", hashlib.sha256).hexdigest()
        // (and the same with "ringkv-peer-v2/acceptor"). They pin the construction so a
        // refactor cannot silently change the wire.
        let z = [0u8; 32];
        assert_eq!(
            hex(dialer_proof(&secret("k"), &z, &z, l, b"n1")),
            "9fc5cc97764e3e7a68ed119d46400fefcbd7b7924a26517c7ee2a912e38ddf90"
        );
        assert_eq!(
            hex(acceptor_proof(&secret("k"), &z, &z, l, b"n1")),
            "10a4f720c4dfbec7a555e5d725735c181006d09ef6b75c82f26f7da5b657d4ea"
        );
    }

    #[test]
    fn message_layouts_parse_and_refuse_garbage() {
        let id = NodeId::new("n1").unwrap();
        let l = layout_of(L2);
        let f = auth(&[7; 32], &[9; 32], &l, &id);
        assert_eq!(
            parse_auth(&f.payload).unwrap(),
            AuthMsg {
                client_nonce: [7; 32],
                proof: &[9u8; 32][..],
                layout: L2.as_bytes(),
                node_id: &b"n1"[..],
            }
        );
        // An empty layout (none set) is still length-prefixed.
        let f = auth(&[7; 32], &[9; 32], &ClusterLayout::default(), &id);
        assert_eq!(f.payload.len(), 32 + 32 + 2 + 2);
        assert_eq!(parse_auth(&f.payload).unwrap().layout, b"");
        assert!(parse_auth(&[0; 64]).is_err(), "no layout, no node id");
        assert!(parse_auth(&[0; 66]).is_err(), "no node id");
        assert!(parse_auth(b"GET / HTTP/1.1").is_err());
        // The length prefix points past the end, or beyond the layout bound.
        let mut long = vec![0u8; 64];
        long.extend_from_slice(&[0, 10]);
        long.extend_from_slice(b"short");
        assert!(parse_auth(&long).is_err());
        let mut huge = vec![0u8; 64];
        huge.extend_from_slice(&[1, 1]);
        huge.extend_from_slice(&[b'a'; 300]);
        assert!(parse_auth(&huge).is_err(), "layout over MAX_BYTES");
        // A v1 Auth (no layout) does not parse as v2.
        let mut v1 = vec![0u8; 64];
        v1.extend_from_slice(b"n1");
        assert!(parse_auth(&v1).is_err());
        assert!(parse_hello(&[0; 31]).is_err());
        assert!(parse_hello(&[0; 33]).is_err());
        assert_eq!(parse_hello(&[5; 32]).unwrap(), [5; 32]);
        let w = welcome(&[1; 32], &l, &id);
        assert_eq!(
            parse_welcome(&w.payload).unwrap(),
            WelcomeMsg {
                proof: &[1u8; 32][..],
                layout: L2.as_bytes(),
                node_id: &b"n1"[..],
            }
        );
        assert!(parse_welcome(&[0; 32]).is_err());
        assert!(parse_welcome(&[0; 34]).is_err());
        assert!(node_id(b"bad id").is_err());
        assert!(node_id(&[0xff, 0xfe]).is_err());
        assert!(layout(&[0xff, 0xfe]).is_err());
        assert_eq!(layout(L1.as_bytes()).unwrap().as_str(), L1);
        // The largest messages fit in a handshake frame.
        let max_id = NodeId::new("x".repeat(ringkv_core::node_id::MAX_NODE_ID_LEN)).unwrap();
        let max_layout = layout_of(&"y".repeat(ClusterLayout::MAX_BYTES));
        let big = auth(&[0; 32], &[0; 32], &max_layout, &max_id);
        assert!(big.encode(HANDSHAKE_MAX_FRAME_BYTES).is_ok());
        let why = settings_reason(&max_id, &max_layout, &max_id, &max_layout);
        let r = refused(REFUSED_SETTINGS, &why);
        assert!(r.encode(HANDSHAKE_MAX_FRAME_BYTES).is_ok());
        assert_eq!(r.payload.len(), 1 + why.len(), "not truncated");
        match parse_refused(&refused(REFUSED_UNAUTHORIZED, "no").payload) {
            e @ HandshakeError::Refused { .. } => assert!(e.is_auth() && !e.is_settings()),
            other => panic!("{other:?}"),
        }
        match parse_refused(&r.payload) {
            e @ HandshakeError::Refused { .. } => assert!(e.is_settings() && !e.is_auth()),
            other => panic!("{other:?}"),
        }
        assert!(!parse_refused(&[]).is_auth());
        // A reason is cut on a character boundary.
        let r = refused(REFUSED_PROTOCOL, &"é".repeat(MAX_REASON_BYTES));
        assert!(std::str::from_utf8(&r.payload[1..]).is_ok());
    }

    // ---- both sides over an in-memory stream ----

    fn identity(node: &str, layout: &str) -> PeerIdentity {
        PeerIdentity::new(NodeId::new(node).unwrap(), secret("test-secret-0123456789"))
            .with_layout(layout_of(layout))
    }

    type Side = FrameReader<tokio::io::DuplexStream>;

    fn pipe() -> (Side, Side) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let r = |s| FrameReader::new(s, HANDSHAKE_MAX_FRAME_BYTES, Arc::default());
        (r(a), r(b))
    }

    async fn shake(
        acceptor: &PeerIdentity,
        dialer: &PeerIdentity,
    ) -> (
        Result<NodeId, HandshakeError>,
        Result<NodeId, HandshakeError>,
    ) {
        let (mut a, mut d) = pipe();
        let stats = PeerStats::default();
        tokio::join!(
            accept(&mut a, acceptor, &stats),
            dial(&mut d, dialer, &stats)
        )
    }

    #[tokio::test]
    async fn matching_layouts_are_accepted() {
        let (a, d) = shake(&identity("n1", L2), &identity("n2", L2)).await;
        assert_eq!(a.unwrap().as_str(), "n2");
        assert_eq!(d.unwrap().as_str(), "n1");
    }

    #[tokio::test]
    async fn different_layouts_are_refused_naming_both() {
        let (a, d) = shake(&identity("n1", L2), &identity("n2", L1)).await;
        let a = a.unwrap_err();
        assert!(a.is_settings(), "{a:?}");
        assert_eq!(
            a.to_string(),
            format!("cluster settings differ: this node (n1) has {L2}, peer n2 has {L1}")
        );
        let d = d.unwrap_err();
        match &d {
            HandshakeError::Refused { code, reason } => {
                assert_eq!(*code, REFUSED_SETTINGS);
                assert_eq!(
                    reason,
                    &format!("cluster settings differ: node n1 has {L2}, you (n2) have {L1}")
                );
            }
            other => panic!("{other:?}"),
        }
        let e = d.into_peer_error("10.0.0.1:7381");
        assert!(matches!(e, PeerError::SettingsMismatch(_)), "{e:?}");
        assert!(!e.is_retryable() && !e.maybe_delivered());
        let msg = e.to_string();
        assert!(msg.contains(L1) && msg.contains(L2) && msg.contains("10.0.0.1:7381"));
        // A node with no layout set is refused too (fail closed, not "anything goes").
        let (a, _) = shake(&identity("n1", L1), &identity("n2", "")).await;
        assert!(a.unwrap_err().to_string().contains("<no layout>"));
    }

    /// The acceptor refuses first; if it did not (a bug, or a peer that skips the check), the
    /// dialer still notices the acceptor's layout differs.
    #[tokio::test]
    async fn the_dialer_checks_the_acceptors_layout_too() {
        let (mut a, mut d) = pipe();
        let stats = PeerStats::default();
        let lax = identity("n1", L2);
        let acceptor = async {
            let server_nonce = [4u8; 32];
            write_frame(a.get_mut(), &hello(&server_nonce), 1024, &stats)
                .await
                .unwrap();
            let f = a.next().await.unwrap().unwrap();
            let msg = parse_auth(&f.payload).unwrap();
            let proof = acceptor_proof(
                &lax.secret,
                &msg.client_nonce,
                &server_nonce,
                L2.as_bytes(),
                b"n1",
            );
            let w = welcome(&proof, &lax.layout, &lax.node_id);
            write_frame(a.get_mut(), &w, 1024, &stats).await.unwrap();
        };
        let me = identity("n2", L1);
        let (_, d) = tokio::join!(acceptor, dial(&mut d, &me, &stats));
        let d = d.unwrap_err();
        assert!(d.is_settings(), "{d:?}");
        assert_eq!(
            d.to_string(),
            format!("cluster settings differ: this node (n2) has {L1}, peer n1 has {L2}")
        );
    }

    #[tokio::test]
    async fn garbage_auth_is_refused_as_protocol() {
        let me = identity("n1", L1);
        for payload in [
            &b"GET / HTTP/1.1"[..],
            &[0u8; 64][..],
            &[0u8; 66][..],
            &[[0u8; 64].as_slice(), &[0xff, 0xff], b"n2"].concat()[..],
        ] {
            let (mut a, mut d) = pipe();
            let stats = PeerStats::default();
            let garbage = async {
                let hello = d.next().await.unwrap().unwrap();
                assert_eq!(hello.kind, FrameKind::Hello);
                let f = Frame::new(FrameKind::Auth, 0, 0, Bytes::copy_from_slice(payload));
                write_frame(d.get_mut(), &f, 1024, &stats).await.unwrap();
                d.next().await.unwrap().unwrap()
            };
            let (a, answer) = tokio::join!(accept(&mut a, &me, &stats), garbage);
            assert!(matches!(a, Err(HandshakeError::Malformed("auth"))), "{a:?}");
            assert_eq!(answer.kind, FrameKind::Refused);
            match parse_refused(&answer.payload) {
                HandshakeError::Refused { code, reason } => {
                    assert_eq!(code, REFUSED_PROTOCOL);
                    assert!(reason.contains("malformed"), "{reason}");
                    assert!(!reason.contains(L1), "a stranger learns nothing: {reason}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// A properly authenticated dialer whose layout is not UTF-8: refused as protocol garbage.
    #[tokio::test]
    async fn invalid_layout_text_is_refused_as_protocol() {
        let me = identity("n1", L1);
        let (mut a, mut d) = pipe();
        let stats = PeerStats::default();
        let dialer = async {
            let hello = d.next().await.unwrap().unwrap();
            let server_nonce = parse_hello(&hello.payload).unwrap();
            let client_nonce = [8u8; 32];
            let bad = [0xffu8, 0xfe];
            let proof = dialer_proof(&me.secret, &server_nonce, &client_nonce, &bad, b"n2");
            let mut b = BytesMut::new();
            b.put_slice(&client_nonce);
            b.put_slice(&proof);
            b.put_slice(&[0, 2]);
            b.put_slice(&bad);
            b.put_slice(b"n2");
            let f = Frame::new(FrameKind::Auth, 0, 0, b.freeze());
            write_frame(d.get_mut(), &f, 1024, &stats).await.unwrap();
            d.next().await.unwrap().unwrap()
        };
        let (a, answer) = tokio::join!(accept(&mut a, &me, &stats), dialer);
        assert!(matches!(a, Err(HandshakeError::BadLayout)), "{a:?}");
        assert!(matches!(
            parse_refused(&answer.payload),
            HandshakeError::Refused {
                code: REFUSED_PROTOCOL,
                ..
            }
        ));
    }
}
