//! The runtime-only image without riffle, for the size report: the same board set-up,
//! instruction counter, stack painting and report line as `runtime_only.rs`, but no
//! model, adapter or inference. The difference between the two images' code is the code
//! that riffle adds to a firmware (docs/firmware.md).
#![no_std]
#![no_main]

#[path = "../board.rs"]
mod board;
#[path = "../probe.rs"]
mod probe;
// Size-first mem* functions instead of compiler-builtins' (see mem.rs).
#[path = "../mem.rs"]
mod mem;

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // Opaque to the optimiser, so the report is built as in the runtime-only image.
    probe::measure(&mut board, b"board-only: no riffle", |_| {
        core::hint::black_box(true)
    })
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
