//! The unmerged decoder's compact rotation kernel (x86-64): one row through a factor of
//! `8 × 8` orthogonal blocks stored as half-precision Householder reflectors
//! (`math::reflectors`, whose module docs give the layout), one lane per block, so that
//! every step is a lane-wise multiply-add: sixteen blocks at a time on AVX-512, eight on
//! AVX2 + FMA + F16C (each group as two halves, the same operations per lane: the same
//! bits).
//!
//! Soundness rests on the same two local facts as the other kernels: a kernel runs only
//! after [`super::cpu`] has seen its instructions, and every pointer lies inside a slice
//! whose length the entry point checked (AVX-512 loads and stores past a slice's end are
//! masked off, which AVX-512 guarantees not to touch; the AVX2 kernels take whole groups
//! of eight blocks only).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256, __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps,
    _mm512_mask_loadu_ps, _mm512_mask_storeu_ps, _mm512_mask_sub_ps, _mm512_maskz_loadu_ps,
    _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::cpu::{avx2_fma_available, avx512_available, f16c_available};
use super::x86_avx2::transpose_8x8;
use super::x86_blocks::transpose_8x8_halves;
use super::x86_products::lanes;
use crate::math::reflectors::{v_index, GROUP, GROUP_HALVES};

/// `x <- B x` for the blocks of one group, one lane per block: the signs `D` (`negate(t,
/// x_t)`), then `H_6, …, H_0`, each `s = τ (x_r + Σ v_j x_j)` with two partial sums for a
/// shorter dependency chain, then `x_r -= s`, `x_j -= v_j s`; `vector(i)` is the group's
/// coefficient vector `i` widened to `f32` (`τ_r - 2` at `28 + r`), `$ops` the vector
/// type's fused multiply-add, fused negated multiply-add, add, multiply and subtract.
/// A macro, not a helper: every index is then a constant and the eight entry vectors
/// stay in registers (a helper taking them by reference, not inlined, kept them on the
/// stack); one macro for both vector widths (AVX-512 and AVX2), so both compute every
/// lane with the same operations in the same order.
macro_rules! rotate_group {
    ($x:ident, $vector:expr, $negate:expr, [$zero:expr, $two:expr],
     [$fmadd:path, $fnmadd:path, $add:path, $mul:path, $sub:path]) => {{
        let (vector, negate, zero, two) = ($vector, $negate, $zero, $two);
        for (t, xt) in $x.iter_mut().enumerate() {
            *xt = negate(t, *xt);
        }
        macro_rules! reflect {
            ($r:literal) => {{
                let r: usize = $r;
                let v: [_; 7] = core::array::from_fn(|i| {
                    if r + 1 + i < 8 {
                        vector(v_index(r, r + 1 + i))
                    } else {
                        zero
                    }
                });
                let (mut s0, mut s1) = ($x[r], zero);
                for j in r + 1..8 {
                    if (j - r) % 2 == 1 {
                        s0 = $fmadd(v[j - r - 1], $x[j], s0);
                    } else {
                        s1 = $fmadd(v[j - r - 1], $x[j], s1);
                    }
                }
                // τ (s0 + s1) as τ s0 + (τ s1): the product with s1 (the shorter sum)
                // leaves the chain through s0.
                let tau = $add(vector(28 + r), two);
                let s = $fmadd(s0, tau, $mul(s1, tau));
                $x[r] = $sub($x[r], s);
                for j in r + 1..8 {
                    $x[j] = $fnmadd(v[j - r - 1], s, $x[j]);
                }
            }};
        }
        reflect!(6);
        reflect!(5);
        reflect!(4);
        reflect!(3);
        reflect!(2);
        reflect!(1);
        reflect!(0);
    }};
}

/// [`rotate_group!`] on sixteen lanes for the group whose halves start at `c` (a `*const
/// u16`, [`GROUP_HALVES`] of them readable).
macro_rules! rotate_group16 {
    ($x:ident, $c:expr, $zero:expr, $two:expr) => {{
        let c: *const u16 = $c;
        let zero = $zero;
        // SAFETY (every coefficient load below): vector i < 35 of 16 halves and the 8
        // masks after them are the group's GROUP_HALVES halves, readable (the caller's
        // contract).
        let vector = |i: usize| unsafe { widen16(c.wrapping_add(i * GROUP)) };
        let negate = |t: usize, x: __m512| {
            // SAFETY: see above.
            let m: __mmask16 = unsafe { c.wrapping_add(35 * GROUP + t).read_unaligned() };
            _mm512_mask_sub_ps(x, m, zero, x)
        };
        rotate_group!(
            $x,
            vector,
            negate,
            [zero, $two],
            [
                _mm512_fmadd_ps,
                _mm512_fnmadd_ps,
                _mm512_add_ps,
                _mm512_mul_ps,
                _mm512_sub_ps
            ]
        )
    }};
}

/// `dst <- F src` (`src` `None`: in place) for one row of `n = 8k` values, `F` a factor
/// of `k` blocks on contiguous runs (`strided` false: block `j` reads `x[8j .. 8j + 8]`)
/// or strided entries (block `j` reads `x[j], x[j + k], …`), stored as `data`
/// (`⌈k / 16⌉` groups of [`GROUP_HALVES`]).
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available
/// and the lengths fit.
pub(crate) fn reflector_factor(
    src: Option<&[f32]>,
    dst: &mut [f32],
    k: usize,
    data: &[u16],
    strided: bool,
) -> bool {
    factor_on(avx512_available(), src, dst, k, data, strided)
}

/// [`reflector_factor`] on the AVX-512 kernel (`wide`) or the AVX2 one, which takes whole
/// groups of eight blocks only; `false`, touching nothing, when this CPU lacks that
/// kernel's features or the shape does not fit it.
pub(super) fn factor_on(
    wide: bool,
    src: Option<&[f32]>,
    dst: &mut [f32],
    k: usize,
    data: &[u16],
    strided: bool,
) -> bool {
    let n = 8 * k;
    let fits = if wide {
        avx512_available()
    } else {
        avx2_reflectors_available() && k.is_multiple_of(8)
    };
    if !fits
        || k == 0
        || dst.len() != n
        || src.is_some_and(|s| s.len() != n)
        || data.len() < k.div_ceil(GROUP) * GROUP_HALVES
    {
        return false;
    }
    let d = dst.as_mut_ptr();
    let s = src.map_or(d.cast_const(), <[f32]>::as_ptr);
    // SAFETY: AVX-512F (`wide`) or AVX2 + FMA + F16C with `k` a multiple of 8 is
    // available; `s` and `d` hold `n` values (the same pointer in place, else distinct
    // borrows), `data` every group.
    unsafe {
        if wide {
            factor_avx512(s, d, k, data.as_ptr(), strided)
        } else {
            factor_avx2(s, d, k, data.as_ptr(), strided)
        }
    };
    true
}

/// # Safety
/// AVX-512F available; `src` readable and `dst` writable for `8k` values (equal or not
/// overlapping); `data` readable for `⌈k / 16⌉ · GROUP_HALVES` halves.
// One function body for loads, rotation and stores: the eight entry vectors stay in
// registers (a helper taking them by reference, not inlined, kept them on the stack).
#[target_feature(enable = "avx512f")]
unsafe fn factor_avx512(src: *const f32, dst: *mut f32, k: usize, data: *const u16, strided: bool) {
    let zero = _mm512_setzero_ps();
    let two = _mm512_set1_ps(2.0);
    // A contiguous factor's vector i holds block j0 + i in lanes 0..8 and block j0 + 8 + i
    // in lanes 8..16; the two 8 × 8 transposes turn that into entry t of all sixteen.
    let half = |j: usize| -> __mmask16 {
        if j < k {
            0xFF
        } else {
            0
        }
    };
    let mut g = 0;
    while g * GROUP < k {
        let j0 = g * GROUP;
        let c = data.wrapping_add(g * GROUP_HALVES);
        // The next group's halves into L1 while this one computes (past the last group
        // of the factor: the next factor's first, which follows it in memory; a
        // prefetch never faults).
        for line in 0..GROUP_HALVES.div_ceil(32) {
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
        }
        // Strided: entry t of blocks j0 .. j0 + 16 is x[t·k + j0 ..], one (masked) load.
        let mask = lanes(k - j0);
        let mut x: [__m512; 8] = if strided {
            // SAFETY: t·k + j0 + lane < t·k + k <= 8k for the lanes the mask keeps.
            core::array::from_fn(|t| unsafe {
                _mm512_maskz_loadu_ps(mask, src.wrapping_add(t * k + j0))
            })
        } else {
            let r: [__m512; 8] = core::array::from_fn(|i| {
                let (a, b) = (j0 + i, j0 + 8 + i);
                // SAFETY: block a (b) is read only when a < k (b < k): values 8a .. 8a + 8
                // inside `src`; the high half's pointer is 8 before block b's first value
                // (8b - 8 >= 0) and only lanes 8..16 of it are read.
                unsafe {
                    let lo = _mm512_maskz_loadu_ps(half(a), src.wrapping_add(8 * a));
                    _mm512_mask_loadu_ps(lo, half(b) << 8, src.wrapping_add(8 * b - 8))
                }
            });
            transpose_8x8_halves(r)
        };
        rotate_group16!(x, c, zero, two);
        if strided {
            for (t, xt) in x.iter().enumerate() {
                // SAFETY: as for the loads.
                unsafe { _mm512_mask_storeu_ps(dst.wrapping_add(t * k + j0), mask, *xt) };
            }
        } else {
            let r = transpose_8x8_halves(x);
            for (i, ri) in r.iter().enumerate() {
                let (a, b) = (j0 + i, j0 + 8 + i);
                // SAFETY: as for the loads.
                unsafe {
                    _mm512_mask_storeu_ps(dst.wrapping_add(8 * a), half(a), *ri);
                    _mm512_mask_storeu_ps(dst.wrapping_add(8 * b - 8), half(b) << 8, *ri);
                }
            }
        }
        g += 1;
    }
}

/// `dst <- F_1 F_0 src` for one row of `n = 8k` values, `k` a multiple of 8: a chain of
/// two factors, `F_0` on contiguous runs with its blocks in the paired lane order
/// (`math::reflectors`: lane `l` of group `q` is block `2q + ⌊l/8⌋ + (k/8)·(l mod 8)`),
/// `F_1` on strided entries. Group `q` of both factors then reads and writes the same 128
/// values (`t·k + 16q + l`, `t < 8`, `l < 16`) and nothing else, so it runs from load to
/// store in registers, with no pass over memory between the factors.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available
/// and the lengths fit.
pub(crate) fn reflector_pair(src: &[f32], dst: &mut [f32], k: usize, data: [&[u16]; 2]) -> bool {
    pair_on(avx512_available(), src, dst, k, data)
}

/// [`reflector_pair`] on the AVX-512 kernel (`wide`) or the AVX2 one; `false`, touching
/// nothing, when this CPU lacks that kernel's features.
pub(super) fn pair_on(
    wide: bool,
    src: &[f32],
    dst: &mut [f32],
    k: usize,
    data: [&[u16]; 2],
) -> bool {
    let n = 8 * k;
    let halves = k.div_ceil(GROUP) * GROUP_HALVES;
    if !(if wide {
        avx512_available()
    } else {
        avx2_reflectors_available()
    }) || k == 0
        || !k.is_multiple_of(8)
        || src.len() != n
        || dst.len() != n
        || data.iter().any(|d| d.len() < halves)
    {
        return false;
    }
    let (s, d, [d0, d1]) = (src.as_ptr(), dst.as_mut_ptr(), data.map(<[u16]>::as_ptr));
    // SAFETY: AVX-512F (`wide`) or AVX2 + FMA + F16C is available; `src` and `dst`
    // (distinct borrows) hold `8k` values, each of `data` every group of its factor, `k` is
    // a multiple of 8.
    unsafe {
        if wide {
            pair_avx512(s, d, k, d0, d1)
        } else {
            pair_avx2(s, d, k, d0, d1)
        }
    };
    true
}

/// # Safety
/// AVX-512F available; `src` readable and `dst` writable for `8k` values (not
/// overlapping), `k` a multiple of 8; `d0` and `d1` readable for `⌈k / 16⌉ ·
/// GROUP_HALVES` halves.
#[target_feature(enable = "avx512f")]
unsafe fn pair_avx512(src: *const f32, dst: *mut f32, k: usize, d0: *const u16, d1: *const u16) {
    let zero = _mm512_setzero_ps();
    let two = _mm512_set1_ps(2.0);
    let s = k / 8;
    let mut q = 0;
    while 2 * q < s {
        let (c0, c1) = (
            d0.wrapping_add(q * GROUP_HALVES),
            d1.wrapping_add(q * GROUP_HALVES),
        );
        // Both factors' next groups into L1 while this one computes (a prefetch never
        // faults).
        for line in 0..GROUP_HALVES.div_ceil(32) {
            _mm_prefetch::<_MM_HINT_T0>(c0.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(c1.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
        }
        // Vector i: block 2q + s·i in lanes 0..8, block 2q + 1 + s·i in lanes 8..16 (when
        // 2q + 1 < s; else those lanes stay zero and are never stored).
        let hi: __mmask16 = if 2 * q + 1 < s { 0xFF00 } else { 0 };
        let r: [__m512; 8] = core::array::from_fn(|i| {
            let (a, b) = (2 * q + s * i, 2 * q + 1 + s * i);
            // SAFETY: a < s · 8 = k, so values 8a .. 8a + 8 are inside `src`; block b is
            // read only when 2q + 1 < s (then b < k), through a pointer 8 before its first
            // value (8b - 8 >= 0) whose lanes 8..16 are block b.
            unsafe {
                let lo = _mm512_maskz_loadu_ps(0xFF, src.wrapping_add(8 * a));
                _mm512_mask_loadu_ps(lo, hi, src.wrapping_add(8 * b - 8))
            }
        });
        // Lane form: vector t holds entry t of the sixteen blocks.
        let mut x = transpose_8x8_halves(r);
        rotate_group16!(x, c0, zero, two);
        // Back to vector i = blocks 2q + s·i and 2q + 1 + s·i: lane l of vector t is value
        // t·k + 16q + l, entry t of strided block 16q + l, which is lane l of group q of
        // F_1.
        let mut x = transpose_8x8_halves(x);
        rotate_group16!(x, c1, zero, two);
        let mask = lanes(k - 16 * q);
        for (t, xt) in x.iter().enumerate() {
            // SAFETY: t·k + 16q + lane < t·k + k <= 8k for the lanes the mask keeps.
            unsafe { _mm512_mask_storeu_ps(dst.wrapping_add(t * k + 16 * q), mask, *xt) };
        }
        q += 1;
    }
}

/// [`rotate_group!`] on eight lanes: half `h` (lanes `8h .. 8h + 8`) of the group whose
/// halves start at `c`, as [`rotate_group16!`] computes those lanes (the signs by a blend
/// of `0 - x`, as the AVX-512 masked subtraction).
macro_rules! rotate_group8 {
    ($x:ident, $c:expr, $h:expr, $zero:expr, $two:expr) => {{
        use core::arch::x86_64::{
            _mm256_add_ps, _mm256_and_si256, _mm256_blendv_ps, _mm256_castsi256_ps,
            _mm256_cmpeq_epi32, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_mul_ps,
            _mm256_set1_epi32, _mm256_setr_epi32, _mm256_sub_ps,
        };
        let (c, h): (*const u16, usize) = ($c, $h);
        let zero = $zero;
        let bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        // SAFETY (every coefficient load below): halves 8h .. 8h + 8 of vector i < 35 and
        // the 8 masks after them, inside the group's GROUP_HALVES (the caller's contract).
        let vector = |i: usize| unsafe { widen8(c.wrapping_add(i * GROUP + 8 * h)) };
        let negate = |t: usize, x: __m256| {
            // SAFETY: see above.
            let m = unsafe { c.wrapping_add(35 * GROUP + t).read_unaligned() };
            let lanes = _mm256_set1_epi32(i32::from((m >> (8 * h)) & 0xFF));
            let set = _mm256_cmpeq_epi32(_mm256_and_si256(lanes, bits), bits);
            _mm256_blendv_ps(x, _mm256_sub_ps(zero, x), _mm256_castsi256_ps(set))
        };
        rotate_group!(
            $x,
            vector,
            negate,
            [zero, $two],
            [
                _mm256_fmadd_ps,
                _mm256_fnmadd_ps,
                _mm256_add_ps,
                _mm256_mul_ps,
                _mm256_sub_ps
            ]
        )
    }};
}

/// Whether the AVX2 reflector kernels run here: AVX2, FMA and F16C (`vcvtph2ps`).
pub(crate) fn avx2_reflectors_available() -> bool {
    avx2_fma_available() && f16c_available()
}

/// [`reflector_factor`]'s body on AVX2 + FMA + F16C for CPUs without AVX-512: each group of
/// sixteen blocks as two halves of eight lanes, the AVX-512 kernel's arithmetic lane for
/// lane (the same bits).
///
/// # Safety
/// AVX2, FMA and F16C available; `k` a multiple of 8; `src` readable and `dst` writable
/// for `8k` values (equal or not overlapping); `data` readable for `⌈k / 16⌉ ·
/// GROUP_HALVES` halves.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn factor_avx2(src: *const f32, dst: *mut f32, k: usize, data: *const u16, strided: bool) {
    use core::arch::x86_64::{
        _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let zero = _mm256_setzero_ps();
    let two = _mm256_set1_ps(2.0);
    let mut g = 0;
    while g * GROUP < k {
        let c = data.wrapping_add(g * GROUP_HALVES);
        for line in 0..GROUP_HALVES.div_ceil(32) {
            _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
        }
        // Half h: blocks j0 .. j0 + 8 (lane l is block j0 + l, as lane 8h + l of the
        // AVX-512 kernel's group).
        for h in 0..2 {
            let j0 = g * GROUP + 8 * h;
            if j0 >= k {
                break;
            }
            // SAFETY (loads and stores): strided, values t·k + j0 .. + 8 <= 8k; contiguous,
            // the eight blocks' values 8j0 .. 8j0 + 64 <= 8k.
            let mut x: [__m256; 8] = if strided {
                core::array::from_fn(|t| unsafe { _mm256_loadu_ps(src.wrapping_add(t * k + j0)) })
            } else {
                transpose_8x8(core::array::from_fn(|i| unsafe {
                    _mm256_loadu_ps(src.wrapping_add(8 * (j0 + i)))
                }))
            };
            rotate_group8!(x, c, h, zero, two);
            if strided {
                for (t, xt) in x.iter().enumerate() {
                    unsafe { _mm256_storeu_ps(dst.wrapping_add(t * k + j0), *xt) };
                }
            } else {
                for (i, ri) in transpose_8x8(x).iter().enumerate() {
                    unsafe { _mm256_storeu_ps(dst.wrapping_add(8 * (j0 + i)), *ri) };
                }
            }
        }
        g += 1;
    }
}

/// [`reflector_pair`]'s body on AVX2 + FMA + F16C: each group as two halves of eight lanes
/// (half `h` of group `q`: blocks `2q + h + s·l` of `F_0`, strided blocks `16q + 8h + l` of
/// `F_1`), the AVX-512 kernel's arithmetic lane for lane.
///
/// # Safety
/// AVX2, FMA and F16C available; `src` readable and `dst` writable for `8k` values (not
/// overlapping), `k` a multiple of 8; `d0` and `d1` readable for `⌈k / 16⌉ ·
/// GROUP_HALVES` halves.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pair_avx2(src: *const f32, dst: *mut f32, k: usize, d0: *const u16, d1: *const u16) {
    use core::arch::x86_64::{
        _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let zero = _mm256_setzero_ps();
    let two = _mm256_set1_ps(2.0);
    let s = k / 8;
    let mut q = 0;
    while 2 * q < s {
        let (c0, c1) = (
            d0.wrapping_add(q * GROUP_HALVES),
            d1.wrapping_add(q * GROUP_HALVES),
        );
        for line in 0..GROUP_HALVES.div_ceil(32) {
            _mm_prefetch::<_MM_HINT_T0>(c0.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
            _mm_prefetch::<_MM_HINT_T0>(c1.wrapping_add(GROUP_HALVES + 32 * line).cast::<i8>());
        }
        for h in 0..2 {
            if 2 * q + h >= s {
                break;
            }
            // Vector i: block 2q + h + s·i (its 8 values, inside `src`: 2q + h + s·i < k).
            let r: [__m256; 8] = core::array::from_fn(|i| unsafe {
                _mm256_loadu_ps(src.wrapping_add(8 * (2 * q + h + s * i)))
            });
            let mut x = transpose_8x8(r);
            rotate_group8!(x, c0, h, zero, two);
            // Vector t: values t·k + 16q + 8h + l, entry t of strided block 16q + 8h + l.
            let mut x = transpose_8x8(x);
            rotate_group8!(x, c1, h, zero, two);
            for (t, xt) in x.iter().enumerate() {
                // SAFETY: t·k + 16q + 8h + 8 <= t·k + k <= 8k.
                unsafe { _mm256_storeu_ps(dst.wrapping_add(t * k + 16 * q + 8 * h), *xt) };
            }
        }
        q += 1;
    }
}

/// The eight halves at `p` as one vector of `f32` (`vcvtph2ps`); under Miri the exact
/// portable conversion (as [`widen16`]).
///
/// # Safety
/// AVX2 and F16C available; `p` readable for 8 halves.
#[target_feature(enable = "avx2,f16c")]
#[inline]
unsafe fn widen8(p: *const u16) -> __m256 {
    #[cfg(not(miri))]
    {
        use core::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm_loadu_si128};
        // SAFETY: the caller's contract.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())) }
    }
    #[cfg(miri)]
    {
        // SAFETY: the caller's contract; `w` is 8 values.
        let w: [f32; 8] = core::array::from_fn(|i| {
            crate::quant::f16_to_f32(unsafe { p.wrapping_add(i).read_unaligned() })
        });
        unsafe { core::arch::x86_64::_mm256_loadu_ps(w.as_ptr()) }
    }
}

/// The sixteen halves at `p` as one vector of `f32` (`vcvtph2ps`). Under Miri, which has
/// no shim for that instruction, the exact portable conversion of the same halves, so
/// that Miri checks the rest of the kernel.
///
/// # Safety
/// AVX-512F available; `p` readable for 16 halves.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn widen16(p: *const u16) -> __m512 {
    #[cfg(not(miri))]
    {
        use core::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm512_cvtph_ps};
        // SAFETY: the caller's contract.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>())) }
    }
    #[cfg(miri)]
    {
        // SAFETY: the caller's contract; `w` is 16 values.
        let w: [f32; 16] = core::array::from_fn(|i| {
            crate::quant::f16_to_f32(unsafe { p.wrapping_add(i).read_unaligned() })
        });
        unsafe { core::arch::x86_64::_mm512_loadu_ps(w.as_ptr()) }
    }
}
