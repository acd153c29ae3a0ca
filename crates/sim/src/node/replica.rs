//! The replica side of the core messages: merge and ack once durable, answer reads, apply
//! repairs, and feed acks and replies to the coordinators.

use super::*;

impl SimNode {
    // ----- replica side -----

    pub(super) fn on_core(&mut self, ctx: &mut Ctx, from: usize, msg: Message) {
        let from_id = node_id(from);
        match msg {
            Message::Replicate(m) => {
                self.merge(ctx, m.key.clone(), &m.set);
                self.after_flush(
                    ctx,
                    AfterFlush::Ack {
                        to: from,
                        ack: ReplicateAck {
                            request: m.request,
                            result: Ok(()),
                        },
                    },
                );
            }
            Message::ReplicateAck(ack) => {
                let request = ack.request;
                if let Some(s) = self.run_mut().puts.get_mut(&request) {
                    s.put.step(&from_id, ack);
                }
                self.finish_put(ctx, request);
            }
            Message::Read(m) => {
                let set = self
                    .set_of(&m.key, ctx.config.partitions)
                    .unwrap_or_default();
                ctx.send(
                    self.idx,
                    from,
                    Payload::Core(Message::ReadReply(ReadReply {
                        request: m.request,
                        result: Ok(set),
                    })),
                );
            }
            Message::ReadReply(reply) => {
                let request = reply.request;
                if let Some(s) = self.run_mut().gets.get_mut(&request) {
                    s.get.step(&from_id, reply);
                    self.drive_get(ctx, request);
                }
            }
            Message::Repair(m) => {
                self.merge(ctx, m.key.clone(), &m.set);
            }
            Message::ForwardPut(_) | Message::ForwardPutReply(_) => {}
        }
    }
}
