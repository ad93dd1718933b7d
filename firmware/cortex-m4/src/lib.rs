//! # riffle-firmware
//!
//! The firmware logic shared by every target (Cortex-M4F, Cortex-M0, RISC-V): the
//! digits base and its adapters embedded in flash, static buffers sized at build time
//! from the model, the boot self-check against the host build's predictions, and the
//! serial command line. Hardware lives behind [`Platform`]; each binary supplies one
//! (`src/board.rs`).
//!
//! No heap, no allocator: every buffer is a field of [`Buffers`], one `static` whose
//! sizes come from `build.rs`, which evaluates riffle-core's size functions on the very
//! files embedded here.
#![no_std]
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cli;
pub mod selfcheck;

use core::fmt::{self, Write};

/// A 32-byte aligned wrapper for bytes in flash (`include_bytes!`) and buffers in RAM,
/// so tensor data inside a GGUF file keeps the alignment the file declares.
#[repr(C, align(32))]
pub struct Aligned<T: ?Sized>(pub T);

mod generated {
    use super::Aligned;
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
pub use generated::*;

/// Adapters resident at once: the embedded ones and one upload.
pub const RESIDENT: usize = ADAPTER_COUNT + 1;

/// The firmware's session: room for [`RESIDENT`] adapters, not riffle-core's default
/// [`riffle_core::runtime::MAX_RESIDENT`] (each slot holds a `Prepared`).
pub type FwSession<'m, 'a, 'w> = riffle_core::runtime::Session<'m, 'a, 'w, RESIDENT>;

/// What the firmware needs from a board.
pub trait Platform {
    /// Target description for the banner.
    const TARGET: &'static str;
    /// What [`Platform::now`] counts, for reports.
    const COUNTER: &'static str;
    /// Writes bytes to the console (UART).
    fn write_bytes(&mut self, bytes: &[u8]);
    /// Blocks until a byte arrives on the console.
    fn read_byte(&mut self) -> u8;
    /// Instructions executed so far (a monotonic counter; see [`Platform::COUNTER`]).
    fn now(&mut self) -> u64;
    /// Runs a loop of a known number of instructions and returns `(instructions, counted)`,
    /// to show how [`Platform::now`] relates to instructions; `None` if not available.
    fn calibrate(&mut self) -> Option<(u64, u64)>;
    /// Bytes of `.data` + `.bss` (+ uninit), from the linker symbols.
    fn static_ram(&self) -> usize;
    /// Deepest stack use so far (painted stack), if measured.
    fn stack_peak(&self) -> Option<usize>;
    /// Leaves the program: success or failure (semihosting exit under QEMU).
    fn exit(&mut self, success: bool) -> !;
}

/// `core::fmt` sink onto the console.
pub struct Console<'p, P: Platform>(pub &'p mut P);

impl<P: Platform> Write for Console<'_, P> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Reports a failed case of a hostile-input check (`riffle-minimal-check`,
/// `riffle-baked-check`): `{check}: WRONG result for {case}`, then `: accepted` when the
/// input was taken or `: {error}` when the wrong typed error came back. Returns `false`
/// (the check's new verdict).
pub fn report_wrong<P: Platform>(
    p: &mut P,
    check: &str,
    case: &[u8],
    got: Option<Result<(), riffle_core::Error>>,
) -> bool {
    let _ = write!(Console(&mut *p), "{check}: WRONG result for ");
    p.write_bytes(case);
    match got {
        Some(Ok(())) => p.write_bytes(b": accepted"),
        Some(Err(e)) => {
            let _ = write!(Console(&mut *p), ": {e}");
        }
        None => {}
    }
    p.write_bytes(b"\r\n");
    false
}

/// Prints to the console (like `print!`; errors of a console are ignored).
#[macro_export]
macro_rules! say {
    ($p:expr, $($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::Console(&mut *$p), format_args!($($arg)*));
    }};
}

/// Every RAM buffer of the firmware, sized at build time (see `build.rs`).
pub struct Buffers {
    /// Activation arena: `Session::arena_len(0)` with every adapter resident.
    pub arena: [f32; ARENA_LEN],
    /// Cayley blocks of the embedded adapters, [`WORKSPACE_LENS`] one after another.
    pub workspace: [f32; WORKSPACE_TOTAL],
    /// RAM copy of the base weights for merged mode (`Model::merged_len`).
    pub merged: [f32; MERGED_LEN],
    /// Scratch of merged-mode swaps (`Session::swap_scratch_len`).
    pub scratch: [f32; SWAP_SCRATCH_LEN],
    /// Cayley blocks of the uploaded adapter.
    pub upload_workspace: [f32; UPLOAD_WORKSPACE_LEN],
    /// Bytes of the uploaded adapter in use.
    pub upload: Aligned<[u8; UPLOAD_CAPACITY]>,
    /// Bytes of an upload being received and validated (the one in use stays intact).
    pub staging: Aligned<[u8; UPLOAD_CAPACITY]>,
}

impl Buffers {
    /// All zeros (lands in `.bss`).
    pub const ZERO: Buffers = Buffers {
        arena: [0.0; ARENA_LEN],
        workspace: [0.0; WORKSPACE_TOTAL],
        merged: [0.0; MERGED_LEN],
        scratch: [0.0; SWAP_SCRATCH_LEN],
        upload_workspace: [0.0; UPLOAD_WORKSPACE_LEN],
        upload: Aligned([0; UPLOAD_CAPACITY]),
        staging: Aligned([0; UPLOAD_CAPACITY]),
    };
}

/// The firmware: boot, self-check, then the command line until `quit`.
pub fn run<P: Platform>(p: &mut P, bufs: &'static mut Buffers) -> ! {
    cli::main(p, bufs)
}
