//! The x86-64 builds of the portable quantized kernels: the same source
//! (`matmul::run`) compiled with AVX-512 (F, BW, VL, VNNI) and with AVX2 + FMA enabled,
//! taken when the CPU has them (detected at run time by the dense-product module's
//! CPUID probe; the `force-portable` feature never takes them). This is riffle-core's
//! only unsafe code for the quantized kernels: calling a `target_feature` function.
#![allow(unsafe_code)]

use super::matmul::{run as portable, Problem};

/// Runs `p` on the widest kernel the CPU has; `false` if neither AVX-512 nor AVX2
/// is available (the caller runs the portable build).
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) -> bool {
    if crate::math::gemm::cpu::avx512_int8_available() {
        // SAFETY: the CPU and OS support AVX-512 F/BW/VL/VNNI, AVX2 and FMA (checked
        // just above); the function reads and writes only through the checked slices
        // in `p` and `y`, as the portable kernel does.
        unsafe { run_avx512(p, y) };
        return true;
    }
    if crate::math::gemm::cpu::avx2_fma_available() {
        // SAFETY: the CPU and OS support AVX2 and FMA (checked just above); slices as
        // above.
        unsafe { run_avx2(p, y) };
        return true;
    }
    false
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn run_avx512(p: &Problem<'_>, y: &mut [f32]) {
    portable(p, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2(p: &Problem<'_>, y: &mut [f32]) {
    portable(p, y)
}
