//! RESP API (placeholder until the RESP module lands).

use crate::Node;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves RESP clients on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    node: Node,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = (listener, node);
    shutdown.cancelled().await;
    Ok(())
}
