//! Partition ownership: weighted rendezvous hashing, pulled into a load band by per-node
//! multipliers. [`super`]'s module doc explains the choice; this file is the mechanics.

use super::score;
use std::cmp::Ordering;

/// How far below and above its exact weight share `Q * w / W` a node's partition count may be,
/// in hundredths of the share. DESIGN.md allows 10%; the other 2% is margin. When the share is
/// small the band is widened to its floor and ceiling, so it is never empty.
pub(super) const BAND_PERCENT: u64 = 8;

/// Correction sweeps before the exact fallback takes over. The sweeps settle in a few rounds in
/// practice (1-3 at 20 nodes, ~30 at 100 nodes with 10 partitions each); the cap bounds the rest.
const MAX_SWEEPS: usize = 64;

/// Inclusive bounds on each node's partition count.
#[derive(Debug, Clone)]
pub(super) struct Band {
    pub lo: Vec<u32>,
    pub hi: Vec<u32>,
}

impl Band {
    /// `percent` below and above each node's share, widened to the share's floor and ceiling.
    /// Exact integer arithmetic: the band is part of the ring's definition. Since the floors sum
    /// to at most Q and the ceilings to at least Q, some assignment always fits.
    pub fn around_shares(weights: &[u32], partitions: u32, percent: u64) -> Band {
        let total: u128 = weights.iter().map(|&w| w as u128).sum();
        let (q, pct) = (partitions as u128, percent as u128);
        let (lo, hi) = weights
            .iter()
            .map(|&w| {
                let share = q * w as u128; // times `total`
                let lo = (share * (100 - pct)).div_ceil(total * 100);
                let hi = share * (100 + pct) / (total * 100);
                let (floor, ceil) = (share / total, share.div_ceil(total));
                (lo.min(floor) as u32, hi.max(ceil) as u32)
            })
            .unzip();
        Band { lo, hi }
    }
}

/// The owner (node index) of each partition: nodes are given by score seed and weight, in
/// canonical (id) order, and every node's count ends inside `band`.
pub(super) fn assign(seeds: &[u64], weights: &[u32], partitions: u32, band: &Band) -> Vec<u32> {
    let mut race = Race::new(seeds, weights, partitions, band);
    race.correct();
    race.repair();
    race.best.iter().map(|e| e.node).collect()
}

/// A node's key at one partition (race time / multiplier) and its index; the smaller key wins.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: f64,
    node: u32,
}

const NOBODY: Entry = Entry {
    key: f64::INFINITY,
    node: u32::MAX,
};

impl Entry {
    /// A total order: smaller key first, then smaller node index. Node indexes follow the sorted
    /// ids, so even an exact tie is decided by the membership, not by the input order.
    fn beats(self, other: Entry) -> bool {
        match self.key.total_cmp(&other.key) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.node < other.node,
        }
    }
}

/// The weighted exponential race at every partition, with the winner and runner-up kept current
/// as multipliers change.
struct Race<'a> {
    n: usize,
    /// Race time of node `a` at partition `p`, already divided by the node's weight: `[p * n + a]`.
    times: Vec<f64>,
    /// Per-node multiplier of the weight: 1 unless the node had to be pulled into its band.
    mult: Vec<f64>,
    best: Vec<Entry>,
    second: Vec<Entry>,
    counts: Vec<u32>,
    band: &'a Band,
}

impl<'a> Race<'a> {
    fn new(seeds: &[u64], weights: &[u32], partitions: u32, band: &'a Band) -> Race<'a> {
        let n = seeds.len();
        let q = partitions as usize;
        let mut times = vec![0.0; q * n];
        for (a, (&seed, &w)) in seeds.iter().zip(weights).enumerate() {
            let w = w as f64;
            for (p, t) in score::race_times(seed, partitions).into_iter().enumerate() {
                times[p * n + a] = t / w;
            }
        }
        let mut race = Race {
            n,
            times,
            mult: vec![1.0; n],
            best: vec![NOBODY; q],
            second: vec![NOBODY; q],
            counts: vec![0; n],
            band,
        };
        for p in 0..q {
            race.rank(p);
            race.counts[race.best[p].node as usize] += 1;
        }
        race
    }

    fn entry(&self, p: usize, a: usize) -> Entry {
        Entry {
            key: self.times[p * self.n + a] / self.mult[a],
            node: a as u32,
        }
    }

    /// Recomputes the winner and runner-up of partition `p` from scratch.
    fn rank(&mut self, p: usize) {
        let (mut best, mut second) = (NOBODY, NOBODY);
        for a in 0..self.n {
            let e = self.entry(p, a);
            if e.beats(best) {
                second = best;
                best = e;
            } else if e.beats(second) {
                second = e;
            }
        }
        self.best[p] = best;
        self.second[p] = second;
    }

    fn outside_band(&self, a: usize) -> bool {
        self.counts[a] < self.band.lo[a] || self.counts[a] > self.band.hi[a]
    }

    /// Gauss-Seidel sweeps: a node outside its band gets the multiplier that brings it to the
    /// nearest edge of its band, the others held still; repeat until no node is outside. A node
    /// that never leaves its band keeps multiplier 1, so among such nodes ownership is plain
    /// rendezvous, which is what keeps movement small (module doc).
    fn correct(&mut self) {
        for _ in 0..MAX_SWEEPS {
            if !(0..self.n).any(|a| self.outside_band(a)) {
                return;
            }
            for a in 0..self.n {
                if self.counts[a] > self.band.hi[a] {
                    self.shrink(a, self.band.hi[a] as usize);
                } else if self.counts[a] < self.band.lo[a] {
                    self.grow(a, self.band.lo[a] as usize);
                }
            }
        }
    }

    /// Lowers node `a`'s multiplier so that it keeps exactly `keep` of its partitions, those it
    /// wins by the widest margin; the others go to their runners-up.
    fn shrink(&mut self, a: usize, keep: usize) {
        // `a` keeps p while time / mult < runner-up key, that is while mult > time / runner-up.
        let mut ratios: Vec<f64> = (0..self.best.len())
            .filter(|&p| self.best[p].node as usize == a)
            .map(|p| self.times[p * self.n + a] / self.second[p].key)
            .collect();
        self.mult[a] = threshold(&mut ratios, keep);
        let node = a as u32;
        for p in 0..self.best.len() {
            if self.best[p].node == node || self.second[p].node == node {
                let before = self.best[p].node;
                self.rank(p);
                self.count_move(before, self.best[p].node);
            }
        }
    }

    /// Raises node `a`'s multiplier so that it wins exactly `want` partitions: its own, plus
    /// those where it comes closest to the winner.
    fn grow(&mut self, a: usize, want: usize) {
        let mut ratios: Vec<f64> = (0..self.best.len())
            .filter(|&p| self.best[p].node as usize != a)
            .map(|p| self.times[p * self.n + a] / self.best[p].key)
            .collect();
        let gain = want - self.counts[a] as usize;
        self.mult[a] = threshold(&mut ratios, gain);
        // Keys of `a` only fell, so each partition's top two are updated in place.
        let node = a as u32;
        for p in 0..self.best.len() {
            let e = self.entry(p, a);
            if self.best[p].node == node {
                self.best[p] = e;
            } else if e.beats(self.best[p]) {
                let before = self.best[p].node;
                self.second[p] = self.best[p];
                self.best[p] = e;
                self.count_move(before, node);
            } else if self.second[p].node == node || e.beats(self.second[p]) {
                self.second[p] = e;
            }
        }
    }

    fn count_move(&mut self, from: u32, to: u32) {
        if from != to {
            self.counts[from as usize] -= 1;
            self.counts[to as usize] += 1;
        }
    }

    /// Exact fallback for what the sweeps leave (exact ties, or a membership that oscillates):
    /// move single partitions, each time the one whose new owner comes closest to the current
    /// one, out of nodes over their band into nodes with room, then into nodes under their band
    /// from nodes that can spare one. Every move shrinks the total excess or deficit and the band
    /// always admits a solution, so this ends. It leaves the runners-up stale: it runs last.
    fn repair(&mut self) {
        while let Some(a) = (0..self.n).find(|&a| self.counts[a] > self.band.hi[a]) {
            let (p, to) = self
                .cheapest_move(|p, s| {
                    self.best[p].node as usize == a && s != a && self.counts[s] < self.band.hi[s]
                })
                .expect("sum of hi >= Q, so some node has room");
            self.force(p, to);
        }
        while let Some(a) = (0..self.n).find(|&a| self.counts[a] < self.band.lo[a]) {
            let (p, _) = self
                .cheapest_move(|p, s| {
                    let owner = self.best[p].node as usize;
                    s == a && owner != a && self.counts[owner] > self.band.lo[owner]
                })
                .expect("sum of lo <= Q, so some node can spare one");
            self.force(p, a);
        }
    }

    /// The allowed (partition, new owner) whose key is the smallest multiple of the current
    /// owner's key.
    fn cheapest_move(&self, allowed: impl Fn(usize, usize) -> bool) -> Option<(usize, usize)> {
        let mut found: Option<(f64, usize, usize)> = None;
        for p in 0..self.best.len() {
            for s in 0..self.n {
                if allowed(p, s) {
                    let cost = self.entry(p, s).key / self.best[p].key;
                    if found.is_none_or(|(c, _, _)| cost < c) {
                        found = Some((cost, p, s));
                    }
                }
            }
        }
        found.map(|(_, p, s)| (p, s))
    }

    fn force(&mut self, p: usize, to: usize) {
        let from = self.best[p].node;
        self.best[p] = self.entry(p, to);
        self.count_move(from, to as u32);
    }
}

/// A multiplier strictly above the `k` smallest `ratios` and at or below the rest (k < len), or
/// above all of them (k == len). Used as "exactly k ratios are below the multiplier".
fn threshold(ratios: &mut [f64], k: usize) -> f64 {
    debug_assert!(k <= ratios.len() && !ratios.is_empty());
    if k == ratios.len() {
        let max = ratios.iter().copied().fold(f64::MIN, f64::max);
        return max * 2.0;
    }
    let (below, &mut above, _) = ratios.select_nth_unstable_by(k, f64::total_cmp);
    match below.iter().copied().max_by(f64::total_cmp) {
        // Halfway between the k-th and (k+1)-th smallest.
        Some(kth) => kth + (above - kth) * 0.5,
        None => above * 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_is_the_share_plus_minus_the_percentage_or_its_floor_and_ceiling() {
        // Shares 400, 200, 400 of 1000... with Q = 1024: 409.6, 204.8, 409.6.
        let band = Band::around_shares(&[2, 1, 2], 1024, 8);
        assert_eq!(band.lo, vec![377, 189, 377]);
        assert_eq!(band.hi, vec![442, 221, 442]);
        // Tiny shares: floor and ceiling.
        let band = Band::around_shares(&[1, 1, 1], 4, 8);
        assert_eq!((band.lo, band.hi), (vec![1, 1, 1], vec![2, 2, 2]));
        let band = Band::around_shares(&[1; 8], 4, 8);
        assert_eq!((band.lo, band.hi), (vec![0; 8], vec![1; 8]));
    }

    #[test]
    fn threshold_splits_exactly_k() {
        let mut r = vec![5.0, 1.0, 4.0, 2.0, 3.0];
        let t = threshold(&mut r, 2);
        assert_eq!(r.iter().filter(|&&x| x < t).count(), 2);
        assert_eq!(threshold(&mut r, 0), 0.5);
        assert!(threshold(&mut r, 5) > 5.0);
    }

    #[test]
    fn every_count_lands_in_the_band() {
        for (n, q) in [(1, 1), (2, 1), (3, 2), (5, 1024), (40, 64), (300, 256)] {
            let seeds: Vec<u64> = (0..n).map(|i| score::node_seed(&format!("x{i}"))).collect();
            let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 4) as u32).collect();
            let band = Band::around_shares(&weights, q, BAND_PERCENT);
            let owners = assign(&seeds, &weights, q, &band);
            let mut counts = vec![0u32; n];
            owners.iter().for_each(|&o| counts[o as usize] += 1);
            for (a, &count) in counts.iter().enumerate() {
                assert!(band.lo[a] <= count && count <= band.hi[a], "{n} {q} {a}");
            }
        }
    }
}
