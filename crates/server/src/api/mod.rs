//! The client APIs. Both are thin: they parse a request, call [`crate::Node`], and write the
//! answer; neither holds state of its own beyond a connection.
//!
//! - [`resp`]: the Redis protocol on port 7379, for redis-cli, redis-benchmark and client libraries.
//! - [`http`]: HTTP/JSON on port 7380, exposing the full model (siblings, contexts, consistency).
//! - [`limit`]: the connection cap both listeners share the shape of.

pub mod http;
pub mod limit;
pub mod resp;
