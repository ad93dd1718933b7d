//! Splitting heavy steps across threads without `std` or an allocator: the core cuts a
//! step into independent parts, each writing its own disjoint slice of the output, and a
//! caller-supplied [`Executor`] runs the parts (a thread pool in the CLI, Web Workers in
//! the browser). [`Sequential`] runs them on the calling thread; a firmware never builds
//! an executor, and its code path is the one-thread path of before.
//!
//! Every split is chosen so that each output value is computed by the same arithmetic in
//! the same order whatever the thread count: results are bit-identical for 1, 2, 3 or 7
//! threads (tested).
//!
//! ```
//! use riffle_core::par::{Executor, Sequential};
//! let mut a = [0.0f32; 3];
//! let mut b = [0.0f32; 2];
//! let mut outs: [&mut [f32]; 2] = [&mut a, &mut b];
//! Sequential.for_each(&mut outs, 4, &|i, out, scratch| {
//!     assert!(scratch.len() >= 4);
//!     out.fill(i as f32 + 1.0);
//! });
//! assert_eq!((a, b), ([1.0; 3], [2.0; 2]));
//! ```

/// Most parts one step is cut into (and so the most threads a step uses).
pub const MAX_PARTS: usize = 64;

/// One part of a step: `(index, output slice, scratch)`.
pub type Part<'f> = dyn Fn(usize, &mut [f32], &mut [f32]) + Sync + 'f;

/// Runs the parts of a step, possibly at the same time.
pub trait Executor: Sync + core::fmt::Debug {
    /// Threads the executor runs parts on (1: the caller's thread only).
    fn threads(&self) -> usize;

    /// Calls `f(i, outs[i], scratch)` once for every part `i`, each with a scratch slice
    /// of at least `scratch_len` values that no other running part uses, and returns when
    /// every call has returned. Parts may run in any order, at the same time. Running part
    /// 0 on the calling thread pays: its caches then hold what that part prefetched for
    /// the caller's next step (a decoder's next adapter coefficients).
    fn for_each(&self, outs: &mut [&mut [f32]], scratch_len: usize, f: &Part<'_>);
}

/// The one-thread executor: parts run in order on the calling thread, with scratch from
/// a small stack buffer when it fits (callers that use `Sequential` take their one-thread
/// paths instead and never ask it for a large scratch).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Executor for Sequential {
    fn threads(&self) -> usize {
        1
    }
    fn for_each(&self, outs: &mut [&mut [f32]], scratch_len: usize, f: &Part<'_>) {
        let mut stack = [0.0f32; 256];
        let scratch: &mut [f32] = if scratch_len <= stack.len() {
            &mut stack
        } else {
            &mut []
        };
        for (i, out) in outs.iter_mut().enumerate() {
            f(i, out, scratch);
        }
    }
}

/// One part of [`run_split`]: `(units of the part, its output slice, scratch)`, returning
/// `false` when the part failed.
pub type SplitPart<'f> =
    dyn Fn(core::ops::Range<usize>, &mut [f32], &mut [f32]) -> bool + Sync + 'f;

/// Cuts `out` into the parts `starts[k] .. starts[k + 1]` (`k < count`, from
/// [`split_ranges`]) of `width` values per unit and runs `f` on each with `exec`; true
/// when every part succeeded (`out` must hold `starts[count] · width` values).
pub fn run_split(
    exec: &dyn Executor,
    out: &mut [f32],
    starts: &[usize; MAX_PARTS + 1],
    count: usize,
    width: usize,
    scratch_len: usize,
    f: &SplitPart<'_>,
) -> bool {
    let count = count.min(MAX_PARTS);
    let mut outs: heapless::Vec<&mut [f32], MAX_PARTS> = heapless::Vec::new();
    let mut rest = out;
    for k in 0..count {
        let len = (starts[k + 1] - starts[k]) * width;
        if rest.len() < len {
            return false;
        }
        let (head, tail) = rest.split_at_mut(len);
        let _ = outs.push(head);
        rest = tail;
    }
    let failed = core::sync::atomic::AtomicBool::new(false);
    exec.for_each(&mut outs, scratch_len, &|k, part, scratch| {
        if !f(starts[k]..starts[k + 1], part, scratch) {
            failed.store(true, core::sync::atomic::Ordering::Relaxed);
        }
    });
    !failed.load(core::sync::atomic::Ordering::Relaxed)
}

/// Splits `0 .. len` into at most `parts` ranges of about equal length whose inner bounds
/// are multiples of `align` (each bound the multiple nearest to its share `k · len /
/// parts`, so a ragged last unit does not load one part with a whole unit more than the
/// others); returns the number of ranges and writes their starts into `starts`
/// (`starts[k] .. starts[k + 1]`, with `starts[count] = len`).
pub fn split_ranges(
    len: usize,
    parts: usize,
    align: usize,
    starts: &mut [usize; MAX_PARTS + 1],
) -> usize {
    let align = align.max(1);
    let parts = parts.clamp(1, MAX_PARTS);
    starts[0] = 0;
    if len == 0 {
        return 0;
    }
    let mut count = 0;
    for k in 1..parts {
        let share = (k as u128 * len as u128 / parts as u128) as usize;
        let bound = (share + align / 2) / align * align;
        if bound > starts[count] && bound < len {
            count += 1;
            starts[count] = bound;
        }
    }
    count += 1;
    starts[count] = len;
    count
}

#[cfg(test)]
mod tests {
    use super::{split_ranges, MAX_PARTS};

    #[test]
    fn a_ragged_unit_is_shared_out() {
        let mut s = [0usize; MAX_PARTS + 1];
        // 128 tokens in tiles of 12: 60 + 68, not 72 + 56.
        assert_eq!(split_ranges(128, 2, 12, &mut s), 2);
        assert_eq!(&s[..3], &[0, 60, 128]);
        assert_eq!(split_ranges(1536, 2, 32, &mut s), 2);
        assert_eq!(&s[..3], &[0, 768, 1536]);
    }

    #[test]
    fn ranges_cover_the_length_once_on_aligned_bounds() {
        for len in [0usize, 1, 7, 31, 32, 33, 100, 1536, 49_152] {
            for parts in [1usize, 2, 3, 7, 64, 200] {
                for align in [1usize, 6, 32] {
                    let mut s = [0usize; MAX_PARTS + 1];
                    let n = split_ranges(len, parts, align, &mut s);
                    assert!(n <= parts.clamp(1, MAX_PARTS));
                    assert_eq!(s[n], len);
                    for k in 0..n {
                        assert!(s[k] < s[k + 1], "{len} {parts} {align}");
                        assert_eq!(s[k] % align, 0);
                    }
                    if len == 0 {
                        assert_eq!(n, 0);
                    }
                    // No part longer than its share plus one unit.
                    let most = (0..n).map(|k| s[k + 1] - s[k]).max().unwrap_or(0);
                    assert!(
                        most <= len.div_ceil(parts.clamp(1, MAX_PARTS)) + align,
                        "{len} {parts} {align}"
                    );
                }
            }
        }
    }
}
