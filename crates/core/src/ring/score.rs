//! Deterministic rendezvous scores: the only randomness in the ring, derived from node ids.
//!
//! Every node of a cluster must compute the same ring bit for bit, possibly on different CPUs and
//! libm versions. So scores use only xxh3, integer arithmetic and IEEE-754 `+ - * /` (which Rust
//! never fuses or reorders): no `f64::ln`, whose last bit is up to the platform's libm.
//!
//! A node's draws are *stratified*: its Q uniforms are one point in each of the Q cells of width
//! 1/Q, in a random order (a seeded Fisher-Yates shuffle, jittered within the cell). Independent
//! draws would let a node be "lucky" on its own (many small draws), which is half of the spread
//! of plain rendezvous counts; stratified draws remove that half, leaving only the luck of how
//! the nodes' orders interleave (measured: count spread 0.65 sqrt(share) instead of 0.93).

/// The seed of a node's score stream. Changing it (or anything in this file) reshuffles every
/// cluster's ring, so the scores are pinned by a test.
pub(super) fn node_seed(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

/// splitmix64: a small, well-mixed, fully specified generator.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-enough integer in `0..bound` (multiply-shift; the bias is below 2^-32).
    fn below(&mut self, bound: u32) -> u32 {
        (((self.next() >> 32) * bound as u64) >> 32) as u32
    }

    /// Uniform in (0, 1), never 0 or 1.
    fn open_unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }
}

/// The node's race time at each of `partitions` partitions: Exp(1) variates, stratified (see the
/// module doc). Divided by the node's weight, they are arrival times in an exponential race that
/// a node of weight w wins with probability w / (sum of weights): weighted rendezvous hashing.
pub(super) fn race_times(seed: u64, partitions: u32) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    let mut cell: Vec<u32> = (0..partitions).collect();
    for i in (1..partitions).rev() {
        let j = rng.below(i + 1);
        cell.swap(i as usize, j as usize);
    }
    let q = partitions as f64;
    cell.into_iter()
        .map(|c| -ln((c as f64 + rng.open_unit()) / q))
        .collect()
}

/// Natural logarithm of a positive normal `x` with basic arithmetic only (see the module doc).
/// Accurate to a few ulps, which is plenty: the value only ranks nodes.
fn ln(x: f64) -> f64 {
    const LN_2: f64 = std::f64::consts::LN_2;
    const SQRT_2: f64 = std::f64::consts::SQRT_2;
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // x = m * 2^exponent with m in [1, 2), then moved into [sqrt(1/2), sqrt(2)).
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    // ln m = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) with |s| <= 0.172: ten terms reach 1e-17.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut series = 1.0 / 19.0;
    for k in (0..9).rev() {
        series = series * s2 + 1.0 / (2 * k + 1) as f64;
    }
    exponent as f64 * LN_2 + 2.0 * s * series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_the_standard_library() {
        for i in 1..10_000u64 {
            let x = i as f64 / 10_000.0;
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.abs().max(1.0),
                "{x}"
            );
        }
        let tiny = 1e-16f64;
        assert!((ln(tiny) - tiny.ln()).abs() < 1e-12);
    }

    #[test]
    fn race_times_are_stratified_exponentials() {
        let times = race_times(node_seed("n1"), 4096);
        assert!(times.iter().all(|t| t.is_finite() && *t > 0.0));
        // Back to uniforms: exactly one in each cell of width 1/Q.
        let mut cells: Vec<u32> = times
            .iter()
            .map(|t| ((-t).exp() * 4096.0).floor() as u32)
            .collect();
        cells.sort_unstable();
        assert_eq!(cells, (0..4096).collect::<Vec<_>>());
    }

    #[test]
    fn scores_are_pinned() {
        // A change here reshuffles every cluster's ring: it must be deliberate (and versioned).
        assert_eq!(node_seed("n1"), 15506916534570490772);
        let t = race_times(node_seed("n1"), 8);
        let bits: Vec<u64> = t.iter().map(|t| t.to_bits()).collect();
        let expected = [
            4591763564024720001,
            4597785055937569389,
            4605956486402071166,
            4611409924427374323,
            4603821080790889248,
            4601435831029175321,
            4608205199781888288,
            4612161432381167299,
        ];
        assert_eq!(bits, expected);
    }
}
