//! Quantized matrix products at SmolLM2-135M's shapes (issue 18's kernel benchmark).
//!
//! `cargo bench -p riffle-core --bench quant` prints a Markdown table: for each weight
//! type and each linear shape of the model (rows x cols = out x in), the best time of
//! one matrix-vector product (decode: one token; activation quantization included) with
//! the weight bytes streamed per second, and of one matrix-matrix product over 128 tokens
//! (prefill) per token. Then, per type, the estimated time of all of one token's linears:
//! 30 blocks x (q, k, v, o, gate, up, down) plus the tied 49152 x 576 output head (Q8_0,
//! as llama.cpp's Q4_* files store it; F16 in the F16 file), which is what decode and
//! prefill speed come down to. Weights are random blocks with finite scales (the kernels
//! do the same work for any values). A plain harness; each figure is the best of 15 timed
//! batches.
//!
//! `-- --quick` runs only Q4_1, Q8_0 and the head.

use std::hint::black_box;
use std::time::Instant;

use riffle_core::quant::{activation_scratch_len, matmul, QMatrix, TensorType};

/// The fastest of 15 timed batches, in ns per call: the benchmark machine is shared, and
/// the minimum is the figure other processes disturb least.
fn best_ns(mut f: impl FnMut(), inner: usize) -> f64 {
    f();
    let v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_nanos() as f64 / inner as f64
        })
        .collect();
    v.into_iter().fold(f64::INFINITY, f64::min)
}

/// Random bytes for `rows x cols` of `ty`, with every `f16` scale set to a small finite
/// value (and F16 values kept finite).
fn weights(ty: TensorType, rows: usize, cols: usize) -> Vec<u8> {
    let n = ty.row_bytes(cols).unwrap() * rows;
    let mut s = 0x9e3779b9u32;
    let mut w: Vec<u8> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect();
    let half = 0x2c00u16.to_le_bytes(); // 2^-4
    let scales: &[usize] = match ty {
        TensorType::Q4_0 | TensorType::Q5_0 | TensorType::Q8_0 => &[0],
        TensorType::Q4_1 | TensorType::Q4_K => &[0, 2],
        TensorType::Q6_K => &[208],
        _ => &[],
    };
    if ty == TensorType::F16 {
        for c in w.chunks_exact_mut(2) {
            c[1] &= 0xbb;
        }
    }
    for b in w.chunks_exact_mut(ty.block_bytes()) {
        for &o in scales {
            b[o..o + 2].copy_from_slice(&half);
        }
    }
    w
}

/// Median ns of `y = W x` for `n` tokens.
fn time(ty: TensorType, rows: usize, cols: usize, n: usize) -> f64 {
    let data = weights(ty, rows, cols);
    let m = QMatrix::new(0, ty, rows, cols, &data).unwrap();
    let x: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut y = vec![0f32; n * rows];
    let mut scratch = vec![0u8; activation_scratch_len(ty, cols, n).unwrap()];
    let inner = (20_000_000 / (rows * cols * n)).clamp(1, 2000);
    best_ns(
        || matmul(&m, 0..rows, black_box(&x), n, &mut y, &mut scratch).unwrap(),
        inner,
    )
}

const SHAPES: [(&str, usize, usize, usize); 4] = [
    // name, rows, cols, matrices per block
    ("q, o (576x576)", 576, 576, 2),
    ("k, v (192x576)", 192, 576, 2),
    ("gate, up (1536x576)", 1536, 576, 2),
    ("down (576x1536)", 576, 1536, 1),
];
const BLOCKS: f64 = 30.0;
const PREFILL: usize = 128;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let types: &[TensorType] = if quick {
        &[TensorType::Q4_1, TensorType::Q8_0]
    } else {
        &[
            TensorType::F32,
            TensorType::F16,
            TensorType::Q8_0,
            TensorType::Q4_0,
            TensorType::Q4_1,
            TensorType::Q5_0,
            TensorType::Q4_K,
            TensorType::Q6_K,
        ]
    };
    println!("kernel build: {}", riffle_core::math::dense_kernel_name());
    println!("| type | shape | matvec (µs) | GB/s | matmul n={PREFILL} (µs/token) |");
    println!("|---|---|---|---|---|");
    let head = |ty: TensorType| {
        let t = if ty == TensorType::F16 || ty == TensorType::F32 {
            ty
        } else {
            TensorType::Q8_0
        };
        let (rows, cols) = (49152, 576);
        let mv = time(t, rows, cols, 1);
        let mm = time(t, rows, cols, PREFILL) / PREFILL as f64;
        let gbs = t.row_bytes(cols).unwrap() as f64 * rows as f64 / mv;
        println!(
            "| {t} | head (49152x576) | {:.1} | {gbs:.1} | {:.1} |",
            mv / 1e3,
            mm / 1e3
        );
        (mv, mm)
    };
    let mut totals = Vec::new();
    for &ty in types {
        let (mut dec, mut pre) = (0f64, 0f64);
        let mut complete = true;
        for (name, rows, cols, count) in SHAPES {
            if ty.row_bytes(cols).is_none() {
                println!("| {ty} | {name} | - | - | - |");
                complete = false;
                continue;
            }
            let mv = time(ty, rows, cols, 1);
            let mm = time(ty, rows, cols, PREFILL) / PREFILL as f64;
            let gbs = ty.row_bytes(cols).unwrap() as f64 * rows as f64 / mv;
            println!(
                "| {ty} | {name} | {:.1} | {gbs:.1} | {:.1} |",
                mv / 1e3,
                mm / 1e3
            );
            dec += BLOCKS * count as f64 * mv;
            pre += BLOCKS * count as f64 * mm;
        }
        if complete {
            let (hmv, hmm) = head(ty);
            totals.push((ty, dec + hmv, pre + hmm));
        }
    }
    println!();
    println!("| weights | linears per token, decode (ms) | tok/s bound | prefill (ms/token) | tok/s bound |");
    println!("|---|---|---|---|---|");
    for (ty, dec, pre) in totals {
        println!(
            "| {ty} (+ head) | {:.2} | {:.0} | {:.2} | {:.0} |",
            dec / 1e6,
            1e9 / dec,
            pre / 1e6,
            1e9 / pre
        );
    }
}
