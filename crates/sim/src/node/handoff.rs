//! Hinted handoff: the sweep that drops hints past the window and streams the rest, in
//! batches, to targets gossip shows healthy; a batch's hints are deleted when acked and unchanged.

use super::*;

impl SimNode {
    // ----- hinted handoff -----

    pub(super) fn handoff_sweep(&mut self, ctx: &mut Ctx) {
        let window = HintWindow {
            window_ms: ctx.config.hint_window_ms,
        };
        let now = self.now_wall(ctx);
        let targets: Vec<NodeId> = self.run().hints.pending().into_keys().collect();
        for target in targets {
            let all = self.run().hints.load(&target, None, usize::MAX);
            let (expired, _) = window.split(all, now, |(_, h)| h.updated_at_ms);
            if !expired.is_empty() {
                let r = self.run.as_mut().expect("running");
                self.stats.hints_dropped += r.hints.remove_unchanged(&target, &expired);
                r.hints_dirty = true;
                self.schedule_flush(ctx);
            }
            if !self.unhealthy(&target) {
                self.deliver_to(ctx, &target);
            }
        }
    }

    /// Sends the next batch of `target`'s hints, unless one is in flight.
    pub(super) fn deliver_to(&mut self, ctx: &mut Ctx, target: &NodeId) {
        let r = self.run_mut();
        if r.deliveries.values().any(|d| &d.target == target) {
            return;
        }
        let sent = r.hints.load(target, None, BATCH);
        if sent.is_empty() {
            return;
        }
        let batch = {
            r.next_request += 1;
            r.next_request
        };
        let hints = sent
            .iter()
            .map(|(k, h)| (k.clone(), h.set.clone()))
            .collect();
        r.deliveries.insert(
            batch,
            Delivery {
                target: target.clone(),
                sent,
            },
        );
        ctx.send(self.idx, idx_of(target), Payload::Deliver { batch, hints });
        self.timer(ctx, 10_000, Timer::HandoffDeadline(batch));
    }
}
