//! The runtime alone, for the size report: the base and one adapter in flash, one
//! adapter slot, unmerged (`Model::run`), an arena of exactly `Session::arena_len(0)`; no command
//! line, no text formatting. Runs one digit through base + adapter, prints three
//! numbers (digits only, no `core::fmt`) and exits with success if the prediction is
//! the host build's.
#![no_std]
#![no_main]

#[path = "../board.rs"]
mod board;
#[path = "../probe.rs"]
mod probe;
// Size-first mem* functions instead of compiler-builtins' (see mem.rs).
#[path = "../mem.rs"]
mod mem;

use riffle_core::runtime::{Adapter, Input, Model, Prepared};
use riffle_firmware::{ADAPTERS, RT_ARENA_LEN, RT_EXPECTED, RT_SAMPLE, WORKSPACE_LENS};

/// Arena, workspace of adapter 0, and the logits.
struct Ram {
    arena: [f32; RT_ARENA_LEN],
    workspace: [f32; WORKSPACE_LENS[0]],
    out: [f32; 16],
}

static mut RAM: Ram = Ram {
    arena: [0.0; RT_ARENA_LEN],
    workspace: [0.0; WORKSPACE_LENS[0]],
    out: [0.0; 16],
};

// Parsing and preparing out of line: their temporaries leave the stack before the run.
#[inline(never)]
fn parse() -> riffle_core::Result<Model<'static>> {
    Model::from_bytes(&riffle_firmware::BASE.0)
}

#[inline(never)]
fn prepare<'w>(
    model: &Model<'static>,
    workspace: &'w mut [f32],
) -> riffle_core::Result<Prepared<'static, 'w>> {
    Adapter::from_bytes(&ADAPTERS[0].0)?.prepare(model, workspace)
}

fn infer(ram: &'static mut Ram) -> riffle_core::Result<usize> {
    let model = parse()?;
    // The arena is exactly what this target computes (build.rs sized it on the host).
    // Adapter 0 brings no head, so the base head's size applies.
    if model.arena_len(0, 0) != RT_ARENA_LEN {
        return Err(riffle_core::Error::LengthMismatch {
            expected: model.arena_len(0, 0),
            found: RT_ARENA_LEN,
        });
    }
    let adapter = prepare(&model, &mut ram.workspace)?;
    // One slot, unmerged: `Model::run` with the prepared adapter, no `Session` (whose
    // table of resident adapters would cost ~17 KB of stack).
    let n = model.run(
        Some(&adapter),
        Input::Vector(&RT_SAMPLE),
        &mut ram.out,
        &mut ram.arena,
    )?;
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
        b"runtime-only: parse + prepare + one inference",
        |_| matches!(infer(ram), Ok(p) if p == RT_EXPECTED),
    )
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
