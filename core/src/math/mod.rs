//! The orthogonal-adapter math engine, following `docs/gs-math.md` exactly.
//!
//! Pure slice functions, no format types: packed skew parameters -> Cayley blocks
//! ([`cayley`]), permutations ([`Permutation`]), chains of permuted block-diagonal
//! factors ([`ChainSpec`], [`prepare_chain`], [`Chain`]), and merge / unmerge /
//! in-place swap of adapters on row-major weights ([`merge`], [`unmerge`], [`swap`]), and
//! the dense products and transposes the forward pass runs on (`gemm`, with an AVX-512
//! kernel chosen at run time on x86-64).
//!
//! | method | permutation | factors `m` |
//! |---|---|---|
//! | OFT | [`Permutation::None`] | 1 |
//! | GSOFT (one side) | [`Permutation::Gs`] | 2 |
//! | Double GSOFT | [`Permutation::Gs`], a chain on each side | 2 |
//! | BOFT | [`Permutation::Butterfly`] | any |

mod cayley;
mod chain;
pub(crate) mod gemm;
mod linalg;
mod merge;
pub mod permutation;
pub(crate) mod reflectors;
mod scalars;

pub use cayley::{cayley, cayley_scratch_len, packed_len, skew_from_packed, ORTHOGONALITY_CAP};
pub use chain::{prepare_chain, Chain, ChainSpec};
pub use gemm::{limit_kernels, simd_kernel_name as dense_kernel_name, KernelFamily};
pub(crate) use linalg::transpose;
pub use linalg::{dot, gemv, sum};
pub use merge::{
    merge, swap, swap_fast_scratch_len, swap_scratch_len, unmerge, LayerTransform, WeightsMut,
};
pub use permutation::Permutation;
pub use scalars::Scalars;

/// Largest supported block size `b` (official GSOFT and PEFT configurations use 2..=64).
pub const MAX_BLOCK_SIZE: usize = 64;

/// Smallest accepted magnitude of a per-output scale (`2^-20`, about `9.5e-7`).
///
/// A merged scale multiplies every weight of its row and a swap divides it out
/// again: below this, weights times the scale reach the subnormal range, where f32
/// keeps too few bits for the round trip (scales of `1e-40` drifted merged weights
/// by `1e-2`). Trained scales stay near 1.
pub const MIN_SCALE: f32 = 1.0 / 1_048_576.0;

/// Largest accepted magnitude of a per-output scale (`2^20`, about `1.05e6`): its
/// inverse is finite and normal, and activations scaled by it stay far from f32
/// overflow where unscaled ones do (scales of `1e30` gave NaN unmerged).
pub const MAX_SCALE: f32 = 1_048_576.0;

/// Largest supported number of factors per chain (a butterfly over `2^16` entries).
pub const MAX_FACTORS: usize = 16;
