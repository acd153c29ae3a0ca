//! A tiny seeded random number generator (SplitMix64), so peer choice is reproducible from the
//! seed the caller passes: no global RNG in the core. The deterministic simulator draws from it
//! too, so one seed number reproduces a whole run.

/// SplitMix64 (Steele, Lea and Flood, 2014): one 64-bit state, good enough to pick gossip peers.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for our sizes).
    pub fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Up to `k` distinct items of `items`, in random order (partial Fisher-Yates).
    pub fn choose<T>(&mut self, mut items: Vec<T>, k: usize) -> Vec<T> {
        let k = k.min(items.len());
        for i in 0..k {
            let j = i + self.below(items.len() - i);
            items.swap(i, j);
        }
        items.truncate(k);
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices_and_choices_are_distinct() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let pa = a.choose((0..10).collect::<Vec<_>>(), 4);
        let pb = b.choose((0..10).collect::<Vec<_>>(), 4);
        assert_eq!(pa, pb);
        let mut sorted = pa.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4);
        assert_eq!(a.choose(vec![1, 2], 5).len(), 2);
    }
}
