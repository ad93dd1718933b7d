//! Run-time CPU probes (x86-64): whether this CPU and its operating system run the
//! AVX-512 and AVX2 + FMA kernels of [`super`] and the quantized kernels of
//! `crate::quant`. Detected once with CPUID and XCR0, then cached; always `false` with
//! the `force-portable` feature, and never above the process's kernel ceiling
//! ([`super::limit_kernels`]).
//!
//! `unsafe` here only reads XCR0, after CPUID has said the OS enabled XSAVE.
#![allow(unsafe_code)]

use core::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
use core::sync::atomic::{AtomicU8, Ordering};

/// The most capable kernel family the probes below may report: 2 every family the CPU
/// runs, 1 at most AVX2 + FMA (from the start with the `max-avx2` feature), 0 none (the
/// portable code). It only ever turns kernels off, so a kernel still runs only where the
/// CPU has its instructions.
static CEILING: AtomicU8 = AtomicU8::new(if cfg!(feature = "max-avx2") { 1 } else { 2 });

/// Sets the ceiling (see [`CEILING`]).
pub(crate) fn set_ceiling(level: u8) {
    CEILING.store(level, Ordering::Relaxed);
}

/// Whether the ceiling allows kernels of `level` (1 AVX2 + FMA, 2 AVX-512).
fn allowed(level: u8) -> bool {
    CEILING.load(Ordering::Relaxed) >= level
}

/// Whether this CPU and OS run AVX-512F code (CPUID leaf 7, and XCR0 enabling the
/// `opmask` and `zmm` register state). Detected once, then cached.
pub(crate) fn avx512_available() -> bool {
    if !allowed(2) {
        return false;
    }
    // Miri cannot run CPUID: it takes the compile-time features (scripts/test runs the
    // kernels under Miri with `-C target-feature=+avx512f`).
    if cfg!(miri) {
        return cfg!(target_feature = "avx512f") && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    super::cached_probe(&STATE, detect)
}

/// Whether this CPU and OS run AVX2 and FMA code (CPUID leaves 1 and 7, XCR0 enabling
/// the `ymm` state): the product kernel for x86-64 CPUs without AVX-512. Cached.
pub(crate) fn avx2_fma_available() -> bool {
    if !allowed(1) {
        return false;
    }
    if cfg!(miri) {
        return cfg!(all(target_feature = "avx2", target_feature = "fma"))
            && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    super::cached_probe(&STATE, detect_avx2_fma)
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
pub(crate) fn avx512_int8_available() -> bool {
    if cfg!(miri) {
        return cfg!(all(
            target_feature = "avx512f",
            target_feature = "avx512bw",
            target_feature = "avx512vl",
            target_feature = "avx512vnni"
        )) && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    avx512_available() && super::cached_probe(&STATE, detect_avx512_int8)
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect_avx512_int8() -> bool {
    // SAFETY: only called once `detect()` found leaf 7 (CPUID exists on every x86-64).
    let leaf7 = unsafe { __cpuid_count(7, 0) };
    let (bw, vl, vnni) = (1u32 << 30, 1u32 << 31, 1u32 << 11);
    leaf7.ebx & (bw | vl) == (bw | vl) && leaf7.ecx & vnni != 0
}

/// Whether the CPU converts halves to floats in hardware (F16C, CPUID leaf 1 ECX bit 29;
/// every AVX2 CPU made has it, but it is a separate flag): the quantized kernels' scale
/// widening. Cached; under Miri the compile-time feature.
pub(crate) fn f16c_available() -> bool {
    if !allowed(1) {
        return false;
    }
    if cfg!(miri) {
        return cfg!(target_feature = "f16c") && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    super::cached_probe(&STATE, detect_f16c)
}

#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect_f16c() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU.
    unsafe { __cpuid(1) }.ecx & (1 << 29) != 0
}

/// Whether the CPU runs the SHA extensions with SSSE3 and SSE4.1 (CPUID leaf 7 EBX bit
/// 29, leaf 1 ECX bits 9 and 19): SHA-256's compression kernel. Cached; under Miri the
/// compile-time features. Independent of the kernel ceiling (it only changes speed, never
/// a digest).
#[cfg(feature = "sha256")]
pub(crate) fn sha_available() -> bool {
    if cfg!(miri) {
        return cfg!(all(
            target_feature = "sha",
            target_feature = "ssse3",
            target_feature = "sse4.1"
        )) && !cfg!(feature = "force-portable");
    }
    static STATE: AtomicU8 = AtomicU8::new(0);
    super::cached_probe(&STATE, detect_sha)
}

#[cfg(feature = "sha256")]
#[allow(unused_unsafe)] // `__cpuid` is a safe function on newer toolchains
fn detect_sha() -> bool {
    // SAFETY: CPUID exists on every x86-64 CPU.
    let leaf1 = unsafe { __cpuid(1) };
    let (ssse3, sse41) = (1u32 << 9, 1u32 << 19);
    if leaf1.ecx & (ssse3 | sse41) != (ssse3 | sse41) {
        return false;
    }
    // SAFETY: as above; leaf 7 exists when the maximum leaf is at least 7.
    unsafe { __cpuid(0) }.eax >= 7 && unsafe { __cpuid_count(7, 0) }.ebx & (1 << 29) != 0
}

/// XCR0, the OS-enabled register state.
///
/// # Safety
/// The CPU must support XSAVE and the OS must have enabled it (CPUID.1:ECX.OSXSAVE).
#[target_feature(enable = "xsave")]
unsafe fn read_xcr0() -> u64 {
    _xgetbv(0)
}
