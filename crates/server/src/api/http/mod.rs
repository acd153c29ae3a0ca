//! The HTTP/JSON API on port 7380: the full data model (siblings, causal contexts, per-request
//! consistency) for curl, the CLI and client libraries, plus what operators and orchestrators
//! read (`/healthz`, `/metrics`, `/v1/cluster`, `/v1/ring`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/kv/{key}?r=` | `200` raw value, `300` siblings (JSON), `404`; context in `X-Ringkv-Context` |
//! | `PUT /v1/kv/{key}?w=` | `200` `{context, siblings, acked_by, w}`; `X-Ringkv-Acked-By` |
//! | `DELETE /v1/kv/{key}?w=` | `200` as PUT (a tombstone was written), `404` nothing to delete |
//! | `GET /v1/cluster`, `GET /v1/ring` | membership and partition ownership (JSON) |
//! | `GET /healthz` | `200`, or `503` while shutting down or with poisoned storage |
//! | `GET /metrics` | Prometheus text |
//! | `GET /ui` | the dashboard (`ui.rs`, `ui.html`): polls `/v1/cluster`, `/v1/ring`, `/metrics` |
//!
//! Module map: `kv` (the key-value routes), `key_path` (keys in URIs, `?r=`/`?w=`), `cluster`
//! (the operator routes), `errors` (every refusal and the one `NodeError` -> status table),
//! `serve` (the connection loop and its defences against slow or hostile clients),
//! `write_stall` (dropping clients that stop reading responses).
//!
//! Every request passes one middleware that counts it (`ringkv_requests_total{api="Http"}`), enforces
//! the password on `/v1/*` when one is configured (`/healthz` and `/metrics` stay open for probes
//! and scrapers), and counts refusals by kind (`ringkv_client_errors`).
//!
//! IMPLEMENTATION CAVEATS
//! - HTTP/1.1 only (no h2, no TLS): curl, the CLI and the dashboard need nothing more, and h1's
//!   limits (header timeout, header size) are the ones hyper enforces. Put a proxy in front for TLS.
//! - A request with both `Transfer-Encoding: chunked` and `Content-Length` is framed by the
//!   chunked encoding and the connection is closed after the answer (hyper, per RFC 9112 §6.1),
//!   so nothing can be smuggled behind it; hyper does not expose the dropped header, so such a
//!   request is not turned into a `400`. Differing duplicate lengths and a final encoding other
//!   than chunked are `400` and close.
//! - The `w` in a write's answer mirrors the node's rule for how many acknowledgements a level
//!   needs (`Node` does not expose it yet); with one member it is always 1.
//! - `/v1/cluster` reports the configured listener addresses; with port 0 the bound port is only
//!   known to the process that bound it.

mod cluster;
mod errors;
mod key_path;
mod kv;
mod serve;
#[cfg(test)]
mod socket_tests;
#[cfg(test)]
mod tests;
mod ui;
mod write_stall;

pub use kv::{ACKED_BY_HEADER, CONTEXT_HEADER};
pub use serve::{
    serve, serve_with, ServeOptions, BODY_TIMEOUT, HEADER_READ_TIMEOUT, MAX_HEADERS,
    MAX_HEADER_BYTES, WRITE_STALL_TIMEOUT,
};

use crate::metrics::{Api, ApiLabels};
use crate::Node;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use errors::{ApiError, ErrorKind};

/// Not an API: the key-path decoder (a refusal as the status a client gets), for the fuzz
/// targets and `tests/decoders_never_panic.rs`.
#[doc(hidden)]
pub fn decode_key_path(path: &str, limits: &ringkv_core::Limits) -> Result<Vec<u8>, u16> {
    key_path::key_from_path(path, limits).map_err(|e| e.into_response().status().as_u16())
}

/// The HTTP API's routes over `node`. [`serve()`] runs it on a socket; tests call it in-process.
pub fn router(node: Node) -> Router {
    let kv = get(kv::get).put(kv::put).delete(kv::delete);
    Router::new()
        // The key is taken from the raw path by the handlers, never from axum's `Path`
        // extractor, which decodes to UTF-8 and would refuse binary keys. `/v1/kv/` and
        // `/v1/kv` reach the same handlers, which refuse the empty key like RESP does.
        .route("/v1/kv/{*key}", kv.clone())
        .route("/v1/kv/", kv.clone())
        .route("/v1/kv", kv)
        .route("/v1/cluster", get(cluster::cluster))
        .route("/v1/ring", get(cluster::ring))
        .route("/v1/admin/leave", axum::routing::post(cluster::leave))
        .route(
            "/v1/admin/remove/{id}",
            axum::routing::post(cluster::remove),
        )
        .route("/healthz", get(cluster::healthz))
        .route("/metrics", get(cluster::metrics))
        .route("/ui", get(ui::page))
        .route("/ui/", get(ui::page))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(node.clone(), gate))
        .with_state(node)
}

/// Counts the request, checks the password on `/v1/*`, and counts the refusal, if any.
async fn gate(State(node): State<Node>, req: Request, next: Next) -> Response {
    let metrics = node.metrics();
    metrics
        .requests
        .get_or_create(&ApiLabels { api: Api::Http })
        .inc();
    let path = req.uri().path();
    let needs_auth = path == "/v1" || path.starts_with("/v1/");
    let response = match &node.config().password {
        Some(password) if needs_auth && !authorized(&req, password) => {
            ApiError::Unauthorized.into_response()
        }
        _ => next.run(req).await,
    };
    if let Some(ErrorKind(kind)) = response.extensions().get::<ErrorKind>() {
        metrics.client_error(Api::Http, kind);
    }
    response
}

/// `Authorization: Bearer <password>`, compared in constant time for equal lengths.
fn authorized(req: &Request, password: &str) -> bool {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(token) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    let expected = password.as_bytes();
    token.len() == expected.len()
        && token
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
