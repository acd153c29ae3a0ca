//! Anti-entropy: one session per interval with one healthy replica of the next replicated
//! partition, responders opened on `Start`, merges applied without a durability wait.

use super::*;

impl SimNode {
    // ----- anti-entropy -----

    pub(super) fn replicated(&self, ctx: &Ctx) -> Vec<PartitionId> {
        let ring = &self.run().ring.1;
        (0..ring.partitions())
            .map(PartitionId)
            .filter(|&p| ring.preference_list(p, ctx.config.n).contains(&self.id))
            .collect()
    }

    /// One session per interval with one healthy replica of the next replicated partition, as
    /// the server's worker does.
    pub(super) fn start_anti_entropy(&mut self, ctx: &mut Ctx) {
        if self.run().initiated.is_some() {
            return;
        }
        let mine = self.replicated(ctx);
        if mine.is_empty() {
            return;
        }
        let mut pick = None;
        for _ in 0..mine.len() {
            let r = self.run_mut();
            let p = mine[r.ae_cursor % mine.len()];
            r.ae_cursor = r.ae_cursor.wrapping_add(1);
            let peers: Vec<NodeId> = self
                .run()
                .ring
                .1
                .preference_list(p, ctx.config.n)
                .into_iter()
                .filter(|id| id != &self.id && !self.unhealthy(id))
                .collect();
            if !peers.is_empty() {
                let r = self.run_mut();
                r.ae_turn = r.ae_turn.wrapping_add(1);
                pick = Some((p, peers[r.ae_turn % peers.len()].clone()));
                break;
            }
        }
        let Some((p, peer)) = pick else {
            return;
        };
        let id = SessionId(self.next_request().0);
        let now = self.now_wall(ctx);
        let (partitions, buckets) = (ctx.config.partitions, ctx.config.buckets);
        let r = self.run_mut();
        let view = r
            .data
            .entry(p)
            .or_insert_with(|| empty_partition(p, partitions, buckets));
        let session = AntiEntropySession::start(id, session_config(), now, view);
        let key = (idx_of(&peer), id);
        r.sessions.insert(key, session);
        r.initiated = Some(key);
        self.stats.ae_sessions += 1;
        self.pump_session(ctx, key);
    }

    pub(super) fn on_anti_entropy(&mut self, ctx: &mut Ctx, from: usize, msg: AntiEntropyMessage) {
        let key = (from, msg.session);
        let now = self.now_wall(ctx);
        let (partitions, buckets) = (ctx.config.partitions, ctx.config.buckets);
        let replicates = self.replicated(ctx).contains(&msg.partition);
        let r = self.run_mut();
        let view = r
            .data
            .entry(msg.partition)
            .or_insert_with(|| empty_partition(msg.partition, partitions, buckets));
        match r.sessions.get_mut(&key) {
            Some(s) => s.step(&msg, now, view),
            None => {
                if !matches!(msg.body, Body::Start { .. }) || !replicates {
                    return;
                }
                let s = AntiEntropySession::accept(&msg, session_config(), now, view);
                r.sessions.insert(key, s);
            }
        }
        self.pump_session(ctx, key);
    }

    /// Sends the session's messages and merges what it received.
    pub(super) fn pump_session(&mut self, ctx: &mut Ctx, key: (usize, SessionId)) {
        let Some(s) = self.run_mut().sessions.get_mut(&key) else {
            return;
        };
        let out = s.drain_outbound();
        let merges = s.drain_merges();
        for m in out {
            ctx.send(self.idx, key.0, Payload::AntiEntropy(m));
        }
        for (k, set) in merges {
            if self.merge(ctx, k, &set) {
                self.stats.ae_repaired_keys += 1;
            }
        }
        if self.run().sessions.get(&key).is_some_and(|s| s.is_done()) {
            self.end_session(key);
        }
    }

    pub(super) fn end_session(&mut self, key: (usize, SessionId)) {
        let r = self.run_mut();
        if let Some(s) = r.sessions.remove(&key) {
            self.stats.ae_bytes += s.bytes_sent();
        }
        let r = self.run_mut();
        if r.initiated == Some(key) {
            r.initiated = None;
        }
    }
}
