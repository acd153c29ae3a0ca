//! How the client opens a byte stream to a peer address. Behind a trait so a deterministic
//! simulator (turmoil) can hand in its own streams; everything above it is generic over
//! `AsyncRead + AsyncWrite`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream the transport can run over.
pub trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> PeerStream for T {}

/// A stream of any concrete type.
pub type BoxStream = Box<dyn PeerStream>;

pub type ConnectFuture<'a> = Pin<Box<dyn Future<Output = io::Result<BoxStream>> + Send + 'a>>;

/// Opens streams to peer addresses (`host:port`).
pub trait Connector: Send + Sync + 'static {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a>;
}

/// The default: tokio TCP, with Nagle off (frames are small and latency-bound; the writer already
/// coalesces what is queued together).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, addr: &'a str) -> ConnectFuture<'a> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}
