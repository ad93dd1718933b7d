//! The AVX-512 kernel (x86-64), chosen at run time: tiles of up to 12 rows by 32 columns
//! of `C`, 24 accumulators in `zmm` registers, one fused multiply-add per broadcast `A`
//! value and 16-column half of the `B` row.
//!
//! This is the only module of the crate with `unsafe` code. Soundness rests on two
//! local facts, checked in this file: the kernel runs only after [`avx512_available`]
//! has seen the CPU and the operating system support AVX-512, and every pointer it reads
//! or writes lies inside a slice whose length [`matmul`] checked against the shape
//! (masked loads and stores never touch lanes past a row's used width).
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __cpuid, __cpuid_count, __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps,
    _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_ps,
    _mm_prefetch, _xgetbv, _MM_HINT_T1,
};
use core::sync::atomic::{AtomicU8, Ordering};

use super::Product;

/// Rows of `C` per tile.
const MR: usize = 12;
/// Columns of `C` per tile (two 16-lane vectors).
const NR: usize = 32;

/// Whether this CPU and OS run AVX-512F code (CPUID leaf 7, and XCR0 enabling the
/// `opmask` and `zmm` register state). Detected once, then cached.
pub(super) fn avx512_available() -> bool {
    // Miri cannot run CPUID: it takes the compile-time features (scripts/test runs the
    // kernels under Miri with `-C target-feature=+avx512f`).
    if cfg!(miri) {
        return cfg!(target_feature = "avx512f") && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    cached(&STATE, detect)
}

/// Whether this CPU and OS run AVX2 and FMA code (CPUID leaves 1 and 7, XCR0 enabling
/// the `ymm` state): the product kernel for x86-64 CPUs without AVX-512. Cached.
pub(super) fn avx2_fma_available() -> bool {
    if cfg!(miri) {
        return cfg!(all(target_feature = "avx2", target_feature = "fma"))
            && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    cached(&STATE, detect_avx2_fma)
}

/// `detect()` once per `state` (0 = not yet, 1 = no, 2 = yes); always `false` with the
/// `force-portable` feature.
fn cached(state: &AtomicU8, detect: fn() -> bool) -> bool {
    if cfg!(feature = "force-portable") {
        return false;
    }
    match state.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect();
            state.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect_avx2_fma() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU.
    let leaf1 = unsafe { __cpuid(1) };
    let (fma, osxsave, avx) = (1 << 12, 1 << 27, 1 << 28);
    if leaf1.ecx & (fma | osxsave | avx) != (fma | osxsave | avx) {
        return false;
    }
    // SAFETY: OSXSAVE set means XGETBV is available and enabled by the OS.
    if unsafe { read_xcr0() } & 0x6 != 0x6 {
        return false;
    }
    // SAFETY: as above; leaf 7 exists when the maximum leaf is at least 7.
    unsafe { __cpuid(0) }.eax >= 7 && unsafe { __cpuid_count(7, 0) }.ebx & (1 << 5) != 0
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU.
    let leaf1 = unsafe { __cpuid(1) };
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    if !osxsave {
        return false;
    }
    // SAFETY: OSXSAVE set means XGETBV is available and enabled by the OS.
    let xcr0 = unsafe { read_xcr0() };
    // SSE, AVX, opmask, ZMM_Hi256 and Hi16_ZMM state saved by the OS.
    if xcr0 & 0xE6 != 0xE6 {
        return false;
    }
    // SAFETY: as above.
    let max_leaf = unsafe { __cpuid(0) }.eax;
    if max_leaf < 7 {
        return false;
    }
    // SAFETY: as above; leaf 7 exists (checked).
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    leaf7.ebx & (1 << 16) != 0
}

/// Whether the CPU also runs AVX-512 BW, VL and VNNI (byte and word lanes, the
/// 256-bit forms, `vpdpbusd`/`vpdpwssd`) besides [`avx512_available`]: the quantized
/// kernels' AVX-512 build. Cached.
pub(super) fn avx512_int8_available() -> bool {
    if cfg!(miri) {
        return cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni"
        )) && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    avx512_available() && cached(&STATE, detect_avx512_int8)
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect_avx512_int8() -> bool {
    // SAFETY: only called once `detect()` found leaf 7 (CPUID exists on every x86-64).
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let (bw, vl, vnni) = (1u32 << 30, 1u32 << 31, 1u32 << 11);
    leaf7.ebx & (bw | vl) == (bw | vl) && leaf7.ecx & vnni != 0
}

/// XCR0, the OS-enabled register state.
///
/// # Safety
/// The CPU must support XSAVE and the OS must have enabled it (CPUID.1:ECX.OSXSAVE).
#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    _xgetbv(0)
}

/// `C = A · B` (or `+=`) with the AVX-512 kernel.
///
/// Sound for any input: returns without touching `c` unless [`avx512_available`] holds
/// and every operand holds the elements `p` addresses (the caller normally checked both).
///
/// `next` is memory the caller reads after this product (the next weight panel): its
/// cache lines are prefetched into L2 spread over the tiles, so streaming a weight matrix
/// from DRAM overlaps with arithmetic instead of following it.
pub(super) fn matmul(p: &Product, a: &[f32], b: &[f32], c: &mut [f32], next: super::RowsRef<'_>) {
    if !avx512_available() || p.check(a.len(), b.len(), c.len()).is_err() {
        return;
    }
    let (next_ptr, next_len) = next.byte_range();
    let next_lines = next_len.div_ceil(64);
    let tiles = p.m.div_ceil(MR) * p.n.div_ceil(NR);
    let per_tile = next_lines.div_ceil(tiles.max(1));
    let mut fetched = 0usize;
    let mut j0 = 0;
    while j0 < p.n {
        let cols = NR.min(p.n - j0);
        let mut i0 = 0;
        while i0 < p.m {
            let rows = MR.min(p.m - i0);
            let lines = per_tile
                .min(2 * p.k)
                .min(next_lines.saturating_sub(fetched));
            let at = Tile {
                i0,
                j0,
                cols,
                prefetch: next_ptr.wrapping_add(fetched * 64),
                prefetch_lines: lines,
            };
            fetched += lines;
            // SAFETY: AVX-512F is available (checked above), and `Tile` addresses rows
            // `i0 .. i0 + rows` and columns `j0 .. j0 + cols` of operands whose spans were
            // checked against `p` (rows <= m - i0, cols <= n - j0).
            unsafe {
                match rows {
                    12 => tile::<12>(p, a, b, c, at),
                    11 => tile::<11>(p, a, b, c, at),
                    10 => tile::<10>(p, a, b, c, at),
                    9 => tile::<9>(p, a, b, c, at),
                    8 => tile::<8>(p, a, b, c, at),
                    7 => tile::<7>(p, a, b, c, at),
                    6 => tile::<6>(p, a, b, c, at),
                    5 => tile::<5>(p, a, b, c, at),
                    4 => tile::<4>(p, a, b, c, at),
                    3 => tile::<3>(p, a, b, c, at),
                    2 => tile::<2>(p, a, b, c, at),
                    _ => tile::<1>(p, a, b, c, at),
                }
            }
            i0 += rows;
        }
        j0 += cols;
    }
}

/// Where one tile of `C` sits: rows from `i0`, columns `j0 .. j0 + cols` (`cols <= NR`).
#[derive(Clone, Copy)]
struct Tile {
    i0: usize,
    j0: usize,
    cols: usize,
    /// First of `prefetch_lines` (at most `2k`) cache lines to prefetch, one or two per
    /// `k` step.
    prefetch: *const u8,
    prefetch_lines: usize,
}

/// Lane mask of the first `n` of 16 lanes (`n` may exceed 16).
fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// One `R × cols` tile.
///
/// # Safety
/// AVX-512F must be available; rows `t.i0 .. t.i0 + R` and columns `t.j0 .. t.j0 + t.cols`
/// must be inside the checked spans of `a`, `b` and `c` for the shape `p`.
#[target_feature(enable = "avx512f")]
unsafe fn tile<const R: usize>(p: &Product, a: &[f32], b: &[f32], c: &mut [f32], t: Tile) {
    let (m0, m1) = (lanes(t.cols), lanes(t.cols.saturating_sub(16)));
    // Pointer arithmetic wraps (never UB on its own); only in-span lanes are dereferenced.
    let a0 = a.as_ptr().wrapping_add(t.i0 * p.a_stride);
    let b0 = b.as_ptr().wrapping_add(t.j0);
    let c0 = c.as_mut_ptr().wrapping_add(t.i0 * p.c_stride + t.j0);
    let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..p.k {
        // Lines kk and k + kk: up to two per step. A hint only: prefetching never
        // faults, and the lines are inside `next`.
        if kk < t.prefetch_lines {
            _mm_prefetch::<_MM_HINT_T1>(t.prefetch.wrapping_add(kk * 64).cast::<i8>());
        }
        if p.k + kk < t.prefetch_lines {
            _mm_prefetch::<_MM_HINT_T1>(t.prefetch.wrapping_add((p.k + kk) * 64).cast::<i8>());
        }
        let brow = b0.wrapping_add(kk * p.b_stride);
        // SAFETY: row kk < k of B, columns j0 .. j0 + cols: in B's checked span; lanes
        // past `cols` are masked off and not read.
        let (w0, w1) = unsafe {
            (
                _mm512_maskz_loadu_ps(m0, brow),
                _mm512_maskz_loadu_ps(m1, brow.wrapping_add(16)),
            )
        };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row i0 + r < m and column kk < k of A: in A's checked span.
            let x = _mm512_set1_ps(unsafe { *a0.wrapping_add(r * p.a_stride + kk) });
            acc_r[0] = _mm512_fmadd_ps(x, w0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(x, w1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c0.wrapping_add(r * p.c_stride);
        let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
        // SAFETY: columns j0 .. j0 + cols of row i0 + r < m of C: in C's checked span
        // (which `c: &mut` makes exclusive); lanes past `cols` are masked off.
        unsafe {
            if p.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, row.wrapping_add(16)));
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.wrapping_add(16), m1, v1);
        }
    }
}

/// `panel[k · stride + j] = s[j] · W[j][k]` for `j < rows`, `k < cols` (`W` row-major,
/// `rows × cols`; `s` = `scale`, or 1): 16 × 16 blocks loaded as rows, transposed in
/// registers, stored as panel rows.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `w` holds `rows · cols` values, `panel` holds `cols` rows of `stride >= rows` values and
/// `scale` (if any) `rows` values.
pub(super) fn pack_transposed(
    w: super::RowsRef<'_>,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
) -> bool {
    let (w_ptr, w_len) = w.raw_parts();
    let panel_need = Product::span(cols, rows, stride);
    if !avx512_available()
        || rows.checked_mul(cols).is_none_or(|n| n > w_len)
        || panel_need.is_none_or(|n| n > panel.len())
        || scale.is_some_and(|s| s.len() < rows)
    {
        return false;
    }
    let mut j0 = 0;
    while j0 < rows {
        let mut k0 = 0;
        while k0 < cols {
            // SAFETY: AVX-512F is available; the block covers rows j0 .. j0 + 16 (only those
            // < rows are read) and columns k0 .. k0 + 16 (masked to < cols) of W, whose
            // `rows · cols` values were checked, and the matching panel cells, checked
            // against the panel span.
            unsafe { transpose_block(w_ptr, rows, cols, scale, panel, stride, [j0, k0]) };
            k0 += 16;
        }
        j0 += 16;
    }
    true
}

/// One 16 × 16 block of [`pack_transposed`] at row `j0`, column `k0` of `W`.
///
/// # Safety
/// AVX-512F must be available; `w` must point at `rows · cols` readable `f32`s (any
/// alignment), `scale` hold `rows` values if present, and `panel` hold
/// `(cols - 1) · stride + rows` values.
#[target_feature(enable = "avx512f")]
unsafe fn transpose_block(
    w: *const f32,
    rows: usize,
    cols: usize,
    scale: Option<&[f32]>,
    panel: &mut [f32],
    stride: usize,
    [j0, k0]: [usize; 2],
) {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    let kmask = lanes(cols - k0);
    let jmask = lanes(rows - j0);
    // r[i] = W[j0 + i][k0 .. k0 + 16] (zero past the last row or column).
    let r: [__m512; 16] = core::array::from_fn(|i| {
        if j0 + i < rows {
            // SAFETY: row j0 + i < rows, columns masked to < cols.
            unsafe { _mm512_maskz_loadu_ps(kmask, w.wrapping_add((j0 + i) * cols + k0)) }
        } else {
            _mm512_setzero_ps()
        }
    });
    // Within each 128-bit lane l, u[4q + c] holds column 4l + c of rows 4q .. 4q + 4.
    let u = transpose_4x4_in_lanes(r);
    // Gather the four 128-bit lanes of each column: v[c] / v[c + 4] pick lanes {0, 2} /
    // {1, 3} of rows 0-7 and 8-15, the final shuffle joins them.
    let lo: [__m512; 8] = core::array::from_fn(|i| {
        let (c, half) = (i % 4, i / 4);
        _mm512_shuffle_f32x4::<0x88>(u[c + 8 * half], u[c + 4 + 8 * half])
    });
    let hi: [__m512; 8] = core::array::from_fn(|i| {
        let (c, half) = (i % 4, i / 4);
        _mm512_shuffle_f32x4::<0xDD>(u[c + 8 * half], u[c + 4 + 8 * half])
    });
    let col: [__m512; 16] = core::array::from_fn(|k| {
        let c = k % 4;
        match k / 4 {
            0 => _mm512_shuffle_f32x4::<0x88>(lo[c], lo[c + 4]),
            1 => _mm512_shuffle_f32x4::<0x88>(hi[c], hi[c + 4]),
            2 => _mm512_shuffle_f32x4::<0xDD>(lo[c], lo[c + 4]),
            _ => _mm512_shuffle_f32x4::<0xDD>(hi[c], hi[c + 4]),
        }
    });
    // SAFETY: scale values j0 .. j0 + 16, masked to < rows: inside `scale`.
    let sv = scale.map(|s| unsafe { _mm512_maskz_loadu_ps(jmask, s.as_ptr().wrapping_add(j0)) });
    let base = panel.as_mut_ptr().wrapping_add(k0 * stride + j0);
    for (k, v) in col.iter().enumerate().take(cols - k0) {
        let v = match sv {
            Some(s) => _mm512_mul_ps(*v, s),
            None => *v,
        };
        // SAFETY: panel row k0 + k < cols, cells j0 .. j0 + 16 masked to < rows <= stride.
        unsafe { _mm512_mask_storeu_ps(base.wrapping_add(k * stride), jmask, v) };
    }
}

/// `x <- F x` (or `F^T x`) for every row of `x` (`rows × n`), where `F` is block-diagonal
/// with `k = n / B` blocks of `B × B` on contiguous runs of each row, stored column-major
/// one after the other (`blocks[j·B² + t·B + c]` = entry `(c, t)` of block `j`).
///
/// `16 / B` blocks share one 16-lane vector: per block entry `t`, an in-lane shuffle
/// broadcasts `x[t]` of each block across its lanes ([`block_entries`]) and one fused
/// multiply-add adds column `t`. Blocks are the outer loop within a band of rows, so
/// their coefficients stay in registers across the band.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `B` is 4, 8 or 16, `n` is a multiple of 16, `x` is whole rows and `blocks` holds `n·B`.
pub(crate) fn contiguous_blocks<const B: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if !contiguous_shape_ok::<B>(x.len(), n, blocks) {
        return false;
    }
    // One raw pointer for the whole call: every access derives from it (a fresh
    // `as_mut_ptr` per row would retag `x` and invalidate the others).
    let xp = x.as_mut_ptr();
    // SAFETY: AVX-512F is available; the shapes were checked above; reading and writing
    // through the same pointer is the in-place case.
    unsafe { contiguous_blocks_avx512::<B>(xp, xp, x.len() / n, n, blocks, transpose) };
    true
}

/// What both contiguous-block entry points require: AVX-512F, `B` in {4, 8, 16}, `n` a
/// multiple of 16, `len` whole rows of `n`, and `n·B` coefficients.
fn contiguous_shape_ok<const B: usize>(len: usize, n: usize, blocks: &[f32]) -> bool {
    avx512_available()
        && matches!(B, 4 | 8 | 16)
        && n != 0
        && n.is_multiple_of(16)
        && len.is_multiple_of(n)
        && blocks.len() >= n * B
}

/// As [`contiguous_blocks`], reading the rows from `src` and writing them to `dst` (same
/// length): the first factor of a rotation without a copy of its input first.
pub(crate) fn contiguous_blocks_from<const B: usize>(
    src: &[f32],
    dst: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if src.len() != dst.len() || !contiguous_shape_ok::<B>(src.len(), n, blocks) {
        return false;
    }
    // SAFETY: AVX-512F is available; the shapes were checked above; `src` and `dst` are
    // distinct borrows of equal length.
    unsafe {
        contiguous_blocks_avx512::<B>(
            src.as_ptr(),
            dst.as_mut_ptr(),
            src.len() / n,
            n,
            blocks,
            transpose,
        )
    };
    true
}

/// # Safety
/// AVX-512F available, `B` in {4, 8, 16}, `n % 16 == 0`, `src` readable and `dst`
/// writable for `rows · n` values (the same pointer for in place, or non-overlapping),
/// `blocks.len() >= n·B`.
// Register arrays indexed by row: explicit indices keep them in registers.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn contiguous_blocks_avx512<const B: usize>(
    src: *const f32,
    xp: *mut f32,
    rows: usize,
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    use core::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
    // Rows in bands of 8: every column group passes over the band's rows, and the
    // coefficients of a group are rebuilt per band (a few loads and lane moves; for `F^T
    // x` with blocks other than 8 × 8 a gather, which therefore takes all rows as one
    // band). Few rows per band keep few streams in flight: rows 1536 wide sit 6 KiB
    // apart, so 16 rows read and 16 written at one column fall into a handful of L1 sets
    // (the contiguous factor of a 1536-wide rotation took 1.5x as long with bands of 16).
    let band = match (transpose, B) {
        (true, 8) => 16,
        (true, _) => rows,
        (false, _) => 8,
    };
    let mut r0 = 0;
    while r0 < rows {
        let r1 = rows.min(r0 + band);
        let mut v0 = 0;
        while v0 < n {
            // coef[t] lane l: entry (l % B, t) of block (v0 + l) / B, or entry (t, l % B)
            // for the transpose.
            let cv: [__m512; B] = if !transpose {
                // SAFETY: the 16 / B blocks of this group are the B·16 values at v0·B,
                // inside `blocks` (n·B values, v0 + 16 <= n).
                unsafe { columns::<B>(blocks.as_ptr().wrapping_add(v0 * B)) }
            } else if B == 8 {
                // SAFETY: as above; rows of a block are the columns transposed in registers.
                let cols = unsafe { columns::<B>(blocks.as_ptr().wrapping_add(v0 * B)) };
                let mut eight = [_mm512_setzero_ps(); 8];
                eight.copy_from_slice(&cols[..8]);
                let rows8 = transpose_8x8_halves(eight);
                core::array::from_fn(|t| rows8[t % 8])
            } else {
                let first = v0 / B;
                let mut coef = [[0.0f32; 16]; B];
                for (t, ct) in coef.iter_mut().enumerate() {
                    for (l, v) in ct.iter_mut().enumerate() {
                        let at = (first + l / B) * B * B + (l % B) * B + t;
                        *v = blocks.get(at).copied().unwrap_or(0.0);
                    }
                }
                // SAFETY: `coef[t]` is 16 values.
                core::array::from_fn(|t| unsafe { _mm512_loadu_ps(coef[t].as_ptr()) })
            };
            // Four rows at a time: four independent multiply-add chains hide the latency
            // (every store unconditional, so the accumulators stay in registers); the last
            // rows of the band one at a time.
            let mut r = r0;
            while r + 4 <= r1 {
                let p: [*mut f32; 4] = core::array::from_fn(|i| xp.wrapping_add((r + i) * n + v0));
                // SAFETY: rows r .. r + 4 <= rows, columns v0 .. v0 + 16 <= n: inside `src`.
                let xv: [__m512; 4] = core::array::from_fn(|i| unsafe {
                    _mm512_loadu_ps(src.wrapping_add((r + i) * n + v0))
                });
                let e: [[__m512; B]; 4] = core::array::from_fn(|i| block_entries::<B>(xv[i]));
                let mut acc = [_mm512_setzero_ps(); 4];
                for t in 0..B {
                    for i in 0..4 {
                        acc[i] = _mm512_fmadd_ps(e[i][t], cv[t], acc[i]);
                    }
                }
                for i in 0..4 {
                    // SAFETY: as for the loads; the four rows are distinct.
                    unsafe { _mm512_storeu_ps(p[i], acc[i]) };
                }
                r += 4;
            }
            while r < r1 {
                let p = xp.wrapping_add(r * n + v0);
                // SAFETY: row r < rows, columns v0 .. v0 + 16 <= n: inside `src`.
                let xv = unsafe { _mm512_loadu_ps(src.wrapping_add(r * n + v0)) };
                let e = block_entries::<B>(xv);
                let mut acc = _mm512_setzero_ps();
                for (et, c) in e.iter().zip(&cv) {
                    acc = _mm512_fmadd_ps(*et, *c, acc);
                }
                // SAFETY: as for the load.
                unsafe { _mm512_storeu_ps(p, acc) };
                r += 1;
            }
            v0 += 16;
        }
        r0 = r1;
    }
}

/// Entry `t` of each lane's block broadcast across that block's lanes, for every `t <
/// B` (`16 / B` blocks of `B` in `x`). One lane-crossing shuffle per group of four
/// entries brings the group into every 128-bit lane of its block; in-lane `vpermilps`
/// then splat each entry. This CPU family issues in-lane shuffles beside the
/// multiply-adds, where a `vpermps` per entry competes with them for the same pipes.
#[target_feature(enable = "avx512f")]
#[inline]
fn block_entries<const B: usize>(x: __m512) -> [__m512; B] {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    let splat4 = |v: __m512| {
        [
            in_lane_splat::<0x00>(v),
            in_lane_splat::<0x55>(v),
            in_lane_splat::<0xAA>(v),
            in_lane_splat::<0xFF>(v),
        ]
    };
    match B {
        4 => {
            let e = splat4(x);
            core::array::from_fn(|t| e[t % 4])
        }
        8 => {
            // 128-bit lanes (0, 0, 2, 2) and (1, 1, 3, 3): each block's first and
            // second group of four in both of its lanes.
            let lo = splat4(_mm512_shuffle_f32x4::<0xA0>(x, x));
            let hi = splat4(_mm512_shuffle_f32x4::<0xF5>(x, x));
            core::array::from_fn(|t| if t < 4 { lo[t % 4] } else { hi[t % 4] })
        }
        _ => {
            let q = [
                splat4(_mm512_shuffle_f32x4::<0x00>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0x55>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0xAA>(x, x)),
                splat4(_mm512_shuffle_f32x4::<0xFF>(x, x)),
            ];
            core::array::from_fn(|t| q[(t / 4) % 4][t % 4])
        }
    }
}

/// `vpermilps` with an immediate, written as an instruction: LLVM's shuffle combiner
/// would otherwise fold it with the lane moves of [`block_entries`] into one lane-crossing
/// permute per entry, the very cost this avoids. Under Miri (no inline assembly) the
/// intrinsic.
#[target_feature(enable = "avx512f")]
#[inline]
fn in_lane_splat<const IMM: i32>(v: __m512) -> __m512 {
    #[cfg(not(miri))]
    {
        let out: __m512;
        // SAFETY: `vpermilps` with an immediate reads and writes registers only; AVX-512F
        // is enabled for this function.
        unsafe {
            core::arch::asm!(
                "vpermilps {o}, {v}, {imm}",
                o = lateout(zmm_reg) out,
                v = in(zmm_reg) v,
                imm = const IMM,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        out
    }
    #[cfg(miri)]
    {
        core::arch::x86_64::_mm512_permute_ps::<IMM>(v)
    }
}

/// Transposes the two 8 × 8 matrices held in the 256-bit halves of `r` (row `i` of each
/// in half `h` of `r[i]`): unpacks, in-lane shuffles, then 128-bit lane moves.
#[target_feature(enable = "avx512f")]
fn transpose_8x8_halves(r: [__m512; 8]) -> [__m512; 8] {
    use core::arch::x86_64::_mm512_shuffle_f32x4;
    // u[4q + c] lane L (of each 128-bit lane) = column 4L + c of rows 4q .. 4q + 4.
    let u = transpose_4x4_in_lanes(r);
    // Column c of the 8 rows: 128-bit lane (c / 4) of u[c % 4] and u[4 + c % 4] in each half.
    core::array::from_fn(|c| {
        let (a, b) = (u[c % 4], u[4 + c % 4]);
        let v = if c < 4 {
            _mm512_shuffle_f32x4::<0x88>(a, b)
        } else {
            _mm512_shuffle_f32x4::<0xDD>(a, b)
        };
        _mm512_shuffle_f32x4::<0xD8>(v, v)
    })
}

/// The first two stages of every in-register transpose here: pairs of rows interleaved,
/// then pairs of pairs, so that within each 128-bit lane `l` the result's vector `4q + c`
/// holds column `4l + c` of rows `4q .. 4q + 4` (`N` rows, a multiple of 4).
#[target_feature(enable = "avx512f")]
fn transpose_4x4_in_lanes<const N: usize>(r: [__m512; N]) -> [__m512; N] {
    use core::arch::x86_64::{_mm512_shuffle_ps, _mm512_unpackhi_ps, _mm512_unpacklo_ps};
    let t: [__m512; N] = core::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    core::array::from_fn(|i| {
        let (q, c) = (i / 4, i % 4);
        let (a, b) = (t[4 * q + c / 2], t[4 * q + 2 + c / 2]);
        // Low or high 64-bit halves of each 128-bit lane of a and b.
        if c % 2 == 0 {
            _mm512_shuffle_ps::<0x44>(a, b)
        } else {
            _mm512_shuffle_ps::<0xEE>(a, b)
        }
    })
}

/// Column `t` of each of the `16 / B` consecutive column-major `B × B` blocks at `p`, as
/// one vector per `t` (lanes `i·B .. (i+1)·B` from block `i`).
///
/// # Safety
/// AVX-512F available, `B` in {4, 8, 16}, `p` points at `16·B` readable values.
#[target_feature(enable = "avx512f")]
unsafe fn columns<const B: usize>(p: *const f32) -> [__m512; B] {
    use core::arch::x86_64::{
        _mm256_loadu_pd, _mm512_castpd256_pd512, _mm512_castpd_ps, _mm512_insertf64x4,
        _mm512_loadu_ps, _mm512_shuffle_f32x4,
    };
    if B == 8 {
        // Two blocks; column t is the 8 values at 8t of each, the second inserted into the
        // upper half (two loads and an insert, no shuffle of whole vectors).
        return core::array::from_fn(|t| {
            // SAFETY: 8t + 8 <= 64 and 64 + 8t + 8 <= 128 = 16·B values.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_pd(p.wrapping_add(8 * t).cast()),
                    _mm256_loadu_pd(p.wrapping_add(64 + 8 * t).cast()),
                )
            };
            _mm512_castpd_ps(_mm512_insertf64x4::<1>(_mm512_castpd256_pd512(a), b))
        });
    }
    // z[i] = values 16·i .. 16·i + 16.
    // SAFETY: i < B, so 16·i + 16 <= 16·B.
    let z: [__m512; B] =
        core::array::from_fn(|i| unsafe { _mm512_loadu_ps(p.wrapping_add(16 * i)) });
    core::array::from_fn(|t| match B {
        // One block: column t is z[t].
        16 => z[t],
        // Four blocks z[0..4]; column t is 128-bit lane t of each: lanes (t, t) of z[0],
        // z[1] and of z[2], z[3], then joined.
        _ => {
            let (lo, hi) = match t {
                0 => (
                    _mm512_shuffle_f32x4::<0x00>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0x00>(z[2], z[3]),
                ),
                1 => (
                    _mm512_shuffle_f32x4::<0x55>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0x55>(z[2], z[3]),
                ),
                2 => (
                    _mm512_shuffle_f32x4::<0xAA>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0xAA>(z[2], z[3]),
                ),
                _ => (
                    _mm512_shuffle_f32x4::<0xFF>(z[0], z[1]),
                    _mm512_shuffle_f32x4::<0xFF>(z[2], z[3]),
                ),
            };
            // lo = [z0.t, z0.t, z1.t, z1.t], hi = [z2.t, z2.t, z3.t, z3.t] -> lanes 0, 2 of
            // each: [z0.t, z1.t, z2.t, z3.t].
            _mm512_shuffle_f32x4::<0x88>(lo, hi)
        }
    })
}

/// `x <- F x` (or `F^T x`) for every row of `x` (`rows × n`), where `F`'s `k = n / b`
/// blocks read strided entries: block `j` reads `x[j], x[j + k], ..., x[j + (b-1)k]` (the
/// second GS factor), with coefficients interleaved across blocks
/// (`blocks[(c·b + t)·k + j]` = entry `(c, t)` of block `j`). Sixteen blocks per vector:
/// `b²` fused multiply-adds per 16 blocks, all `b` inputs loaded before any output is
/// stored, so it works in place.
///
/// Sound for any input: returns `false`, touching nothing, unless AVX-512F is available,
/// `2 <= b <= 16`, `b` divides `n`, `x` is whole rows and `blocks` holds `n·b` values.
pub(crate) fn strided_blocks(
    x: &mut [f32],
    n: usize,
    b: usize,
    blocks: &[f32],
    transpose: bool,
) -> bool {
    if !avx512_available()
        || !(2..=16).contains(&b)
        || n == 0
        || !n.is_multiple_of(b)
        || !x.len().is_multiple_of(n)
        || blocks.len() < n * b
    {
        return false;
    }
    // SAFETY: AVX-512F is available; the shapes were checked above.
    unsafe {
        match b {
            4 if x.len() > n => strided_blocks_avx512::<4, 4>(x, n, blocks, transpose),
            4 => strided_blocks_avx512::<4, 1>(x, n, blocks, transpose),
            8 if x.len() > n => strided_blocks_avx512::<8, 4>(x, n, blocks, transpose),
            8 => strided_blocks_avx512::<8, 1>(x, n, blocks, transpose),
            16 => strided_blocks_avx512::<16, 1>(x, n, blocks, transpose),
            _ => strided_blocks_any(x, n, b, blocks, transpose),
        }
    }
    true
}

/// [`strided_blocks`] for a compile-time block size `B`, `R` rows at a time (each
/// coefficient vector, loaded once, serves `R` rows).
///
/// # Safety
/// As [`strided_blocks_any`] with `b = B`.
// Register arrays indexed by row: explicit indices keep them in registers.
#[allow(clippy::needless_range_loop)]
#[target_feature(enable = "avx512f")]
unsafe fn strided_blocks_avx512<const B: usize, const R: usize>(
    x: &mut [f32],
    n: usize,
    blocks: &[f32],
    transpose: bool,
) {
    let k = n / B;
    let rows = x.len() / n;
    // One raw pointer for the whole call (see `contiguous_blocks_avx512`).
    let xp = x.as_mut_ptr();
    // Whole groups of R rows here (every store unconditional, so the accumulators stay in
    // registers); the last rows one at a time.
    let full = rows / R * R;
    let mut r = 0;
    while r < full {
        let row: [*mut f32; R] = core::array::from_fn(|i| xp.wrapping_add((r + i) * n));
        let mut j0 = 0;
        while j0 < k {
            let mask = lanes(k - j0);
            // SAFETY: entries t·k + j0 .. (masked to < k) of rows < rows: inside `x`.
            let g: [[__m512; B]; R] = core::array::from_fn(|i| {
                core::array::from_fn(|t| unsafe {
                    _mm512_maskz_loadu_ps(mask, row[i].wrapping_add(t * k + j0))
                })
            });
            // Entry (c, t) of these blocks sits at (c·B + t)·k + j0, or (t·B + c)·k + j0
            // for the transpose: one pointer, stepped by `step` along t.
            let (step, next_c) = if transpose { (B * k, k) } else { (k, B * k) };
            let mut first = blocks.as_ptr().wrapping_add(j0);
            for c in 0..B {
                let mut acc = [_mm512_setzero_ps(); R];
                let mut wp = first;
                for t in 0..B {
                    // SAFETY: wp = blocks + entry·k + j0 with entry < B²; lanes masked to
                    // < k: inside `blocks` (n·B values).
                    let w = unsafe { _mm512_maskz_loadu_ps(mask, wp) };
                    for i in 0..R {
                        acc[i] = _mm512_fmadd_ps(w, g[i][t], acc[i]);
                    }
                    wp = wp.wrapping_add(step);
                }
                first = first.wrapping_add(next_c);
                for i in 0..R {
                    // SAFETY: entries c·k + j0 .. (masked) of row r + i < rows; every input of
                    // these blocks is already in `g`.
                    unsafe { _mm512_mask_storeu_ps(row[i].wrapping_add(c * k + j0), mask, acc[i]) };
                }
            }
            j0 += 16;
        }
        r += R;
    }
    if full < rows {
        if let Some(tail) = x.get_mut(full * n..) {
            // SAFETY: the same shapes, on whole rows of `x`.
            unsafe { strided_blocks_avx512::<B, 1>(tail, n, blocks, transpose) };
        }
    }
}

/// # Safety
/// AVX-512F available, `2 <= b <= 16`, `n % b == 0`, `x.len() % n == 0`,
/// `blocks.len() >= n·b`.
#[target_feature(enable = "avx512f")]
unsafe fn strided_blocks_any(x: &mut [f32], n: usize, b: usize, blocks: &[f32], transpose: bool) {
    let k = n / b;
    let rows = x.len() / n;
    let xp = x.as_mut_ptr();
    for r in 0..rows {
        let row = xp.wrapping_add(r * n);
        let mut j0 = 0;
        while j0 < k {
            let mask = lanes(k - j0);
            let mut g = [_mm512_setzero_ps(); 16];
            for (t, gt) in g.iter_mut().enumerate().take(b) {
                // SAFETY: entries t·k + j0 .. (masked to < k): inside row r.
                *gt = unsafe { _mm512_maskz_loadu_ps(mask, row.wrapping_add(t * k + j0)) };
            }
            for c in 0..b {
                let mut acc = _mm512_setzero_ps();
                for (t, gt) in g.iter().enumerate().take(b) {
                    let entry = if transpose { t * b + c } else { c * b + t };
                    // SAFETY: entry·k + j0 .. (masked to < k) < n·b: inside `blocks`.
                    let w = unsafe {
                        _mm512_maskz_loadu_ps(mask, blocks.as_ptr().wrapping_add(entry * k + j0))
                    };
                    acc = _mm512_fmadd_ps(w, *gt, acc);
                }
                // SAFETY: entries c·k + j0 .. (masked to < k): inside row r; every input
                // of these blocks is already in `g`.
                unsafe { _mm512_mask_storeu_ps(row.wrapping_add(c * k + j0), mask, acc) };
            }
            j0 += 16;
        }
    }
}

/// Rows of `C` per tile of the AVX2 kernel.
const AVX2_MR: usize = 6;
/// Columns of `C` per tile of the AVX2 kernel (two 8-lane vectors).
const AVX2_NR: usize = 16;

/// `C = A · B` (or `+=`) with the AVX2 + FMA kernel for the columns of whole 16-column
/// tiles; returns how many columns it computed (a multiple of 16, 0 when the CPU lacks
/// AVX2 or FMA): the caller finishes the rest.
///
/// Sound for any input: computes nothing unless AVX2 and FMA are available and every
/// operand holds the elements `p` addresses.
pub(super) fn matmul_avx2(p: &Product, a: &[f32], b: &[f32], c: &mut [f32]) -> usize {
    if !avx2_fma_available() || p.check(a.len(), b.len(), c.len()).is_err() {
        return 0;
    }
    let whole = p.n / AVX2_NR * AVX2_NR;
    let mut j0 = 0;
    while j0 < whole {
        let mut i0 = 0;
        while i0 < p.m {
            let rows = AVX2_MR.min(p.m - i0);
            // SAFETY: AVX2 and FMA are available; rows i0 .. i0 + rows <= m and columns
            // j0 .. j0 + 16 <= n lie in the spans checked above.
            unsafe {
                match rows {
                    6 => tile_avx2::<6>(p, a, b, c, [i0, j0]),
                    5 => tile_avx2::<5>(p, a, b, c, [i0, j0]),
                    4 => tile_avx2::<4>(p, a, b, c, [i0, j0]),
                    3 => tile_avx2::<3>(p, a, b, c, [i0, j0]),
                    2 => tile_avx2::<2>(p, a, b, c, [i0, j0]),
                    _ => tile_avx2::<1>(p, a, b, c, [i0, j0]),
                }
            }
            i0 += rows;
        }
        j0 += AVX2_NR;
    }
    whole
}

/// One `R × 16` tile of the AVX2 kernel at row `i0`, column `j0`.
///
/// # Safety
/// AVX2 and FMA available; rows `i0 .. i0 + R` and columns `j0 .. j0 + 16` inside the
/// checked spans of `a`, `b` and `c`.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_avx2<const R: usize>(
    p: &Product,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [i0, j0]: [usize; 2],
) {
    use core::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps,
        _mm256_setzero_ps, _mm256_storeu_ps,
    };
    let a0 = a.as_ptr().wrapping_add(i0 * p.a_stride);
    let b0 = b.as_ptr().wrapping_add(j0);
    let c0 = c.as_mut_ptr().wrapping_add(i0 * p.c_stride + j0);
    let mut acc: [[__m256; 2]; R] = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..p.k {
        let brow = b0.wrapping_add(kk * p.b_stride);
        // SAFETY: row kk < k of B, columns j0 .. j0 + 16 <= n.
        let (w0, w1) = unsafe { (_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.wrapping_add(8))) };
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: row i0 + r < m, column kk < k of A.
            let x = unsafe { _mm256_broadcast_ss(&*a0.wrapping_add(r * p.a_stride + kk)) };
            acc_r[0] = _mm256_fmadd_ps(x, w0, acc_r[0]);
            acc_r[1] = _mm256_fmadd_ps(x, w1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let row = c0.wrapping_add(r * p.c_stride);
        // SAFETY: row i0 + r < m, columns j0 .. j0 + 16 <= n of C (exclusive via `c`).
        unsafe {
            let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
            if p.accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.wrapping_add(8)));
            }
            _mm256_storeu_ps(row, v0);
            _mm256_storeu_ps(row.wrapping_add(8), v1);
        }
    }
}
