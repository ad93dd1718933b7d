//! The firmware: boot self-check, then the serial command line (see `src/cli.rs`).
#![no_std]
#![no_main]

#[path = "board.rs"]
mod board;

use riffle_firmware::Buffers;

/// Every RAM buffer, sized at build time; zero-initialised, so it lives in `.bss`.
static mut BUFFERS: Buffers = Buffers::ZERO;

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // SAFETY: `main` runs once and never returns, and this is the only place that
    // names BUFFERS, so this is the one and only reference to it.
    let buffers: &'static mut Buffers = unsafe { &mut *core::ptr::addr_of_mut!(BUFFERS) };
    riffle_firmware::run(&mut board, buffers)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    board::panic_verbose(info)
}
