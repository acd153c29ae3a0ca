//! Every refusal the HTTP API sends, and the one mapping from [`NodeError`] to a status code.
//!
//! An error answers `{"error": "<message>"}` (plus `needed`/`got` when too few replicas answered)
//! with `Content-Type: application/json`. The response carries its metrics `kind` as a response
//! extension; the request middleware in [`super`] counts it, so no handler can forget to.

use crate::NodeError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use ringkv_core::LimitError;
use ringkv_storage::StorageError;
use serde_json::json;

/// The `kind` label a refused request is counted under (one of [`crate::metrics::ERROR_KINDS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorKind(pub &'static str);

/// Why a request was refused.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The node refused it (limits, context, consistency, siblings, replicas, storage).
    Node(NodeError),
    /// The key in the path is not valid percent-encoding.
    BadKey(String),
    /// A query parameter or header other than the context is malformed or unknown.
    BadArgument(String),
    /// The request body could not be read (the client went away, or sent a broken chunk).
    BadBody(String),
    /// The body did not arrive before the body deadline (a dribbled upload).
    BodyTimeout,
    /// `/v1/*` without the right `Authorization: Bearer` password.
    Unauthorized,
    /// No such route.
    NoRoute,
    /// The route exists, the method does not (axum adds the `Allow` header).
    MethodNotAllowed,
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        ApiError::Node(e)
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        ApiError::Node(NodeError::Limit(e))
    }
}

/// The one place a node error becomes an HTTP status. Every API maps the same error enum; this is
/// HTTP's half of that table (RESP's is `-ERR ...`).
pub(crate) fn node_error_status(err: &NodeError) -> StatusCode {
    match err {
        NodeError::Limit(LimitError::EmptyKey { .. }) => StatusCode::BAD_REQUEST,
        // The key travels in the URI, so an over-long key is an over-long URI.
        NodeError::Limit(LimitError::KeyTooLarge { .. }) => StatusCode::URI_TOO_LONG,
        NodeError::Limit(LimitError::ValueTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        NodeError::InvalidContext(_) | NodeError::Consistency(_) | NodeError::Rejected(_) => {
            StatusCode::BAD_REQUEST
        }
        // The key's state conflicts with the write: resolve the siblings first.
        NodeError::TooManySiblings { .. } => StatusCode::CONFLICT,
        NodeError::Quorum(_) | NodeError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        NodeError::Storage(StorageError::DiskFull { .. }) => StatusCode::INSUFFICIENT_STORAGE,
        // The store is closed only while the node stops: like ShuttingDown, retry elsewhere.
        NodeError::Storage(StorageError::Closed) => StatusCode::SERVICE_UNAVAILABLE,
        NodeError::Storage(_) | NodeError::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Node(e) => node_error_status(e),
            ApiError::BadKey(_) | ApiError::BadArgument(_) | ApiError::BadBody(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// The metrics label, shared with RESP where the meaning is the same.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApiError::Node(e) => e.kind(),
            ApiError::BadKey(_) | ApiError::BadArgument(_) => "argument",
            ApiError::BadBody(_) | ApiError::BodyTimeout => "protocol",
            ApiError::Unauthorized => "auth",
            ApiError::NoRoute | ApiError::MethodNotAllowed => "unknown_command",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Node(e) => e.to_string(),
            ApiError::BadKey(m) | ApiError::BadArgument(m) | ApiError::BadBody(m) => m.clone(),
            ApiError::BodyTimeout => "request body not received in time".into(),
            ApiError::Unauthorized => "unauthorized: send Authorization: Bearer <password>".into(),
            ApiError::NoRoute => "no such route".into(),
            ApiError::MethodNotAllowed => "method not allowed".into(),
        }
    }

    /// True when the connection should not be reused: the request body may be left unread.
    fn closes_connection(&self) -> bool {
        matches!(
            self,
            ApiError::BodyTimeout
                | ApiError::BadBody(_)
                | ApiError::Node(NodeError::Limit(LimitError::ValueTooLarge { .. }))
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut body = json!({ "error": self.message() });
        if let Some((needed, got, dc)) = match &self {
            ApiError::Node(e) => e.quorum(),
            _ => None,
        } {
            body["needed"] = json!(needed);
            body["got"] = json!(got);
            if let Some(dc) = dc {
                body["dc"] = json!(dc);
            }
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ringkv\""),
                );
            }
            ApiError::Node(e) if e.is_retryable() => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.extensions_mut().insert(ErrorKind(self.kind()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{ConsistencyError, ContextError};

    #[test]
    fn every_node_error_has_its_status() {
        let cases: Vec<(NodeError, StatusCode)> = vec![
            (
                LimitError::EmptyKey { max: 1 }.into(),
                StatusCode::BAD_REQUEST,
            ),
            (
                LimitError::KeyTooLarge { len: 2, max: 1 }.into(),
                StatusCode::URI_TOO_LONG,
            ),
            (
                LimitError::ValueTooLarge { len: 2, max: 1 }.into(),
                StatusCode::PAYLOAD_TOO_LARGE,
            ),
            (ContextError::NotBase64.into(), StatusCode::BAD_REQUEST),
            (ConsistencyError::Zero.into(), StatusCode::BAD_REQUEST),
            (
                NodeError::TooManySiblings {
                    siblings: 3,
                    max: 2,
                },
                StatusCode::CONFLICT,
            ),
            (
                NodeError::unavailable(2, 1),
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (NodeError::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE),
            (
                StorageError::DiskFull {
                    free_bytes: 0,
                    needed_bytes: 1,
                }
                .into(),
                StatusCode::INSUFFICIENT_STORAGE,
            ),
            (
                StorageError::Poisoned.into(),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (StorageError::Closed.into(), StatusCode::SERVICE_UNAVAILABLE),
        ];
        for (err, status) in cases {
            assert_eq!(node_error_status(&err), status, "{err}");
        }
    }

    #[tokio::test]
    async fn unavailable_says_how_many_answered() {
        let response = ApiError::Node(NodeError::unavailable(2, 1)).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.extensions().get::<ErrorKind>(),
            Some(&ErrorKind("unavailable"))
        );
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["needed"], 2);
        assert_eq!(json["got"], 1);
        assert!(json["error"].as_str().unwrap().contains("needed 2, got 1"));
    }
}
