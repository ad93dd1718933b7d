//! Small `mem*` functions for the size probes (`#[path = "../mem.rs"] mod mem;`).
//!
//! compiler-builtins defines `memcpy`, `memmove`, `memset`, `memcmp`, `bcmp` and ARM's
//! `__aeabi_mem*` entry points as weak symbols, tuned for speed: on the Cortex-M4 they
//! take about 1.3 KB of flash (word and misaligned-word copies, one entry point per
//! alignment). These strong definitions replace them with one word loop (when both
//! pointers and the length are multiples of 4) or one byte loop each, about 150 bytes,
//! as a size-first C library (newlib-nano) would. Only the probes link them: the
//! firmware proper keeps compiler-builtins' versions, whose speed its merged-mode swaps
//! use.
//!
//! The loops read and write through `read_volatile` / `write_volatile` so that LLVM
//! cannot recognise them as a copy or fill idiom and turn them back into calls to the
//! very functions they define; and the exported functions call the private ones below,
//! never each other, since LLVM treats a call to a function *named* `memmove` (say) as
//! the library call and lowers it to `__aeabi_memmove`, which would then call itself.
#![allow(unsafe_code)]

use core::ptr::{read_volatile as rd, write_volatile as wr};

/// Copies `n` bytes from `s` to `d` (non-overlapping, or `d` below `s`), a word at a
/// time when both pointers and `n` are multiples of 4.
///
/// # Safety
/// `s` readable and `d` writable for `n` bytes.
unsafe fn copy_forward(d: *mut u8, s: *const u8, n: usize) {
    let mut i = 0;
    if (d as usize | s as usize | n) & 3 == 0 {
        while i < n {
            wr(d.add(i) as *mut u32, rd(s.add(i) as *const u32));
            i += 4;
        }
    } else {
        while i < n {
            wr(d.add(i), rd(s.add(i)));
            i += 1;
        }
    }
}

/// Writes `n` bytes `c` at `d`, a word at a time when `d` and `n` are multiples of 4.
///
/// # Safety
/// `d` writable for `n` bytes.
unsafe fn fill(d: *mut u8, c: u8, n: usize) {
    let mut i = 0;
    if (d as usize | n) & 3 == 0 {
        let w = u32::from(c) * 0x0101_0101;
        while i < n {
            wr(d.add(i) as *mut u32, w);
            i += 4;
        }
    } else {
        while i < n {
            wr(d.add(i), c);
            i += 1;
        }
    }
}

/// # Safety
/// As C's `memcpy`.
#[no_mangle]
pub unsafe extern "C" fn memcpy(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    copy_forward(d, s, n);
    d
}

/// Copies `n` bytes from `s` to `d`, which may overlap.
///
/// # Safety
/// `s` readable and `d` writable for `n` bytes.
unsafe fn copy_any(d: *mut u8, s: *const u8, n: usize) {
    if (d as usize) <= (s as usize) {
        copy_forward(d, s, n);
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            wr(d.add(i), rd(s.add(i)));
        }
    }
}

/// Compares `n` bytes, as C's `memcmp`.
///
/// # Safety
/// `a` and `b` readable for `n` bytes.
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = (rd(a.add(i)), rd(b.add(i)));
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// As C's `memmove`.
#[no_mangle]
pub unsafe extern "C" fn memmove(d: *mut u8, s: *const u8, n: usize) -> *mut u8 {
    copy_any(d, s, n);
    d
}

/// # Safety
/// As C's `memset`.
#[no_mangle]
pub unsafe extern "C" fn memset(d: *mut u8, c: i32, n: usize) -> *mut u8 {
    fill(d, c as u8, n);
    d
}

/// # Safety
/// As C's `memcmp`.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    compare(a, b, n)
}

/// # Safety
/// As C's `bcmp`.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    compare(a, b, n)
}

/// ARM's run-time ABI entry points (`__aeabi_memset` takes the value last).
#[cfg(target_arch = "arm")]
mod aeabi {
    use super::{copy_any, copy_forward, fill};

    /// # Safety
    /// As `memcpy`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memcpy(d: *mut u8, s: *const u8, n: usize) {
        copy_forward(d, s, n);
    }
    /// # Safety
    /// As `memcpy`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memcpy4(d: *mut u8, s: *const u8, n: usize) {
        copy_forward(d, s, n);
    }
    /// # Safety
    /// As `memcpy`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memcpy8(d: *mut u8, s: *const u8, n: usize) {
        copy_forward(d, s, n);
    }
    /// # Safety
    /// As `memmove`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memmove(d: *mut u8, s: *const u8, n: usize) {
        copy_any(d, s, n);
    }
    /// # Safety
    /// As `memmove`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memmove4(d: *mut u8, s: *const u8, n: usize) {
        copy_any(d, s, n);
    }
    /// # Safety
    /// As `memmove`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memmove8(d: *mut u8, s: *const u8, n: usize) {
        copy_any(d, s, n);
    }
    /// # Safety
    /// As `memset`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memset(d: *mut u8, n: usize, c: i32) {
        fill(d, c as u8, n);
    }
    /// # Safety
    /// As `memset`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memset4(d: *mut u8, n: usize, c: i32) {
        fill(d, c as u8, n);
    }
    /// # Safety
    /// As `memset`.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memset8(d: *mut u8, n: usize, c: i32) {
        fill(d, c as u8, n);
    }
    /// # Safety
    /// As `memset` with 0.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memclr(d: *mut u8, n: usize) {
        fill(d, 0, n);
    }
    /// # Safety
    /// As `memset` with 0.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memclr4(d: *mut u8, n: usize) {
        fill(d, 0, n);
    }
    /// # Safety
    /// As `memset` with 0.
    #[no_mangle]
    pub unsafe extern "aapcs" fn __aeabi_memclr8(d: *mut u8, n: usize) {
        fill(d, 0, n);
    }
}
