//! The write path: the level resolved on the plan (`Plan::write_quorum`), `Replica::apply_write`
//! on the coordinator, durable, then a `PutCoordinator` (hinted replicates to stand-ins), the
//! client's answer at the outcome, and coordinator hints for replicas that never answered.

use super::*;

impl SimNode {
    // ----- write path -----

    /// Resolves `need` on `plan`, then `Replica::apply_write` and, once durable, a
    /// `PutCoordinator`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn coordinate(
        &mut self,
        ctx: &mut Ctx,
        key: Bytes,
        value: Option<Bytes>,
        context: Option<Context>,
        need: &Need,
        plan: Plan,
        reply_to: ReplyTo,
    ) {
        // As the server's `coordinate`: the quorum comes from the plan before the local write.
        let ring = &self.run().ring.1;
        let quorum = plan.write_quorum(need, |id: &NodeId| ring.dc_of(id));
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
                quorum,
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
            key: p.key.clone(),
            set: p.set.clone(),
            others: p.plan.targets.clone(),
            quorum: p.quorum,
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
                reply_to: Some(p.reply_to),
                t0,
                key: p.key,
                set: p.set,
                plan: p.plan,
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

    /// Answers the write's client once the outcome is known; once every replica answered or
    /// the deadline passed, forgets the write, leaving a coordinator hint for each replica
    /// that did not answer.
    pub(super) fn finish_put(&mut self, ctx: &mut Ctx, request: RequestId) {
        let idx = self.idx;
        let r = self.run.as_mut().expect("node is running");
        let Some(state) = r.puts.get_mut(&request) else {
            return;
        };
        if let Some(outcome) = state.put.outcome() {
            if let Some(reply_to) = state.reply_to.take() {
                let acked = match outcome {
                    PutOutcome::Acked { .. } => Some(state.dot.clone()),
                    PutOutcome::Failed { .. } => None,
                };
                match reply_to {
                    ReplyTo::Client { client, op } => {
                        reply(ctx, client, ClientReply::Put { op, acked })
                    }
                    ReplyTo::Forward { node, fwd } => {
                        ctx.send(idx, node, Payload::ForwardReply { fwd, acked })
                    }
                }
            }
        }
        let r = self.run_mut();
        let state = r.puts.get(&request).expect("write in flight");
        if !state.put.is_done() {
            return;
        }
        let state = r.puts.remove(&request).expect("write in flight");
        self.coordinator_hints(ctx, &state);
    }

    /// The server's `HintOnFailure`: a replicate that did not reach its replica (no answer by
    /// the deadline: the sim's transport fails only by silence) or that the replica refused
    /// for a passing reason leaves a hint here, for the node the write was meant for (the
    /// down node, when it went to a stand-in). Not waited on: durable at the next flush.
    fn coordinator_hints(&mut self, ctx: &mut Ctx, state: &PutState) {
        let passing = state
            .put
            .refused()
            .iter()
            .filter(|(_, e)| !matches!(e, ReplicaError::Rejected(_)))
            .map(|(id, _)| id.clone());
        let missed: Vec<NodeId> = state.put.pending().into_iter().chain(passing).collect();
        if missed.is_empty() {
            return;
        }
        let now = self.now_wall(ctx);
        let r = self.run.as_mut().expect("node is running");
        for node in missed {
            let intended = state.plan.intended_for(&node).unwrap_or(&node);
            r.hints.store(intended, state.key.clone(), &state.set, now);
            self.stats.hints_stored += 1;
            self.stats.coordinator_hints += 1;
        }
        r.hints_dirty = true;
        self.schedule_flush(ctx);
    }
}
