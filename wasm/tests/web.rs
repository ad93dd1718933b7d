//! The bindings in a real browser (headless Chromium through chromedriver; run by
//! `scripts/test-wasm`): the wasm build's outputs equal the native ones that `build.rs`
//! computed with `riffle-core` for the host (within 1e-5), swapping and merging work, and
//! bad bytes give a JavaScript `Error` while the previous adapter keeps answering, and the
//! SIMD128 kernel of the block-quantized products gives the portable kernel's bits.
#![cfg(target_arch = "wasm32")]

mod common;

use js_sys::{Float32Array, Reflect};
use riffle_wasm::RiffleModel;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

/// wasm vs native, as the browser-demo issue asks.
const TOL: f32 = 1e-5;

macro_rules! digits {
    ($name:literal) => {
        include_bytes!(concat!("../../models/digits/", $name)).as_slice()
    };
}

fn file(name: &str) -> &'static [u8] {
    match name {
        "mlp" => digits!("mlp.gguf"),
        "cnn" => digits!("cnn.gguf"),
        "mlp-rotated" => digits!("mlp-rotated.gguf"),
        "mlp-inverted" => digits!("mlp-inverted.gguf"),
        "mlp-noisy" => digits!("mlp-noisy.gguf"),
        "mlp-parity" => digits!("mlp-parity.gguf"),
        "cnn-rotated" => digits!("cnn-rotated.gguf"),
        "cnn-inverted" => digits!("cnn-inverted.gguf"),
        "cnn-noisy" => digits!("cnn-noisy.gguf"),
        "cnn-parity" => digits!("cnn-parity.gguf"),
        _ => panic!("no file {name}"),
    }
}

/// The native case for `adapter` (or the bare `base`), unmerged.
fn case(base: &str, adapter: Option<&str>) -> &'static common::Case {
    common::CASES
        .iter()
        .find(|c| c.base == base && c.adapter == adapter && !c.merged)
        .expect("case")
}

fn get(obj: &JsValue, key: &str) -> JsValue {
    Reflect::get(obj, &JsValue::from_str(key)).expect("property")
}

fn output(r: &JsValue) -> Vec<f32> {
    get(r, "output")
        .dyn_into::<Float32Array>()
        .expect("Float32Array")
        .to_vec()
}

fn label(r: &JsValue) -> String {
    get(r, "label").as_string().expect("label")
}

/// The message of the JavaScript `Error` a binding threw.
fn error_message(e: wasm_bindgen::JsError) -> String {
    let v = JsValue::from(e);
    let err = v.dyn_into::<js_sys::Error>().expect("a JavaScript Error");
    err.message().into()
}

fn model(name: &str) -> RiffleModel {
    RiffleModel::new(file(name).to_vec(), Some(format!("{name}.gguf")))
        .map_err(error_message)
        .expect("model loads")
}

fn close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= TOL, "{what}[{i}]: wasm {g} vs native {w}");
    }
}

#[wasm_bindgen_test]
fn outputs_equal_native_within_1e5() {
    assert_eq!(common::CASES.len(), 20);
    for case in common::CASES {
        let mut m = model(case.base);
        if let Some(a) = case.adapter {
            let h = m
                .add_adapter(file(a).to_vec(), Some(format!("{a}.gguf")))
                .map_err(error_message)
                .expect("adapter");
            m.use_adapter(Some(h)).map_err(error_message).expect("use");
        }
        m.set_merged(case.merged)
            .map_err(error_message)
            .expect("merged");
        for (r, (x, want)) in case.inputs.iter().zip(case.outputs).enumerate() {
            let res = m.run_vector(x).map_err(error_message).expect("run");
            close(
                &output(&res),
                want,
                &format!(
                    "{}+{:?} merged={} row {r}",
                    case.base, case.adapter, case.merged
                ),
            );
            assert_eq!(get(&res, "merged").as_bool(), Some(case.merged));
            assert!(get(&res, "latencyMs").as_f64().expect("latency") >= 0.0);
        }
    }
}

#[wasm_bindgen_test]
fn swapping_and_merging_in_place() {
    let x = case("mlp", Some("mlp-parity")).inputs[0];
    let mut m = model("mlp");
    let mut handles = Vec::new();
    for task in ["rotated", "inverted", "noisy", "parity"] {
        let name = format!("mlp-{task}");
        let h = m
            .add_adapter(file(&name).to_vec(), Some(format!("{name}.gguf")))
            .map_err(error_message)
            .expect("adapter");
        handles.push(h);
        assert_eq!(m.find_adapter(task), Some(h));
    }
    // Unmerged references, one per adapter.
    let mut want = Vec::new();
    for h in [None, Some(0), Some(1), Some(2), Some(3)] {
        m.use_adapter(h).map_err(error_message).expect("use");
        want.push(output(
            &m.run_vector(x).map_err(error_message).expect("run"),
        ));
    }
    // Parity brings its own 2-way head and labels.
    m.use_adapter(Some(3)).map_err(error_message).expect("use");
    let r = m.run_vector(x).map_err(error_message).expect("run");
    assert_eq!(output(&r).len(), 2);
    assert!(["even", "odd"].contains(&label(&r).as_str()));
    assert_eq!(get(&r, "task").as_string().as_deref(), Some("parity"));
    // Merged: in-place swaps through every adapter, twice around, match unmerged.
    m.set_merged(true).map_err(error_message).expect("merge");
    assert!(m.merged());
    for round in 0..2 {
        for (k, h) in [Some(2), None, Some(3), Some(0), Some(1)]
            .into_iter()
            .map(|h| (h.map_or(0, |v| v as usize + 1), h))
        {
            let swap_ms = m.use_adapter(h).map_err(error_message).expect("swap");
            assert!(swap_ms >= 0.0);
            let got = output(&m.run_vector(x).map_err(error_message).expect("run"));
            for (a, b) in got.iter().zip(&want[k]) {
                assert!(
                    (a - b).abs() < 1e-4,
                    "round {round} adapter {k}: merged {a} vs unmerged {b}"
                );
            }
        }
    }
    m.set_merged(false).map_err(error_message).expect("unmerge");
    assert!(!m.merged());
    let info = m.info();
    assert_eq!(
        get(&info, "architecture").as_string().as_deref(),
        Some("mlp")
    );
    assert_eq!(get(&info, "modelBytes").as_f64(), Some(36704.0));
    let adapters = get(&info, "adapters")
        .dyn_into::<js_sys::Array>()
        .expect("array");
    assert_eq!(adapters.length(), 4);
    assert_eq!(
        get(&adapters.get(0), "fileBytes").as_f64(),
        Some(file("mlp-rotated").len() as f64)
    );
    assert_eq!(
        get(&adapters.get(3), "task").as_string().as_deref(),
        Some("parity")
    );
    assert!(get(&info, "arenaBytes").as_f64().expect("arena") > 0.0);
    assert!(get(&info, "wasmMemoryBytes").as_f64().expect("memory") >= 65536.0);
    assert!(get(&info, "mergedBytes").as_f64().expect("merged") > 0.0);
    assert!(get(&info, "lastSwapMs").as_f64().expect("swap") >= 0.0);
}

#[wasm_bindgen_test]
fn bad_bytes_throw_errors_and_the_previous_adapter_keeps_working() {
    let e = RiffleModel::new(b"definitely not gguf".to_vec(), None)
        .err()
        .expect("garbage base");
    assert_eq!(error_message(e), "model: not a GGUF file (bad magic)");
    let e = RiffleModel::new(file("mlp")[..100].to_vec(), Some("cut.gguf".into()))
        .err()
        .expect("truncated base");
    assert!(error_message(e).starts_with("cut.gguf: "));

    let x = case("cnn", Some("cnn-rotated")).inputs[1];
    let mut m = model("cnn");
    let h = m
        .add_adapter(
            file("cnn-rotated").to_vec(),
            Some("cnn-rotated.gguf".into()),
        )
        .map_err(error_message)
        .expect("adapter");
    m.use_adapter(Some(h)).map_err(error_message).expect("use");
    m.set_merged(true).map_err(error_message).expect("merge");
    let before = output(&m.run_vector(x).map_err(error_message).expect("run"));

    // A flipped bit in the tensor data: the CRC catches it.
    let mut corrupt = file("cnn-noisy").to_vec();
    let at = riffle_core::gguf::Gguf::parse(&corrupt)
        .expect("parse")
        .data_offset()
        + 5;
    corrupt[at] ^= 0x01;
    let msg = error_message(
        m.add_adapter(corrupt, Some("corrupt.gguf".into()))
            .expect_err("corrupt"),
    );
    assert!(msg.starts_with("corrupt.gguf: CRC mismatch"), "{msg}");
    // An adapter for the other base.
    let msg = error_message(
        m.add_adapter(file("mlp-noisy").to_vec(), None)
            .expect_err("wrong base"),
    );
    assert_eq!(
        msg,
        "adapter: adapter is for a `mlp` base, but the base is a `cnn` model"
    );
    // A base where an adapter belongs, empty bytes, an unknown handle, a short input.
    let msg = error_message(
        m.add_adapter(file("cnn").to_vec(), Some("cnn.gguf".into()))
            .expect_err("base"),
    );
    assert_eq!(msg, "cnn.gguf: is a base model, not an adapter");
    assert!(m.add_adapter(Vec::new(), None).is_err());
    assert!(
        error_message(m.use_adapter(Some(5)).expect_err("handle")).starts_with("adapter handle: ")
    );
    assert!(error_message(m.run_vector(&[0.5; 10]).expect_err("short")).starts_with("input: "));

    // Nothing changed: same adapter, still merged, same outputs.
    let after = m.run_vector(x).map_err(error_message).expect("run");
    assert_eq!(output(&after), before);
    assert_eq!(get(&after, "task").as_string().as_deref(), Some("rotated"));
    assert!(m.merged());
    let adapters = get(&m.info(), "adapters")
        .dyn_into::<js_sys::Array>()
        .expect("array");
    assert_eq!(adapters.length(), 1);
}

/// A xorshift generator from `state` (not zero): the kernel tests' pseudo-random inputs.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The WebAssembly SIMD128 kernel of the block-quantized products (Q8_0, Q4_0 and Q4_1
/// weights against 8-bit inputs) gives exactly the bits of the portable kernel
/// (`limit_kernels(Portable)` turns it off): one input (a decoding step) and several (a
/// batch), whole matrices and row ranges written into a wider output, scales that are
/// normal, subnormal, zero and negative.
#[wasm_bindgen_test]
fn quantized_products_equal_the_portable_kernels_bit_for_bit() {
    use riffle_core::math::{dense_kernel_name, limit_kernels, KernelFamily};
    use riffle_core::quant::{
        activation_scratch_len, matmul_strided, quantize_activations, QMatrix, TensorType,
    };
    let (rows, cols) = (13, 96);
    let mut next = xorshift(0x2545_f491_4f6c_dd1d);
    let types = [
        (TensorType::Q8_0, 34, &[0][..]),
        (TensorType::Q4_0, 18, &[0][..]),
        (TensorType::Q4_1, 20, &[0, 2][..]),
    ];
    for (ty, block_bytes, scales) in types {
        let mut data: Vec<u8> = (0..rows * cols / 32 * block_bytes)
            .map(|_| next() as u8)
            .collect();
        for (i, block) in data.chunks_exact_mut(block_bytes).enumerate() {
            for &at in scales {
                let half: u16 = match i % 9 {
                    0 => 0x0001, // the smallest subnormal
                    1 => 0x83ff, // the largest negative subnormal
                    2 => 0x8000, // negative zero
                    // normal, 2^-7 to 2^2 in size, either sign
                    _ => (0x2000 + (next() % 0x2800) as u16) | ((next() % 2) as u16 * 0x8000),
                };
                block[at..at + 2].copy_from_slice(&half.to_le_bytes());
            }
        }
        let m = QMatrix::new(0, ty, rows, cols, &data).expect("matrix");
        for n in [1, 2, 5] {
            let x: Vec<f32> = (0..n * cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut scratch = vec![0u8; activation_scratch_len(ty, cols, n).expect("scratch")];
            let mut products = |family| {
                limit_kernels(family);
                let name = if family == KernelFamily::Portable {
                    "portable"
                } else {
                    "wasm-simd128"
                };
                assert_eq!(dense_kernel_name(), name);
                let a = quantize_activations(m.activation_type(), &x, cols, n, &mut scratch)
                    .expect("activations");
                let mut out = Vec::new();
                for range in [0..rows, 2..11] {
                    let stride = rows + 3;
                    let mut y = vec![0f32; n * stride];
                    matmul_strided(&m, range, &a, &mut y, stride).expect("product");
                    out.extend(y.iter().map(|v| v.to_bits()));
                }
                out
            };
            let simd = products(KernelFamily::Avx512);
            let portable = products(KernelFamily::Portable);
            limit_kernels(KernelFamily::Avx512);
            assert_eq!(simd, portable, "{ty:?}, {n} inputs");
            assert!(simd.iter().any(|&b| b != 0), "{ty:?}: not all zeros");
        }
    }
}

/// The SIMD128 kernel of a Q8_0 output head (`f32` inputs, rounded to 16 bits per block of
/// 32 as the x86-64 AVX-512 kernel rounds them) stays within that rounding of the portable
/// kernel, which multiplies the `f32` inputs: one step of `amax / 32767` per input against
/// the row's weights, plus float rounding. It differs from it somewhere (the kernel ran).
#[wasm_bindgen_test]
fn quantized_output_head_is_within_its_16_bit_rounding_of_the_portable_kernel() {
    use riffle_core::math::{limit_kernels, KernelFamily};
    use riffle_core::quant::{matmul_f32_inputs, QMatrix, TensorType};
    let (rows, cols) = (13, 128);
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let mut data: Vec<u8> = (0..rows * cols / 32 * 34).map(|_| next() as u8).collect();
    for block in data.chunks_exact_mut(34) {
        let half = (0x2000 + (next() % 0x2800) as u16) | ((next() % 2) as u16 * 0x8000);
        block[..2].copy_from_slice(&half.to_le_bytes());
    }
    let m = QMatrix::new(0, TensorType::Q8_0, rows, cols, &data).expect("matrix");
    let weights: Vec<Vec<f32>> = (0..rows)
        .map(|r| {
            let mut w = vec![0f32; cols];
            m.decode_row(r, &mut w).expect("row");
            w
        })
        .collect();
    let mut differs = false;
    for n in [1, 3] {
        // Blocks of very different sizes, one of zeros.
        let x: Vec<f32> = (0..n * cols)
            .map(|i| {
                let size = [1.0, 1e-3, 0.0, 40.0][(i / 32) % 4];
                size * ((next() % 2001) as f32 / 1000.0 - 1.0)
            })
            .collect();
        let product = |family| {
            limit_kernels(family);
            let mut y = vec![0f32; n * rows];
            matmul_f32_inputs(&m, 0..rows, &x, n, &mut y, rows).expect("product");
            y
        };
        let simd = product(KernelFamily::Avx512);
        let portable = product(KernelFamily::Portable);
        limit_kernels(KernelFamily::Avx512);
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            for (r, w) in weights.iter().enumerate() {
                let (mut step, mut size) = (0f64, 0f64);
                for (wb, xb) in w.chunks_exact(32).zip(xt.chunks_exact(32)) {
                    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                    step += wb.iter().map(|v| v.abs() as f64).sum::<f64>() * amax / 32767.0;
                    size += wb
                        .iter()
                        .zip(xb)
                        .map(|(a, b)| (a * b).abs() as f64)
                        .sum::<f64>();
                }
                let (a, b) = (simd[t * rows + r] as f64, portable[t * rows + r] as f64);
                assert!(
                    (a - b).abs() <= step + 1e-5 * size,
                    "row {r}, input {t}: {a} against {b} (allowed {})",
                    step + 1e-5 * size
                );
                differs |= a != b;
            }
        }
    }
    assert!(differs, "the SIMD128 head kernel did not run");
}

/// The WebAssembly SIMD128 attention kernels (scores and value sums over an `f32` cache)
/// give exactly the bits of the portable code: a prompt of 5 rows after 70 cached positions
/// (causal attention) and a decoding step over 150 positions cut into blocks, SmolLM2's
/// shape (9 query heads sharing 3 key/value heads of 64) and one of 8-wide heads.
#[wasm_bindgen_test]
fn attention_equals_the_portable_code_bit_for_bit() {
    use riffle_core::math::{limit_kernels, KernelFamily};
    use riffle_core::nn::attention::{
        causal_attention, key_block_attention, key_block_units, key_block_width, merge_key_blocks,
        CausalShape, KvSlice,
    };
    let mut bits = xorshift(0x1234_5678_9abc_def1);
    let mut next = move || (bits() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
    for shape in [
        CausalShape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        },
        CausalShape {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        },
    ] {
        let (qw, kvw) = (
            shape.heads * shape.head_dim,
            shape.kv_heads * shape.head_dim,
        );
        let (past, t, seen) = (70, 5, 150);
        let keys: Vec<f32> = (0..seen * kvw).map(|_| 2.0 * next()).collect();
        let values: Vec<f32> = (0..seen * kvw).map(|_| next()).collect();
        let q: Vec<f32> = (0..t * qw).map(|_| 2.0 * next()).collect();
        let (k, v) = (KvSlice::F32(&keys), KvSlice::F32(&values));
        let run = |family| {
            limit_kernels(family);
            let mut out = vec![0f32; t * qw];
            let mut scores = vec![0f32; shape.group() * (past + t)];
            causal_attention(shape, &q, k, v, t, past, &mut out, &mut scores).expect("prompt");
            let units = key_block_units(shape, seen);
            let mut partials = vec![0f32; units * key_block_width(shape)];
            let mut scores = vec![0f32; shape.group() * 64];
            key_block_attention(
                shape,
                &q[..qw],
                k,
                v,
                seen,
                0..units,
                &mut partials,
                &mut scores,
            )
            .expect("blocks");
            let mut step = vec![0f32; qw];
            merge_key_blocks(shape, seen, &partials, &mut step).expect("merge");
            out.extend(step);
            out.iter().map(|x| x.to_bits()).collect::<Vec<u32>>()
        };
        let simd = run(KernelFamily::Avx512);
        let portable = run(KernelFamily::Portable);
        limit_kernels(KernelFamily::Avx512);
        assert_eq!(simd, portable, "{shape:?}");
    }
}
