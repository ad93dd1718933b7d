//! The minimal core refuses bad input with typed errors: built like the size probes
//! (`--no-default-features`: `mlp`, F32 tensors, no task heads, no output-side chains),
//! it prepares the first embedded adapter, then feeds riffle-core hostile copies of it
//! (bad magic, version, truncations, a flipped data bit, another base's id, a NaN
//! parameter with a matching CRC, an unknown tensor type, an output-side chain) and the
//! embedded adapters that need capabilities this build leaves out (F16 parameters, a task
//! head), and checks that each one is refused with the
//! expected [`Error`] variant. Then it runs the sample through the adapter prepared first
//! and compares the prediction with the host build's. Exits with success if everything
//! matched; a mismatch prints the case's name. Not part of any size figure.
#![no_std]
#![no_main]

#[path = "../board.rs"]
mod board;
#[path = "../mem.rs"]
mod mem;
#[path = "../probe.rs"]
mod probe;

use riffle_core::checksum::crc32;
use riffle_core::gguf::Gguf;
use riffle_core::runtime::{Adapter, Input, Model};
use riffle_core::Error;
use riffle_firmware::{
    Aligned, ADAPTERS, RT_ARENA_LEN, RT_EXPECTED, RT_SAMPLE, UPLOAD_CAPACITY, WORKSPACE_LENS,
};

/// The largest workspace an embedded adapter needs.
const WS_MAX: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < WORKSPACE_LENS.len() {
        if WORKSPACE_LENS[i] > m {
            m = WORKSPACE_LENS[i];
        }
        i += 1;
    }
    m
};

struct Ram {
    arena: [f32; RT_ARENA_LEN],
    good: [f32; WORKSPACE_LENS[0]],
    scratch: [f32; WS_MAX],
    out: [f32; 16],
    copy: Aligned<[u8; UPLOAD_CAPACITY]>,
}

static mut RAM: Ram = Ram {
    arena: [0.0; RT_ARENA_LEN],
    good: [0.0; WORKSPACE_LENS[0]],
    scratch: [0.0; WS_MAX],
    out: [0.0; 16],
    copy: Aligned([0; UPLOAD_CAPACITY]),
};

/// What an embedded adapter gives in this build.
#[derive(Clone, Copy, PartialEq)]
enum Expect {
    Prepared,
    /// `Error::Unsupported` (a task head or an output-side chain).
    Unsupported,
    /// `Error::UnknownTensorType` (F16 parameters without the `f16` feature).
    UnknownType,
}

/// Adapters 1..: `mlp-inverted` (F16), `mlp-noisy` (F16), `mlp-parity` (a head).
#[cfg(not(feature = "base-cnn"))]
const EMBEDDED: [Expect; 3] = [
    Expect::UnknownType,
    Expect::UnknownType,
    Expect::Unsupported,
];
/// Adapters 1..: `cnn-inverted` (BOFT), `cnn-noisy` (Double GSOFT), `cnn-parity` (head).
#[cfg(feature = "base-cnn")]
const EMBEDDED: [Expect; 3] = [Expect::Prepared, Expect::Unsupported, Expect::Unsupported];

/// Parses and prepares `bytes` against `model` into `ws`; the number of adapted slots.
fn load(bytes: &[u8], model: &Model<'_>, ws: &mut [f32]) -> riffle_core::Result<usize> {
    let adapter = Adapter::from_bytes(bytes)?;
    Ok(adapter.prepare(model, ws)?.adapted_slots())
}

/// First position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn fail(b: &mut board::Board, case: &[u8]) -> bool {
    fail_with(b, case, None)
}

/// Prints the case and what it gave instead.
fn fail_with(b: &mut board::Board, case: &[u8], got: Option<riffle_core::Result<usize>>) -> bool {
    riffle_firmware::report_wrong(b, "minimal-check", case, got.map(|r| r.map(|_| ())))
}

#[cfg_attr(target_arch = "arm", cortex_m_rt::entry)]
#[cfg_attr(target_arch = "riscv32", riscv_rt::entry)]
fn main() -> ! {
    let mut board = board::Board::init();
    // SAFETY: `main` runs once and never returns; the only reference to RAM.
    let ram: &'static mut Ram = unsafe { &mut *core::ptr::addr_of_mut!(RAM) };
    probe::measure(
        &mut board,
        b"minimal-check: hostile adapters refused with typed errors",
        |b| check(b, ram),
    )
}

fn check(b: &mut board::Board, ram: &'static mut Ram) -> bool {
    let Ok(model) = Model::from_bytes(&riffle_firmware::BASE.0) else {
        return fail(b, b"base");
    };
    let original: &[u8] = &ADAPTERS[0].0;
    let Ok(adapter) = Adapter::from_bytes(original) else {
        return fail(b, b"adapter 0");
    };
    let Ok(good) = adapter.prepare(&model, &mut ram.good) else {
        return fail(b, b"adapter 0 prepare");
    };
    let n = original.len();
    let mut ok = n <= UPLOAD_CAPACITY;

    // Each case: a copy of adapter 0, changed by `edit`, must give `want`.
    type Edit = fn(&mut [u8], &Model<'_>, usize) -> Option<usize>;
    type Want = fn(&Error) -> bool;
    let cases: [(&[u8], Edit, Want); 9] = [
        (
            b"bad magic",
            |c, _, n| {
                c[0] = b'X';
                Some(n)
            },
            |e| *e == Error::BadMagic,
        ),
        (
            b"version 2",
            |c, _, n| {
                c[4] = 2;
                Some(n)
            },
            |e| *e == Error::UnsupportedVersion(2),
        ),
        (
            b"truncated header",
            |_, _, _| Some(20),
            |e| matches!(e, Error::Truncated { .. }),
        ),
        (
            b"truncated data",
            |c, _, _| {
                let g = Gguf::parse(c).ok()?;
                Some(g.data_offset() + g.data_span().len() - 4)
            },
            |e| matches!(e, Error::TensorOutOfRange { .. }),
        ),
        (
            b"output-side chain",
            |c, _, n| {
                // Tensor 0 `T.oft_in.0` renamed `T.oft_out.0`: one byte more in the
                // tensor infos, taken from the padding before the data (same offsets,
                // same CRC).
                let g = Gguf::parse(c).ok()?;
                let (data, t) = (g.data_offset(), g.tensor(0)?);
                let at = find(&c[..n], t.name().as_bytes())?;
                let k = at + t.name().find(".oft_in.")?;
                if c[data - 1] != 0 {
                    return None;
                }
                c.copy_within(k + 7..data - 1, k + 8);
                c[k + 5..k + 8].copy_from_slice(b"out");
                let len = u64::from_le_bytes(c[at - 8..at].try_into().ok()?) + 1;
                c[at - 8..at].copy_from_slice(&len.to_le_bytes());
                Some(n)
            },
            |e| *e == Error::Unsupported { tensor: 0 },
        ),
        (
            b"flipped data bit",
            |c, _, n| {
                let d = Gguf::parse(c).ok()?.data_offset();
                c[d + 5] ^= 0x10;
                Some(n)
            },
            |e| matches!(e, Error::CrcMismatch { .. }),
        ),
        (
            b"another base",
            |c, m, n| {
                let at = find(&c[..n], m.model_id().as_bytes())?;
                c[at] = if c[at] == b'0' { b'1' } else { b'0' };
                Some(n)
            },
            |e| *e == Error::BaseMismatch,
        ),
        (
            b"NaN parameter, CRC updated",
            |c, _, n| {
                let g = Gguf::parse(c).ok()?;
                let t = g.tensor(0)?;
                let at = g.data_offset() + usize::try_from(t.offset()).ok()?;
                // NaN in the tensor's own type (F32, or F16 in the cnn build).
                match t.ggml_type().ggml_code() {
                    0 => c[at..at + 4].copy_from_slice(&0x7fc0_0000u32.to_le_bytes()),
                    _ => c[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes()),
                }
                let crc = crc32(Gguf::parse(c).ok()?.data_span());
                let key = find(&c[..n], b"riffle.data_crc32")? + 17 + 4;
                c[key..key + 4].copy_from_slice(&crc.to_le_bytes());
                Some(n)
            },
            |e| matches!(e, Error::NonFiniteParameter { .. }),
        ),
        (
            b"unknown tensor type",
            |c, _, n| {
                let g = Gguf::parse(c).ok()?;
                let t = g.tensor(0)?;
                let at = find(&c[..n], t.name().as_bytes())? + t.name().len();
                let ty = at + 4 + 8 * t.rank();
                c[ty..ty + 4].copy_from_slice(&2u32.to_le_bytes()); // ggml Q4_1
                Some(n)
            },
            |e| {
                matches!(
                    e,
                    Error::UnknownTensorType {
                        tensor: 0,
                        ggml_type: 2
                    }
                )
            },
        ),
    ];
    for (name, edit, want) in cases {
        let copy = &mut ram.copy.0;
        copy[..n].copy_from_slice(original);
        let Some(len) = edit(&mut copy[..n], &model, n) else {
            ok = fail(b, name);
            continue;
        };
        match load(&copy[..len], &model, &mut ram.scratch) {
            Err(e) if want(&e) => {}
            got => ok = fail_with(b, name, Some(got)),
        }
    }

    // The embedded adapters that need capabilities this build leaves out.
    for (i, expect) in EMBEDDED.iter().enumerate() {
        let result = load(&ADAPTERS[i + 1].0, &model, &mut ram.scratch);
        let got = match result {
            Ok(_) => Expect::Prepared,
            Err(Error::Unsupported { .. }) => Expect::Unsupported,
            Err(Error::UnknownTensorType { ggml_type: 1, .. }) => Expect::UnknownType,
            Err(_) => Expect::Prepared,
        };
        if got != *expect || result.is_err() != (*expect != Expect::Prepared) {
            ok = fail_with(
                b,
                riffle_firmware::ADAPTER_FILES[i + 1].as_bytes(),
                Some(result),
            );
        }
    }

    // The adapter prepared first still answers as the host build does.
    let answer = model.run(
        Some(&good),
        Input::Vector(&RT_SAMPLE),
        &mut ram.out,
        &mut ram.arena,
    );
    let Ok(k) = answer else {
        return fail(b, b"run");
    };
    let out = &ram.out[..k];
    let best = (0..k).fold(0, |best, i| if out[i] > out[best] { i } else { best });
    if best != RT_EXPECTED {
        ok = fail(b, b"prediction");
    }
    ok
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    board::panic_quiet()
}
