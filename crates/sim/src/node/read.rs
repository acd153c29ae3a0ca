//! The read path: a `GetCoordinator` over the sloppy-quorum plan, the local copy answered
//! directly, the client's answer at R replies, and read repair after.

use super::*;

impl SimNode {
    // ----- read path -----

    pub(super) fn drive_get(&mut self, ctx: &mut Ctx, request: RequestId) {
        loop {
            let Some(state) = self.run_mut().gets.get_mut(&request) else {
                return;
            };
            let out = state.get.drain_outbound();
            if out.is_empty() {
                break;
            }
            for env in out {
                match env.msg {
                    Message::Read(read) if env.to == self.id => {
                        let set = self
                            .set_of(&read.key, ctx.config.partitions)
                            .unwrap_or_default();
                        let me = self.id.clone();
                        if let Some(s) = self.run_mut().gets.get_mut(&request) {
                            s.get.step(
                                &me,
                                ReadReply {
                                    request,
                                    result: Ok(set),
                                },
                            );
                        }
                    }
                    Message::Repair(repair) => {
                        self.stats.read_repairs += 1;
                        if env.to == self.id {
                            self.merge(ctx, repair.key.clone(), &repair.set);
                        } else {
                            ctx.send(
                                self.idx,
                                idx_of(&env.to),
                                Payload::Core(Message::Repair(repair)),
                            );
                        }
                    }
                    msg => ctx.send(self.idx, idx_of(&env.to), Payload::Core(msg)),
                }
            }
        }
        let r = self.run_mut();
        let state = r.gets.get_mut(&request).expect("read in flight");
        if let Some(outcome) = state.get.outcome() {
            if let Some((client, op)) = state.reply_to.take() {
                let set = match outcome {
                    GetOutcome::Done { set, .. } => Some(set.clone()),
                    GetOutcome::Failed { .. } => None,
                };
                reply(ctx, client, ClientReply::Get { op, set });
            }
        }
        match state.get.next_deadline() {
            Some(next) => {
                let local = (state.t0 + next).saturating_sub(self.now_wall(ctx));
                self.timer(ctx, local.max(1), Timer::GetDeadline(request));
            }
            None => {
                self.run_mut().gets.remove(&request);
            }
        }
    }
}
