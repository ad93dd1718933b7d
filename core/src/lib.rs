//! # riffle-core
//!
//! A `#![no_std]`, allocation-free runtime for **orthogonal adapters** over frozen
//! neural networks: GSOFT (Group-and-Shuffle), Double GSOFT, OFT and BOFT, all as
//! configurations of one engine. Every buffer is provided by the caller, every
//! failure is a typed [`Error`], nothing panics on input.
//!
//! The math follows `docs/gs-math.md` (Cayley sign, packed skew parameters, GS and
//! butterfly permutations, factor order, scale); the file layout follows
//! `docs/format.md` (GGUF v3).
//!
//! ## Quick start: build an adapter from parameters, apply it, merge it
//!
//! ```
//! use riffle_core::math::{merge, prepare_chain, ChainSpec, LayerTransform, Permutation, Scalars, WeightsMut};
//!
//! // GSOFT on a side of width 4 with blocks of 2: two factors, GS shuffle between them.
//! let spec = ChainSpec::new(4, 2, 2, Permutation::Gs)?;
//! let factor0 = [0.5f32, 1.0 / 3.0]; // packed skew parameters, one per 2x2 block
//! let factor1 = [1.0f32 / 3.0, 0.5];
//! let mut blocks = [0.0f32; 16]; // spec.blocks_len()
//! let mut scratch = [0.0f32; 12]; // enough for prepare (2b²), apply (2n) and merge (3·max(rows, cols))
//! let q = prepare_chain(spec, &[Scalars::F32(&factor0), Scalars::F32(&factor1)], &mut blocks, &mut scratch)?;
//!
//! // Unmerged: rotate an input vector in place, y = Q x (gs-math.md section 5).
//! let mut x = [1.0f32, 2.0, 3.0, 4.0];
//! q.apply(&mut x, false, &mut scratch)?;
//! for (got, want) in x.iter().zip([4.64, 1.36, 2.52, 0.52]) {
//!     assert!((got - want).abs() < 1e-5);
//! }
//!
//! // Merged: fold Q into a 1 x 4 weight, W' = W Q; then W' e_0 is the first row of W Q.
//! let mut w = [1.0f32, 0.0, 0.0, 0.0];
//! let layer = LayerTransform { q_in: Some(q), ..LayerTransform::IDENTITY };
//! merge(WeightsMut::F32(&mut w), 1, 4, &layer, &mut scratch)?;
//! for (got, want) in w.iter().zip([0.48, 0.64, 0.48, 0.36]) {
//!     assert!((got - want).abs() < 1e-5);
//! }
//! # Ok::<(), riffle_core::Error>(())
//! ```
//!
//! ## Cargo features
//!
//! Everything but `baked` and `force-portable` is on by default (the list, with what each
//! adds, is in `core/Cargo.toml` and docs/firmware.md). A small firmware turns the
//! defaults off and names what it runs; what is left out is refused with a typed error.
//! `baked` (off by default) adds `runtime::baked`: `bake` writes an `mlp` base and
//! adapters prepared by the full runtime into one compact blob on the host, and
//! `BakedModel` runs it on a device without the GGUF parser,
//! the Cayley solver or adapter validation (the blob's integrity is checked: CRC-32,
//! bounds, dimensions; its numeric content is trusted as validated at bake time).
#![no_std]
#![deny(unsafe_code)]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod checksum;
mod error;
pub mod gguf;
pub mod math;
pub mod nn;
pub mod par;
pub mod quant;
pub mod runtime;
pub mod sample;
#[cfg(feature = "text")]
pub mod text;

pub use error::{Error, KeyName, Result};
