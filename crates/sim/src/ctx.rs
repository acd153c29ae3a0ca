//! The world every node and client acts on: simulated time, the event queue, the seeded random
//! numbers, the network and the history.

use crate::checker::History;
use crate::config::SimConfig;
use crate::event::{Event, Payload};
use crate::net::Network;
use ringkv_core::membership::rng::SplitMix64;
use std::collections::BTreeMap;

pub struct Ctx {
    pub config: SimConfig,
    /// Simulated real time, ms.
    pub now: u64,
    pub rng: SplitMix64,
    pub net: Network,
    pub history: History,
    queue: BTreeMap<(u64, u64), Event>,
    seq: u64,
}

impl Ctx {
    pub fn new(config: SimConfig) -> Ctx {
        Ctx {
            rng: SplitMix64::new(config.seed),
            config,
            now: 0,
            net: Network::new(),
            history: History::default(),
            queue: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Queues `event` at `at` (never before now). Events at the same time run in the order
    /// they were queued.
    pub fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), event);
    }

    pub fn pop(&mut self) -> Option<(u64, Event)> {
        let ((at, _), event) = self.queue.pop_first()?;
        Some((at, event))
    }

    /// Sends a message between nodes through the network's faults.
    pub fn send(&mut self, from: usize, to: usize, payload: Payload) {
        let delays = self.net.route(&mut self.rng, from, to);
        let n = delays.len();
        for (i, d) in delays.into_iter().enumerate() {
            let payload = if i + 1 == n {
                // The last copy takes the payload; earlier ones (duplicates) clone it.
                return self.schedule(self.now + d, Event::Packet { from, to, payload });
            } else {
                payload.clone()
            };
            self.schedule(self.now + d, Event::Packet { from, to, payload });
        }
    }

    /// A uniform number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.rng.below((hi - lo + 1) as usize) as u64
    }
}
