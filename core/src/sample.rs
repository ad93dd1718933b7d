//! Choosing the next token from a causal model's logits: greedy (temperature 0, ties to
//! the lowest id), or sampling with temperature, top-k and top-p from a seeded generator.
//! Everything is plain `f32` arithmetic with `libm` and a fixed-order sort, so one seed
//! gives the same tokens on every target (x86-64, wasm, a microcontroller).
//!
//! ```
//! use riffle_core::sample::{Sampler, SamplerConfig};
//! let logits = [0.5f32, 2.0, 2.0, -1.0];
//! let mut scratch = [0u32; 4];
//! let mut greedy = Sampler::new(SamplerConfig::GREEDY);
//! assert_eq!(greedy.sample(&logits, &mut scratch)?, 1); // ties go to the lowest id
//! let cfg = SamplerConfig { temperature: 0.8, top_k: 2, top_p: 1.0, seed: 7 };
//! let (mut a, mut b) = (Sampler::new(cfg), Sampler::new(cfg));
//! for _ in 0..5 {
//!     let t = a.sample(&logits, &mut scratch)?;
//!     assert!(t == 1 || t == 2); // top-k = 2 keeps ids 1 and 2
//!     assert_eq!(t, b.sample(&logits, &mut scratch)?); // same seed, same tokens
//! }
//! # Ok::<(), riffle_core::Error>(())
//! ```

use crate::{Error, Result};

/// How to choose tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 (or below) is greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`
    /// (1 = all).
    pub top_p: f32,
    /// Seed of the generator.
    pub seed: u64,
}

impl SamplerConfig {
    /// Greedy decoding.
    pub const GREEDY: SamplerConfig = SamplerConfig {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };

    /// Whether this chooses the likeliest token (temperature 0, below, or NaN).
    pub fn is_greedy(&self) -> bool {
        self.temperature.is_nan() || self.temperature <= 0.0
    }
}

/// A token chooser with its generator state.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: SamplerConfig,
    state: u64,
}

impl Sampler {
    /// A sampler seeded with `config.seed`.
    pub fn new(config: SamplerConfig) -> Self {
        Sampler {
            config,
            state: config.seed,
        }
    }

    /// The configuration.
    pub fn config(&self) -> SamplerConfig {
        self.config
    }

    /// SplitMix64: the next 64 random bits.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)` with 24 random bits (exact in `f32`).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next token id from `logits`; `scratch` needs `logits.len()` entries (token
    /// order for top-k and top-p).
    ///
    /// # Errors
    /// [`Error::BadInput`] for empty logits or a NaN among them;
    /// [`Error::BufferTooSmall`] for a short `scratch` when sampling.
    pub fn sample(&mut self, logits: &[f32], scratch: &mut [u32]) -> Result<u32> {
        if logits.is_empty() || logits.iter().any(|v| v.is_nan()) {
            return Err(Error::BadInput);
        }
        let c = self.config;
        if c.is_greedy() {
            return Ok(argmax(logits));
        }
        let n = logits.len();
        let got = scratch.len();
        let order = scratch
            .get_mut(..n)
            .ok_or(Error::BufferTooSmall { needed: n, got })?;
        for (i, o) in order.iter_mut().enumerate() {
            *o = i as u32;
        }
        // Most likely first; equal logits by id, so the order is total and the same
        // everywhere.
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        let k = if c.top_k == 0 { n } else { c.top_k.min(n) };
        if k < n {
            order.select_nth_unstable_by(k - 1, by_logit);
        }
        let kept = &mut order[..k];
        kept.sort_unstable_by(by_logit);
        // Softmax of the kept logits at the temperature, then the top-p cut.
        let max = logits[kept[0] as usize];
        let inv_t = 1.0 / c.temperature;
        let weight = |id: u32| libm::expf((logits[id as usize] - max) * inv_t);
        let total: f32 = kept.iter().map(|&id| weight(id)).sum();
        let mut keep = kept.len();
        if c.top_p < 1.0 {
            let mut acc = 0.0f32;
            for (i, &id) in kept.iter().enumerate() {
                acc += weight(id) / total;
                if acc >= c.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        let kept = &kept[..keep];
        let mass: f32 = kept.iter().map(|&id| weight(id)).sum();
        let mut r = self.uniform() * mass;
        for &id in kept {
            r -= weight(id);
            if r < 0.0 {
                return Ok(id);
            }
        }
        Ok(kept[keep - 1])
    }
}

/// Index of the largest value, the lowest index among equals.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a failure is a panic with its location
mod tests {
    use super::{argmax, Sampler, SamplerConfig};

    #[test]
    fn greedy_takes_the_lowest_id_among_ties_and_rejects_nan() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        let mut s = Sampler::new(SamplerConfig::GREEDY);
        let mut sc = [0u32; 3];
        assert_eq!(s.sample(&[-1.0, -1.0, -2.0], &mut sc).unwrap(), 0);
        assert!(s.sample(&[0.0, f32::NAN, 1.0], &mut sc).is_err());
        assert!(s.sample(&[], &mut sc).is_err());
    }

    #[test]
    fn sampling_follows_the_distribution_and_its_cuts() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let mut sc = [0u32; 4];
        let mut counts = [0usize; 4];
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
        };
        let mut s = Sampler::new(cfg);
        let draws = 20_000;
        for _ in 0..draws {
            counts[s.sample(&logits, &mut sc).unwrap() as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = f64::from(logits[i]).exp() / z;
            let got = c as f64 / draws as f64;
            // Four standard deviations of a binomial proportion.
            let sd = (p * (1.0 - p) / draws as f64).sqrt();
            assert!((got - p).abs() < 4.0 * sd + 1e-3, "token {i}: {got} vs {p}");
        }
        // top-k = 2 keeps ids 3 and 2; top-p = 0.6 keeps only id 3 (p = 0.64).
        let mut k2 = Sampler::new(SamplerConfig { top_k: 2, ..cfg });
        let mut p6 = Sampler::new(SamplerConfig { top_p: 0.6, ..cfg });
        for _ in 0..200 {
            assert!(k2.sample(&logits, &mut sc).unwrap() >= 2);
            assert_eq!(p6.sample(&logits, &mut sc).unwrap(), 3);
        }
        // A short scratch is an error when sampling.
        assert!(k2.sample(&logits, &mut sc[..2]).is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let logits: [f32; 50] = core::array::from_fn(|i| ((i * 37) % 11) as f32 * 0.3);
        let mut sc = [0u32; 50];
        let cfg = SamplerConfig {
            temperature: 0.7,
            top_k: 20,
            top_p: 0.9,
            seed: 1234,
        };
        let (mut a, mut b) = (Sampler::new(cfg), Sampler::new(cfg));
        let mut c = Sampler::new(SamplerConfig { seed: 99, ..cfg });
        let mut differ = false;
        for _ in 0..100 {
            let (x, y, z) = (
                a.sample(&logits, &mut sc).unwrap(),
                b.sample(&logits, &mut sc).unwrap(),
                c.sample(&logits, &mut sc).unwrap(),
            );
            assert_eq!(x, y);
            differ |= x != z;
        }
        assert!(differ, "another seed gives other tokens");
    }
}
