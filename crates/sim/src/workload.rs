//! Concurrent clients: each has one request in flight at a time, on a small shared key space so
//! writes collide. A client reads (remembering the context), writes with the context it read
//! (read-modify-write, what resolves siblings), writes blind (like Redis `SET`), or deletes with
//! its context. Every value is unique, and every outcome goes into the history. After an
//! acknowledged write a client reads the same key next, one time in four (read-your-writes: the
//! reads that race the write's last replicates).
//!
//! In a two-data-center run each client sits in one data center, sends only to its nodes, and
//! draws a level per request: the plain count (40%), `local_quorum` (50%) or `each_quorum`
//! (10%). With one data center every request uses the configured W or R, and the draws are
//! those of the runs before data centers existed.

use crate::checker::{ReadRecord, WriteOutcome, WriteRecord};
use crate::ctx::Ctx;
use crate::event::{ClientReply, ClientRequest, Event, Level};
use bytes::Bytes;
use ringkv_core::coordinator::Need;
use ringkv_core::Context;
use std::collections::BTreeMap;

pub struct Client {
    pub idx: usize,
    /// The op in flight.
    busy: Option<u64>,
    contexts: BTreeMap<Bytes, Context>,
    next_op: u64,
    /// Clients stop sending at this time.
    pub stop_at: u64,
    /// The data center it sits in (two-data-center runs).
    pub dc: Option<String>,
    /// A key this client just wrote and reads next.
    check_back: Option<Bytes>,
}

pub fn key_name(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:02}"))
}

impl Client {
    pub fn new(idx: usize, stop_at: u64, dc: Option<String>) -> Client {
        Client {
            idx,
            busy: None,
            contexts: BTreeMap::new(),
            next_op: 0,
            stop_at,
            dc,
            check_back: None,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.busy.is_none()
    }

    /// Sends the next request, unless it is time to stop.
    pub fn wake(&mut self, ctx: &mut Ctx) {
        if self.busy.is_some() || ctx.now >= self.stop_at {
            return;
        }
        self.next_op += 1;
        let op = (self.idx as u64) << 32 | self.next_op;
        let check_back = self.check_back.take();
        let key = match &check_back {
            Some(key) => key.clone(),
            None => key_name(ctx.rng.below(ctx.config.keys)),
        };
        let (node, level) = match &self.dc {
            None => (ctx.rng.below(ctx.config.nodes), Level::Default),
            Some(dc) => {
                let local = ctx.config.nodes_in(dc);
                let node = local[ctx.rng.below(local.len())];
                let level = match ctx.rng.below(100) {
                    0..=39 => Level::Default,
                    40..=89 => Level::LocalQuorum,
                    _ => Level::EachQuorum,
                };
                (node, level)
            }
        };
        // What the checker holds the request to: the node resolves the level against its own
        // data center, which is the client's.
        let need = |count: usize| match level {
            Level::Default => Need::Count(count),
            Level::LocalQuorum => Need::LocalQuorum {
                dc: self.dc.clone().expect("a data-center client"),
            },
            Level::EachQuorum => Need::EachQuorum,
        };
        let roll = match check_back {
            Some(_) => 0,
            None => ctx.rng.below(100),
        };
        let context = self.contexts.get(&key).cloned();
        let req = if roll < 40 {
            ctx.history.reads.insert(
                op,
                ReadRecord {
                    client: self.idx,
                    key: key.clone(),
                    invoked: ctx.now,
                    completed: None,
                    result: None,
                    level: need(ctx.config.r),
                    node,
                },
            );
            ClientRequest::Get { op, key, level }
        } else {
            let (value, context) = match roll {
                // Read-modify-write with what this client last read of the key.
                40..=74 => (Some(self.value(op)), context),
                // Blind write.
                75..=89 => (Some(self.value(op)), None),
                // Delete over what was read (blind when nothing was).
                _ => (None, context),
            };
            ctx.history.writes.insert(
                op,
                WriteRecord {
                    client: self.idx,
                    key: key.clone(),
                    tombstone: value.is_none(),
                    with_context: context.is_some(),
                    invoked: ctx.now,
                    completed: None,
                    outcome: WriteOutcome::Pending,
                    level: need(ctx.config.w),
                    node,
                },
            );
            ClientRequest::Put {
                op,
                key,
                value,
                context,
                level,
            }
        };
        self.busy = Some(op);
        let d = ctx.between(1, 3);
        ctx.schedule(
            ctx.now + d,
            Event::ToNode {
                node,
                client: self.idx,
                req,
            },
        );
        // Longer than any coordinator's deadline plus the forward and the read's repair wait.
        let give_up = ctx.now + 4 * ctx.config.request_timeout_ms;
        ctx.schedule(
            give_up,
            Event::ClientGiveUp {
                client: self.idx,
                op,
            },
        );
    }

    fn value(&self, op: u64) -> Bytes {
        Bytes::from(format!("c{}-op{}", self.idx, op & 0xffff_ffff))
    }

    pub fn on_reply(&mut self, ctx: &mut Ctx, reply: ClientReply) {
        let op = match &reply {
            ClientReply::Put { op, .. } | ClientReply::Get { op, .. } => *op,
        };
        if self.busy != Some(op) {
            return; // an answer after we gave up
        }
        match reply {
            ClientReply::Put { acked, .. } => {
                let w = ctx.history.writes.get_mut(&op).expect("recorded write");
                w.completed = Some(ctx.now);
                w.outcome = match acked {
                    Some(dot) => WriteOutcome::Acked(dot),
                    None => WriteOutcome::Failed,
                };
                // The next write of this key starts blind or from a fresh read.
                let key = w.key.clone();
                self.contexts.remove(&key);
                if matches!(w.outcome, WriteOutcome::Acked(_)) && ctx.rng.below(4) == 0 {
                    self.check_back = Some(key);
                }
            }
            ClientReply::Get { set, .. } => {
                let r = ctx.history.reads.get_mut(&op).expect("recorded read");
                r.completed = Some(ctx.now);
                if let Some(set) = &set {
                    self.contexts.insert(r.key.clone(), set.context());
                }
                r.result = set;
            }
        }
        self.done(ctx);
    }

    pub fn on_give_up(&mut self, ctx: &mut Ctx, op: u64) {
        if self.busy != Some(op) {
            return;
        }
        if let Some(w) = ctx.history.writes.get_mut(&op) {
            w.outcome = WriteOutcome::Unknown;
        }
        self.done(ctx);
    }

    fn done(&mut self, ctx: &mut Ctx) {
        self.busy = None;
        let think = ctx.between(2, 40);
        ctx.schedule(ctx.now + think, Event::ClientWake { client: self.idx });
    }
}
