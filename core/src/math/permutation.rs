//! The gather permutations of gs-math.md section 4: identity, GS shuffle, butterfly.
//!
//! A permutation is a gather table `pi` with `(P x)[i] = x[pi[i]]`. The runtime never
//! stores tables: [`block_sources`] writes the `b` source indices of one gathered
//! block, which is all an in-place factor application needs.

/// Which permutation rule a chain's factors use (`adapter.orthogonal.permutation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permutation {
    /// Every factor uses the identity: contiguous blocks (OFT).
    None,
    /// Factor `f` uses `sigma^f`, the GS shuffle composed `f` times (GSOFT).
    Gs,
    /// Factor `f` of `m` uses butterfly level `m - 1 - f` (BOFT).
    Butterfly,
}

impl Permutation {
    /// The name stored in `adapter.orthogonal.permutation`.
    pub const fn name(self) -> &'static str {
        match self {
            Permutation::None => "none",
            Permutation::Gs => "gs",
            Permutation::Butterfly => "butterfly",
        }
    }

    /// Parses the name stored in `adapter.orthogonal.permutation`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Permutation::None),
            "gs" => Some(Permutation::Gs),
            "butterfly" => Some(Permutation::Butterfly),
            _ => None,
        }
    }
}

/// The GS shuffle `sigma(i) = (i mod b)·k + floor(i / b)` on a side of width `n = k·b`.
#[inline]
pub const fn gs_shuffle(i: usize, n: usize, b: usize) -> usize {
    let k = n / b;
    (i % b) * k + i / b
}

/// Gather index `pi(i)` of factor `factor` in a chain of `factors` factors.
///
/// `n` is the width and `b` the block size; the caller has validated the shape
/// (see [`crate::math::ChainSpec::new`]). This is the slow, table-free definition,
/// used by tests and by tools that want the full table.
pub fn gather_index(
    kind: Permutation,
    n: usize,
    b: usize,
    factors: usize,
    factor: usize,
    i: usize,
) -> usize {
    match kind {
        Permutation::None => i,
        Permutation::Gs => {
            let mut j = i;
            for _ in 0..factor {
                j = gs_shuffle(j, n, b);
            }
            j
        }
        Permutation::Butterfly => {
            let level = factors - 1 - factor;
            let h = b / 2;
            if level == 0 || h == 0 {
                return i;
            }
            let span = b << level;
            let base = i / span * span;
            let local = i - base;
            let q = local / h;
            let e = local % h;
            let c = if q.is_multiple_of(2) {
                q / 2
            } else {
                (1 << level) + (q - 1) / 2
            };
            base + c * h + e
        }
    }
}

/// Writes into `out[..b]` the source indices `pi(j·b + t)`, `t = 0..b`, of gathered
/// block `block` of factor `factor`: the entries of `x` that this block reads and writes.
///
/// Cheap closed forms for the identity, the first GS shuffle and every butterfly
/// level; `sigma^f` with `f >= 2` falls back to [`gather_index`].
#[inline]
pub fn block_sources(
    kind: Permutation,
    n: usize,
    b: usize,
    factors: usize,
    factor: usize,
    block: usize,
    out: &mut [usize],
) {
    let out = &mut out[..b];
    match kind {
        Permutation::None => fill_run(out, block * b, 1),
        Permutation::Gs if factor == 0 => fill_run(out, block * b, 1),
        Permutation::Gs if factor == 1 => fill_run(out, block, n / b),
        Permutation::Gs => {
            for (t, o) in out.iter_mut().enumerate() {
                *o = gather_index(kind, n, b, factors, factor, block * b + t);
            }
        }
        Permutation::Butterfly => {
            let level = factors - 1 - factor;
            if level == 0 {
                fill_run(out, block * b, 1);
                return;
            }
            let h = b / 2;
            let per_span = 1usize << level;
            let base = block / per_span * (b << level);
            let g = block % per_span;
            let (lo, hi) = out.split_at_mut(h);
            fill_run(lo, base + g * h, 1);
            fill_run(hi, base + (per_span + g) * h, 1);
        }
    }
}

#[inline]
fn fill_run(out: &mut [usize], start: usize, stride: usize) {
    let mut v = start;
    for o in out.iter_mut() {
        *o = v;
        v += stride;
    }
}
