//! Capacities set by the model, not by constants (issue 17): a `bert` deeper than any
//! fixed table (24 blocks, BERT-large's depth, and 90, past `Model::from_bytes`'s 512
//! slots), an `mlp` of more than 16 layers (20, and 520 past the model's own table) and a
//! `cnn` of more than 16 dense layers load into caller storage sized by
//! `Model::storage_len`, run against an independent float64 forward pass, and storage one
//! record short is refused with `Error::SlotStorageTooSmall` naming both counts.
//!
//! The files are synthetic (tiny widths, deterministic pseudo-random F32 weights), built
//! here with the test crate's own GGUF writer.

use riffle_core::runtime::baked::{bake, baked_len, BakedModel};
use riffle_core::runtime::{Input, Model, Slot, MAX_SLOTS};
use riffle_core::Error;
use riffle_tests::gguf_edit::{ggml, vt, GgufFile, TensorEntry, Val};

/// Deterministic values in `[-scale, scale)` (a 64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
    /// `n` values as `f32` (what the file stores), scaled.
    fn values(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (self.next() * scale) as f32).collect()
    }
}

/// A GGUF file under construction: keys, then F32 tensors with their values kept for the
/// reference.
struct Builder {
    file: GgufFile,
}

impl Builder {
    fn new(arch: &str) -> Builder {
        let mut b = Builder {
            file: GgufFile {
                version: 3,
                kvs: Vec::new(),
                tensors: Vec::new(),
                data: Vec::new(),
            },
        };
        b.file.set("general.type", Val::str("model"));
        b.file.set("general.architecture", Val::str(arch));
        b
    }
    fn u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.file.set(key, Val::u32(v));
        self
    }
    fn f32(&mut self, key: &str, v: f32) -> &mut Self {
        self.file
            .set(key, Val::Scalar(vt::F32, v.to_le_bytes().to_vec()));
        self
    }
    /// Adds tensor `name` of PyTorch shape `shape` (outermost first) and returns its values.
    fn tensor(&mut self, name: &str, shape: &[usize], values: Vec<f32>) -> Vec<f64> {
        assert_eq!(shape.iter().product::<usize>(), values.len());
        let offset = self.file.data.len().next_multiple_of(32);
        self.file.data.resize(offset, 0);
        for v in &values {
            self.file.data.extend(v.to_le_bytes());
        }
        self.file.tensors.push(TensorEntry {
            name: name.as_bytes().to_vec(),
            dims: shape.iter().rev().map(|&d| d as u64).collect(),
            ggml_type: ggml::F32,
            offset: offset as u64,
        });
        values.iter().map(|&v| v as f64).collect()
    }
    fn bytes(&self) -> Vec<u8> {
        self.file.to_bytes()
    }
}

/// A dense layer's weight (row-major) and bias, in float64.
type Layer = (Vec<f64>, Vec<f64>);

/// `W x + b` for a row-major `(rows, x.len())` weight.
fn affine(w: &[f64], b: Option<&[f64]>, x: &[f64]) -> Vec<f64> {
    let cols = x.len();
    let rows = w.len() / cols;
    (0..rows)
        .map(|r| {
            let dot: f64 = w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum();
            dot + b.map_or(0.0, |b| b[r])
        })
        .collect()
}

fn relu(v: &mut [f64]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

/// The error function (Abramowitz and Stegun 7.1.28's rational form would do for the
/// tolerance; this is the series / continued-fraction pair, accurate to ~1e-15).
fn erf(x: f64) -> f64 {
    let ax = x.abs();
    let r = if ax < 3.0 {
        // Maclaurin series: 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)).
        let mut term = ax;
        let mut sum = ax;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -ax * ax / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc continued fraction (Lentz), then 1 - erfc.
        let mut f = ax;
        for k in (1..60).rev() {
            f = ax + (k as f64 / 2.0) / f;
        }
        1.0 - (-ax * ax).exp() / (f * std::f64::consts::PI.sqrt())
    };
    r.copysign(x)
}

fn layer_norm(x: &mut [f64], w: &[f64], b: &[f64], eps: f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in x.iter_mut().zip(w).zip(b) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// The `bert` tensors of one block, as float64.
struct BertBlock {
    lin: Vec<Layer>,
    norms: [Layer; 2],
}

struct BertRef {
    hidden: usize,
    heads: usize,
    eps: f64,
    token: Vec<f64>,
    position: Vec<f64>,
    types: Vec<f64>,
    embd_norm: Layer,
    blocks: Vec<BertBlock>,
}

/// A synthetic `bert` of `blocks` encoder blocks (hidden 8, feed-forward 16, 2 heads,
/// vocabulary 10, 6 positions) and its float64 reference.
fn bert(blocks: usize) -> (Vec<u8>, BertRef) {
    let (h, f, vocab, ctx) = (8, 16, 10, 6);
    let mut rng = Rng(blocks as u64 + 1);
    let mut b = Builder::new("bert");
    b.u32("bert.block_count", blocks as u32)
        .u32("bert.embedding_length", h as u32)
        .u32("bert.feed_forward_length", f as u32)
        .u32("bert.attention.head_count", 2)
        .u32("bert.context_length", ctx as u32)
        .u32("bert.pooling_type", 1)
        .f32("bert.attention.layer_norm_epsilon", 1e-6);
    let token = b.tensor("token_embd.weight", &[vocab, h], rng.values(vocab * h, 1.0));
    let position = b.tensor("position_embd.weight", &[ctx, h], rng.values(ctx * h, 0.5));
    let types = b.tensor("token_types.weight", &[2, h], rng.values(2 * h, 0.5));
    let norm = |b: &mut Builder, rng: &mut Rng, name: &str| {
        let w = rng.values(h, 0.2).iter().map(|v| v + 1.0).collect();
        (
            b.tensor(&format!("{name}.weight"), &[h], w),
            b.tensor(&format!("{name}.bias"), &[h], rng.values(h, 0.1)),
        )
    };
    let embd_norm = norm(&mut b, &mut rng, "token_embd_norm");
    let mut refs = Vec::new();
    for blk in 0..blocks {
        let mut lin = Vec::new();
        for (layer, rows, cols) in [
            ("attn_q", h, h),
            ("attn_k", h, h),
            ("attn_v", h, h),
            ("attn_output", h, h),
            ("ffn_up", f, h),
            ("ffn_down", h, f),
        ] {
            let scale = 1.0 / (cols as f64).sqrt();
            let w = b.tensor(
                &format!("blk.{blk}.{layer}.weight"),
                &[rows, cols],
                rng.values(rows * cols, scale),
            );
            let bias = b.tensor(
                &format!("blk.{blk}.{layer}.bias"),
                &[rows],
                rng.values(rows, 0.1),
            );
            lin.push((w, bias));
        }
        let norms = [
            norm(&mut b, &mut rng, &format!("blk.{blk}.attn_output_norm")),
            norm(&mut b, &mut rng, &format!("blk.{blk}.layer_output_norm")),
        ];
        refs.push(BertBlock { lin, norms });
    }
    let r = BertRef {
        hidden: h,
        heads: 2,
        eps: 1e-6,
        token,
        position,
        types,
        embd_norm,
        blocks: refs,
    };
    (b.bytes(), r)
}

impl BertRef {
    /// The L2-normalised mean-pooled embedding of `ids`, in float64.
    fn embed(&self, ids: &[u32]) -> Vec<f64> {
        let h = self.hidden;
        let t = ids.len();
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let id = id as usize;
                let mut row: Vec<f64> = (0..h)
                    .map(|j| self.token[id * h + j] + self.position[p * h + j] + self.types[j])
                    .collect();
                layer_norm(&mut row, &self.embd_norm.0, &self.embd_norm.1, self.eps);
                row
            })
            .collect();
        let hd = h / self.heads;
        for blk in &self.blocks {
            let proj = |k: usize, x: &[Vec<f64>]| -> Vec<Vec<f64>> {
                x.iter()
                    .map(|r| affine(&blk.lin[k].0, Some(&blk.lin[k].1), r))
                    .collect()
            };
            let (q, k, v) = (proj(0, &x), proj(1, &x), proj(2, &x));
            let mut ctx = vec![vec![0.0; h]; t];
            for head in 0..self.heads {
                let cols = head * hd..(head + 1) * hd;
                for i in 0..t {
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            cols.clone().map(|c| q[i][c] * k[j][c]).sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let top = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in cols.clone() {
                        ctx[i][c] = (0..t).map(|j| e[j] / z * v[j][c]).sum();
                    }
                }
            }
            let attn = proj(3, &ctx);
            for (xr, a) in x.iter_mut().zip(&attn) {
                xr.iter_mut().zip(a).for_each(|(v, a)| *v += a);
                layer_norm(xr, &blk.norms[0].0, &blk.norms[0].1, self.eps);
            }
            for xr in x.iter_mut() {
                let mut up = affine(&blk.lin[4].0, Some(&blk.lin[4].1), xr);
                up.iter_mut()
                    .for_each(|u| *u = 0.5 * *u * (1.0 + erf(*u / std::f64::consts::SQRT_2)));
                let down = affine(&blk.lin[5].0, Some(&blk.lin[5].1), &up);
                xr.iter_mut().zip(&down).for_each(|(v, d)| *v += d);
                layer_norm(xr, &blk.norms[1].0, &blk.norms[1].1, self.eps);
            }
        }
        let pooled: Vec<f64> = (0..h)
            .map(|j| x.iter().map(|r| r[j]).sum::<f64>() / t as f64)
            .collect();
        let n = pooled.iter().map(|p| p * p).sum::<f64>().sqrt();
        pooled.iter().map(|p| p / n).collect()
    }
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

/// Checks that `Model::storage_len` asks `slots` records of `bytes` and that one record
/// fewer is refused with both counts named.
fn check_storage(bytes: &[u8], slots: usize) {
    assert_eq!(Model::storage_len(bytes).unwrap(), slots);
    let mut short = vec![Slot::empty(); slots - 1];
    assert_eq!(
        Model::from_bytes_in(bytes, &mut short).err(),
        Some(Error::SlotStorageTooSmall {
            needed: slots,
            got: slots - 1
        })
    );
}

/// Runs `ids` through a `bert` of `blocks` blocks in caller storage and checks it against
/// the float64 reference (and, within `MAX_SLOTS`, bit for bit against `from_bytes`).
fn check_bert(blocks: usize) {
    let (bytes, reference) = bert(blocks);
    let n = 6 * blocks;
    check_storage(&bytes, n);
    let mut storage = vec![Slot::empty(); n];
    let m = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    assert_eq!(m.slots().len(), n);
    assert_eq!(m.bert_config().unwrap().blocks, blocks);
    assert_eq!(
        m.slot_name(n - 1),
        format!("blk.{}.ffn_down.weight", blocks - 1)
    );
    let ids = [2u32, 6, 7, 9, 3];
    let mut out = vec![0.0f32; m.output_len()];
    let mut arena = vec![0.0f32; m.arena_len(ids.len(), 0)];
    m.run(None, Input::Tokens(&ids), &mut out, &mut arena)
        .unwrap();
    let want = reference.embed(&ids);
    let d = max_diff(&out, &want);
    assert!(d < 5e-6, "{blocks} blocks: max |riffle - f64| = {d:e}");
    match Model::from_bytes(&bytes) {
        Ok(own) => {
            assert!(n <= MAX_SLOTS);
            let mut out2 = vec![0.0f32; own.output_len()];
            own.run(None, Input::Tokens(&ids), &mut out2, &mut arena)
                .unwrap();
            assert_eq!(bits(&out), bits(&out2));
        }
        Err(e) => {
            assert!(n > MAX_SLOTS);
            assert_eq!(
                e,
                Error::SlotStorageTooSmall {
                    needed: n,
                    got: MAX_SLOTS
                }
            );
        }
    };
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// BERT-large's depth (24 blocks, 144 slots), where the fixed table used to stop at 12.
#[test]
fn a_24_block_bert_runs_from_caller_storage_against_float64() {
    check_bert(24);
}

/// 90 blocks (540 slots): past the model's own table, so only caller storage holds it.
#[test]
fn a_90_block_bert_past_the_models_table_runs_from_caller_storage() {
    check_bert(90);
}

/// A synthetic `mlp` of `widths.len() - 1` layers (with biases) and its float64 weights.
fn mlp(widths: &[usize], seed: u64) -> (Vec<u8>, Vec<Layer>) {
    let mut rng = Rng(seed);
    let mut b = Builder::new("mlp");
    b.u32("mlp.layer_count", (widths.len() - 1) as u32)
        .u32("mlp.input_length", widths[0] as u32);
    b.file.set("mlp.activation", Val::str("relu"));
    let layers = widths
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let (cols, rows) = (w[0], w[1]);
            let scale = 1.5 / (cols as f64).sqrt();
            (
                b.tensor(
                    &format!("layers.{i}.weight"),
                    &[rows, cols],
                    rng.values(rows * cols, scale),
                ),
                b.tensor(&format!("layers.{i}.bias"), &[rows], rng.values(rows, 0.2)),
            )
        })
        .collect();
    (b.bytes(), layers)
}

/// Dense layers with ReLU between them, in float64.
fn dense_ref(layers: &[Layer], x: &[f64]) -> Vec<f64> {
    let mut x = x.to_vec();
    for (i, (w, b)) in layers.iter().enumerate() {
        x = affine(w, Some(b), &x);
        if i + 1 < layers.len() {
            relu(&mut x);
        }
    }
    x
}

/// 20 layers, past the 16 of the old constant: caller storage, float64, the model's own
/// table, and the baked reader (whose layer count no constant bounds either).
#[test]
fn a_20_layer_mlp_runs_from_caller_storage_and_baked() {
    let widths: Vec<usize> = (0..=20).map(|i| 6 + (i * 5) % 7).collect();
    let (bytes, layers) = mlp(&widths, 7);
    check_storage(&bytes, 20);
    let mut storage = vec![Slot::empty(); 20];
    let m = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    let x: Vec<f32> = (0..widths[0]).map(|i| (i as f32 * 0.37).sin()).collect();
    let mut out = vec![0.0f32; m.output_len()];
    let mut arena = vec![0.0f32; m.arena_len(0, 0)];
    assert_eq!(
        m.run(None, Input::Vector(&x), &mut out, &mut arena)
            .unwrap(),
        widths[20]
    );
    let want = dense_ref(&layers, &x.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let d = max_diff(&out, &want);
    assert!(d < 1e-4 * (1.0 + want.iter().fold(0.0f64, |a, v| a.max(v.abs()))));
    let own = Model::from_bytes(&bytes).unwrap();
    let mut out2 = vec![0.0f32; own.output_len()];
    own.run(None, Input::Vector(&x), &mut out2, &mut arena)
        .unwrap();
    assert_eq!(bits(&out), bits(&out2));
    let mut blob = vec![0u8; baked_len(&m, &[]).unwrap()];
    bake(&m, &[], &mut blob).unwrap();
    let baked = BakedModel::open(&blob).unwrap();
    assert_eq!(baked.layer_count(), 20);
    let mut arena_b = vec![0.0f32; baked.arena_len()];
    let mut out3 = vec![0.0f32; baked.output_len()];
    baked.run(None, &x, &mut out3, &mut arena_b).unwrap();
    assert_eq!(bits(&out), bits(&out3));
}

/// Past the model's own table: `from_bytes` names both counts, caller storage runs it.
#[test]
fn an_mlp_past_the_models_table_loads_only_into_caller_storage() {
    let layers = MAX_SLOTS + 8;
    let widths = vec![4usize; layers + 1];
    let (bytes, refs) = mlp(&widths, 11);
    assert_eq!(
        Model::from_bytes(&bytes).err(),
        Some(Error::SlotStorageTooSmall {
            needed: layers,
            got: MAX_SLOTS
        })
    );
    check_storage(&bytes, layers);
    let mut storage = vec![Slot::empty(); layers];
    let m = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    let x = [0.5f32, -0.25, 1.0, 0.125];
    let mut out = vec![0.0f32; 4];
    let mut arena = vec![0.0f32; m.arena_len(0, 0)];
    m.run(None, Input::Vector(&x), &mut out, &mut arena)
        .unwrap();
    let want = dense_ref(&refs, &x.map(f64::from));
    let scale = 1.0 + want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    assert!(max_diff(&out, &want) < 1e-3 * scale);
}

/// A `cnn` with two convolutions and 18 dense layers (20 slots; the old constant allowed
/// 16 dense layers) in caller storage, against float64 (convolution with zero padding,
/// ReLU, 2x2 max pooling, flattening in (c, h, w) order).
#[test]
fn a_cnn_with_18_dense_layers_runs_from_caller_storage_against_float64() {
    let mut rng = Rng(5);
    let (c0, side) = (2usize, 8usize);
    let mut b = Builder::new("cnn");
    b.u32("cnn.input_channels", c0 as u32)
        .u32("cnn.input_height", side as u32)
        .u32("cnn.input_width", side as u32)
        .u32("cnn.conv_count", 2)
        .u32("cnn.dense_count", 18);
    // Convolutions (out_c, in_c, k, k): 2 -> 3 (3x3), 3 -> 4 (1x1).
    let mut convs = Vec::new();
    for (i, (out_c, in_c, k)) in [(3usize, c0, 3usize), (4, 3, 1)].into_iter().enumerate() {
        let scale = 1.0 / ((in_c * k * k) as f64).sqrt();
        let w = b.tensor(
            &format!("conv.{i}.weight"),
            &[out_c, in_c, k, k],
            rng.values(out_c * in_c * k * k, scale),
        );
        let bias = b.tensor(&format!("conv.{i}.bias"), &[out_c], rng.values(out_c, 0.1));
        convs.push((w, bias, out_c, in_c, k));
    }
    let mut width = 4 * (side / 4) * (side / 4);
    let mut dense = Vec::new();
    for i in 0..18 {
        let rows = if i == 17 { 3 } else { 5 + i % 4 };
        let scale = 1.5 / (width as f64).sqrt();
        dense.push((
            b.tensor(
                &format!("dense.{i}.weight"),
                &[rows, width],
                rng.values(rows * width, scale),
            ),
            b.tensor(&format!("dense.{i}.bias"), &[rows], rng.values(rows, 0.2)),
        ));
        width = rows;
    }
    let bytes = b.bytes();
    check_storage(&bytes, 20);
    let mut storage = vec![Slot::empty(); 20];
    let m = Model::from_bytes_in(&bytes, &mut storage).unwrap();
    let x: Vec<f32> = (0..c0 * side * side)
        .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.4)
        .collect();
    let mut out = vec![0.0f32; m.output_len()];
    let mut arena = vec![0.0f32; m.arena_len(0, 0)];
    m.run(None, Input::Vector(&x), &mut out, &mut arena)
        .unwrap();

    // Float64: activations (c, h, w).
    let mut act: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut hw = side;
    for (w, bias, out_c, in_c, k) in &convs {
        let pad = k / 2;
        let mut y = vec![0.0; out_c * hw * hw];
        for o in 0..*out_c {
            for r in 0..hw {
                for c in 0..hw {
                    let mut s = bias[o];
                    for i in 0..*in_c {
                        for dy in 0..*k {
                            for dx in 0..*k {
                                let (yy, xx) = (r + dy, c + dx);
                                if yy < pad || xx < pad || yy - pad >= hw || xx - pad >= hw {
                                    continue;
                                }
                                s += w[((o * in_c + i) * k + dy) * k + dx]
                                    * act[(i * hw + yy - pad) * hw + xx - pad];
                            }
                        }
                    }
                    y[(o * hw + r) * hw + c] = s.max(0.0);
                }
            }
        }
        let half = hw / 2;
        act = (0..out_c * half * half)
            .map(|j| {
                let (o, r, c) = (j / (half * half), (j / half) % half, j % half);
                let at = |dy: usize, dx: usize| y[(o * hw + 2 * r + dy) * hw + 2 * c + dx];
                at(0, 0).max(at(0, 1)).max(at(1, 0)).max(at(1, 1))
            })
            .collect();
        hw = half;
    }
    let want = dense_ref(&dense, &act);
    let scale = 1.0 + want.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let d = max_diff(&out, &want);
    assert!(d < 1e-4 * scale, "max |riffle - f64| = {d:e}");
}
