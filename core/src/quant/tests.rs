//! The shared reference tests of the quantized kernels: decoding against the `gguf`
//! Python package's dequantization (committed fixtures, tests/data/quant/gen.py), and
//! every product path (portable, and on x86-64 whichever SIMD build the CPU runs)
//! against an `f64` reference on the same blocks.

extern crate std;
use std::vec::Vec;

use super::matmul::{run as portable, Problem};
use super::*;

fn fixture(name: &str) -> (Vec<u8>, Vec<f32>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/quant/");
    let bin = std::fs::read(std::format!("{dir}{name}.bin")).unwrap();
    let f = std::fs::read(std::format!("{dir}{name}.f32")).unwrap();
    let f = f
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (bin, f)
}

fn compiled_block_types() -> Vec<TensorType> {
    TYPES
        .iter()
        .filter(|t| t.compiled && t.ty.is_float() && t.ty != TensorType::F32)
        .map(|t| t.ty)
        .collect()
}

#[test]
fn the_table_matches_the_block_structs_and_codes_round_trip() {
    for (i, t) in TYPES.iter().enumerate() {
        assert_eq!(t.ty as usize, i);
        assert_eq!(TensorType::from_ggml_any(t.ggml_code), Some(t.ty));
        assert_eq!(TensorType::from_ggml(t.ggml_code).is_some(), t.compiled);
        assert_eq!(t.ty.name(), t.name);
        assert_eq!(t.ty.row_bytes(t.block_len * 3), Some(t.block_bytes * 3));
        assert_eq!(
            t.ty.byte_len(t.block_len as u64 * 5),
            Some(t.block_bytes as u64 * 5)
        );
        if t.block_len > 1 {
            assert_eq!(t.ty.row_bytes(t.block_len + 1), None);
            assert_eq!(t.ty.byte_len(t.block_len as u64 - 1), None);
        }
    }
    assert_eq!(TensorType::from_ggml(7), None); // Q5_1: not in the table
    assert_eq!(TensorType::F32.byte_len(u64::MAX), None);
    #[cfg(feature = "q4")]
    {
        assert_eq!(
            core::mem::size_of::<BlockQ4_0>(),
            TensorType::Q4_0.block_bytes()
        );
        assert_eq!(
            core::mem::size_of::<BlockQ4_1>(),
            TensorType::Q4_1.block_bytes()
        );
        assert_eq!(
            core::mem::size_of::<BlockQ5_0>(),
            TensorType::Q5_0.block_bytes()
        );
    }
    #[cfg(feature = "k-quants")]
    {
        assert_eq!(
            core::mem::size_of::<BlockQ4K>(),
            TensorType::Q4_K.block_bytes()
        );
        assert_eq!(
            core::mem::size_of::<BlockQ6K>(),
            TensorType::Q6_K.block_bytes()
        );
    }
}

#[test]
fn the_error_text_lists_exactly_the_compiled_types() {
    let e = crate::Error::UnknownTensorType {
        tensor: 4,
        ggml_type: 99,
    };
    let text = std::format!("{e}");
    for t in &TYPES {
        let listed = text.contains(&std::format!(" {},", t.name))
            || text.contains(&std::format!(" {})", t.name));
        assert_eq!(listed, t.compiled, "{}: {text}", t.name);
    }
}

#[test]
fn every_type_decodes_as_gguf_py_dequantizes() {
    for ty in compiled_block_types() {
        if ty == TensorType::BF16 {
            continue; // no fixture: BF16 is a shift, tested below
        }
        let (bin, want) = fixture(ty.name());
        let n = want.len();
        let mut got = std::vec![0f32; n];
        decode_f32(0, ty, n, &bin, 0, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits() || (g - w).abs() <= 1e-6 * w.abs(),
                "{ty} value {i}: {g} vs {w}"
            );
        }
        // Runs that start and end inside blocks.
        let len = ty.block_len();
        for (start, count) in [(1, len), (len / 2 + 1, 2 * len + 3), (n - 5, 5)] {
            let mut part = std::vec![0f32; count];
            decode_f32(0, ty, n, &bin, start, &mut part).unwrap();
            assert_eq!(&part[..], &got[start..start + count], "{ty} run at {start}");
        }
        assert!(decode_f32(0, ty, n, &bin, n - 1, &mut [0f32; 2]).is_err());
        assert!(decode_f32(0, ty, n, &bin[..bin.len() - 1], 0, &mut got).is_err());
    }
}

/// A matrix of `rows x cols` from the fixture blocks repeated (random bytes for types
/// without a fixture), and its `f64` values.
fn matrix(ty: TensorType, rows: usize, cols: usize, seed: u64) -> (Vec<u8>, Vec<f64>) {
    let bytes = ty.row_bytes(cols).unwrap() * rows;
    let src: Vec<u8> = match ty {
        TensorType::F32 | TensorType::BF16 => (0..1024u64)
            .flat_map(|i| {
                let v = (((i * 2654435761 + seed) % 2001) as f32 - 1000.0) / 1000.0;
                let b = v.to_le_bytes();
                if ty == TensorType::F32 {
                    b.to_vec()
                } else {
                    b[2..].to_vec()
                }
            })
            .collect(),
        // the fixture's last 8 halves are the special values (infinities)
        TensorType::F16 => {
            let b = fixture("F16").0;
            b[..b.len() - 16].to_vec()
        }
        _ => fixture(ty.name()).0,
    };
    let bs = ty
        .block_bytes()
        .max(if ty == TensorType::F32 { 4 } else { 2 });
    let blocks = src.len() / bs;
    let mut data = Vec::with_capacity(bytes);
    let mut k = seed as usize;
    while data.len() < bytes {
        let b = k % blocks;
        data.extend_from_slice(&src[b * bs..(b + 1) * bs]);
        k = k.wrapping_mul(31).wrapping_add(7);
    }
    data.truncate(bytes);
    let mut vals = std::vec![0f32; rows * cols];
    decode_f32(0, ty, rows * cols, &data, 0, &mut vals).unwrap();
    (data, vals.iter().map(|&v| f64::from(v)).collect())
}

fn inputs(n: usize, cols: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(747796405).wrapping_add(1);
    (0..n * cols)
        .map(|_| {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 4.0
        })
        .collect()
}

/// The activations as the kernels see them, dequantized to `f64`.
fn dequantized_inputs(a: &Activations<'_>) -> Vec<f64> {
    match a.kind {
        ActivationType::F32 => a.f32s.iter().map(|&v| f64::from(v)).collect(),
        ActivationType::Q8_1 => a
            .bytes
            .chunks_exact(40)
            .flat_map(|b| {
                let d = f64::from(f32::from_le_bytes(b[..4].try_into().unwrap()));
                b[8..]
                    .iter()
                    .map(move |&q| d * f64::from(q as i8))
                    .collect::<Vec<_>>()
            })
            .collect(),
        ActivationType::Q8K => a
            .bytes
            .chunks_exact(292)
            .flat_map(|b| {
                let d = f64::from(f32::from_le_bytes(b[..4].try_into().unwrap()));
                b[4..260]
                    .iter()
                    .map(move |&q| d * f64::from(q as i8))
                    .collect::<Vec<_>>()
            })
            .collect(),
    }
}

#[test]
fn every_product_path_matches_the_f64_reference() {
    let mut types = compiled_block_types();
    types.push(TensorType::F32);
    for ty in types {
        let len = ty.block_len().max(32);
        let shapes = [
            (7, len, 1, 0, 7),
            (37, len, 6, 5, 37), // several chunks of 16 weight rows, a partial tile
            (9, 3 * len, 5, 2, 9),
            (4, 2 * len, 9, 1, 3),
            (3, len + if len == 32 { 0 } else { 256 }, 4, 0, 3),
        ];
        // Under Miri (the unsafe SIMD paths' memory checks) two small shapes cover one
        // tile and a partial one at a fraction of the interpreter's time.
        let shapes = if cfg!(miri) {
            &shapes[3..5]
        } else {
            &shapes[..]
        };
        for &(rows, cols, n, r0, r1) in shapes {
            let (data, w) = matrix(ty, rows, cols, (rows * cols + n) as u64);
            let m = QMatrix::new(0, ty, rows, cols, &data).unwrap();
            let x = inputs(n, cols, (cols + n) as u32);
            let mut scratch = std::vec![0u8; activation_scratch_len(ty, cols, n).unwrap()];
            let a = quantize_activations(m.activation_type(), &x, cols, n, &mut scratch).unwrap();
            let xq = dequantized_inputs(&a);
            let out = r1 - r0;
            let mut want = std::vec![0f64; n * out];
            let mut scale = std::vec![0f64; n * out];
            for t in 0..n {
                for r in r0..r1 {
                    let (mut s, mut abs) = (0f64, 0f64);
                    for i in 0..cols {
                        s += w[r * cols + i] * xq[t * cols + i];
                        abs += (w[r * cols + i] * xq[t * cols + i]).abs();
                    }
                    want[t * out + r - r0] = s;
                    scale[t * out + r - r0] = abs;
                }
            }
            // Portable: f32 sums of exact integer block sums.
            let p = Problem {
                ty,
                cols,
                row_bytes: ty.row_bytes(cols).unwrap(),
                data: m.row_data(r0..r1),
                a,
                y_stride: out,
                next: &[],
                batch: false,
                decode: false,
            };
            let mut got = std::vec![f32::NAN; n * out];
            portable(&p, &mut got);
            for i in 0..n * out {
                let err = (f64::from(got[i]) - want[i]).abs();
                assert!(
                    err <= 1e-5 * scale[i] + 1e-6,
                    "{ty} portable {rows}x{cols} n={n}: {} vs {}",
                    got[i],
                    want[i]
                );
            }
            // The path this CPU takes, against the portable one.
            let mut simd = std::vec![f32::NAN; n * out];
            matmul_prepared(&m, r0..r1, &a, &mut simd).unwrap();
            for i in 0..n * out {
                let err = (simd[i] - got[i]).abs();
                assert!(
                    f64::from(err) <= 1e-5 * scale[i] + 1e-6,
                    "{ty} simd vs portable: {} vs {}",
                    simd[i],
                    got[i]
                );
            }
            // The AVX2 form of the hand-written block kernel, where this CPU would take
            // the VNNI one.
            #[cfg(target_arch = "x86_64")]
            {
                let mut avx2 = std::vec![f32::NAN; n * out];
                if super::x86::run_block32(&p, &mut avx2, false) {
                    for i in 0..n * out {
                        let err = f64::from((avx2[i] - got[i]).abs());
                        assert!(err <= 1e-5 * scale[i] + 1e-6, "{ty} avx2 vs portable");
                    }
                }
            }
            // The NEON kernels without the dot product, where this CPU would take them:
            // the same lanes, so the same bits.
            #[cfg(all(
                target_arch = "aarch64",
                any(feature = "q4", feature = "q8_0", feature = "k-quants")
            ))]
            {
                let mut neon = std::vec![f32::NAN; n * out];
                if super::arm::run_with(&p, &mut neon, false) {
                    for i in 0..n * out {
                        let err = f64::from((neon[i] - got[i]).abs());
                        assert!(err <= 1e-5 * scale[i] + 1e-6, "{ty} neon vs portable");
                    }
                    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let mut dot = std::vec![f32::NAN; n * out];
                    assert!(super::arm::run_with(&p, &mut dot, true));
                    assert_eq!(bits(&dot), bits(&neon), "{ty} sdot vs neon");
                    // The K-quants' integer sums are exact and their `f32` steps the
                    // portable ones: the portable bits.
                    if ty.block_len() == 256 {
                        assert_eq!(bits(&neon), bits(&got), "{ty} neon vs portable");
                    }
                }
            }
            // The one-call form quantizes the same way.
            let mut again = std::vec![f32::NAN; n * out];
            let mut scratch2 = std::vec![0u8; activation_scratch_len(ty, cols, n).unwrap()];
            matmul(&m, r0..r1, &x, n, &mut again, &mut scratch2).unwrap();
            assert_eq!(again, simd, "{ty}");
            // A prefetch hint changes nothing.
            let mut hinted = std::vec![f32::NAN; n * out];
            super::matmul_then(&m, r0..r1, &x, n, &mut hinted, &mut scratch2, &data).unwrap();
            assert_eq!(hinted, simd, "{ty}");
            // Rows split in two, each half written into a shared output by stride.
            let mut shared = std::vec![f32::NAN; n * rows];
            let mid = r0 + out / 2;
            matmul_strided(&m, r0..mid, &a, &mut shared[r0..], rows).unwrap();
            matmul_strided(&m, mid..r1, &a, &mut shared[mid..], rows).unwrap();
            for t in 0..n {
                assert_eq!(
                    &shared[t * rows + r0..t * rows + r1],
                    &simd[t * out..(t + 1) * out],
                    "{ty}"
                );
            }
        }
    }
}

#[test]
fn f32_input_products_match_the_f64_reference() {
    for ty in compiled_block_types() {
        let len = ty.block_len();
        let shapes = [
            (7, len, 1),
            (37, 2 * len, 1),
            (9, 3 * len, 2),
            (5, len, 3),
            (6, 2 * len, 9), // inputs in passes of four, then one at a time
        ];
        let shapes = if cfg!(miri) {
            &shapes[..1]
        } else {
            &shapes[..]
        };
        for &(rows, cols, n) in shapes {
            let (data, w) = matrix(ty, rows, cols, (rows * cols + 7 * n) as u64);
            let m = QMatrix::new(0, ty, rows, cols, &data).unwrap();
            let x = inputs(n, cols, (cols + 3 * n) as u32);
            let mut got = std::vec![f32::NAN; n * rows];
            matmul_f32_inputs(&m, 0..rows, &x, n, &mut got, rows).unwrap();
            // The portable build, and (x86-64) the AVX2 form of the hand-written kernel.
            let a = Activations {
                kind: ActivationType::F32,
                cols,
                n,
                f32s: &x,
                bytes: &[],
            };
            let p = Problem {
                ty,
                cols,
                row_bytes: ty.row_bytes(cols).unwrap(),
                data: &data,
                a,
                y_stride: rows,
                next: &[],
                batch: false,
                decode: false,
            };
            let mut portable = std::vec![f32::NAN; n * rows];
            super::matmul::run_f32_inputs(&p, &mut portable);
            #[allow(unused_mut)]
            let mut forms = std::vec![("simd", got.clone()), ("portable", portable)];
            #[cfg(target_arch = "x86_64")]
            {
                let mut avx2 = std::vec![f32::NAN; n * rows];
                if super::x86::run_q8_0(&p, &mut avx2, false) {
                    forms.push(("avx2", avx2));
                }
            }
            for (name, got) in &forms {
                for t in 0..n {
                    for r in 0..rows {
                        let (mut s, mut abs, mut rounding) = (0f64, 0f64, 0f64);
                        for i in 0..cols {
                            let v = w[r * cols + i] * f64::from(x[t * cols + i]);
                            s += v;
                            abs += v.abs();
                            // The 16-bit inputs of the AVX-512 VNNI form (Q8_0): at
                            // most half a step (the block's largest magnitude / 32767)
                            // each.
                            if *name == "simd" && ty == TensorType::Q8_0 {
                                let block = &x[t * cols + i / 32 * 32..][..32];
                                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                                rounding += w[r * cols + i].abs() * f64::from(amax) / 32767.0 / 2.0;
                            }
                        }
                        let bound = rounding;
                        let err = (f64::from(got[t * rows + r]) - s).abs();
                        assert!(
                            err <= 1e-6 * abs + 1e-7 + bound,
                            "{ty} {name} {rows}x{cols} n={n}: {} vs {s}",
                            got[t * rows + r]
                        );
                    }
                }
            }
            // Rows split in two give the same outputs, bit for bit, and so does each input
            // alone.
            let mut halves = std::vec![f32::NAN; n * rows];
            let mid = rows / 2;
            matmul_f32_inputs(&m, 0..mid, &x, n, &mut halves, rows).unwrap();
            matmul_f32_inputs(&m, mid..rows, &x, n, &mut halves[mid..], rows).unwrap();
            assert_eq!(halves, got, "{ty}");
            for t in 0..n {
                let mut one = std::vec![f32::NAN; rows];
                let xt = &x[t * cols..(t + 1) * cols];
                matmul_f32_inputs(&m, 0..rows, xt, 1, &mut one, rows).unwrap();
                assert_eq!(one, got[t * rows..(t + 1) * rows], "{ty} input {t} alone");
            }
        }
    }
    // Lengths are checked.
    #[cfg(feature = "q8_0")]
    {
        let (data, _) = matrix(TensorType::Q8_0, 3, 64, 2);
        let m = QMatrix::new(0, TensorType::Q8_0, 3, 64, &data).unwrap();
        let x = inputs(1, 64, 3);
        let mut y = [0f32; 3];
        assert!(matmul_f32_inputs(&m, 0..3, &x[1..], 1, &mut y, 3).is_err());
        assert!(matmul_f32_inputs(&m, 0..4, &x, 1, &mut y, 3).is_err());
        assert!(matmul_f32_inputs(&m, 0..3, &x, 1, &mut y[1..], 3).is_err());
        assert!(matmul_f32_inputs(&m, 0..3, &x, 1, &mut y, 2).is_err());
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn q8_1_quantization_is_the_same_on_every_path() {
    let mut x = inputs(1, 32 * 40, 9);
    // Ties (products exactly at .5 after scaling), zeros and a block of zeros.
    for (i, v) in x.iter_mut().enumerate().take(64) {
        *v = [127.0, 0.5, -0.5, 1.5, -2.5, 0.0, 63.5, -63.5][i % 8];
    }
    for v in &mut x[64..96] {
        *v = 0.0;
    }
    let blocks = x.len() / 32;
    let mut portable = std::vec![0u8; blocks * act::Q8_1_BYTES];
    act::quantize_q8_1(&x, &mut portable);
    let mut simd = std::vec![0u8; blocks * act::Q8_1_BYTES];
    if super::x86::quantize_q8_1(&x, &mut simd) {
        assert_eq!(simd, portable);
    }
}

/// The largest products the 8-bit kernels meet (Q8_0 quants of -128 against activations
/// of 127, which the NEON and WebAssembly kernels sum two at a time in 16 bits) give the
/// exact sum on every path.
#[cfg(feature = "q8_0")]
#[test]
fn the_largest_q8_0_products_do_not_overflow() {
    let (rows, cols, n) = (5, 64, 5);
    let mut data = std::vec::Vec::new();
    for _ in 0..rows * cols / 32 {
        data.extend_from_slice(&0x3c00u16.to_le_bytes()); // d = 1
        data.extend_from_slice(&[0x80; 32]); // q = -128
    }
    let m = QMatrix::new(0, TensorType::Q8_0, rows, cols, &data).unwrap();
    let x = std::vec![1f32; n * cols]; // every activation quantized to 127
    let mut scratch = std::vec![0u8; activation_scratch_len(TensorType::Q8_0, cols, n).unwrap()];
    let mut y = std::vec![f32::NAN; n * rows];
    matmul(&m, 0..rows, &x, n, &mut y, &mut scratch).unwrap();
    let want = -128.0 * 127.0 * cols as f64 * f64::from(1f32 / 127.0);
    for v in &y {
        assert!(
            (f64::from(*v) - want).abs() <= 1e-6 * want.abs(),
            "{v} vs {want}"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        let a = quantize_activations(ActivationType::Q8_1, &x, cols, n, &mut scratch).unwrap();
        let p = Problem {
            ty: TensorType::Q8_0,
            cols,
            row_bytes: 34 * cols / 32,
            data: &data,
            a,
            y_stride: rows,
            next: &[],
            batch: false,
            decode: false,
        };
        let mut neon = std::vec![f32::NAN; n * rows];
        if super::arm::run_with(&p, &mut neon, false) {
            assert_eq!(neon, y);
        }
    }
}

#[test]
fn products_check_every_length() {
    let (data, _) = matrix(TensorType::F32, 3, 32, 1);
    assert!(QMatrix::new(0, TensorType::F32, 3, 32, &data[1..]).is_err());
    assert!(QMatrix::new(0, TensorType::I32, 3, 32, &data).is_err());
    let m = QMatrix::new(0, TensorType::F32, 3, 32, &data).unwrap();
    let x = inputs(2, 32, 3);
    let mut y = [0f32; 6];
    assert!(matmul(&m, 0..3, &x, 2, &mut y, &mut []).is_ok());
    assert!(matmul(&m, 0..3, &x[1..], 2, &mut y, &mut []).is_err());
    assert!(matmul(&m, 0..4, &x, 2, &mut y, &mut []).is_err());
    assert!(matmul(&m, 0..3, &x, 2, &mut y[1..], &mut []).is_err());
    let mut row = [0f32; 32];
    assert!(m.decode_row(2, &mut row).is_ok());
    assert!(m.decode_row(3, &mut row).is_err());
    #[cfg(feature = "q8_0")]
    {
        let (data, _) = matrix(TensorType::Q8_0, 3, 64, 2);
        let m = QMatrix::new(0, TensorType::Q8_0, 3, 64, &data).unwrap();
        let x = inputs(1, 64, 3);
        let need = activation_scratch_len(TensorType::Q8_0, 64, 1).unwrap();
        let mut scratch = std::vec![0u8; need];
        let mut y = [0f32; 3];
        assert!(matmul(&m, 0..3, &x, 1, &mut y, &mut scratch[1..]).is_err());
        assert!(QMatrix::new(0, TensorType::Q8_0, 3, 48, &data[..102]).is_err());
        // Activations of the wrong kind are refused.
        let a = quantize_activations(ActivationType::F32, &x, 64, 1, &mut []).unwrap();
        assert!(matmul_prepared(&m, 0..3, &a, &mut y).is_err());
    }
}

/// Batches of input rows (the prompt kernel on x86-64 with AVX-512 VNNI, the portable
/// tiles elsewhere) on odd shapes: rows not a multiple of the 16-row tile, 1 to 19 input
/// rows (partial tiles of 8), rows longer than one 24-block tile, more input rows than
/// one group of block sums, weights and activations at odd addresses, outputs at a
/// stride. Each output matches the portable kernel within `1e-5 · Σ|w x|`, the
/// token-by-token (decode) product of the same input row within the same bound, and
/// stays bit-identical when the input rows are split.
#[test]
fn batched_products_match_the_portable_kernel_on_odd_shapes() {
    let types: Vec<TensorType> = compiled_block_types()
        .into_iter()
        .filter(|t| t.block_len() == 32)
        .collect();
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(17, 64, 3), (5, 800, 2)]
    } else {
        &[
            (1, 32, 2),
            (17, 64, 3),
            (16, 96, 8),
            (33, 800, 9),
            (40, 1568, 19),
            (3, 6400, 23), // 200 blocks: more than one group of input rows
            (31, 576, 1),
        ]
    };
    for ty in types {
        for &(rows, cols, n) in shapes {
            let (data, w) = matrix(ty, rows, cols, (rows + cols * n) as u64);
            // The same bytes one byte past an aligned start.
            let mut shifted = std::vec![0u8; data.len() + 1];
            shifted[1..].copy_from_slice(&data);
            let m = QMatrix::new(0, ty, rows, cols, &shifted[1..]).unwrap();
            let x = inputs(n, cols, (rows * n) as u32);
            let need = activation_scratch_len(ty, cols, n).unwrap();
            let mut scratch = std::vec![0u8; need + 1];
            let a =
                quantize_activations(m.activation_type(), &x, cols, n, &mut scratch[1..]).unwrap();
            let xq = dequantized_inputs(&a);
            let bound = |t: usize, r: usize| {
                let abs: f64 = (0..cols)
                    .map(|i| (w[r * cols + i] * xq[t * cols + i]).abs())
                    .sum();
                1e-5 * abs + 1e-6
            };
            let stride = rows + 3;
            let mut got = std::vec![f32::NAN; n * stride];
            matmul_strided(&m, 0..rows, &a, &mut got, stride).unwrap();
            let p = Problem {
                ty,
                cols,
                row_bytes: ty.row_bytes(cols).unwrap(),
                data: m.row_data(0..rows),
                a,
                y_stride: rows,
                next: &[],
                batch: false,
                decode: false,
            };
            let mut reference = std::vec![f32::NAN; n * rows];
            portable(&p, &mut reference);
            for t in 0..n {
                // Token by token: the decode product of input row t alone.
                let one = quantize_activations(
                    m.activation_type(),
                    &x[t * cols..(t + 1) * cols],
                    cols,
                    1,
                    &mut scratch[1..],
                )
                .unwrap();
                let mut single = std::vec![f32::NAN; rows];
                matmul_prepared(&m, 0..rows, &one, &mut single).unwrap();
                for r in 0..rows {
                    let g = got[t * stride + r];
                    let e = bound(t, r);
                    let (p, s) = (reference[t * rows + r], single[r]);
                    assert!(
                        f64::from((g - p).abs()) <= e,
                        "{ty} {rows}x{cols} n={n} t={t} r={r}: {g} vs portable {p}"
                    );
                    assert!(
                        f64::from((g - s).abs()) <= e,
                        "{ty} {rows}x{cols} n={n} t={t} r={r}: {g} vs token by token {s}"
                    );
                }
                // The stride's gap is never written.
                assert!(got[t * stride + rows..(t + 1) * stride]
                    .iter()
                    .all(|v| v.is_nan()));
            }
            // Input rows split in two (as threads split a prompt, on the batch kernel
            // even for one row): the same bits.
            let mut whole = std::vec![f32::NAN; n * rows];
            super::matmul_batch(&m, 0..rows, &x, n, &mut whole, &mut scratch[1..]).unwrap();
            if n > 1 {
                assert_eq!(&whole[..], &unstrided(&got, stride, rows, n)[..], "{ty}");
            }
            let cut = n / 2;
            for (t0, t1) in [(0, cut), (cut, n)] {
                let xs = &x[t0 * cols..t1 * cols];
                let mut y = std::vec![f32::NAN; (t1 - t0) * rows];
                super::matmul_batch(&m, 0..rows, xs, t1 - t0, &mut y, &mut scratch[1..]).unwrap();
                assert_eq!(&y[..], &whole[t0 * rows..t1 * rows], "{ty} split at {cut}");
            }
        }
    }
}

/// The `n` rows of `rows` outputs of `y`, which lie `stride` apart.
fn unstrided(y: &[f32], stride: usize, rows: usize, n: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|t| y[t * stride..t * stride + rows].iter().copied())
        .collect()
}

/// Inputs that are each a decoding step of their own sequence (a server's requests
/// decoded together, `matmul_decode_then`; and the output head's `f32` inputs): 1 to 9
/// input rows, so the kernels' groups of up to four inputs come whole and partial, on
/// row counts that leave a partial pass of weight rows. Every output equals, bit for
/// bit, the one the same input gets alone, on every weight type, the portable kernel as
/// well as this CPU's; with the portable source also for the `f32` inputs.
#[test]
fn decoding_steps_together_equal_each_step_alone() {
    let mut types = compiled_block_types();
    types.push(TensorType::F32);
    let shapes: &[(usize, usize)] = if cfg!(miri) {
        &[(5, 64)]
    } else {
        &[(5, 64), (18, 96), (33, 576)]
    };
    let counts: &[usize] = if cfg!(miri) {
        &[3]
    } else {
        &[1, 2, 3, 4, 5, 8, 9]
    };
    for ty in types {
        let len = ty.block_len().max(32);
        for &(rows, cols) in shapes {
            let cols = cols.div_ceil(len) * len;
            let (data, _) = matrix(ty, rows, cols, (rows * 7 + cols) as u64);
            let m = QMatrix::new(0, ty, rows, cols, &data).unwrap();
            for &n in counts {
                let x = inputs(n, cols, (rows + 3 * n) as u32);
                let need = activation_scratch_len(ty, cols, n).unwrap().max(1);
                let mut scratch = std::vec![0u8; need];
                let mut together = std::vec![f32::NAN; n * rows];
                super::matmul_decode_then(&m, 0..rows, &x, n, &mut together, &mut scratch, &[])
                    .unwrap();
                let mut heads = std::vec![f32::NAN; n * rows];
                matmul_f32_inputs(&m, 0..rows, &x, n, &mut heads, rows).unwrap();
                for t in 0..n {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let mut alone = std::vec![f32::NAN; rows];
                    matmul(&m, 0..rows, xt, 1, &mut alone, &mut scratch).unwrap();
                    let got = &together[t * rows..(t + 1) * rows];
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{ty} {rows}x{cols}, input {t} of {n}"
                    );
                    let mut head = std::vec![f32::NAN; rows];
                    matmul_f32_inputs(&m, 0..rows, xt, 1, &mut head, rows).unwrap();
                    let got = &heads[t * rows..(t + 1) * rows];
                    assert_eq!(
                        got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        head.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{ty} f32 inputs {rows}x{cols}, input {t} of {n}"
                    );
                }
                // The portable kernels, which the wasm build's SIMD128 kernels and every
                // CPU without the x86-64 ones run, group their inputs in tiles too.
                if ty.block_len() > 1 {
                    let a = quantize_activations(m.activation_type(), &x, cols, n, &mut scratch)
                        .unwrap();
                    let mut p = Problem {
                        ty,
                        cols,
                        row_bytes: ty.row_bytes(cols).unwrap(),
                        data: m.row_data(0..rows),
                        a,
                        y_stride: rows,
                        next: &[],
                        batch: false,
                        decode: true,
                    };
                    let mut all = std::vec![f32::NAN; n * rows];
                    portable(&p, &mut all);
                    for t in 0..n {
                        p.a = Activations {
                            n: 1,
                            f32s: &x[t * cols..(t + 1) * cols],
                            bytes: &a.bytes[t * a.bytes.len() / n..(t + 1) * a.bytes.len() / n],
                            ..a
                        };
                        let mut one = std::vec![f32::NAN; rows];
                        portable(&p, &mut one);
                        assert_eq!(
                            all[t * rows..(t + 1) * rows]
                                .iter()
                                .map(|v| v.to_bits())
                                .collect::<Vec<_>>(),
                            one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                            "{ty} portable, input {t} of {n}"
                        );
                    }
                }
            }
        }
    }
}
