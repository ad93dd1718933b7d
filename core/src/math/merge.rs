//! Merging an orthogonal adapter into weights, unmerging it, and swapping one merged
//! adapter for another in place (gs-math.md sections 6 and 7). No dense `Q` is formed.
//!
//! All three are one operation, [`swap`]: merge is a swap from the bare base, unmerge
//! a swap to the bare base. For an `(out, in)` weight it runs a row pass
//! (`w <- Q_in,to^T Q_in,from w` on each row, then `/ s_from`), and, when either side
//! has an output chain, a column pass (`v <- Q_out,to Q_out,from^T v` on each column);
//! the new scale `s_to` is applied at the end of the last pass. Every value is
//! rounded to the weight's type once per pass.

#[cfg(feature = "f16")]
use half::f16;

use super::{Chain, Scalars};
use crate::{Error, Result};

/// Writable row-major weights of shape `(rows, cols)` = `(out, in)`.
#[derive(Debug)]
pub enum WeightsMut<'a> {
    /// `f32` weights.
    F32(&'a mut [f32]),
    #[cfg(feature = "f16")]
    /// `f16` weights (each pass works on an `f32` copy of one row or column and
    /// rounds once).
    F16(&'a mut [f16]),
}

impl WeightsMut<'_> {
    /// Number of stored values.
    pub fn len(&self) -> usize {
        match self {
            WeightsMut::F32(w) => w.len(),
            #[cfg(feature = "f16")]
            WeightsMut::F16(w) => w.len(),
        }
    }

    /// True when no values are stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The orthogonal adapter of one linear layer `y = W x + bias`, shape `(out, in)`:
/// `W' = diag(s) · Q_out · W · Q_in`.
///
/// `q_in` acts on the input side (width `in`), `q_out` on the output side (width
/// `out`, Double GSOFT only), `scale` has `out` entries (absent = ones).
#[derive(Debug, Clone, Copy, Default)]
pub struct LayerTransform<'a> {
    /// Input-side chain `Q_in`.
    pub q_in: Option<Chain<'a>>,
    /// Output-side chain `Q_out` (Double GSOFT).
    pub q_out: Option<Chain<'a>>,
    /// Per-output scale `s`.
    pub scale: Option<Scalars<'a>>,
}

impl LayerTransform<'_> {
    /// The bare base: no rotation, no scale.
    pub const IDENTITY: LayerTransform<'static> = LayerTransform {
        q_in: None,
        q_out: None,
        scale: None,
    };

    /// Checks that the chains and the scale fit a weight of shape `(rows, cols)`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a chain or scale of the wrong width and
    /// [`Error::NonFiniteParameter`] for a NaN or infinite scale.
    pub fn check_shape(&self, rows: usize, cols: usize) -> Result<()> {
        if let Some(q) = &self.q_in {
            if q.spec().width() != cols {
                return Err(Error::LengthMismatch {
                    expected: cols,
                    found: q.spec().width(),
                });
            }
        }
        if let Some(q) = &self.q_out {
            if q.spec().width() != rows {
                return Err(Error::LengthMismatch {
                    expected: rows,
                    found: q.spec().width(),
                });
            }
        }
        if let Some(s) = &self.scale {
            if s.len() != rows {
                return Err(Error::LengthMismatch {
                    expected: rows,
                    found: s.len(),
                });
            }
            if let Some(i) = s.first_non_finite() {
                return Err(Error::NonFiniteParameter { index: i as u32 });
            }
        }
        Ok(())
    }

    /// Multiply-adds of applying this adapter unmerged to one input vector, on top of
    /// the base layer: `m_in·in·b + m_out·out·b + out`.
    pub fn unmerged_overhead_macs(&self, rows: usize) -> usize {
        self.q_in.map_or(0, |q| q.spec().apply_macs())
            + self.q_out.map_or(0, |q| q.spec().apply_macs())
            + if self.scale.is_some() { rows } else { 0 }
    }
}

/// Scratch `f32`s that [`swap`], [`merge`] and [`unmerge`] need for a weight of shape
/// `(rows, cols)`: `3·max(rows, cols)` (one line of the weight plus a chain's scratch).
pub const fn swap_scratch_len(rows: usize, cols: usize) -> usize {
    3 * if rows > cols { rows } else { cols }
}

/// Scratch `f32`s with which [`swap`] (and [`merge`], [`unmerge`]) take their batched
/// column pass on `f32` weights (output-side chains applied to all columns at once,
/// vectorised, [`Chain::apply_columns`]): `max(rows, cols) + MAX_BLOCK_SIZE·cols`.
pub const fn swap_fast_scratch_len(rows: usize, cols: usize) -> usize {
    (if rows > cols { rows } else { cols }) + super::MAX_BLOCK_SIZE * cols
}

/// Merges an adapter into base weights: `W <- diag(s) · Q_out · W · Q_in`.
///
/// # Errors
/// As [`swap`].
pub fn merge(
    w: WeightsMut<'_>,
    rows: usize,
    cols: usize,
    t: &LayerTransform<'_>,
    scratch: &mut [f32],
) -> Result<()> {
    swap(w, rows, cols, &LayerTransform::IDENTITY, t, scratch)
}

/// Removes a merged adapter: `W <- Q_out^T · diag(s)^{-1} · W' · Q_in^T`.
///
/// # Errors
/// As [`swap`] (a zero scale gives [`Error::ZeroScale`]).
pub fn unmerge(
    w: WeightsMut<'_>,
    rows: usize,
    cols: usize,
    t: &LayerTransform<'_>,
    scratch: &mut [f32],
) -> Result<()> {
    swap(w, rows, cols, t, &LayerTransform::IDENTITY, scratch)
}

/// Swaps merged weights from adapter `from` to adapter `to` in place, without the base:
/// `W_to = diag(s_to) · Q_out,to · Q_out,from^T · diag(s_from)^{-1} · W_from · Q_in,from^T · Q_in,to`.
///
/// Exact up to rounding because every `Q` is orthogonal. Cost
/// `out·in·b·(m_in,from + m_in,to + m_out,from + m_out,to)` multiply-adds; no
/// allocation. Everything is validated before the first weight is written, so an
/// error leaves `w` unchanged.
///
/// # Errors
/// [`Error::LengthMismatch`] if `w.len() != rows·cols` or a chain or scale does not fit;
/// [`Error::NonFiniteParameter`] for a NaN or infinite scale; [`Error::ZeroScale`]
/// if `from` has a zero scale; [`Error::ScaleOutOfRange`] for a scale magnitude
/// outside [`super::MIN_SCALE`]`..=`[`super::MAX_SCALE`]; [`Error::BufferTooSmall`] if `scratch` is shorter than
/// [`swap_scratch_len`]. Never panics.
// Without the `f16` feature `WeightsMut` has only its `F32` variant.
#[cfg_attr(not(feature = "f16"), allow(irrefutable_let_patterns))]
pub fn swap(
    w: WeightsMut<'_>,
    rows: usize,
    cols: usize,
    from: &LayerTransform<'_>,
    to: &LayerTransform<'_>,
    scratch: &mut [f32],
) -> Result<()> {
    let total = rows.checked_mul(cols).ok_or(Error::LengthMismatch {
        expected: usize::MAX,
        found: w.len(),
    })?;
    if w.len() != total {
        return Err(Error::LengthMismatch {
            expected: total,
            found: w.len(),
        });
    }
    from.check_shape(rows, cols)?;
    to.check_shape(rows, cols)?;
    if let Some(i) = from.scale.and_then(|s| s.first_zero()) {
        return Err(Error::ZeroScale { index: i as u32 });
    }
    for s in [from.scale, to.scale].into_iter().flatten() {
        if let Some(i) = s.first_out_of_scale_range() {
            return Err(Error::ScaleOutOfRange { index: i as u32 });
        }
    }
    let need = swap_scratch_len(rows, cols);
    if scratch.len() < need {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: scratch.len(),
        });
    }
    let has_col_pass = from.q_out.is_some() || to.q_out.is_some();
    let row_ops = [(from.q_in, false), (to.q_in, true)];
    let col_ops = [(from.q_out, true), (to.q_out, false)];
    let row_scale = RowScale {
        divide: from.scale,
        multiply: if has_col_pass { None } else { to.scale },
    };
    let row_work = from.q_in.is_some()
        || to.q_in.is_some()
        || row_scale.divide.is_some()
        || row_scale.multiply.is_some();
    let mut w = w;
    let (vec_buf, chain_scratch) = scratch.split_at_mut(rows.max(cols));
    if row_work {
        if let WeightsMut::F32(wf) = &mut w {
            // f32 rows are a row-major batch already: every chain passes over a band of
            // rows at once (the SIMD kernels keep a factor's coefficients in registers),
            // and the band stays in cache through all chains and the scale.
            for (i, band) in wf.chunks_mut(SWAP_BAND_ROWS * cols).enumerate() {
                for (chain, transpose) in &row_ops {
                    if let Some(c) = chain {
                        c.apply_rows(band, *transpose, chain_scratch)?;
                    }
                }
                for (r, row) in band.chunks_exact_mut(cols).enumerate() {
                    row_scale.apply_to_row(i * SWAP_BAND_ROWS + r, row);
                }
            }
        } else {
            for_each_line(&mut w, rows, cols, Line::Rows, vec_buf, |r, v| {
                apply_ops(&row_ops, v, chain_scratch);
                row_scale.apply_to_row(r, v);
            });
        }
    }
    if !has_col_pass {
        return Ok(());
    }
    // The column pass: an f32 weight is feature-major for its columns, so with enough
    // scratch each chain is applied to all columns at once, vectorised, with no copy.
    if let WeightsMut::F32(wf) = &mut w {
        let fast = col_ops
            .iter()
            .filter_map(|(c, _)| c.as_ref())
            .all(|c| chain_scratch.len() >= c.columns_scratch_len(cols));
        if fast {
            for (chain, tr) in col_ops.iter() {
                if let Some(c) = chain {
                    c.apply_columns(wf, cols, *tr, chain_scratch)?;
                }
            }
            if let Some(s) = to.scale {
                for (r, row) in wf.chunks_exact_mut(cols).enumerate() {
                    let m = s.get(r).unwrap_or(1.0);
                    row.iter_mut().for_each(|x| *x *= m);
                }
            }
            return Ok(());
        }
    }
    let multiply = to.scale;
    for_each_line(&mut w, rows, cols, Line::Columns, vec_buf, |_, v| {
        apply_ops(&col_ops, v, chain_scratch);
        if let Some(s) = multiply {
            for (r, x) in v.iter_mut().enumerate() {
                *x *= s.get(r).unwrap_or(1.0);
            }
        }
    });
    Ok(())
}

/// Rows of an f32 weight that go through all row operations of a swap together.
const SWAP_BAND_ROWS: usize = 16;

/// Division by an old scale and multiplication by a new one, per row.
#[derive(Clone, Copy)]
struct RowScale<'a> {
    divide: Option<Scalars<'a>>,
    multiply: Option<Scalars<'a>>,
}

impl RowScale<'_> {
    fn apply_to_row(&self, r: usize, v: &mut [f32]) {
        let d = self.divide.and_then(|s| s.get(r)).unwrap_or(1.0);
        let m = self.multiply.and_then(|s| s.get(r)).unwrap_or(1.0);
        if d != 1.0 {
            v.iter_mut().for_each(|x| *x /= d);
        }
        if m != 1.0 {
            v.iter_mut().for_each(|x| *x *= m);
        }
    }
}

/// Applies each present chain in turn (`true` = transposed). Widths were checked.
fn apply_ops(ops: &[(Option<Chain<'_>>, bool)], v: &mut [f32], scratch: &mut [f32]) {
    for (chain, transpose) in ops {
        if let Some(c) = chain {
            // Lengths were validated by `check_shape`; an error here is impossible.
            let _ = c.apply(v, *transpose, scratch);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Line {
    Rows,
    Columns,
}

/// Runs `op(index, line)` on every row or column of `w`, as a contiguous `f32` line:
/// f32 rows in place, everything else through `buf` (rounded once on write-back).
fn for_each_line(
    w: &mut WeightsMut<'_>,
    rows: usize,
    cols: usize,
    line: Line,
    buf: &mut [f32],
    mut op: impl FnMut(usize, &mut [f32]),
) {
    match (w, line) {
        (WeightsMut::F32(w), Line::Rows) => {
            for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                op(r, row);
            }
        }
        #[cfg(feature = "f16")]
        (WeightsMut::F16(w), Line::Rows) => {
            let v = &mut buf[..cols];
            for (r, row) in w.chunks_exact_mut(cols).enumerate() {
                for (x, h) in v.iter_mut().zip(row.iter()) {
                    *x = h.to_f32();
                }
                op(r, v);
                for (h, x) in row.iter_mut().zip(v.iter()) {
                    *h = f16::from_f32(*x);
                }
            }
        }
        (WeightsMut::F32(w), Line::Columns) => {
            let v = &mut buf[..rows];
            for c in 0..cols {
                for (r, x) in v.iter_mut().enumerate() {
                    *x = w[r * cols + c];
                }
                op(c, v);
                for (r, x) in v.iter().enumerate() {
                    w[r * cols + c] = *x;
                }
            }
        }
        #[cfg(feature = "f16")]
        (WeightsMut::F16(w), Line::Columns) => {
            let v = &mut buf[..rows];
            for c in 0..cols {
                for (r, x) in v.iter_mut().enumerate() {
                    *x = w[r * cols + c].to_f32();
                }
                op(c, v);
                for (r, x) in v.iter().enumerate() {
                    w[r * cols + c] = f16::from_f32(*x);
                }
            }
        }
    }
}
