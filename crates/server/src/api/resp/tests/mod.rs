//! Socket tests: raw RESP bytes over real TCP against [`super::serve`] on 127.0.0.1:0, with a
//! node over an in-memory store. Each test starts its own server.
//!
//! - [`protocol`]: framing, pipelining, every protocol error (answered, then closed, while other
//!   clients keep being served), RESP2 vs RESP3, inline commands.
//! - [`commands`]: the commands' behaviour and error texts.
//! - [`limits`]: output-buffer flood, key-count caps, connection cap, idle timeout, shutdown.

mod commands;
mod limits;
mod protocol;

use crate::metrics::{Api, ErrorLabels};
use crate::{Config, Node};
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a test waits for any one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

pub struct TestServer {
    pub addr: SocketAddr,
    pub node: Node,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> TestServer {
        let store = ringkv_storage::Store::in_memory(Default::default());
        let node = Node::with_store(&config, store).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(super::serve(listener, node.clone(), shutdown.clone()));
        TestServer {
            addr,
            node,
            shutdown,
            handle,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Refusals counted under `kind` for the RESP API.
    pub fn errors(&self, kind: &'static str) -> u64 {
        self.node
            .metrics()
            .client_errors
            .get(&ErrorLabels {
                api: Api::Resp,
                kind,
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }
}

/// A decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Null,
    Array(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Set(Vec<Value>),
    Verbatim(String),
}

impl Value {
    pub fn ok() -> Value {
        Value::Simple("OK".into())
    }

    pub fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(b.as_ref().to_vec())
    }

    #[track_caller]
    pub fn as_bulk(&self) -> &[u8] {
        match self {
            Value::Bulk(b) => b,
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(a) => a,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn as_error(&self) -> &str {
        match self {
            Value::Error(e) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    /// Text of a bulk or verbatim string.
    #[track_caller]
    pub fn as_text(&self) -> String {
        match self {
            Value::Bulk(b) => String::from_utf8(b.clone()).unwrap(),
            Value::Verbatim(s) => s.clone(),
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Decodes one reply at the start of `buf`: the value and its length, or `None` if incomplete.
pub fn decode(buf: &[u8]) -> Option<(Value, usize)> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).unwrap();
    let after = line_end + 2;
    let num = || line.parse::<i64>().unwrap();
    let aggregate = |n: usize, mut at: usize| -> Option<(Vec<Value>, usize)> {
        let mut items = Vec::new();
        for _ in 0..n {
            let (v, len) = decode(&buf[at..])?;
            items.push(v);
            at += len;
        }
        Some((items, at))
    };
    Some(match buf[0] {
        b'+' => (Value::Simple(line.into()), after),
        b'-' => (Value::Error(line.into()), after),
        b':' => (Value::Int(num()), after),
        b'_' => (Value::Null, after),
        b'$' if num() < 0 => (Value::Null, after),
        b'*' if num() < 0 => (Value::Null, after),
        b'$' | b'=' => {
            let len = num() as usize;
            if buf.len() < after + len + 2 {
                return None;
            }
            let data = buf[after..after + len].to_vec();
            let v = if buf[0] == b'$' {
                Value::Bulk(data)
            } else {
                Value::Verbatim(String::from_utf8(data[4..].to_vec()).unwrap())
            };
            (v, after + len + 2)
        }
        b'*' => {
            let (items, end) = aggregate(num() as usize, after)?;
            (Value::Array(items), end)
        }
        b'~' => {
            let (items, end) = aggregate(num() as usize, after)?;
            (Value::Set(items), end)
        }
        b'%' => {
            let (items, end) = aggregate(2 * num() as usize, after)?;
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            (Value::Map(pairs), end)
        }
        other => panic!("unexpected reply type {:?}", other as char),
    })
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends one command and reads its reply.
    pub async fn cmd(&mut self, args: &[&[u8]]) -> Value {
        self.send(&encode(args)).await;
        self.read().await
    }

    /// Like [`Client::cmd`] with text arguments.
    pub async fn call(&mut self, args: &[&str]) -> Value {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.cmd(&args).await
    }

    /// Reads one reply.
    #[track_caller]
    pub fn read(&mut self) -> impl std::future::Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            tokio::time::timeout(REPLY_TIMEOUT, async {
                loop {
                    if let Some((v, len)) = decode(&self.buf) {
                        self.buf.advance(len);
                        return v;
                    }
                    let n = self.stream.read_buf(&mut self.buf).await.unwrap();
                    assert!(n > 0, "connection closed while waiting for a reply");
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no reply within {REPLY_TIMEOUT:?} (at {caller})"))
        }
    }

    /// Reads exactly `n` raw bytes.
    pub async fn read_raw(&mut self, n: usize) -> Vec<u8> {
        tokio::time::timeout(REPLY_TIMEOUT, async {
            while self.buf.len() < n {
                let read = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(read > 0, "connection closed");
            }
            self.buf.split_to(n).to_vec()
        })
        .await
        .expect("no reply in time")
    }

    /// Asserts the server closes the connection (EOF or reset) with nothing more unread than
    /// what is already buffered; returns the bytes received before the close.
    pub async fn expect_closed(&mut self) -> Vec<u8> {
        tokio::time::timeout(REPLY_TIMEOUT, async {
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return self.buf.split().to_vec(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server did not close the connection")
    }
}
