//! The write path: `Replica::apply_write` on the coordinator, durable, then a `PutCoordinator`
//! (hinted replicates to stand-ins), and the client's answer at the outcome.

use super::*;

impl SimNode {
    // ----- write path -----

    /// `Replica::apply_write` then, once durable, a `PutCoordinator`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn coordinate(
        &mut self,
        ctx: &mut Ctx,
        key: Bytes,
        value: Option<Bytes>,
        context: Option<Context>,
        w: usize,
        plan: Plan,
        reply_to: ReplyTo,
    ) {
        let now = self.now_wall(ctx);
        let me = self.id.clone();
        let part = self.partition_mut(ctx, &key);
        let mut set = part.get(&key).cloned().unwrap_or_default();
        let (dot, covers) = match &context {
            Some(c) => (set.write(&me, c, value, now), c.clock().clone()),
            None => {
                let covers = set.clock().clone();
                (set.overwrite(&me, value, now), covers)
            }
        };
        set.prune(10);
        part.put(key.clone(), set.clone());
        self.run_mut().dirty.insert(key.clone());
        self.after_flush(
            ctx,
            AfterFlush::StartPut(Box::new(PendingPut {
                key,
                set,
                dot,
                covers,
                w,
                plan,
                reply_to,
            })),
        );
    }

    pub(super) fn start_put(&mut self, ctx: &mut Ctx, p: PendingPut) {
        ctx.history.applied.push(crate::checker::Applied {
            key: p.key.clone(),
            dot: p.dot.clone(),
            covers: p.covers,
        });
        if let Some(intended) = p.plan.intended_for(&self.id).cloned() {
            // The stand-in's hint goes to disk with the write it took (the server commits it
            // right after, before the ack; a crash between only leaves a harmless hint).
            let now = self.now_wall(ctx);
            self.run_mut()
                .hints
                .store(&intended, p.key.clone(), &p.set, now);
            self.disk.hints = self.run().hints.clone();
            self.stats.hints_stored += 1;
        }
        let request = self.next_request();
        let t = ctx.config.request_timeout_ms;
        let mut put = PutCoordinator::new(PutRequest {
            request,
            coordinator: self.id.clone(),
            key: p.key,
            set: p.set,
            others: p.plan.targets.clone(),
            quorum: ringkv_core::coordinator::Quorum::count(p.w),
            deadline_ms: t,
        });
        for env in put.drain_outbound() {
            self.send_replicate(ctx, env, &p.plan);
        }
        let t0 = self.now_wall(ctx);
        self.run_mut().puts.insert(
            request,
            PutState {
                put,
                dot: p.dot,
                reply_to: p.reply_to,
                t0,
            },
        );
        self.timer(ctx, t, Timer::PutDeadline(request));
        self.finish_put(ctx, request);
    }

    pub(super) fn send_replicate(&mut self, ctx: &mut Ctx, env: Envelope, plan: &Plan) {
        let to = idx_of(&env.to);
        match (plan.intended_for(&env.to), env.msg) {
            (Some(intended), Message::Replicate(replicate)) => ctx.send(
                self.idx,
                to,
                Payload::Hinted {
                    intended: intended.clone(),
                    replicate,
                },
            ),
            (_, msg) => ctx.send(self.idx, to, Payload::Core(msg)),
        }
    }

    /// Answers the write's client once the outcome is known.
    pub(super) fn finish_put(&mut self, ctx: &mut Ctx, request: RequestId) {
        let r = self.run_mut();
        let Some(state) = r.puts.get(&request) else {
            return;
        };
        let Some(outcome) = state.put.outcome() else {
            return;
        };
        let acked = match outcome {
            PutOutcome::Acked { .. } => Some(state.dot.clone()),
            PutOutcome::Failed { .. } => None,
        };
        let reply_to = state.reply_to;
        r.puts.remove(&request);
        match reply_to {
            ReplyTo::Client { client, op } => reply(ctx, client, ClientReply::Put { op, acked }),
            ReplyTo::Forward { node, fwd } => {
                ctx.send(self.idx, node, Payload::ForwardReply { fwd, acked })
            }
        }
    }
}
