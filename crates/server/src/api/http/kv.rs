//! `GET|PUT|DELETE /v1/kv/{key}`: the full data model over HTTP.
//!
//! - `GET` (`?r=`): one live version -> `200` with the raw value and `X-Ringkv-Context`; more than
//!   one version with at least one value (tombstones count as versions: a delete concurrent with
//!   a write is a conflict the client should see) -> `300` with the siblings as JSON; no live
//!   value -> `404`, still with the context, so a client can write over a tombstone causally.
//! - `PUT` (`?w=`, optional `X-Ringkv-Context`): the body is the value. A write without a context
//!   is blind: it supersedes what this node holds now (DESIGN.md, Data model).
//! - `DELETE` (`?w=`, optional context): writes a tombstone; `404` when there was nothing to
//!   delete and no context was sent.
//!
//! Writes answer which replicas acknowledged them, in `X-Ringkv-Acked-By` and in the JSON, and
//! how many acknowledgements the write required (`w`).
//!
//! A value is refused with `413` before any of it is read when `Content-Length` (or the body's
//! size hint) already says it is too large; otherwise the body is read with a running limit, so
//! a chunked upload can never make the node buffer more than `max_value_bytes + one chunk`.

use super::errors::ApiError;
use super::key_path::{key_from_path, level_from_query};
use crate::{Node, NodeError, ReadOptions, WriteOptions, WriteResult};
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use ringkv_core::coordinator::Need;
use ringkv_core::{Consistency, Context, ContextError, LimitError};
use serde_json::json;

/// Request and response header carrying the opaque causal context.
pub const CONTEXT_HEADER: &str = "x-ringkv-context";
/// Response header listing the node ids that acknowledged a write, comma-separated.
pub const ACKED_BY_HEADER: &str = "x-ringkv-acked-by";

pub(crate) async fn get(State(node): State<Node>, req: Request) -> Result<Response, ApiError> {
    let (parts, _body) = req.into_parts();
    let key = key_from_path(parts.uri.path(), &node.limits())?;
    let r = level_from_query(parts.uri.query(), "r")?;
    let read = node.get(&key, ReadOptions { r }).await?;
    let context = read.context().encode();
    let versions = read.set.versions();
    if read.is_missing() {
        let mut response = (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "key not found" })),
        )
            .into_response();
        set_context(response.headers_mut(), &context);
        return Ok(response);
    }
    if versions.len() == 1 {
        let value = versions[0].value.clone().unwrap_or_default();
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            value,
        )
            .into_response();
        set_context(response.headers_mut(), &context);
        return Ok(response);
    }
    let siblings: Vec<_> = versions
        .iter()
        .map(|v| {
            json!({
                "value": v.value.as_ref().map(|b| STANDARD.encode(b)),
                "deleted": v.is_tombstone(),
                "timestamp_ms": v.timestamp_ms,
            })
        })
        .collect();
    let mut response = (
        StatusCode::MULTIPLE_CHOICES,
        axum::Json(json!({ "context": context, "siblings": siblings })),
    )
        .into_response();
    set_context(response.headers_mut(), &context);
    Ok(response)
}

pub(crate) async fn put(State(node): State<Node>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let WriteArgs { key, context, w } = write_args(&node, &parts)?;
    let value = read_value(&parts.headers, body, node.limits().max_value_bytes).await?;
    let written = node
        .put(Bytes::from(key), value, context, WriteOptions { w })
        .await?;
    Ok(write_response(&node, w, &written))
}

pub(crate) async fn delete(State(node): State<Node>, req: Request) -> Result<Response, ApiError> {
    let (parts, _body) = req.into_parts();
    let WriteArgs { key, context, w } = write_args(&node, &parts)?;
    match node
        .delete(Bytes::from(key), context, WriteOptions { w })
        .await?
    {
        Some(written) => Ok(write_response(&node, w, &written)),
        None => Ok((
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "error": "key not found" })),
        )
            .into_response()),
    }
}

/// What a write names besides its value.
struct WriteArgs {
    key: Vec<u8>,
    context: Option<Context>,
    w: Option<Consistency>,
}

/// Key, context and `w` of a write, all checked before the body is read: a bad request is
/// refused without waiting for (or buffering) its value.
fn write_args(node: &Node, parts: &Parts) -> Result<WriteArgs, ApiError> {
    Ok(WriteArgs {
        key: key_from_path(parts.uri.path(), &node.limits())?,
        w: level_from_query(parts.uri.query(), "w")?,
        context: context_from_headers(&parts.headers)?,
    })
}

/// The client's context, if it sent one. More than one context header is refused: which one
/// the client meant is a guess, and a wrong guess supersedes the wrong versions.
pub(crate) fn context_from_headers(headers: &HeaderMap) -> Result<Option<Context>, ApiError> {
    let mut values = headers.get_all(CONTEXT_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadArgument(format!(
            "more than one {CONTEXT_HEADER} header"
        )));
    }
    let text = value
        .to_str()
        .map_err(|_| NodeError::InvalidContext(ContextError::NotBase64))?;
    Ok(Some(Context::decode(text).map_err(NodeError::from)?))
}

fn set_context(headers: &mut HeaderMap, context: &str) {
    // An encoded context is base64url: always a valid header value.
    if let Ok(v) = HeaderValue::from_str(context) {
        headers.insert(CONTEXT_HEADER, v);
    }
}

fn write_response(node: &Node, w: Option<Consistency>, written: &WriteResult) -> Response {
    let context = written.context().encode();
    let acked_by: Vec<&str> = written.acked_by.iter().map(|n| n.as_str()).collect();
    let mut response = (
        StatusCode::OK,
        axum::Json(json!({
            "context": context,
            "siblings": written.set.versions().len(),
            "acked_by": acked_by,
            // The acks it needed: a number, or the data-center level by name.
            "w": match node.required_acks(w) {
                Ok(Need::Count(c)) => json!(c),
                Ok(_) => json!(w.map(|l| l.to_string())),
                Err(_) => json!(1),
            },
        })),
    )
        .into_response();
    let headers = response.headers_mut();
    set_context(headers, &context);
    // Node ids are restricted to header-safe characters.
    if let Ok(v) = HeaderValue::from_str(&acked_by.join(",")) {
        headers.insert(ACKED_BY_HEADER, v);
    }
    response
}

/// Reads a value of at most `max` bytes. Refuses at once when the declared length is already
/// too large; otherwise reads with a running total so a body without a length (chunked) stops
/// at the limit instead of being buffered whole.
async fn read_value(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(0)
        .max(body.size_hint().lower());
    if declared > max as u64 {
        return Err(too_large(declared, max));
    }
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total = 0u64;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let frame = frame.map_err(body_error)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing we use
        };
        total += data.len() as u64;
        if total > max as u64 {
            return Err(too_large(total, max));
        }
        // The common case is one frame: keep it without copying.
        if first.is_none() && rest.is_empty() {
            first = Some(data);
        } else {
            if let Some(f) = first.take() {
                rest.extend_from_slice(&f);
            }
            rest.extend_from_slice(&data);
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

fn too_large(len: u64, max: usize) -> ApiError {
    LimitError::ValueTooLarge {
        len: usize::try_from(len).unwrap_or(usize::MAX),
        max,
    }
    .into()
}

/// A body that failed to arrive: the deadline passed (408), or the client broke the stream.
fn body_error(err: axum::Error) -> ApiError {
    let inner = err.into_inner();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
    while let Some(e) = source {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::BodyTimeout;
        }
        source = e.source();
    }
    ApiError::BadBody(format!("cannot read request body: {inner}"))
}
