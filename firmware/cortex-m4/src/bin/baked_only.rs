//! The ahead-of-time ("baked") runtime alone, for the size report: build.rs validated and
//! prepared the base and adapter 0 with the full runtime on the host and baked them into
//! one blob (`BAKED`, in flash); this image opens it with riffle-core's baked reader
//! (magic, version, CRC-32, every offset, length and dimension checked), activates its one
//! adapter slot, runs one digit unmerged in an arena of exactly `BakedModel::arena_len()`,
//! and exits with success if the prediction is the host build's (computed by the full
//! runtime). Same board code and report as `runtime_only.rs`, so the board-only image can
//! be subtracted. MLP base only.
#![no_std]
#![no_main]

#[cfg(feature = "base-cnn")]
compile_error!("the baked probe runs the mlp base (baking supports `mlp` only)");

#[path = "../board.rs"]
mod board;
#[path = "../probe.rs"]
mod probe;
// Size-first mem* functions instead of compiler-builtins' (see mem.rs).
#[path = "../mem.rs"]
mod mem;

use riffle_core::runtime::baked::BakedModel;
use riffle_firmware::{BAKED, BK_ARENA_LEN, BK_WORKSPACE_LEN, RT_EXPECTED, RT_SAMPLE};

/// Arena, adapter 0's blocks and scales, and the logits.
struct Ram {
    arena: [f32; BK_ARENA_LEN],
    workspace: [f32; BK_WORKSPACE_LEN],
    out: [f32; 16],
}

static mut RAM: Ram = Ram {
    arena: [0.0; BK_ARENA_LEN],
    workspace: [0.0; BK_WORKSPACE_LEN],
    out: [0.0; 16],
};

fn infer(ram: &'static mut Ram) -> riffle_core::Result<usize> {
    let model = BakedModel::open(&BAKED.0)?;
    // The arena is exactly what this target computes (build.rs sized it on the host).
    if model.arena_len() != BK_ARENA_LEN {
        return Err(riffle_core::Error::LengthMismatch {
            expected: model.arena_len(),
            found: BK_ARENA_LEN,
        });
    }
    let adapter = model.activate(0, &mut ram.workspace)?;
    let n = model.run(Some(&adapter), &RT_SAMPLE, &mut ram.out, &mut ram.arena)?;
    Ok(riffle_firmware::selfcheck::argmax(&ram.out[..n]))
}

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // SAFETY: `main` runs once and never returns; the only reference to RAM.
    let ram: &'static mut Ram = unsafe { &mut *core::ptr::addr_of_mut!(RAM) };
    probe::measure(
        &mut board,
        b"baked-only: open + activate + one inference",
        |_| matches!(infer(ram), Ok(p) if p == RT_EXPECTED),
    )
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
