//! Links riffle-core into a Cortex-M0 image without any allocator.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

use core::panic::PanicInfo;
use cortex_m_rt::entry;
use riffle_core::math::{
    merge, prepare_chain, ChainSpec, LayerTransform, Permutation, Scalars, WeightsMut,
};

static PARAMS: [f32; 48] = {
    let mut p = [0.0f32; 48];
    let mut i = 0;
    while i < 48 {
        p[i] = (i as f32 - 24.0) * 0.01;
        i += 1;
    }
    p
};

#[entry]
fn main() -> ! {
    let mut blocks = [0.0f32; 16 * 4 * 2];
    let mut scratch = [0.0f32; 48];
    let mut w = [0.5f32; 4 * 16];
    let ok = ChainSpec::new(16, 4, 2, Permutation::Gs)
        .and_then(|spec| {
            let p = Scalars::F32(&PARAMS[..24]);
            prepare_chain(spec, &[p, p], &mut blocks, &mut scratch)
        })
        .and_then(|q| {
            let mut x = [1.0f32; 16];
            q.apply(&mut x, false, &mut scratch)?;
            let t = LayerTransform {
                q_in: Some(q),
                ..LayerTransform::IDENTITY
            };
            merge(WeightsMut::F32(&mut w), 4, 16, &t, &mut scratch)
        })
        .is_ok();
    core::hint::black_box((ok, w));
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    loop {}
}
