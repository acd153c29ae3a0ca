//! The simulated network: per-link cuts (so one-way partitions, and a data center cut off,
//! too), loss, duplication, and a random delay per message, which reorders messages on the same
//! link; optionally stragglers, a share of messages held back much longer than the rest.

use ringkv_core::membership::rng::SplitMix64;
use std::collections::BTreeSet;

/// Counters of what the network did.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetStats {
    pub sent: u64,
    pub delivered: u64,
    pub cut: u64,
    pub lost: u64,
    pub duplicated: u64,
}

#[derive(Debug, Clone)]
pub struct Network {
    /// (from, to) links that carry nothing.
    blocked: BTreeSet<(usize, usize)>,
    /// Chance of losing a message, per mille.
    pub loss_permille: u64,
    /// Chance of delivering a message twice, per mille.
    pub dup_permille: u64,
    /// Delay of one message, uniform in this range (ms).
    pub delay_ms: (u64, u64),
    /// Chance, per mille, that a message straggles: it takes `straggle_ms` more on top of
    /// its delay (so a message sent later often arrives first).
    pub straggle_permille: u64,
    pub straggle_ms: (u64, u64),
    pub stats: NetStats,
}

impl Network {
    pub fn new() -> Network {
        Network {
            blocked: BTreeSet::new(),
            loss_permille: 0,
            dup_permille: 0,
            delay_ms: (1, 10),
            straggle_permille: 0,
            straggle_ms: (0, 0),
            stats: NetStats::default(),
        }
    }

    pub fn cut(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    pub fn is_calm(&self) -> bool {
        self.blocked.is_empty() && self.loss_permille == 0 && self.dup_permille == 0
    }

    /// Back to a healthy network: no cuts, no loss, no duplication (delays stay).
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.loss_permille = 0;
        self.dup_permille = 0;
    }

    /// Delays of the copies of one message from `from` to `to` that arrive: none when the link
    /// is cut or the message is lost, two when it is duplicated.
    pub fn route(&mut self, rng: &mut SplitMix64, from: usize, to: usize) -> Vec<u64> {
        self.stats.sent += 1;
        if self.blocked.contains(&(from, to)) {
            self.stats.cut += 1;
            return Vec::new();
        }
        if from != to && (rng.below(1000) as u64) < self.loss_permille {
            self.stats.lost += 1;
            return Vec::new();
        }
        let copies = if from != to && (rng.below(1000) as u64) < self.dup_permille {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        self.stats.delivered += copies as u64;
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut SplitMix64) -> u64 {
        let (lo, hi) = self.delay_ms;
        let delay = lo + rng.below((hi - lo + 1) as usize) as u64;
        // Drawn only while stragglers are on, so runs without them draw as they always did.
        if self.straggle_permille > 0 && (rng.below(1000) as u64) < self.straggle_permille {
            let (lo, hi) = self.straggle_ms;
            return delay + lo + rng.below((hi - lo + 1) as usize) as u64;
        }
        delay
    }
}

impl Default for Network {
    fn default() -> Self {
        Self::new()
    }
}
