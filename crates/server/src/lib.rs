//! ringkv's IO shell: everything that touches sockets, disks and time.
//!
//! - [`config`]: the typed configuration (file, environment, flags).
//! - [`node`]: what every client API calls: a cluster of one, or the coordinator's entry.
//! - [`cluster`]: membership, ring and the coordinator shell over the peer transport.
//! - [`replica`]: this node's sibling sets in storage, and their read-modify-write.
//! - [`row_cache`]: decoded sibling sets in front of the LSM.
//! - [`api`]: the client protocols, RESP ([`api::resp`]) and HTTP/JSON ([`api::http`]).
//! - [`metrics`]: the node's Prometheus registry, also read by `INFO`.
//! - [`peer`]: the authenticated, multiplexed transport between cluster members (port 7381).
//! - [`server`]: starts the listeners and runs the node until a signal stops it.

pub mod api;
pub mod cluster;
pub mod config;
pub mod error;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod replica;
pub mod row_cache;
pub mod server;

pub use config::{Config, DurabilityMode, Overrides};
pub use error::NodeError;
pub use node::{Node, NodeInfo, ReadOptions, ReadResult, WriteOptions, WriteResult};
pub use replica::WriteOp;
