//! A small seeded generator (SplitMix64) for the mem backend's fault decisions.
//!
//! Owns: turning (fabric seed, endpoint id) into an independent, reproducible stream of
//! numbers. No `rand` dependency: the fault model needs only uniform draws and coin flips,
//! and a fixed in-tree algorithm keeps a printed seed meaningful across dependency updates.

/// Weyl increment of SplitMix64 (2^64 / golden ratio).
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijective mix of all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A SplitMix64 stream.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// The stream of endpoint `id` in a fabric seeded with `seed`. Mixing the id through
    /// the output function (rather than adding it to the state) keeps neighbouring
    /// endpoints' streams from being shifted copies of one another.
    pub(crate) fn for_endpoint(seed: u64, id: usize) -> Rng {
        Rng {
            state: mix(seed ^ mix((id as u64).wrapping_add(1).wrapping_mul(GOLDEN))),
        }
    }

    /// The next 64 uniform bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A uniform value in `0..n` (0 when `n` is 0). Multiply-high instead of `%` keeps the
    /// bias below 2^-64 per value without a rejection loop.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`. `p <= 0` (or NaN) is false and `p >= 1` true without a
    /// draw, so a fault that is switched off costs nothing.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        if p.is_nan() || p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits give every representable value in [0, 1) with its exact weight.
        let unit = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        unit < p
    }
}
