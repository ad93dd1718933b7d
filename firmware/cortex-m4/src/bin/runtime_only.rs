//! The runtime alone, for the size report: the base and one adapter in flash, one
//! adapter slot, unmerged (`Model::run`), an arena of exactly `Session::arena_len(0)`; no command
//! line, no text formatting. Runs one digit through base + adapter, prints three
//! numbers (digits only, no `core::fmt`) and exits with success if the prediction is
//! the host build's.
#![no_std]
#![no_main]

#[path = "../board.rs"]
mod board;

use riffle_core::runtime::{Adapter, Input, Model, Prepared};
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

/// Writes `v` in decimal without `core::fmt`.
fn put_u64(b: &mut board::Board, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    b.write_bytes(&digits[i..]);
}

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
    let adapter = prepare(&model, &mut ram.workspace)?;
    // One slot, unmerged: `Model::run` with the prepared adapter, no `Session` (whose
    // table of resident adapters would cost ~17 KB of stack).
    let n = model.run(
        Some(&adapter),
        None,
        Input::Vector(&RT_SAMPLE),
        &mut ram.out,
        &mut ram.arena,
    )?;
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
    let t0 = board.now();
    let ok = matches!(infer(ram), Ok(p) if p == RT_EXPECTED);
    let cost = board.now() - t0;
    let peak = board.stack_peak().unwrap_or(0) as u64;
    board.write_bytes(b"runtime-only: parse + prepare + one inference instructions=");
    put_u64(&mut board, cost);
    board.write_bytes(b" stack_peak=");
    put_u64(&mut board, peak);
    let ram = board.static_ram() as u64;
    board.write_bytes(b" static_ram=");
    put_u64(&mut board, ram);
    board.write_bytes(if ok { b" ok\r\n" } else { b" WRONG\r\n" });
    board.exit(ok)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
