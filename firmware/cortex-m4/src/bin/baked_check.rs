//! The baked reader refuses bad input with typed errors: built like the baked probe, it
//! copies the baked blob (`BAKED`) into RAM, feeds riffle-core's reader hostile copies of
//! it (a flipped byte, truncations, a bad offset and a misaligned one with a recomputed
//! CRC, a wrong length, a dimension that does not chain, bad magic, version 2, an unknown
//! permutation code) and bad requests (a slot out of range, short workspace, arena and
//! output, an input of the wrong length), and checks that each gives the expected
//! [`Error`] value. Then it runs the sample through the intact blob and compares the
//! prediction with the host build's (the full runtime's). Exits with success if
//! everything matched; a mismatch prints the case's name and what it gave. Not part of
//! any size figure. MLP base only.
#![no_std]
#![no_main]

#[cfg(feature = "base-cnn")]
compile_error!("the baked check runs the mlp base (baking supports `mlp` only)");

#[path = "../board.rs"]
mod board;
#[path = "../mem.rs"]
mod mem;
#[path = "../probe.rs"]
mod probe;

use riffle_core::checksum::crc32;
use riffle_core::runtime::baked::BakedModel;
use riffle_core::Error;
use riffle_firmware::{
    Aligned, BAKED, BAKED_LEN, BK_ARENA_LEN, BK_WORKSPACE_LEN, RT_EXPECTED, RT_SAMPLE,
};

struct Ram {
    arena: [f32; BK_ARENA_LEN],
    workspace: [f32; BK_WORKSPACE_LEN],
    out: [f32; 16],
    copy: Aligned<[u8; BAKED_LEN]>,
}

static mut RAM: Ram = Ram {
    arena: [0.0; BK_ARENA_LEN],
    workspace: [0.0; BK_WORKSPACE_LEN],
    out: [0.0; 16],
    copy: Aligned([0; BAKED_LEN]),
};

/// Header word `i` (blob layout: docs in `riffle_core::runtime::baked`).
fn word(c: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([c[4 * i], c[4 * i + 1], c[4 * i + 2], c[4 * i + 3]])
}

/// Sets header word `i` to `v` and recomputes the CRC, so that the reader gets past it.
fn set(c: &mut [u8], i: usize, v: u32) {
    c[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
    let end = c.len() - 4;
    let crc = crc32(&c[..end]);
    c[end..].copy_from_slice(&crc.to_le_bytes());
}

/// Header words: 6, then 7 per layer (rows, cols, activation, weight offset and length,
/// bias offset and length), then 12 per adapter and layer.
const L0: usize = 6;

fn fail(b: &mut board::Board, case: &[u8], got: Option<Result<(), Error>>) -> bool {
    riffle_firmware::report_wrong(b, "baked-check", case, got)
}

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // SAFETY: `main` runs once and never returns; the only reference to RAM.
    let ram: &'static mut Ram = unsafe { &mut *core::ptr::addr_of_mut!(RAM) };
    probe::measure(
        &mut board,
        b"baked-check: hostile blobs refused with typed errors",
        |b| check(b, ram),
    )
}

fn check(b: &mut board::Board, ram: &'static mut Ram) -> bool {
    let n = BAKED_LEN;
    let layers = word(&BAKED.0, 4) as usize;
    let a0 = L0 + 7 * layers; // adapter 0, layer 0: input chain code, b, m, offset, length
    let w_off = word(&BAKED.0, L0 + 3);
    let mut ok = true;

    // Each case: a copy of the blob, changed by `edit` (which returns the length to
    // open), must give `want`.
    type Edit = fn(&mut [u8], usize, usize, u32) -> usize;
    let cases: [(&[u8], Edit, Error); 12] = [
        (
            b"flipped byte",
            |c, n, _, _| {
                c[n / 2] ^= 0x04;
                n
            },
            // The CRC of the intact blob against the flipped one's: checked by kind below.
            Error::CrcMismatch {
                stored: 0,
                computed: 0,
            },
        ),
        (
            b"truncated by one byte",
            |_, n, _, _| n - 1,
            Error::Truncated {
                offset: BAKED_LEN as u64 - 1,
            },
        ),
        (
            b"truncated header",
            |_, _, _, _| 20,
            Error::Truncated { offset: 0 },
        ),
        (
            b"bad magic",
            |c, n, _, _| {
                c[0] = b'G';
                n
            },
            Error::BadBakedMagic,
        ),
        (
            b"version 2",
            |c, n, _, _| {
                set(c, 1, 2);
                n
            },
            Error::UnsupportedBakedVersion(2),
        ),
        (
            b"weight offset past the end",
            |c, n, _, _| {
                set(c, L0 + 3, n as u32);
                n
            },
            Error::TensorOutOfRange { tensor: 0 },
        ),
        (
            b"weight offset inside the header",
            |c, n, _, _| {
                set(c, L0 + 3, 8);
                n
            },
            Error::TensorOutOfRange { tensor: 0 },
        ),
        (
            b"misaligned weight offset",
            |c, n, _, w| {
                set(c, L0 + 3, w + 2);
                n
            },
            Error::Misaligned { tensor: 0 },
        ),
        (
            b"weight length",
            |c, n, _, _| {
                set(c, L0 + 4, 5);
                n
            },
            Error::ShapeMismatch { tensor: 0 },
        ),
        (
            b"layer 1 width",
            |c, n, _, _| {
                set(c, L0 + 7 + 1, 3);
                n
            },
            Error::ShapeMismatch { tensor: 2 },
        ),
        (
            b"permutation code",
            |c, n, a0, _| {
                set(c, a0, 9);
                n
            },
            Error::UnsupportedModel,
        ),
        (
            b"block size 65",
            |c, n, a0, _| {
                set(c, a0 + 1, 65);
                n
            },
            Error::InvalidBlockSize { block: 65 },
        ),
    ];
    for (name, edit, want) in cases {
        ram.copy.0.copy_from_slice(&BAKED.0);
        let len = edit(&mut ram.copy.0, n, a0, w_off);
        let got = BakedModel::open(&ram.copy.0[..len]).map(|_| ());
        let matched = match (got, want) {
            (Err(Error::CrcMismatch { stored, computed }), Error::CrcMismatch { .. }) => {
                stored != computed
            }
            (Err(e), w) => e == w,
            (Ok(()), _) => false,
        };
        if !matched {
            ok = fail(b, name, Some(got));
        }
    }

    // Requests against the intact blob.
    let Ok(model) = BakedModel::open(&BAKED.0) else {
        return fail(b, b"intact blob", None);
    };
    if !matches!(
        model.activate(1, &mut ram.workspace),
        Err(Error::UnknownTask)
    ) {
        ok = fail(b, b"slot 1 of 1", None);
    }
    let short = BK_WORKSPACE_LEN - 1;
    let got = model.activate(0, &mut ram.workspace[..short]).map(|_| ());
    if got
        != Err(Error::BufferTooSmall {
            needed: BK_WORKSPACE_LEN,
            got: short,
        })
    {
        ok = fail(b, b"short workspace", Some(got));
    }
    let Ok(adapter) = model.activate(0, &mut ram.workspace) else {
        return fail(b, b"activate slot 0", None);
    };
    let short = BK_ARENA_LEN - 1;
    let got = model
        .run(
            Some(&adapter),
            &RT_SAMPLE,
            &mut ram.out,
            &mut ram.arena[..short],
        )
        .map(|_| ());
    if got
        != Err(Error::BufferTooSmall {
            needed: BK_ARENA_LEN,
            got: short,
        })
    {
        ok = fail(b, b"short arena", Some(got));
    }
    let got = model
        .run(
            Some(&adapter),
            &RT_SAMPLE[1..],
            &mut ram.out,
            &mut ram.arena,
        )
        .map(|_| ());
    if got != Err(Error::BadInput) {
        ok = fail(b, b"short input", Some(got));
    }
    let got = model
        .run(
            Some(&adapter),
            &RT_SAMPLE,
            &mut ram.out[..3],
            &mut ram.arena,
        )
        .map(|_| ());
    if !matches!(got, Err(Error::BufferTooSmall { .. })) {
        ok = fail(b, b"short output", Some(got));
    }
    // Finally the sample through the intact blob: the host build's prediction.
    match model.run(Some(&adapter), &RT_SAMPLE, &mut ram.out, &mut ram.arena) {
        Ok(k) => {
            if riffle_firmware::selfcheck::argmax(&ram.out[..k]) != RT_EXPECTED {
                ok = fail(b, b"prediction", None);
            }
        }
        Err(e) => ok = fail(b, b"run", Some(Err(e))),
    }
    ok
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
