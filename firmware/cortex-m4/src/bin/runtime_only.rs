//! The runtime alone, for the size report: the base and one adapter in flash, one
//! adapter slot, unmerged, an arena of exactly `Session::arena_len(0)`; no command
//! line, no text formatting. Runs one digit through base + adapter and exits with
//! success if the prediction is the host build's.
#![no_std]
#![no_main]

#[path = "../board.rs"]
mod board;

use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_firmware::{Platform, ADAPTERS, RT_ARENA_LEN, RT_EXPECTED, RT_SAMPLE, WORKSPACE_LENS};

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

fn infer(ram: &'static mut Ram) -> riffle_core::Result<usize> {
    let model = Model::from_bytes(&riffle_firmware::BASE.0)?;
    let adapter = Adapter::from_bytes(&ADAPTERS[0].0)?.prepare(&model, &mut ram.workspace)?;
    let mut session = Session::new(&model);
    let h = session.add_adapter(adapter)?;
    session.activate(Some(h), &mut [])?;
    let n = session.run(Input::Vector(&RT_SAMPLE), &mut ram.out, &mut ram.arena)?;
    let out = &ram.out[..n];
    let mut best = 0;
    for (i, v) in out.iter().enumerate() {
        if *v > out[best] {
            best = i;
        }
    }
    Ok(best)
}

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // SAFETY: `main` runs once and never returns; the only reference to RAM.
    let ram: &'static mut Ram = unsafe { &mut *core::ptr::addr_of_mut!(RAM) };
    let ok = matches!(infer(ram), Ok(p) if p == RT_EXPECTED);
    board.exit(ok)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
