//! Packed skew parameters and the Cayley transform (gs-math.md sections 2, 3 and 9).

use super::Scalars;
use crate::{Error, Result};

/// Number of packed parameters of one `b x b` skew block: `b(b-1)/2`.
pub const fn packed_len(b: usize) -> usize {
    b * b.saturating_sub(1) / 2
}

/// Scratch (in `f32`s) that [`cayley`] needs for block size `b`: `b*b`.
pub const fn cayley_scratch_len(b: usize) -> usize {
    b * b
}

/// Writes the Cayley block `C = (I - S)^{-1} (I + S)` into `out[..b*b]` (row-major).
///
/// `S` is the skew matrix of the packed parameters `params[0 .. b(b-1)/2]`, in the
/// row-major order of the strict upper triangle (`S[i][j] = p`, `S[j][i] = -p`).
/// The solve is Gaussian elimination **with partial pivoting** (gs-math.md section 9:
/// without pivoting, large parameters cancel pivots to zero in f32), in f64 for `b <= 16`
/// (rounded once to f32) and in f32 above. The block is then checked: a defect
/// `||C^T C - I||_max` above [`ORTHOGONALITY_CAP`] (f64 solves) or section 9's bound (f32
/// solves) is refused, so a prepared adapter always swaps exactly. Zero parameters give the identity exactly.
///
/// `scratch` needs [`cayley_scratch_len`]`(b)` values. Cost about `(4/3)·b^3` flops.
///
/// # Errors
/// [`Error::InvalidBlockSize`] for `b < 2` or `b >` [`super::MAX_BLOCK_SIZE`],
/// [`Error::BufferTooSmall`] for short `params`, `out` or `scratch`,
/// [`Error::NonFiniteParameter`] for a NaN or infinite parameter (index within
/// `params`), and [`Error::NumericalFailure`] if the solve overflows or the block is not
/// orthogonal to the accepted tolerance. Never panics.
///
/// ```
/// use riffle_core::math::{cayley, Scalars};
/// let mut c = [0.0f32; 4];
/// let mut scratch = [0.0f32; 4];
/// cayley(Scalars::F32(&[0.5]), 2, &mut c, &mut scratch)?;
/// assert!((c[0] - 0.6).abs() < 1e-7 && (c[1] - 0.8).abs() < 1e-7);
/// assert!((c[2] + 0.8).abs() < 1e-7 && (c[3] - 0.6).abs() < 1e-7);
/// # Ok::<(), riffle_core::Error>(())
/// ```
pub fn cayley(params: Scalars<'_>, b: usize, out: &mut [f32], scratch: &mut [f32]) -> Result<()> {
    if !(2..=super::MAX_BLOCK_SIZE).contains(&b) {
        return Err(Error::InvalidBlockSize { block: b as u32 });
    }
    let bb = b * b;
    let np = packed_len(b);
    if params.len() < np {
        return Err(Error::BufferTooSmall {
            needed: np,
            got: params.len(),
        });
    }
    if out.len() < bb {
        return Err(Error::BufferTooSmall {
            needed: bb,
            got: out.len(),
        });
    }
    if scratch.len() < bb {
        return Err(Error::BufferTooSmall {
            needed: bb,
            got: scratch.len(),
        });
    }
    let a = &mut scratch[..bb];
    let r = &mut out[..bb];
    a.fill(0.0);
    r.fill(0.0);
    for i in 0..b {
        a[i * b + i] = 1.0;
        r[i * b + i] = 1.0;
    }
    let mut idx = 0;
    // 2·||p||² = ||S||_F², for the f32 solves' bound below.
    let mut s2 = 0.0f32;
    for i in 0..b {
        for j in i + 1..b {
            let p = params.get(idx).unwrap_or(f32::NAN);
            if !p.is_finite() {
                return Err(Error::NonFiniteParameter { index: idx as u32 });
            }
            s2 += 2.0 * p * p;
            // A = I - S, R = I + S.
            a[i * b + j] = -p;
            a[j * b + i] = p;
            r[i * b + j] = p;
            r[j * b + i] = -p;
            idx += 1;
        }
    }
    if USE_F64_SOLVE && b <= F64_SOLVE_MAX_BLOCK {
        // Solve in f64 on the stack and round once: orthogonal to f32 precision whatever the
        // parameters (gs-math.md section 9); a one-time cost even where f64 is software.
        let mut a64 = [0.0f64; F64_SOLVE_MAX_BLOCK * F64_SOLVE_MAX_BLOCK];
        let mut r64 = [0.0f64; F64_SOLVE_MAX_BLOCK * F64_SOLVE_MAX_BLOCK];
        for ((d, &v), (e, &w)) in a64
            .iter_mut()
            .zip(a.iter())
            .zip(r64.iter_mut().zip(r.iter()))
        {
            *d = f64::from(v);
            *e = f64::from(w);
        }
        solve_in_place(&mut a64[..bb], &mut r64[..bb], b);
        for (o, &v) in r.iter_mut().zip(r64.iter()) {
            *o = v as f32;
        }
    } else {
        solve_in_place(a, r, b);
    }
    if r.iter().any(|v| !v.is_finite()) {
        return Err(Error::NumericalFailure);
    }
    // The solve is accurate only while the skew part is moderate (gs-math.md section 9):
    // one huge parameter among small ones can give a finite but visibly non-orthogonal
    // block, which would break exact swaps. The f64 solve reaches f32 precision for any
    // realistic parameters, so its blocks must meet ORTHOGONALITY_CAP; f32 solves (b > 16,
    // or any b where f64 is not hardware) must meet section 9's bound,
    // `1e-5 + 2^-23·||S||_F`, capped at 1e-3 ([`exceeds_f32_bound`]).
    let defect = orthogonality_defect(r, b);
    let fails = if USE_F64_SOLVE && b <= F64_SOLVE_MAX_BLOCK {
        defect > ORTHOGONALITY_CAP
    } else {
        exceeds_f32_bound(defect, s2)
    };
    if fails {
        return Err(Error::NumericalFailure);
    }
    Ok(())
}

/// Whether an f32-solved block's defect exceeds gs-math.md section 9's bound
/// `min(1e-5 + 2^-23·sqrt(s2), 1e-3)`, `s2 = ||S||_F²`. Compared without a square root (so
/// a microcontroller image links no `sqrtf`): with `t = defect - 1e-5`,
/// `defect > 1e-5 + eps·sqrt(s2)` exactly when `t > 0` and `t² > eps²·s2` (`eps²` is a
/// power of two, and `t <= 1e-3` where it is squared, so nothing overflows).
#[inline]
fn exceeds_f32_bound(defect: f32, s2: f32) -> bool {
    let t = defect - 1e-5;
    defect > 1e-3 || (t > 0.0 && t * t > s2 * (f32::EPSILON * f32::EPSILON))
}

/// Blocks up to this size are solved in f64 (2 × 2 KiB of stack); larger ones in f32.
const F64_SOLVE_MAX_BLOCK: usize = 16;

/// The f64 solve where f64 is hardware (PC, wasm): on microcontrollers without a
/// double-precision FPU it would add about 6 KB of soft-float code, so they solve in f32 and
/// rely on the section 9 check alone (still refusing a non-orthogonal block).
const USE_F64_SOLVE: bool = cfg!(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "wasm32"
));

/// Largest orthogonality defect `||C^T C - I||_max` accepted for a block solved in f64
/// (`b <= 16`), whatever its parameters: such blocks measure about 1e-7 unless the system is
/// hopelessly ill-conditioned (a parameter of 1e12 among order-1 ones), and a larger defect
/// would make merged swaps drift visibly (docs/robustness.md).
pub const ORTHOGONALITY_CAP: f32 = 4e-6;

/// `||C^T C - I||_max` of a row-major `b x b` block (`b³` multiply-adds).
fn orthogonality_defect(c: &[f32], b: usize) -> f32 {
    let mut worst = 0.0f32;
    for i in 0..b {
        for j in i..b {
            let mut d = 0.0f32;
            for k in 0..b {
                d += c[k * b + i] * c[k * b + j];
            }
            let e = if i == j { d - 1.0 } else { d };
            worst = worst.max(libm::fabsf(e));
        }
    }
    worst
}

/// Solves `A X = R` for `X` (written over `R`), both `b x b` row-major, by Gaussian
/// elimination with partial pivoting. `A` is destroyed.
fn solve_in_place<T: Real>(a: &mut [T], r: &mut [T], b: usize) {
    for col in 0..b {
        // Partial pivoting: the largest |a[row][col]| for row >= col.
        let mut piv_row = col;
        let mut piv_abs = a[col * b + col].abs();
        for row in col + 1..b {
            let v = a[row * b + col].abs();
            if v > piv_abs {
                piv_abs = v;
                piv_row = row;
            }
        }
        if piv_row != col {
            for c in 0..b {
                a.swap(col * b + c, piv_row * b + c);
                r.swap(col * b + c, piv_row * b + c);
            }
        }
        let piv = a[col * b + col];
        for row in col + 1..b {
            let f = a[row * b + col] / piv;
            if f == T::ZERO {
                continue;
            }
            a[row * b + col] = T::ZERO;
            for c in col + 1..b {
                a[row * b + c] = a[row * b + c] - f * a[col * b + c];
            }
            for c in 0..b {
                r[row * b + c] = r[row * b + c] - f * r[col * b + c];
            }
        }
    }
    for row in (0..b).rev() {
        let d = a[row * b + row];
        for c in 0..b {
            let mut s = r[row * b + c];
            for k in row + 1..b {
                s = s - a[row * b + k] * r[k * b + c];
            }
            r[row * b + c] = s / d;
        }
    }
}

/// The arithmetic [`solve_in_place`] needs, for `f32` and `f64`.
trait Real:
    Copy
    + PartialOrd
    + core::ops::Sub<Output = Self>
    + core::ops::Mul<Output = Self>
    + core::ops::Div<Output = Self>
{
    const ZERO: Self;
    fn abs(self) -> Self;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    fn abs(self) -> Self {
        libm::fabsf(self)
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    fn abs(self) -> Self {
        libm::fabs(self)
    }
}

/// Writes the dense skew matrix `S` of packed parameters into `out[..b*b]`.
///
/// # Errors
/// [`Error::BufferTooSmall`] when `params` or `out` is short. Never panics.
pub fn skew_from_packed(params: Scalars<'_>, b: usize, out: &mut [f32]) -> Result<()> {
    let np = packed_len(b);
    if params.len() < np {
        return Err(Error::BufferTooSmall {
            needed: np,
            got: params.len(),
        });
    }
    if out.len() < b * b {
        return Err(Error::BufferTooSmall {
            needed: b * b,
            got: out.len(),
        });
    }
    out[..b * b].fill(0.0);
    let mut idx = 0;
    for i in 0..b {
        for j in i + 1..b {
            let p = params.get(idx).unwrap_or(0.0);
            out[i * b + j] = p;
            out[j * b + i] = -p;
            idx += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::exceeds_f32_bound;

    /// The square-root-free comparison decides as `defect > min(1e-5 + eps·sqrt(s2), 1e-3)`
    /// computed with a square root (in f64, so the reference itself does not round),
    /// except within a few ulps of the bound.
    #[test]
    fn f32_bound_without_a_square_root() {
        let mut checked = 0;
        for si in 0..200 {
            let s2 = (10.0f64).powf(-8.0 + si as f64 * 0.1) as f32; // 1e-8 .. 1e12
            let bound = (1e-5f64 + f64::from(f32::EPSILON) * f64::from(s2).sqrt()).min(1e-3);
            for di in -100..=100 {
                let defect = (bound * (1.0 + di as f64 * 1e-3)) as f32;
                let want = f64::from(defect) > bound;
                let near =
                    (f64::from(defect) - bound).abs() <= bound * 4.0 * f64::from(f32::EPSILON);
                if !near {
                    assert_eq!(
                        exceeds_f32_bound(defect, s2),
                        want,
                        "defect {defect} s2 {s2}"
                    );
                    checked += 1;
                }
            }
            assert!(!exceeds_f32_bound(0.0, s2));
            assert!(exceeds_f32_bound(2e-3, s2));
        }
        assert!(checked > 30_000);
    }
}
