//! Board support, included by each binary (`#[path = "board.rs"] mod board;`):
//!
//! - ARM (`thumbv7em-none-eabihf`, `thumbv6m-none-eabi`): QEMU's MPS2 boards
//!   (`mps2-an386` Cortex-M4F; `mps2-an385` runs the Cortex-M0 build, whose ARMv6-M
//!   code is a subset of the M3's). CMSDK UART0 at 0x4000_4000, SysTick as the
//!   instruction counter, semihosting only to exit.
//! - RISC-V (`riscv32imac-unknown-none-elf`): QEMU's `virt` board. NS16550A UART at
//!   0x1000_0000, `minstret` as the instruction counter, the SiFive test device to exit.
//!
//! Also: the panic paths (exit with failure; each binary picks one for its
//! `#[panic_handler]`) and the stack painting that measures the deepest stack use.
#![allow(unsafe_code, dead_code)]

use core::ptr::{read_volatile, write_volatile};

/// Word written over the free RAM between the statics and the stack at boot.
const PAINT: u32 = 0x5AFE_C0DE;

/// Paints `[lo, sp - 256)`; called first thing at boot.
///
/// # Safety
/// `lo` must be the end of the statics and the region up to `sp` unused.
unsafe fn paint(lo: usize, sp: usize) {
    let mut a = (lo + 3) & !3;
    while a + 256 < sp {
        write_volatile(a as *mut u32, PAINT);
        a += 4;
    }
}

/// Bytes between `top` and the lowest word no longer holding [`PAINT`].
fn peak(lo: usize, top: usize) -> usize {
    let mut a = (lo + 3) & !3;
    // SAFETY: every address in [lo, top) is RAM owned by the firmware.
    while a < top && unsafe { read_volatile(a as *const u32) } == PAINT {
        a += 4;
    }
    top - a
}

#[cfg(target_arch = "arm")]
mod imp {
    use core::sync::atomic::{AtomicU32, Ordering};

    use cortex_m::peripheral::{syst::SystClkSource, SCB, SYST};
    use cortex_m_rt::{exception, ExceptionFrame};
    use cortex_m_semihosting::debug;
    use riffle_firmware::Platform;

    use super::{peak, read_volatile, write_volatile};

    const UART0: usize = 0x4000_4000;
    const DATA: usize = UART0;
    const STATE: usize = UART0 + 0x4;
    const CTRL: usize = UART0 + 0x8;
    const BAUDDIV: usize = UART0 + 0x10;
    const TX_FULL: u32 = 1;
    const RX_FULL: u32 = 2;

    /// SysTick reload: the full 24 bits, so one wrap every 2^24 ticks.
    const RELOAD: u32 = 0x00FF_FFFF;
    /// Instructions per SysTick tick. QEMU clocks the MPS2 SysTick from the 25 MHz
    /// system clock (40 ns per tick); with `-icount shift=0` the virtual clock advances
    /// exactly 1 ns per executed instruction, so a tick is 40 instructions. The boot
    /// banner shows a calibration loop that checks it.
    pub const INSTR_PER_TICK: u64 = 40;

    static WRAPS: AtomicU32 = AtomicU32::new(0);

    #[exception]
    fn SysTick() {
        WRAPS.store(
            WRAPS.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    extern "C" {
        /// cortex-m-rt's default exception handler.
        fn DefaultHandler();
    }

    /// The interrupt vectors (cortex-m-rt's `device` feature): the firmware enables no
    /// interrupt, and the linker script wants at least one entry, so IRQ 0 alone, to the
    /// default handler. cortex-m-rt's own table, without `device`, has 240 entries on
    /// ARMv7-M (960 bytes of flash).
    #[link_section = ".vector_table.interrupts"]
    #[no_mangle]
    #[used]
    pub static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [DefaultHandler];

    #[exception]
    unsafe fn HardFault(_frame: &ExceptionFrame) -> ! {
        Board.write_bytes(b"\r\nFAIL: hard fault\r\n");
        Board.exit(false)
    }

    extern "C" {
        static __sdata: u32;
        static __sheap: u32;
        static _stack_start: u32;
    }

    fn heap_start() -> usize {
        core::ptr::addr_of!(__sheap) as usize
    }
    fn stack_top() -> usize {
        core::ptr::addr_of!(_stack_start) as usize
    }

    /// The MPS2 board (zero-sized: all state is in registers and statics).
    pub struct Board;

    impl Board {
        /// Paints the stack, enables UART0 and starts SysTick.
        pub fn init() -> Self {
            // SAFETY: nothing lives between the statics and the current stack pointer yet.
            unsafe { super::paint(heap_start(), cortex_m::register::msp::read() as usize) };
            // SAFETY: CMSDK APB UART registers of the MPS2 memory map.
            unsafe {
                write_volatile(BAUDDIV as *mut u32, 16);
                write_volatile(CTRL as *mut u32, 0x3); // TX and RX enable
            }
            match cortex_m::Peripherals::take() {
                Some(cp) => {
                    let mut syst: SYST = cp.SYST;
                    syst.set_clock_source(SystClkSource::Core);
                    syst.set_reload(RELOAD);
                    syst.clear_current();
                    syst.enable_interrupt();
                    syst.enable_counter();
                    // Enabling with the current value at 0 reloads and may raise one
                    // interrupt at once: let it pass, then start counting from zero.
                    while SYST::get_current() == 0 {}
                    cortex_m::asm::dsb();
                    cortex_m::asm::isb();
                    SCB::clear_pendst();
                    WRAPS.store(0, Ordering::Relaxed);
                }
                None => Board.exit(false),
            }
            Board
        }

        /// SysTick ticks since boot, wraps included.
        fn ticks() -> u64 {
            loop {
                let w1 = WRAPS.load(Ordering::Relaxed);
                let c1 = SYST::get_current();
                // A wrap whose interrupt is still pending (QEMU takes interrupts between
                // translation blocks) is counted here.
                let pending = SCB::is_pendst_pending();
                let c2 = SYST::get_current();
                let w2 = WRAPS.load(Ordering::Relaxed);
                // Retry when a wrap or the interrupt fell between the reads, and at 0
                // (the reload is due: whether the pending bit belongs to it is unclear).
                if w1 == w2 && c2 <= c1 && c1 != 0 {
                    let wraps = u64::from(w1) + u64::from(pending);
                    return (wraps << 24) + u64::from(RELOAD - c1);
                }
            }
        }
    }

    impl Platform for Board {
        const TARGET: &'static str = if cfg!(target_abi = "eabihf") {
            "thumbv7em-none-eabihf (Cortex-M4F, hardware FPU)"
        } else {
            "thumbv6m-none-eabi (Cortex-M0 code, soft float)"
        };
        const COUNTER: &'static str =
            "emulated instructions = SysTick ticks x 40 (25 MHz SysTick, QEMU -icount shift=0)";

        fn write_bytes(&mut self, bytes: &[u8]) {
            for &b in bytes {
                // SAFETY: UART0 registers.
                unsafe {
                    while read_volatile(STATE as *const u32) & TX_FULL != 0 {}
                    write_volatile(DATA as *mut u32, u32::from(b));
                }
            }
        }

        fn read_byte(&mut self) -> u8 {
            // SAFETY: UART0 registers.
            unsafe {
                while read_volatile(STATE as *const u32) & RX_FULL == 0 {}
                read_volatile(DATA as *const u32) as u8
            }
        }

        fn now(&mut self) -> u64 {
            Self::ticks() * INSTR_PER_TICK
        }

        fn calibrate(&mut self) -> Option<(u64, u64)> {
            const N: u32 = 1_000_000;
            let t0 = self.now();
            // SAFETY: a register-only loop of exactly 2 * N instructions.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "subs r0, #1",
                    "bne 2b",
                    inout("r0") N => _,
                    options(nomem, nostack)
                );
            }
            let t1 = self.now();
            Some((2 * u64::from(N), t1 - t0))
        }

        fn static_ram(&self) -> usize {
            heap_start() - core::ptr::addr_of!(__sdata) as usize
        }

        fn stack_peak(&self) -> Option<usize> {
            Some(peak(heap_start(), stack_top()))
        }

        fn exit(&mut self, success: bool) -> ! {
            debug::exit(if success {
                debug::EXIT_SUCCESS
            } else {
                debug::EXIT_FAILURE
            });
            loop {
                cortex_m::asm::wfi();
            }
        }
    }
}

#[cfg(target_arch = "riscv32")]
mod imp {
    use riffle_firmware::Platform;

    use super::{peak, read_volatile, write_volatile};

    const UART: usize = 0x1000_0000;
    const LSR: usize = UART + 5;
    const LSR_DATA_READY: u8 = 0x01;
    const LSR_THR_EMPTY: u8 = 0x20;
    const TEST_DEVICE: usize = 0x0010_0000;

    extern "C" {
        static _sdata: u32;
        static _sheap: u32;
        static _stack_start: u32;
    }

    fn heap_start() -> usize {
        core::ptr::addr_of!(_sheap) as usize
    }

    /// QEMU's `virt` board.
    pub struct Board;

    impl Board {
        /// Paints the stack (the UART needs no set-up under QEMU).
        pub fn init() -> Self {
            let sp: usize;
            // SAFETY: reads the stack pointer.
            unsafe {
                core::arch::asm!("mv {0}, sp", out(reg) sp, options(nomem, nostack));
                super::paint(heap_start(), sp);
            }
            Board
        }
    }

    impl Platform for Board {
        const TARGET: &'static str = "riscv32imac-unknown-none-elf (soft float)";
        const COUNTER: &'static str = "minstret (instructions retired)";

        fn write_bytes(&mut self, bytes: &[u8]) {
            for &b in bytes {
                // SAFETY: NS16550A registers of the virt board.
                unsafe {
                    while read_volatile(LSR as *const u8) & LSR_THR_EMPTY == 0 {}
                    write_volatile(UART as *mut u8, b);
                }
            }
        }

        fn read_byte(&mut self) -> u8 {
            // SAFETY: NS16550A registers of the virt board.
            unsafe {
                while read_volatile(LSR as *const u8) & LSR_DATA_READY == 0 {}
                read_volatile(UART as *const u8)
            }
        }

        fn now(&mut self) -> u64 {
            riscv::register::minstret::read64()
        }

        fn calibrate(&mut self) -> Option<(u64, u64)> {
            const N: u32 = 1_000_000;
            let t0 = self.now();
            // SAFETY: a register-only loop of exactly 2 * N instructions.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "addi {n}, {n}, -1",
                    "bnez {n}, 2b",
                    n = inout(reg) N => _,
                    options(nomem, nostack)
                );
            }
            let t1 = self.now();
            Some((2 * u64::from(N), t1 - t0))
        }

        fn static_ram(&self) -> usize {
            heap_start() - core::ptr::addr_of!(_sdata) as usize
        }

        fn stack_peak(&self) -> Option<usize> {
            let top = core::ptr::addr_of!(_stack_start) as usize;
            Some(peak(heap_start(), top))
        }

        fn exit(&mut self, success: bool) -> ! {
            let code: u32 = if success { 0x5555 } else { (1 << 16) | 0x3333 };
            // SAFETY: the SiFive test device of the virt board.
            unsafe { write_volatile(TEST_DEVICE as *mut u32, code) };
            loop {
                riscv::asm::wfi();
            }
        }
    }
}

pub use imp::Board;

/// Prints the panic message, then exits with failure.
pub fn panic_verbose(info: &core::panic::PanicInfo) -> ! {
    riffle_firmware::say!(&mut Board, "\r\nFAIL: panic: {}\r\n", info);
    riffle_firmware::Platform::exit(&mut Board, false)
}

/// Exits with failure without formatting anything (keeps `core::fmt` out of an image).
pub fn panic_quiet() -> ! {
    riffle_firmware::Platform::write_bytes(&mut Board, b"\r\nFAIL: panic\r\n");
    riffle_firmware::Platform::exit(&mut Board, false)
}
