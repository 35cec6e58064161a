//! A small deterministic mutator for the ordinary test run: random inputs and mutations of
//! valid ones (flipped and extreme bytes, truncations, extensions, huge length fields,
//! repeated chunks), from a seed, so that a failure replays.

/// Inputs for a target: `n` of them from `seed`, mutating `corpus` (valid inputs).
pub(crate) fn inputs(corpus: &[Vec<u8>], n: usize, seed: u64) -> Inputs {
    Inputs {
        rng: seed ^ 0x9E37_79B9_7F4A_7C15,
        corpus: corpus.to_vec(),
        left: n,
    }
}

/// The iterator [`inputs`] returns.
pub(crate) struct Inputs {
    rng: u64,
    corpus: Vec<Vec<u8>>,
    left: usize,
}

impl Inputs {
    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    fn mutate(&mut self, mut b: Vec<u8>) -> Vec<u8> {
        for _ in 0..1 + self.below(4) {
            let at = self.below(b.len() + 1);
            match self.below(7) {
                0 if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] ^= 1 << self.below(8);
                }
                1 if !b.is_empty() => {
                    let i = at.min(b.len() - 1);
                    b[i] = [0, 0xff, 0x7f, 0x80, b'0', b'{', b'"'][self.below(7)];
                }
                2 => b.truncate(at),
                3 => {
                    let extra: Vec<u8> =
                        (0..self.below(64)).map(|_| self.next_u64() as u8).collect();
                    b.splice(at..at, extra);
                }
                4 => {
                    let w: [u8; 8] = [
                        u64::MAX,
                        u64::from(u32::MAX),
                        1 << 40,
                        i64::MAX as u64,
                        0,
                        (1 << 31) + 7,
                    ][self.below(6)]
                    .to_le_bytes();
                    let n = [4, 8][self.below(2)];
                    let end = (at + n).min(b.len());
                    b.splice(at..end, w[..n].iter().copied());
                }
                5 if !b.is_empty() => {
                    let len = 1 + self.below(b.len().min(32));
                    let from = self.below(b.len() - len + 1);
                    let chunk = b[from..from + len].to_vec();
                    b.splice(at..at, chunk);
                }
                _ => {}
            }
        }
        b
    }
}

impl Iterator for Inputs {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        if self.corpus.is_empty() || self.below(4) == 0 {
            let n = self.below(300);
            return Some((0..n).map(|_| self.next_u64() as u8).collect());
        }
        let i = self.below(self.corpus.len());
        let b = self.corpus[i].clone();
        Some(self.mutate(b))
    }
}

#[test]
fn inputs_replay_from_their_seed_and_vary() {
    let corpus = vec![b"hello world".to_vec()];
    let a: Vec<Vec<u8>> = inputs(&corpus, 100, 7).collect();
    let b: Vec<Vec<u8>> = inputs(&corpus, 100, 7).collect();
    assert_eq!(a, b);
    let distinct: std::collections::HashSet<&Vec<u8>> = a.iter().collect();
    assert!(distinct.len() > 80);
}
