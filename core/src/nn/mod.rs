//! Layers shared by the architectures: normalisations, activations, attention, rotary
//! position embeddings and convolution helpers. Each works in place or into caller
//! slices, allocates nothing and is checked against a plain reference in its tests.
//!
//! ```
//! use riffle_core::nn::{activation::silu, norm::rms_norm};
//! let mut x = [1.0f32, -2.0, 3.0, -4.0];
//! rms_norm(&mut x, &[1.0; 4], 0.0);
//! let rms = (30.0f32 / 4.0).sqrt();
//! assert!((x[0] - 1.0 / rms).abs() < 1e-6);
//! let mut y = [0.0f32, 1.0];
//! silu(&mut y);
//! assert!(y[0] == 0.0 && (y[1] - 0.731_058_6).abs() < 1e-6);
//! ```

pub mod activation;
pub mod attention;
pub mod conv;
pub mod norm;
pub mod rope;
