//! The corrupt-adapter corpus of issue 9, generated from the committed digits adapters:
//! every byte-offset truncation, single-bit flips over the header, metadata, tensor table
//! and data, out-of-range and unaligned offsets, a wrong base id, wrong shapes, `b` not
//! dividing `n`, NaN / Inf / zero parameters (with the CRC fixed so validation is what
//! catches them), huge string lengths, duplicate and unknown names, unknown types.
//!
//! Each case must end in a typed [`Error`] (the exact variant where it is deterministic),
//! a failed `prepare` must write nothing into its workspace, and after **every** case
//! two live sessions (one unmerged, one merged, each with an adapter active) must give
//! byte-identical outputs and merged weights.

use std::collections::BTreeMap;

use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_core::{Error, KeyName};
use riffle_tests::gguf_edit::{ggml, poke_u32, poke_u64, GgufFile, Layout, Val};
use riffle_tests::read_repo_file;

const SENTINEL: u32 = 0x7fc0_beef;

fn leak_bytes(rel: &str) -> &'static [u8] {
    read_repo_file(rel).leak()
}

/// A base model with all its committed adapters resident in two live sessions: one
/// unmerged, one merged, each with an adapter active. Outputs on held-out inputs and the
/// merged weights are recorded once; [`Live::check`] asserts they never change.
struct Live {
    model: &'static Model<'static>,
    unmerged: Session<'static, 'static, 'static>,
    merged: Session<'static, 'static, 'static>,
    inputs: Vec<Vec<f32>>,
    want: Vec<(Vec<u32>, Vec<u32>)>,
    weights: Vec<u32>,
    arena: Vec<f32>,
    checks: usize,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

impl Live {
    /// `arch` is `mlp` or `cnn`; the unmerged session activates adapter 0 (rotated), the
    /// merged one adapter 1 (inverted).
    fn new(arch: &str) -> Live {
        let model: &'static Model<'static> = Box::leak(Box::new(
            Model::from_bytes(leak_bytes(&format!("models/digits/{arch}.gguf"))).unwrap(),
        ));
        let mut unmerged = Session::new(model);
        let mut merged = Session::new(model);
        for task in ["rotated", "inverted", "noisy", "parity"] {
            let bytes = leak_bytes(&format!("models/digits/{arch}-{task}.gguf"));
            let a = Adapter::from_bytes(bytes).unwrap();
            for s in [&mut unmerged, &mut merged] {
                let ws = vec![0.0f32; a.workspace_len(model).unwrap()].leak();
                s.add_adapter(a.prepare(model, ws).unwrap()).unwrap();
            }
        }
        let mut scratch = vec![0.0f32; merged.swap_scratch_len()];
        unmerged.activate(Some(0), &mut scratch).unwrap();
        merged.activate(Some(1), &mut scratch).unwrap();
        let w = vec![0.0f32; model.merged_len()].leak();
        merged.enable_merged(w, &mut scratch).unwrap();
        let mut inputs = Vec::new();
        for set in ["rotated", "inverted"] {
            let ds = leak_bytes(&format!("models/digits/heldout-{set}.gguf"));
            let g = riffle_core::gguf::Gguf::parse(ds).unwrap();
            let t = g.find_tensor("inputs").unwrap();
            for i in 0..3 {
                let mut x = vec![0.0f32; 64];
                t.decode_f32(i * 64, &mut x).unwrap();
                inputs.push(x);
            }
        }
        let arena = vec![0.0f32; unmerged.arena_len(0).max(merged.arena_len(0))];
        let mut live = Live {
            model,
            unmerged,
            merged,
            inputs,
            want: Vec::new(),
            weights: Vec::new(),
            arena,
            checks: 0,
        };
        live.want = live.outputs();
        live.weights = bits(live.merged.merged_weights().unwrap());
        live
    }

    fn outputs(&mut self) -> Vec<(Vec<u32>, Vec<u32>)> {
        let mut out = [0.0f32; 16];
        let mut all = Vec::new();
        for x in &self.inputs {
            let n = self
                .unmerged
                .run(Input::Vector(x), &mut out, &mut self.arena)
                .unwrap();
            let a = bits(&out[..n]);
            let n = self
                .merged
                .run(Input::Vector(x), &mut out, &mut self.arena)
                .unwrap();
            all.push((a, bits(&out[..n])));
        }
        all
    }

    /// The previously active adapters still give byte-identical outputs and weights.
    fn check(&mut self, what: &str) {
        assert_eq!(
            self.unmerged.active(),
            Some(0),
            "{what}: unmerged active changed"
        );
        assert_eq!(
            self.merged.active(),
            Some(1),
            "{what}: merged active changed"
        );
        assert!(
            bits(self.merged.merged_weights().unwrap()) == self.weights,
            "{what}: merged weights changed"
        );
        let now = self.outputs();
        assert!(now == self.want, "{what}: outputs changed");
        self.checks += 1;
    }

    /// What a front end does with a new adapter file: load, validate, prepare into a
    /// fresh workspace, then run it in a session of its own. Returns the first error.
    fn try_adapter(&self, bytes: &[u8]) -> Result<(), Error> {
        let adapter = Adapter::from_bytes(bytes)?;
        let len = match adapter.workspace_len(self.model) {
            Ok(len) => len,
            Err(e) => {
                let mut ws = vec![f32::from_bits(SENTINEL); 1 << 14];
                assert_eq!(adapter.prepare(self.model, &mut ws).err(), Some(e));
                assert!(untouched(&ws), "failed prepare wrote to its workspace");
                return Err(e);
            }
        };
        let mut ws = vec![f32::from_bits(SENTINEL); len];
        let prepared = match adapter.prepare(self.model, &mut ws) {
            Ok(p) => p,
            Err(e) => {
                assert!(
                    e == Error::NumericalFailure || untouched(&ws),
                    "prepare failed with {e:?} after writing to its workspace"
                );
                return Err(e);
            }
        };
        let mut s = Session::new(self.model);
        let h = s.add_adapter(prepared)?;
        s.activate(Some(h), &mut [])?;
        let mut arena = vec![0.0f32; s.arena_len(0)];
        let mut out = [0.0f32; 16];
        for x in &self.inputs {
            s.run(Input::Vector(x), &mut out, &mut arena)?;
        }
        Ok(())
    }

    /// [`Live::try_adapter`], then [`Live::check`].
    fn attempt(&mut self, bytes: &[u8], what: &str) -> Result<(), Error> {
        let r = self.try_adapter(bytes);
        if let Err(e) = r {
            assert!(!e.to_string().is_empty());
        }
        self.check(what);
        r
    }

    /// Expects exactly `want`.
    fn expect(&mut self, bytes: &[u8], want: Error, what: &str) {
        assert_eq!(self.attempt(bytes, what), Err(want), "{what}");
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // `--nocapture` shows how many cases each test tried (docs/robustness.md).
        let test = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!(
            "{test}: {} cases, each followed by a live check",
            self.checks
        );
    }
}

fn untouched(ws: &[f32]) -> bool {
    ws.iter().all(|v| v.to_bits() == SENTINEL)
}

fn load(rel: &str) -> (Vec<u8>, GgufFile) {
    let bytes = read_repo_file(rel);
    let f = GgufFile::parse(&bytes);
    (bytes, f)
}

const ROTATED: &str = "models/digits/mlp-rotated.gguf";
const INVERTED: &str = "models/digits/mlp-inverted.gguf";
const NOISY: &str = "models/digits/mlp-noisy.gguf";
const PARITY: &str = "models/digits/mlp-parity.gguf";

#[test]
fn the_editor_round_trips_every_committed_adapter() {
    let mut live = Live::new("mlp");
    for rel in [ROTATED, INVERTED, NOISY, PARITY] {
        let (bytes, f) = load(rel);
        assert_eq!(f.to_bytes(), bytes, "{rel}: rewrite is not byte-identical");
        let mut g = f.clone();
        g.fix_crc();
        assert_eq!(
            g.to_bytes(),
            bytes,
            "{rel}: CRC fix-up changed a valid file"
        );
        assert_eq!(live.attempt(&bytes, rel), Ok(()));
    }
}

#[test]
fn truncated_at_every_byte_offset() {
    let mut live = Live::new("mlp");
    let mut cases = 0;
    for rel in [ROTATED, INVERTED, PARITY] {
        let (bytes, f) = load(rel);
        let span_end = f.write().1.span_end;
        for len in 0..bytes.len() {
            let r = live.attempt(&bytes[..len], rel);
            cases += 1;
            if len >= span_end {
                // Only trailing padding is gone: the same adapter.
                assert_eq!(r, Ok(()), "{rel}: {len} bytes");
                continue;
            }
            match r {
                Err(Error::Truncated { offset }) => assert!(offset <= len as u64, "{rel}: {len}"),
                Err(Error::TensorOutOfRange { .. }) => {}
                other => panic!("{rel}: prefix of {len} bytes gave {other:?}"),
            }
        }
    }
    eprintln!("truncations: {cases} cases, {} live checks", live.checks);
}

/// The field a byte of a written file belongs to, for classifying bit flips.
fn field_of(pos: usize, f: &GgufFile, layout: &Layout) -> String {
    if pos < 24 {
        return "header".into();
    }
    for (kv, p) in f.kvs.iter().zip(&layout.kvs) {
        if p.all.contains(&pos) {
            let key = String::from_utf8_lossy(&kv.key);
            let part = if pos < p.value_type {
                "key"
            } else if pos < p.value {
                "value type"
            } else {
                "value"
            };
            return format!("{key} {part}");
        }
    }
    for p in &layout.tensors {
        if p.all.contains(&pos) {
            let part = if pos >= p.offset {
                "offset"
            } else if pos >= p.ggml_type {
                "type"
            } else if pos >= p.dims {
                "dims"
            } else if pos >= p.rank {
                "rank"
            } else {
                "name"
            };
            return format!("tensor {part}");
        }
    }
    if pos < layout.data_start {
        "padding".into()
    } else if pos < layout.span_end {
        "data".into()
    } else {
        "trailing padding".into()
    }
}

/// Bit flips a valid adapter survives: they change nothing the runtime checks. The CRC
/// covers only the data span (format.md), so flips in free text, in padding, between
/// integer value types, and tensor offsets or types that still point at in-range,
/// aligned, finite data load as a (different) valid adapter.
fn flip_may_load(field: &str) -> bool {
    field == "padding"
        || field == "trailing padding"
        || field == "general.name key"
        || field == "general.name value"
        || field == "adapter.task_name value"
        || field == "adapter.labels value"
        || field == "tensor offset"
        || field == "tensor type"
        || field.ends_with("block_size value type")
        || field.ends_with("factor_count value type")
}

#[test]
fn single_bit_flips_everywhere() {
    let mut live = Live::new("mlp");
    let mut summary = Vec::new();
    for rel in [ROTATED, PARITY] {
        let (orig, f) = load(rel);
        let layout = f.write().1;
        let (mut ok, mut errs) = ([0usize; 4], [0usize; 4]);
        let mut accepted: BTreeMap<String, usize> = BTreeMap::new();
        let mut bytes = orig.clone();
        for pos in 0..bytes.len() {
            for bit in 0..8 {
                bytes[pos] ^= 1 << bit;
                let what = format!("{rel}: flip bit {bit} of byte {pos}");
                let r = live.attempt(&bytes, &what);
                bytes[pos] ^= 1 << bit;
                let region = if pos < 24 {
                    0
                } else if pos < layout.metadata.end {
                    1
                } else if pos < layout.data_start {
                    2
                } else {
                    3
                };
                match r {
                    Ok(()) => {
                        ok[region] += 1;
                        let field = field_of(pos, &f, &layout);
                        assert!(flip_may_load(&field), "{what} ({field}) was accepted");
                        *accepted.entry(field).or_default() += 1;
                    }
                    Err(_) => errs[region] += 1,
                }
                if pos < 4 {
                    assert_eq!(r, Err(Error::BadMagic), "{what}");
                } else if pos < 8 {
                    let v = 3u32 ^ (1 << (bit + 8 * (pos - 4)));
                    assert_eq!(r, Err(Error::UnsupportedVersion(v)), "{what}");
                } else if (layout.data_start..layout.span_end).contains(&pos) {
                    // CRC-32 detects every single-bit error in the data span.
                    assert!(matches!(r, Err(Error::CrcMismatch { .. })), "{what}: {r:?}");
                } else if pos >= layout.span_end {
                    assert_eq!(r, Ok(()), "{what}: trailing padding");
                }
            }
        }
        summary.push(format!(
            "{rel}: rejected/accepted: header {}/{}, metadata {}/{}, tensor table and padding {}/{}, data {}/{}; accepted by field: {accepted:?}",
            errs[0], ok[0], errs[1], ok[1], errs[2], ok[2], errs[3], ok[3]
        ));
        assert_eq!(ok[0], 0, "{rel}: a header flip was accepted");
    }
    for s in &summary {
        eprintln!("bit flips: {s}");
    }
    eprintln!("bit flips: {} live checks", live.checks);
}

#[test]
fn tensor_offsets_past_the_end_and_unaligned() {
    let mut live = Live::new("mlp");
    for rel in [ROTATED, PARITY] {
        let (_, f) = load(rel);
        for i in 0..f.tensors.len() {
            let what = format!("{rel}: tensor {i}");
            let past = (f.data.len() as u64).next_multiple_of(32);
            for offset in [past, past + 32, u64::MAX - 31, 1 << 62] {
                let mut g = f.clone();
                g.tensors[i].offset = offset;
                live.expect(
                    &g.to_bytes(),
                    Error::TensorOutOfRange { tensor: i as u32 },
                    &what,
                );
            }
            // In range at the start but running past the end.
            let mut g = f.clone();
            g.tensors[i].offset = (f.data.len() as u64 - g.tensors[i].byte_len() / 2) & !31;
            if g.tensors[i].offset + g.tensors[i].byte_len() > f.data.len() as u64 {
                live.expect(
                    &g.to_bytes(),
                    Error::TensorOutOfRange { tensor: i as u32 },
                    &what,
                );
            }
            for delta in [1u64, 2, 4, 8, 16, 31] {
                let mut g = f.clone();
                g.tensors[i].offset += delta;
                live.expect(&g.to_bytes(), Error::Misaligned { tensor: i as u32 }, &what);
            }
        }
        // general.alignment: not a power of two, zero, the wrong type, or larger than
        // the offsets were written for.
        for a in [0u32, 3, 24, 48] {
            let mut g = f.clone();
            g.set("general.alignment", Val::u32(a));
            live.expect(&g.to_bytes(), Error::BadAlignment(a), rel);
        }
        let mut g = f.clone();
        g.set(
            "general.alignment",
            Val::Scalar(10, 32u64.to_le_bytes().to_vec()),
        );
        live.expect(&g.to_bytes(), Error::WrongValueType, rel);
        // A larger alignment than the file was written for: the first tensor whose offset
        // is not a multiple of it is misaligned.
        let align = (6..16)
            .map(|s| 1u64 << s)
            .find(|a| f.tensors.iter().any(|t| t.offset % a != 0))
            .unwrap();
        let mut g = f.clone();
        g.set("general.alignment", Val::u32(align as u32));
        let first = f
            .tensors
            .iter()
            .position(|t| t.offset % align != 0)
            .unwrap();
        live.expect(
            &g.to_bytes(),
            Error::Misaligned {
                tensor: first as u32,
            },
            rel,
        );
    }
}

#[test]
fn wrong_base_model_id_and_kind() {
    let mut live = Live::new("mlp");
    let (_, f) = load(ROTATED);
    let id = f
        .get("adapter.base_model_id")
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id, live.model.model_id());
    let mut other = id.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    let other = String::from_utf8(other).unwrap();
    let cnn_id = Model::from_bytes(&read_repo_file("models/digits/cnn.gguf"))
        .unwrap()
        .model_id()
        .to_string();
    for wrong in [
        other.as_str(),
        cnn_id.as_str(),
        "",
        "not-a-hash",
        &format!("{id}0"),
    ] {
        let mut g = f.clone();
        g.set("adapter.base_model_id", Val::str(wrong)).fix_crc();
        let bytes = g.to_bytes();
        // The CRC passes, so the base check is what fails.
        assert!(Adapter::from_bytes(&bytes).is_ok(), "{wrong:?}");
        live.expect(&bytes, Error::BaseMismatch, wrong);
    }
    // An adapter of another architecture, and one relabelled to this architecture.
    let cnn_adapter = read_repo_file("models/digits/cnn-rotated.gguf");
    live.expect(&cnn_adapter, Error::UnsupportedModel, "cnn adapter on mlp");
    let mut g = GgufFile::parse(&cnn_adapter);
    g.set("general.architecture", Val::str("mlp"));
    live.expect(
        &g.to_bytes(),
        Error::BaseMismatch,
        "cnn adapter relabelled mlp",
    );
    // Not an orthogonal adapter.
    for (key, value) in [
        ("general.type", "model"),
        ("adapter.type", "lora"),
        ("adapter.orthogonal.method", "gsoft2"),
        ("adapter.orthogonal.permutation", "zigzag"),
    ] {
        let mut g = f.clone();
        g.set(key, Val::str(value));
        live.expect(&g.to_bytes(), Error::UnsupportedModel, key);
    }
    // Missing or mistyped keys.
    for key in [
        "adapter.base_model_id",
        "adapter.task_name",
        "adapter.orthogonal.block_size",
        "riffle.data_crc32",
        "general.architecture",
    ] {
        let mut g = f.clone();
        g.remove(key);
        live.expect(&g.to_bytes(), Error::MissingKey { key: KeyName(key) }, key);
        let mut g = f.clone();
        g.set(key, Val::Array(4, vec![Val::u32(1)]));
        live.expect(&g.to_bytes(), Error::WrongValueType, key);
    }
}

#[test]
fn crc_mismatch_is_reported_exactly() {
    let mut live = Live::new("mlp");
    let (_, f) = load(PARITY);
    let stored = f.get("riffle.data_crc32").unwrap().as_u32().unwrap();
    let mut g = f.clone();
    g.set("riffle.data_crc32", Val::u32(stored ^ 1));
    live.expect(
        &g.to_bytes(),
        Error::CrcMismatch {
            stored: stored ^ 1,
            computed: stored,
        },
        "crc",
    );
    // Edited data without a fixed CRC stops at the CRC check.
    let mut g = f.clone();
    g.set_value(0, 0, 0.25);
    assert!(matches!(
        live.attempt(&g.to_bytes(), "data edit"),
        Err(Error::CrcMismatch { .. })
    ));
}

#[test]
fn mismatched_shapes() {
    let mut live = Live::new("mlp");
    let (_, f) = load(ROTATED);
    for i in 0..f.tensors.len() {
        let t = &f.tensors[i];
        let what = format!("{}: dims {:?}", t.name_str(), t.dims);
        let mut variants: Vec<Vec<u64>> = Vec::new();
        if t.dims.len() == 2 {
            variants.push(vec![t.dims[1], t.dims[0]]); // transposed
            variants.push(vec![t.dims[0], t.dims[1] - 1]); // one block short
            variants.push(vec![t.dims[0], 1, t.dims[1]]); // rank 3
            variants.push(vec![t.dims[0] * t.dims[1]]); // flattened
        } else {
            variants.push(vec![t.dims[0] / 2, 2]);
            variants.push(vec![t.dims[0] - 1]);
        }
        for dims in variants {
            let mut g = f.clone();
            g.tensors[i].dims = dims.clone();
            g.fix_crc();
            live.expect(
                &g.to_bytes(),
                Error::ShapeMismatch { tensor: i as u32 },
                &format!("{what} -> {dims:?}"),
            );
        }
    }
    // The parity head: weight (2, 64) and bias (2) must agree with each other and the base.
    let (_, f) = load(PARITY);
    let w = f.tensor_index("layers.2.weight");
    let b = f.tensor_index("layers.2.bias");
    for (i, dims) in [
        (w, vec![32u64, 4]),
        (w, vec![128, 1]),
        (b, vec![1, 2]),
        (b, vec![1]),
    ] {
        let mut g = f.clone();
        g.tensors[i].dims = dims;
        g.fix_crc();
        let r = live.attempt(&g.to_bytes(), "parity head");
        assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
    }
    // Labels that do not match the head's rows.
    let mut g = f.clone();
    g.set(
        "adapter.labels",
        Val::Array(8, vec![Val::str("even"), Val::str("odd"), Val::str("both")]),
    );
    let r = live.attempt(&g.to_bytes(), "labels");
    assert!(matches!(r, Err(Error::ShapeMismatch { .. })), "{r:?}");
}

#[test]
fn block_size_and_factor_count_that_do_not_fit() {
    let mut live = Live::new("mlp");
    let (_, f) = load(ROTATED);
    for b in [3u32, 5, 6, 7, 48] {
        let mut g = f.clone();
        g.set("adapter.orthogonal.block_size", Val::u32(b));
        live.expect(
            &g.to_bytes(),
            Error::NotDivisible { dim: 64, block: b },
            "b",
        );
    }
    for b in [0u32, 1, 65, u32::MAX] {
        let mut g = f.clone();
        g.set("adapter.orthogonal.block_size", Val::u32(b));
        live.expect(&g.to_bytes(), Error::InvalidBlockSize { block: b }, "b");
    }
    for m in [0u32, 17, u32::MAX] {
        let mut g = f.clone();
        g.set("adapter.orthogonal.factor_count", Val::u32(m));
        live.expect(&g.to_bytes(), Error::InvalidFactorCount { factors: m }, "m");
    }
    // b = 16 divides 64, but the tensors were written for b = 8.
    let mut g = f.clone();
    g.set("adapter.orthogonal.block_size", Val::u32(16));
    live.expect(&g.to_bytes(), Error::ShapeMismatch { tensor: 0 }, "b = 16");
    // A real width that b does not divide: the 10-wide output of layers.2 under the
    // Double GSOFT adapter's b = 8.
    let (_, f) = load(INVERTED);
    let mut g = f.clone();
    for t in g.tensors.iter_mut() {
        if t.name.starts_with(b"layers.1.weight.oft_out.") {
            t.name = t.name_str().replace("layers.1", "layers.2").into_bytes();
        }
    }
    live.expect(
        &g.to_bytes(),
        Error::NotDivisible { dim: 10, block: 8 },
        "out = 10",
    );
    // A butterfly too wide for the layer: b·2^(m-1) = 4·32 does not divide 64.
    let (_, f) = load(PARITY);
    let mut g = f.clone();
    g.set("adapter.orthogonal.factor_count", Val::u32(6));
    live.expect(
        &g.to_bytes(),
        Error::ButterflyShape {
            dim: 64,
            block: 4,
            factors: 6,
        },
        "butterfly",
    );
}

#[test]
fn nan_inf_and_zero_parameters_with_a_valid_crc() {
    let mut live = Live::new("mlp");
    let mut cases = 0;
    for rel in [ROTATED, INVERTED, NOISY, PARITY] {
        let (_, f) = load(rel);
        for i in 0..f.tensors.len() {
            let t = &f.tensors[i];
            let n = t.element_count() as usize;
            let is_scale = t.name.ends_with(b".oft_scale");
            for j in [0, n / 2, n - 1] {
                let what = format!("{rel}: {}[{j}]", t.name_str());
                for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut g = f.clone();
                    g.set_value(i, j, v);
                    // Unfixed, the CRC catches it first.
                    assert!(matches!(
                        live.attempt(&g.to_bytes(), &what),
                        Err(Error::CrcMismatch { .. })
                    ));
                    g.fix_crc();
                    live.expect(
                        &g.to_bytes(),
                        Error::NonFiniteParameter { index: j as u32 },
                        &what,
                    );
                    cases += 1;
                }
                if is_scale {
                    for z in [0.0f32, -0.0] {
                        let mut g = f.clone();
                        g.set_value(i, j, z).fix_crc();
                        live.expect(&g.to_bytes(), Error::ZeroScale { index: j as u32 }, &what);
                        cases += 1;
                    }
                }
            }
        }
    }
    eprintln!("non-finite and zero parameters: {cases} cases");
}

/// Issue 23: scales of 1e-40 were accepted and then merged swaps drifted by 1e-2;
/// scales of 1e30 gave NaN unmerged but finite merged. Magnitudes outside
/// `MIN_SCALE..=MAX_SCALE` are refused; at the bounds, merged and unmerged agree and
/// a swap back restores the base weights.
#[test]
fn scales_outside_the_accepted_range_are_refused() {
    use riffle_core::math::{MAX_SCALE, MIN_SCALE};
    let mut live = Live::new("mlp");
    let mut cases = 0;
    for rel in [ROTATED, INVERTED, NOISY, PARITY] {
        let (_, f) = load(rel);
        for i in 0..f.tensors.len() {
            let t = &f.tensors[i];
            if !t.name.ends_with(b".oft_scale") {
                continue;
            }
            let n = t.element_count() as usize;
            // Values the tensor's type holds (an F16 scale cannot be 1e30).
            let bad: &[f32] = if t.ggml_type == ggml::F32 {
                &[1e-40, -1e-40, 1e-7, -2e6, 1e30, -1e30]
            } else {
                &[1.2e-7, -6e-8]
            };
            for j in [0, n / 2, n - 1] {
                for &v in bad {
                    let mut g = f.clone();
                    g.set_value(i, j, v).fix_crc();
                    let what = format!("{rel}: {}[{j}] = {v:e}", t.name_str());
                    live.expect(
                        &g.to_bytes(),
                        Error::ScaleOutOfRange { index: j as u32 },
                        &what,
                    );
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 0);
    // At the bounds: accepted, merged equals unmerged, swapping back restores the base.
    let model = live.model;
    for bound in [MIN_SCALE, -MIN_SCALE, MAX_SCALE, -MAX_SCALE] {
        let (_, f) = load(ROTATED);
        let mut g = f.clone();
        for i in 0..g.tensors.len() {
            if g.tensors[i].name.ends_with(b".oft_scale") {
                for j in 0..g.tensors[i].element_count() as usize {
                    g.set_value(i, j, bound);
                }
            }
        }
        g.fix_crc();
        let bytes: &'static [u8] = g.to_bytes().leak();
        let a = Adapter::from_bytes(bytes).unwrap();
        let mut unmerged = Session::new(model);
        let mut merged = Session::new(model);
        for s in [&mut unmerged, &mut merged] {
            let ws = vec![0.0f32; a.workspace_len(model).unwrap()].leak();
            s.add_adapter(a.prepare(model, ws).unwrap()).unwrap();
        }
        let mut scratch = vec![0.0f32; merged.swap_scratch_len()];
        let w = vec![0.0f32; model.merged_len()].leak();
        merged.enable_merged(w, &mut scratch).unwrap();
        let base = merged.merged_weights().unwrap().to_vec();
        unmerged.activate(Some(0), &mut scratch).unwrap();
        merged.activate(Some(0), &mut scratch).unwrap();
        let mut arena = vec![0.0f32; unmerged.arena_len(0).max(merged.arena_len(0))];
        for x in &live.inputs {
            let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
            let n = unmerged.run(Input::Vector(x), &mut a, &mut arena).unwrap();
            merged.run(Input::Vector(x), &mut b, &mut arena).unwrap();
            let scale = a[..n].iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for k in 0..n {
                assert!(a[k].is_finite() && b[k].is_finite(), "scale {bound:e}");
                // f32 rounding of a few hundred products, relative to the largest output.
                assert!(
                    (a[k] - b[k]).abs() <= 1e-4 * scale,
                    "scale {bound:e}: unmerged {} merged {}",
                    a[k],
                    b[k]
                );
            }
        }
        merged.activate(None, &mut scratch).unwrap();
        // Rotations mix a row's weights, so their rounding is relative to the largest.
        let top = base.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (k, (&x, &y)) in base
            .iter()
            .zip(merged.merged_weights().unwrap())
            .enumerate()
        {
            assert!(
                (x - y).abs() <= 1e-5 * top,
                "scale {bound:e}: weight {k} {x} -> {y} after a round trip"
            );
        }
    }
    eprintln!("out-of-range scales: {cases} cases");
}

#[test]
fn huge_but_finite_parameters_stay_safe() {
    // Finite parameters pass validation; the Cayley blocks of huge ones are still
    // orthogonal (or, past f32's range, a typed NumericalFailure), and runs stay finite
    // for every value an f16 file can hold.
    let mut live = Live::new("mlp");
    for (rel, values) in [
        (ROTATED, &[1e4f32, 1e8, 1e15, 1e19, 1e30, f32::MAX][..]),
        (INVERTED, &[65504.0f32, -65504.0][..]),
    ] {
        let (_, f) = load(rel);
        for &v in values {
            let mut g = f.clone();
            for i in 0..g.tensors.len() {
                if g.tensors[i].name.ends_with(b".oft_scale") {
                    continue;
                }
                for j in 0..g.tensors[i].element_count() as usize {
                    let s = if j % 3 == 0 { -v } else { v };
                    g.set_value(i, j, s);
                }
            }
            g.fix_crc();
            let r = live.attempt(&g.to_bytes(), &format!("{rel}: {v}"));
            assert!(
                r.is_ok() || r == Err(Error::NumericalFailure),
                "{rel}: parameters of {v}: {r:?}"
            );
            if v <= 65504.0 {
                assert_eq!(r, Ok(()), "{rel}: f16-range parameters must prepare");
            }
            eprintln!("parameters of magnitude {v:e} ({rel}): {r:?}");
        }
    }
}

#[test]
fn huge_string_and_array_lengths() {
    let mut live = Live::new("mlp");
    for rel in [ROTATED, PARITY] {
        let (orig, f) = load(rel);
        let (bytes, layout) = f.write();
        assert_eq!(bytes, orig);
        let len = bytes.len() as u64;
        // Every key length, every string value length, every tensor name length.
        let mut fields: Vec<(usize, u64)> = Vec::new(); // (position, cap)
        for (kv, pos) in f.kvs.iter().zip(&layout.kvs) {
            fields.push((pos.key_len, 65_535));
            match &kv.value {
                Val::Str(_) => fields.push((pos.value, 1 << 24)),
                // An array: element type (u32) then the count.
                Val::Array(..) => fields.push((pos.value + 4, 1 << 24)),
                Val::Scalar(..) => {}
            }
        }
        for pos in &layout.tensors {
            fields.push((pos.name_len, 65_535));
        }
        for (pos, cap) in fields {
            for huge in [u64::MAX, 1 << 63, cap + 1, u64::from(u32::MAX) + 1] {
                let mut b = bytes.clone();
                poke_u64(&mut b, pos, huge);
                live.expect(&b, Error::LimitExceeded { offset: pos as u64 }, rel);
            }
            for past in [len, len - pos as u64, cap] {
                if past <= cap && pos as u64 + 8 + past > len {
                    let mut b = bytes.clone();
                    poke_u64(&mut b, pos, past);
                    let r = live.attempt(&b, rel);
                    // A string array's element runs out of bytes (Truncated), or the
                    // stretched field swallows a later structure and fails there.
                    assert!(
                        r == Err(Error::Truncated { offset: pos as u64 })
                            || matches!(
                                r,
                                Err(Error::Truncated { .. }
                                    | Error::InvalidUtf8 { .. }
                                    | Error::LimitExceeded { .. })
                            ),
                        "{rel}: length {past} at {pos}: {r:?}"
                    );
                }
            }
        }
        // Counts in the header.
        for (pos, cap) in [(8usize, 65_536u64), (16, 65_536)] {
            let mut b = bytes.clone();
            poke_u64(&mut b, pos, cap + 1);
            live.expect(&b, Error::LimitExceeded { offset: pos as u64 }, rel);
            let mut b = bytes.clone();
            poke_u64(&mut b, pos, u64::MAX);
            live.expect(&b, Error::LimitExceeded { offset: pos as u64 }, rel);
        }
        // A tensor rank above 4, and dims whose product overflows.
        let t0 = &layout.tensors[0];
        let mut b = bytes.clone();
        poke_u32(&mut b, t0.rank, 5);
        live.expect(
            &b,
            Error::LimitExceeded {
                offset: t0.rank as u64,
            },
            rel,
        );
        let mut g = f.clone();
        g.tensors[0].dims = vec![u64::MAX / 2, 3];
        let (b, l) = g.write();
        live.expect(
            &b,
            Error::LimitExceeded {
                offset: l.tensors[0].dims as u64,
            },
            rel,
        );
    }
}

#[test]
fn duplicate_and_unknown_names() {
    let mut live = Live::new("mlp");
    let (_, f) = load(ROTATED);
    let n = f.tensors.len();
    // Duplicate tensor names: the second occurrence is reported.
    for (i, j) in [(0, 1), (1, 0), (0, n - 1), (n - 1, 0), (3, 5)] {
        let mut g = f.clone();
        g.tensors[i].name = f.tensors[j].name.clone();
        live.expect(
            &g.to_bytes(),
            Error::DuplicateName {
                index: i.max(j) as u32,
            },
            "tensor",
        );
    }
    // Duplicate keys.
    let k = f.kvs.len();
    for (i, j) in [(0, 1), (1, 0), (2, k - 1), (k - 1, 3)] {
        let mut g = f.clone();
        g.kvs[i].key = f.kvs[j].key.clone();
        live.expect(
            &g.to_bytes(),
            Error::DuplicateName {
                index: i.max(j) as u32,
            },
            "key",
        );
    }
    // Names that match nothing in the base.
    for (i, name) in [
        (0, "layers.9.weight.oft_in.0"),
        (1, "bogus"),
        (2, "layers.0.bias.oft_scale"),
        (4, "layers.1.weight.oft_in."),
        (0, "conv.0.weight.oft_in.0"),
        (5, "layers.1.weight.oft_scale2"),
    ] {
        let mut g = f.clone();
        g.tensors[i].name = name.as_bytes().to_vec();
        live.expect(
            &g.to_bytes(),
            Error::UnknownTensor { tensor: i as u32 },
            name,
        );
    }
    // A factor beyond the declared count, and a missing factor.
    let mut g = f.clone();
    g.tensors[1].name = b"layers.0.weight.oft_in.2".to_vec();
    live.expect(
        &g.to_bytes(),
        Error::ShapeMismatch { tensor: 1 },
        "factor 2 of 2",
    );
    let mut g = f.clone();
    g.tensors.remove(1);
    g.fix_crc();
    live.expect(&g.to_bytes(), Error::MissingTensor, "missing factor");
    // Invalid UTF-8 in a tensor name and in a key.
    let mut g = f.clone();
    g.tensors[2].name = b"layers.0.\xff".to_vec();
    let (b, l) = g.write();
    live.expect(
        &b,
        Error::InvalidUtf8 {
            offset: l.tensors[2].name_len as u64,
        },
        "utf8",
    );
    let mut g = f.clone();
    g.kvs[2].key = b"adapter.\xc3(".to_vec();
    let (b, l) = g.write();
    live.expect(
        &b,
        Error::InvalidUtf8 {
            offset: l.kvs[2].key_len as u64,
        },
        "utf8",
    );
}

#[test]
fn unknown_and_unsupported_tensor_types() {
    let mut live = Live::new("mlp");
    let (_, f) = load(ROTATED);
    for code in [7u32, 9, 10, 15, 29, 31, 1000, u32::MAX] {
        let mut g = f.clone();
        g.tensors[0].ggml_type = code;
        live.expect(
            &g.to_bytes(),
            Error::UnknownTensorType {
                tensor: 0,
                ggml_type: code,
            },
            "type",
        );
    }
    // Block types the reader knows (Q4_0, Q4_1, Q5_0: blocks of 32): this tensor's rows
    // are not whole blocks.
    for code in [2u32, 3, 6] {
        let mut g = f.clone();
        g.tensors[0].ggml_type = code;
        live.expect(
            &g.to_bytes(),
            Error::ShapeMismatch { tensor: 0 },
            "block type",
        );
    }
    // I32 parameters (same size as F32): read by the container, refused by validation.
    let mut g = f.clone();
    g.tensors[0].ggml_type = ggml::I32;
    live.expect(
        &g.to_bytes(),
        Error::UnknownTensorType {
            tensor: 0,
            ggml_type: 26,
        },
        "i32",
    );
    // BF16 parameters where F16 ones were (same size): adapters are F32 or F16 only.
    let (_, f) = load(INVERTED);
    let mut g = f.clone();
    g.tensors[0].ggml_type = ggml::BF16;
    live.expect(
        &g.to_bytes(),
        Error::UnknownTensorType {
            tensor: 0,
            ggml_type: 30,
        },
        "bf16",
    );
    // Q8_0 needs an innermost dimension that is a multiple of 32.
    let mut g = f.clone();
    g.tensors[0].ggml_type = ggml::Q8_0;
    live.expect(&g.to_bytes(), Error::ShapeMismatch { tensor: 0 }, "q8_0");
    // Bad magic and versions.
    let bytes = read_repo_file(ROTATED);
    let mut b = bytes.clone();
    b[..4].copy_from_slice(b"GGML");
    live.expect(&b, Error::BadMagic, "magic");
    for v in [0u32, 1, 2, 4, u32::MAX] {
        let mut b = bytes.clone();
        poke_u32(&mut b, 4, v);
        live.expect(&b, Error::UnsupportedVersion(v), "version");
    }
    // A model where an adapter was expected, and an adapter where a model was expected.
    live.expect(
        &read_repo_file("models/digits/mlp.gguf"),
        Error::UnsupportedModel,
        "base",
    );
    assert_eq!(
        Model::from_bytes(&bytes).err(),
        Some(Error::UnsupportedModel),
        "adapter loaded as a model"
    );
}

#[test]
fn failed_activations_change_nothing() {
    let mut live = Live::new("mlp");
    let mut scratch = vec![0.0f32; live.merged.swap_scratch_len()];
    for s in [&mut live.unmerged, &mut live.merged] {
        for h in [4usize, 8, 99, usize::MAX] {
            assert_eq!(s.activate(Some(h), &mut scratch), Err(Error::UnknownTask));
        }
    }
    live.check("unknown handles");
    // Merged swaps need their scratch; a short one is refused before any weight moves.
    let need = live.merged.swap_scratch_len();
    for short in [0, 1, need / 2, need - 1] {
        for h in [None, Some(0), Some(2), Some(3)] {
            let r = live.merged.activate(h, &mut scratch[..short]);
            assert_eq!(
                r,
                Err(Error::BufferTooSmall {
                    needed: need,
                    got: short
                })
            );
        }
    }
    live.check("short scratch");
    // An adapter prepared for another base is refused by the session.
    let cnn = Model::from_bytes(leak_bytes("models/digits/cnn.gguf")).unwrap();
    let a = Adapter::from_bytes(leak_bytes("models/digits/cnn-rotated.gguf")).unwrap();
    let mut ws = vec![0.0f32; a.workspace_len(&cnn).unwrap()];
    let p = a.prepare(&cnn, &mut ws).unwrap();
    let mut s2 = Session::new(live.model);
    assert_eq!(s2.add_adapter(p.clone()).err(), Some(Error::BaseMismatch));
    // ... and by a run.
    let mut out = [0.0f32; 16];
    let mut arena = vec![0.0f32; live.unmerged.arena_len(0)];
    let x = live.inputs[0].clone();
    assert_eq!(
        live.model
            .run(Some(&p), Input::Vector(&x), &mut out, &mut arena)
            .err(),
        Some(Error::BaseMismatch)
    );
    live.check("foreign adapter");
    // Capacity: eight residents at most.
    let extra = Adapter::from_bytes(leak_bytes(ROTATED)).unwrap();
    let ws = vec![0.0f32; extra.workspace_len(live.model).unwrap()].leak();
    let p = extra.prepare(live.model, ws).unwrap();
    for _ in 4..8 {
        live.unmerged.add_adapter(p.clone()).unwrap();
    }
    assert_eq!(
        live.unmerged.add_adapter(p.clone()).err(),
        Some(Error::CapacityExceeded)
    );
    live.check("capacity");
    // A session sized by its owner (a firmware sizes it to what it holds).
    let mut small = Session::<2>::with_capacity(live.model);
    small.add_adapter(p.clone()).unwrap();
    small.add_adapter(p.clone()).unwrap();
    assert_eq!(
        small.add_adapter(p.clone()).err(),
        Some(Error::CapacityExceeded)
    );
    // Bad buffers and inputs.
    let mut wrong = vec![0.0f32; live.model.merged_len() - 1];
    let mut right = vec![0.0f32; live.model.merged_len()];
    let mut s3 = Session::new(live.model);
    assert!(matches!(
        s3.enable_merged(&mut wrong, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(!s3.is_merged());
    assert!(matches!(
        s3.enable_merged(&mut right, &mut scratch[..1]),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(!s3.is_merged());
    for bad in [&x[..63], &[][..], &[0.0f32; 65][..]] {
        assert_eq!(
            live.unmerged
                .run(Input::Vector(bad), &mut out, &mut arena)
                .err(),
            Some(Error::BadInput)
        );
    }
    assert_eq!(
        live.unmerged
            .run(Input::Tokens(&[1, 2]), &mut out, &mut arena)
            .err(),
        Some(Error::BadInput)
    );
    assert!(matches!(
        live.unmerged
            .run(Input::Vector(&x), &mut out, &mut arena[..10]),
        Err(Error::BufferTooSmall { .. })
    ));
    assert!(matches!(
        live.unmerged
            .run(Input::Vector(&x), &mut out[..3], &mut arena),
        Err(Error::BufferTooSmall { .. })
    ));
    live.check("bad buffers");
}

#[test]
fn cnn_adapters_truncated_and_flipped() {
    // The same guarantees on the CNN base (convolution slots), on a smaller sample.
    let mut live = Live::new("cnn");
    for rel in [
        "models/digits/cnn-parity.gguf",
        "models/digits/cnn-inverted.gguf",
    ] {
        let (bytes, f) = load(rel);
        let layout = f.write().1;
        for len in 0..layout.span_end {
            let r = live.attempt(&bytes[..len], rel);
            assert!(
                matches!(
                    r,
                    Err(Error::Truncated { .. } | Error::TensorOutOfRange { .. })
                ),
                "{rel}: {len}: {r:?}"
            );
        }
        let mut b = bytes.clone();
        for pos in (0..layout.data_start).step_by(3) {
            for bit in [0, 5] {
                b[pos] ^= 1 << bit;
                let _ = live.attempt(&b, rel);
                b[pos] ^= 1 << bit;
            }
        }
        for i in 0..f.tensors.len() {
            let mut g = f.clone();
            g.set_value(i, 0, f32::NAN).fix_crc();
            live.expect(&g.to_bytes(), Error::NonFiniteParameter { index: 0 }, rel);
        }
    }
}

/// Builds a copy of `rel` whose block 0 of tensor 0 holds order-1 values and one `huge`
/// (rounded to the tensor's type, CRC fixed): of 64 such blocks, the one whose f32 Cayley
/// block is furthest from orthogonal. Returns the file and that block's defect.
fn worst_block_adapter(rel: &str, huge: f32) -> (Vec<u8>, f64) {
    use riffle_core::math::{cayley, Scalars};
    let (_, f) = load(rel);
    let f16 = f.tensors[0].ggml_type == ggml::F16;
    let round = |x: f32| {
        if f16 {
            half::f16::from_f32(x).to_f32()
        } else {
            x
        }
    };
    let b = f
        .get("adapter.orthogonal.block_size")
        .unwrap()
        .as_u32()
        .unwrap() as usize;
    let np = b * (b - 1) / 2;
    let mut state = 7u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    };
    let mut worst = (f64::NEG_INFINITY, Vec::new());
    for _ in 0..64 {
        let mut p: Vec<f32> = (0..np).map(|_| round(next() as f32)).collect();
        p[((next() + 1.0) * np as f64) as usize % np] = round(huge);
        let (mut c, mut scratch) = (vec![0.0f32; b * b], vec![0.0f32; b * b]);
        let defect = match cayley(Scalars::F32(&p), b, &mut c, &mut scratch) {
            Ok(()) => (0..b * b)
                .map(|ij| {
                    let (i, j) = (ij / b, ij % b);
                    let d: f64 = (0..b)
                        .map(|r| c[r * b + i] as f64 * c[r * b + j] as f64)
                        .sum();
                    (d - f64::from(u8::from(i == j))).abs()
                })
                .fold(0.0, f64::max),
            Err(_) => 0.0,
        };
        if defect > worst.0 {
            worst = (defect, p);
        }
    }
    let mut g = f.clone();
    for (j, &v) in worst.1.iter().enumerate() {
        g.set_value(0, j, v);
    }
    g.fix_crc();
    (g.to_bytes(), worst.0)
}

/// A finite parameter that passes validation must give a rotation: activating the adapter
/// in merged mode and switching back must restore the previous weights up to the swap
/// drift bound (gs-math.md section 7), or `prepare` must refuse it with a typed error.
/// Cases: mlp-rotated (F32) with one 1e12, mlp-noisy (F16) with one 65504 (the f16
/// maximum, a value an exporter can write).
#[test]
fn a_validated_adapter_cannot_corrupt_merged_weights() {
    let model = Model::from_bytes(leak_bytes("models/digits/mlp.gguf")).unwrap();
    let parity = Adapter::from_bytes(leak_bytes(PARITY)).unwrap();
    let mut ws_a = vec![0.0f32; parity.workspace_len(&model).unwrap()];
    let pa = parity.prepare(&model, &mut ws_a).unwrap();
    let mut failures = Vec::new();
    for (rel, huge) in [(ROTATED, 1e12f32), (NOISY, 65504.0)] {
        let (bytes, defect) = worst_block_adapter(rel, huge);
        let adapter = Adapter::from_bytes(&bytes).unwrap();
        let mut ws = vec![0.0f32; adapter.workspace_len(&model).unwrap()];
        let pb = match adapter.prepare(&model, &mut ws) {
            Ok(p) => p,
            Err(e) => {
                assert_eq!(e, Error::NumericalFailure);
                continue;
            }
        };
        let mut weights = vec![0.0f32; model.merged_len()];
        let mut s = Session::new(&model);
        s.add_adapter(pa.clone()).unwrap();
        s.add_adapter(pb).unwrap();
        let mut scratch = vec![0.0f32; s.swap_scratch_len()];
        s.activate(Some(0), &mut scratch).unwrap();
        s.enable_merged(&mut weights, &mut scratch).unwrap();
        let before = s.merged_weights().unwrap().to_vec();
        s.activate(Some(1), &mut scratch).unwrap();
        s.activate(Some(0), &mut scratch).unwrap();
        let after = s.merged_weights().unwrap();
        let err: f64 = before
            .iter()
            .zip(after)
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm: f64 = before
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        // Two swaps between adapters with m_in <= 2, m_out = 0, plus the merge term:
        // 3·2·2·2^-24.
        let rel_change = err / norm;
        eprintln!("{rel} with {huge:e}: block defect {defect:.1e}, A -> it -> A moved A's weights by {rel_change:.1e}");
        if rel_change > 12.0 / 16_777_216.0 {
            failures.push(format!(
                "{rel} with {huge:e}: defect {defect:.1e}, weights moved {rel_change:.1e}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// Issue 23: messages that misled. `mlp.activation = gelu` read as "unsupported
/// model", `layer_count = 0` as "a fixed-capacity table is full", and the text for a
/// type the reader knows but an operation refuses listed that very type as supported.
#[test]
fn errors_name_what_is_wrong() {
    let (_, base) = load("models/digits/mlp.gguf");
    let mut g = base.clone();
    g.set("mlp.activation", Val::str("gelu"));
    assert_eq!(
        Model::from_bytes(&g.to_bytes()).err(),
        Some(Error::UnsupportedValue {
            key: riffle_core::KeyName("mlp.activation")
        })
    );
    let mut g = base.clone();
    g.set("mlp.layer_count", Val::u32(0));
    let e = Model::from_bytes(&g.to_bytes()).err().unwrap();
    assert_eq!(
        e,
        Error::UnsupportedValue {
            key: riffle_core::KeyName("mlp.layer_count")
        }
    );
    assert!(e.to_string().contains("mlp.layer_count"), "{e}");
    let known = Error::UnknownTensorType {
        tensor: 3,
        ggml_type: 26,
    }
    .to_string();
    assert!(
        known.contains("I32") && !known.contains("supported:"),
        "{known}"
    );
    let unknown = Error::UnknownTensorType {
        tensor: 3,
        ggml_type: 99,
    }
    .to_string();
    assert!(unknown.contains("unsupported type 99"), "{unknown}");
}
