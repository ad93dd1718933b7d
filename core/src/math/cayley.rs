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
/// without pivoting, large parameters cancel pivots to zero in f32). Zero parameters
/// give the identity exactly.
///
/// `scratch` needs [`cayley_scratch_len`]`(b)` values. Cost about `(4/3)·b^3` flops.
///
/// # Errors
/// [`Error::InvalidBlockSize`] for `b < 2` or `b >` [`super::MAX_BLOCK_SIZE`],
/// [`Error::BufferTooSmall`] for short `params`, `out` or `scratch`,
/// [`Error::NonFiniteParameter`] for a NaN or infinite parameter (index within
/// `params`), and [`Error::NumericalFailure`] if the solve overflows. Never panics.
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
    for i in 0..b {
        for j in i + 1..b {
            let p = params.get(idx).unwrap_or(f32::NAN);
            if !p.is_finite() {
                return Err(Error::NonFiniteParameter { index: idx as u32 });
            }
            // A = I - S, R = I + S.
            a[i * b + j] = -p;
            a[j * b + i] = p;
            r[i * b + j] = p;
            r[j * b + i] = -p;
            idx += 1;
        }
    }
    solve_in_place(a, r, b);
    if r.iter().any(|v| !v.is_finite()) {
        return Err(Error::NumericalFailure);
    }
    Ok(())
}

/// Solves `A X = R` for `X` (written over `R`), both `b x b` row-major, by Gaussian
/// elimination with partial pivoting. `A` is destroyed.
fn solve_in_place(a: &mut [f32], r: &mut [f32], b: usize) {
    for col in 0..b {
        // Partial pivoting: the largest |a[row][col]| for row >= col.
        let mut piv_row = col;
        let mut piv_abs = libm::fabsf(a[col * b + col]);
        for row in col + 1..b {
            let v = libm::fabsf(a[row * b + col]);
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
            if f == 0.0 {
                continue;
            }
            a[row * b + col] = 0.0;
            for c in col + 1..b {
                a[row * b + c] -= f * a[col * b + c];
            }
            for c in 0..b {
                r[row * b + c] -= f * r[col * b + c];
            }
        }
    }
    for row in (0..b).rev() {
        let d = a[row * b + row];
        for c in 0..b {
            let mut s = r[row * b + c];
            for k in row + 1..b {
                s -= a[row * b + k] * r[k * b + c];
            }
            r[row * b + c] = s / d;
        }
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
