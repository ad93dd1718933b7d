//! The measurement and report of the probe images (`src/bin/*.rs`), included by each
//! (`#[path = "../probe.rs"] mod probe;`): one line of figures, written without
//! `core::fmt`, then exit.

use riffle_firmware::Platform;

use crate::board::Board;

/// Writes `v` in decimal without `core::fmt` (and without 64-bit division, which would
/// link a runtime routine of its own on 32-bit targets).
fn put_u32(b: &mut Board, mut v: u32) {
    let mut digits = [0u8; 10];
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

/// Runs `work` between two readings of the board's instruction counter, then
/// [`report`]s its cost and verdict.
pub fn measure(b: &mut Board, what: &[u8], work: impl FnOnce(&mut Board) -> bool) -> ! {
    let t0 = b.now();
    let ok = work(b);
    let cost = b.now() - t0;
    report(b, what, cost, ok)
}

/// Prints `{what} instructions=… stack_peak=… static_ram=… ok|WRONG` and exits with
/// success if `ok`. Counts past `u32::MAX` print as `u32::MAX` (the probes run a few
/// million instructions).
pub fn report(b: &mut Board, what: &[u8], instructions: u64, ok: bool) -> ! {
    let peak = b.stack_peak().unwrap_or(0);
    let ram = b.static_ram();
    b.write_bytes(what);
    b.write_bytes(b" instructions=");
    put_u32(b, u32::try_from(instructions).unwrap_or(u32::MAX));
    b.write_bytes(b" stack_peak=");
    put_u32(b, u32::try_from(peak).unwrap_or(u32::MAX));
    b.write_bytes(b" static_ram=");
    put_u32(b, u32::try_from(ram).unwrap_or(u32::MAX));
    b.write_bytes(if ok { b" ok\r\n" } else { b" WRONG\r\n" });
    b.exit(ok)
}
