//! The unmerged decoder's compact rotation kernel (x86-64, AVX-512): one row through a
//! factor of `8 × 8` orthogonal blocks stored as half-precision Householder reflectors
//! (`math::reflectors`, whose module docs give the layout), sixteen blocks at a time, one
//! lane per block, so that every step is a lane-wise multiply-add.
//!
//! Soundness rests on the same two local facts as the other kernels: a kernel runs only
//! after [`super::cpu::avx512_available`] holds, and every pointer lies inside a slice
//! whose length the entry point checked (loads and stores past a slice's end are masked
//! off, which AVX-512 guarantees not to touch).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_mask_loadu_ps,
    _mm512_mask_storeu_ps, _mm512_mask_sub_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps, _mm_prefetch, _MM_HINT_T0,
};

use super::cpu::avx512_available;
use super::x86_blocks::transpose_8x8_halves;
use super::x86_products::lanes;
use crate::math::reflectors::{v_index, GROUP, GROUP_HALVES};

/// `x <- B x` for the sixteen blocks of one group whose halves start at `c` (a
/// `*const u16`, [`GROUP_HALVES`] of them readable): the signs `D`, then `H_6, …, H_0`,
/// each `s = τ (x_r + Σ v_j x_j)` with two partial sums for a shorter dependency chain,
/// then `x_r -= s`, `x_j -= v_j s`. A macro, not a helper: every index is then a constant
/// and the eight entry vectors stay in registers (a helper taking them by reference, not
/// inlined, kept them on the stack).
macro_rules! rotate_group {
    ($x:ident, $c:expr, $zero:expr, $two:expr) => {{
        let c: *const u16 = $c;
        let (zero, two) = ($zero, $two);
        // SAFETY (every coefficient load below): vector i < 35 of 16 halves and the 8
        // masks after them are the group's GROUP_HALVES halves, readable (the caller's
        // contract).
        let vector = |i: usize| unsafe { widen16(c.wrapping_add(i * GROUP)) };
        for (t, xt) in $x.iter_mut().enumerate() {
            // SAFETY: see above.
            let m: __mmask16 = unsafe { c.wrapping_add(35 * GROUP + t).read_unaligned() };
            *xt = _mm512_mask_sub_ps(*xt, m, zero, *xt);
        }
        macro_rules! reflect {
            ($r:literal) => {{
                let r: usize = $r;
                let v: [__m512; 7] = core::array::from_fn(|i| {
                    if r + 1 + i < 8 {
                        vector(v_index(r, r + 1 + i))
                    } else {
                        zero
                    }
                });
                let (mut s0, mut s1) = ($x[r], zero);
                for j in r + 1..8 {
                    if (j - r) % 2 == 1 {
                        s0 = _mm512_fmadd_ps(v[j - r - 1], $x[j], s0);
                    } else {
                        s1 = _mm512_fmadd_ps(v[j - r - 1], $x[j], s1);
                    }
                }
                // τ (s0 + s1) as τ s0 + (τ s1): the product with s1 (the shorter sum)
                // leaves the chain through s0.
                let tau = _mm512_add_ps(vector(28 + r), two);
                let s = _mm512_fmadd_ps(s0, tau, _mm512_mul_ps(s1, tau));
                $x[r] = _mm512_sub_ps($x[r], s);
                for j in r + 1..8 {
                    $x[j] = _mm512_fnmadd_ps(v[j - r - 1], s, $x[j]);
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
    let n = 8 * k;
    if !avx512_available()
        || k == 0
        || dst.len() != n
        || src.is_some_and(|s| s.len() != n)
        || data.len() < k.div_ceil(GROUP) * GROUP_HALVES
    {
        return false;
    }
    let d = dst.as_mut_ptr();
    let s = src.map_or(d.cast_const(), <[f32]>::as_ptr);
    // SAFETY: AVX-512F is available; `s` and `d` hold `n` values (the same pointer in
    // place, else distinct borrows), `data` every group.
    unsafe { factor_avx512(s, d, k, data.as_ptr(), strided) };
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
        rotate_group!(x, c, zero, two);
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
    let n = 8 * k;
    let halves = k.div_ceil(GROUP) * GROUP_HALVES;
    if !avx512_available()
        || k == 0
        || !k.is_multiple_of(8)
        || src.len() != n
        || dst.len() != n
        || data.iter().any(|d| d.len() < halves)
    {
        return false;
    }
    // SAFETY: AVX-512F is available; `src` and `dst` (distinct borrows) hold `8k` values,
    // each of `data` every group of its factor.
    unsafe {
        pair_avx512(
            src.as_ptr(),
            dst.as_mut_ptr(),
            k,
            data[0].as_ptr(),
            data[1].as_ptr(),
        )
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
        rotate_group!(x, c0, zero, two);
        // Back to vector i = blocks 2q + s·i and 2q + 1 + s·i: lane l of vector t is value
        // t·k + 16q + l, entry t of strided block 16q + l, which is lane l of group q of
        // F_1.
        let mut x = transpose_8x8_halves(x);
        rotate_group!(x, c1, zero, two);
        let mask = lanes(k - 16 * q);
        for (t, xt) in x.iter().enumerate() {
            // SAFETY: t·k + 16q + lane < t·k + k <= 8k for the lanes the mask keeps.
            unsafe { _mm512_mask_storeu_ps(dst.wrapping_add(t * k + 16 * q), mask, *xt) };
        }
        q += 1;
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
