//! The node's disk: writes are visible at once and durable at the next group-commit flush; work
//! that must wait for durability (acks, a coordinator's replication) runs after that flush.

use super::*;

impl SimNode {
    // ----- storage -----

    pub(super) fn partition_mut(&mut self, ctx: &Ctx, key: &[u8]) -> &mut MemoryPartition {
        let (partitions, buckets) = (ctx.config.partitions, ctx.config.buckets);
        let p = KeyHash::of(key).partition(partitions);
        self.run_mut()
            .data
            .entry(p)
            .or_insert_with(|| empty_partition(p, partitions, buckets))
    }

    /// `Replica::merge`: merge, prune, store (visible now, durable at the next flush).
    pub(super) fn merge(&mut self, ctx: &mut Ctx, key: Bytes, incoming: &SiblingSet) -> bool {
        let part = self.partition_mut(ctx, &key);
        let mut set = part.get(&key).cloned().unwrap_or_default();
        let before = part.get(&key).cloned();
        set.merge(incoming);
        set.prune(10);
        if before.as_ref() == Some(&set) {
            return false;
        }
        part.put(key.clone(), set);
        self.run_mut().dirty.insert(key);
        self.schedule_flush(ctx);
        true
    }

    pub(super) fn schedule_flush(&mut self, ctx: &mut Ctx) {
        if !self.run().flush_scheduled {
            self.run_mut().flush_scheduled = true;
            // Group commit: one fsync a few ms away serves every write until then.
            let d = ctx.between(1, 4);
            ctx.schedule(
                ctx.now + d,
                Event::Timer {
                    node: self.idx,
                    life: self.life,
                    timer: Timer::Flush,
                },
            );
        }
    }

    pub(super) fn after_flush(&mut self, ctx: &mut Ctx, work: AfterFlush) {
        self.run_mut().waiting.push(work);
        self.schedule_flush(ctx);
    }

    pub(super) fn flush(&mut self, ctx: &mut Ctx) {
        let partitions = ctx.config.partitions;
        let r = self.run.as_mut().expect("running");
        r.flush_scheduled = false;
        for key in std::mem::take(&mut r.dirty) {
            let p = KeyHash::of(&key).partition(partitions);
            match r.data.get(&p).and_then(|part| part.get(&key)) {
                Some(set) => self.disk.data.insert(key, set.clone()),
                None => self.disk.data.remove(&key),
            };
        }
        if std::mem::take(&mut r.hints_dirty) {
            self.disk.hints = r.hints.clone();
        }
        for work in std::mem::take(&mut r.waiting) {
            match work {
                AfterFlush::Ack { to, ack } => {
                    ctx.send(self.idx, to, Payload::Core(Message::ReplicateAck(ack)))
                }
                AfterFlush::Delivered { to, batch } => {
                    ctx.send(self.idx, to, Payload::Delivered { batch })
                }
                AfterFlush::StartPut(p) => self.start_put(ctx, *p),
            }
        }
    }
}
