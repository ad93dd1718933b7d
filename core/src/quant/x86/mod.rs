//! The x86-64 quantized kernels, taken when the CPU has their features (detected at run
//! time by the dense-product module's CPUID probes, `math::gemm::cpu`; the
//! `force-portable` feature never takes them):
//! - [`block32`]: hand-written, Q8_0, Q4_0, Q4_1 and Q5_0 weights against Q8_1
//!   activations (AVX-512 VNNI or AVX2), one input row at a time (decode);
//! - [`prompt`]: hand-written, Q8_0, Q4_0 and Q4_1 weights against several Q8_1 input
//!   rows at once (AVX-512 VNNI), each weight block unpacked once for all of them;
//! - [`f32_inputs`]: hand-written, Q8_0 weights against one `f32` input (rounded to 16
//!   bits per block with AVX-512, as `f32` with AVX2);
//! - for every other type, the portable source (`matmul`) compiled with AVX-512 (F, BW,
//!   VL, VNNI) and with AVX2 + FMA enabled.
//!
//! The quantized kernels' only unsafe code.
#![allow(unsafe_code)]
// Without Q4_0, Q4_1 and Q8_0 compiled in, the hand-written kernels are never taken.
#![cfg_attr(
    not(any(feature = "q4", feature = "q8_0")),
    allow(dead_code, unused_imports, unreachable_code, unused_variables)
)]

mod act;
mod block32;
mod f32_inputs;
mod prompt;

pub(super) use act::quantize_q8_1;
pub(super) use block32::run_block32;
#[cfg(test)]
pub(super) use f32_inputs::run_q8_0;

use super::matmul::{run as portable, run_f32_inputs as portable_f32_inputs, Problem};

/// Whether this CPU runs several inputs against `ty` weights on the prompt kernel
/// (`prompt.rs`: Q8_0, Q4_0, Q4_1 with AVX-512 VNNI, AVX2, FMA and F16C).
pub(super) fn batch_kernel(ty: super::TensorType) -> bool {
    use super::TensorType as T;
    let typed = match ty {
        #[cfg(feature = "q8_0")]
        T::Q8_0 => true,
        #[cfg(feature = "q4")]
        T::Q4_0 | T::Q4_1 => true,
        _ => false,
    };
    typed
        && crate::math::gemm::cpu::avx512_int8_available()
        && crate::math::gemm::cpu::avx2_fma_available()
        && crate::math::gemm::cpu::f16c_available()
}

/// Runs `p` on the widest kernel the CPU has; `false` if neither AVX-512 nor AVX2
/// is available (the caller runs the portable build).
pub(super) fn run(p: &Problem<'_>, y: &mut [f32]) -> bool {
    if run_block32(p, y, true) {
        return true;
    }
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

/// [`run`] for block-quantized weights against `f32` inputs; `false` without AVX-512
/// or AVX2 (the caller runs the portable build).
pub(super) fn run_f32_inputs(p: &Problem<'_>, y: &mut [f32]) -> bool {
    if f32_inputs::run_q8_0(p, y, true) {
        return true;
    }
    if crate::math::gemm::cpu::avx512_int8_available() {
        // SAFETY: as in `run`.
        unsafe { run_f32_inputs_avx512(p, y) };
        return true;
    }
    if crate::math::gemm::cpu::avx2_fma_available() {
        // SAFETY: as in `run`.
        unsafe { run_f32_inputs_avx2(p, y) };
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn run_f32_inputs_avx512(p: &Problem<'_>, y: &mut [f32]) {
    portable_f32_inputs(p, y)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn run_f32_inputs_avx2(p: &Problem<'_>, y: &mut [f32]) {
    portable_f32_inputs(p, y)
}
