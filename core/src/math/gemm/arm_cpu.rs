//! Run-time CPU probes (AArch64): whether the block-quantized NEON kernels of
//! `crate::quant` may run, and whether this CPU has the Armv8.2 dot-product instructions
//! (`SDOT`, FEAT_DotProd: Cortex-A55/A75 and later, Apple M1 and later, Neoverse) that
//! their fastest form uses. NEON itself is part of every AArch64 CPU. Never above the
//! process's kernel ceiling ([`super::limit_kernels`]); always `false` with the
//! `force-portable` feature.
//!
//! On Linux and Android the dot product is read from the kernel's hardware capabilities
//! (`getauxval(AT_HWCAP)`, bit `HWCAP_ASIMDDP`), which every C library there provides;
//! elsewhere (macOS, bare metal) from the compile-time target features (Apple's targets
//! have it).
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU8, Ordering};

/// The most capable kernel family the probes may report: 2 every kernel the CPU runs, 1
/// NEON without the dot-product instructions (what a Cortex-A53 or A72 runs), 0 none
/// (the portable code). It only ever turns kernels off.
static CEILING: AtomicU8 = AtomicU8::new(2);

/// Sets the ceiling (see [`CEILING`]).
pub(crate) fn set_ceiling(level: u8) {
    CEILING.store(level, Ordering::Relaxed);
}

/// Whether the NEON kernels may run (every AArch64 CPU has NEON).
pub(crate) fn neon_allowed() -> bool {
    !cfg!(feature = "force-portable") && CEILING.load(Ordering::Relaxed) >= 1
}

/// Whether this CPU runs `SDOT` and the ceiling allows it. Detected once, then cached.
pub(crate) fn dotprod_available() -> bool {
    static STATE: AtomicU8 = AtomicU8::new(0);
    CEILING.load(Ordering::Relaxed) >= 2 && super::cached_probe(&STATE, detect_dotprod)
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
fn detect_dotprod() -> bool {
    extern "C" {
        fn getauxval(kind: core::ffi::c_ulong) -> core::ffi::c_ulong;
    }
    /// `AT_HWCAP` in `<elf.h>`.
    const AT_HWCAP: core::ffi::c_ulong = 16;
    /// `HWCAP_ASIMDDP` in Linux's `asm/hwcap.h` (arm64).
    const HWCAP_ASIMDDP: core::ffi::c_ulong = 1 << 20;
    // SAFETY: `getauxval` reads the process's auxiliary vector; it takes any key (an
    // unknown one gives 0) and has no other effect.
    unsafe { getauxval(AT_HWCAP) & HWCAP_ASIMDDP != 0 }
}

#[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
fn detect_dotprod() -> bool {
    cfg!(target_feature = "dotprod")
}
