//! Adapters that replace the bias of a layer they also rotate (a bias trained alongside
//! the rotation, as PEFT's `bias="oft_only"`/`"all"`): format.md lets any base tensor be
//! replaced. The digits GSOFT adapter with a new `layers.0.bias` must give exactly what the
//! base with that bias and the plain adapter gives (unmerged), agree merged, survive
//! in-place swaps, and an adapter replacing the *weight* of a rotated layer is refused
//! with an error that says so.

use riffle_core::runtime::{Adapter, Input, Model, Session};
use riffle_core::Error;
use riffle_tests::gguf_edit::{GgufFile, TensorEntry};
use riffle_tests::read_repo_file;

/// `file` with a new F32 tensor `name` of shape `dims` (GGUF order) appended.
fn with_tensor(file: &[u8], name: &str, dims: Vec<u64>, values: &[f32]) -> Vec<u8> {
    let mut g = GgufFile::parse(file);
    let align = g.alignment();
    let offset = g.span_end().next_multiple_of(align);
    g.data.truncate(g.span_end());
    g.data.resize(offset, 0);
    for v in values {
        g.data.extend(v.to_le_bytes());
    }
    g.tensors.push(TensorEntry {
        name: name.as_bytes().to_vec(),
        dims,
        ggml_type: 0,
        offset: offset as u64,
    });
    g.fix_crc();
    g.to_bytes()
}

fn new_bias() -> Vec<f32> {
    (0..64)
        .map(|i| ((i * 37) % 11) as f32 * 0.05 - 0.2)
        .collect()
}

fn outputs(model: &Model<'_>, adapter: &Adapter<'_>, merged: bool) -> Vec<Vec<f32>> {
    let mut ws = vec![0.0f32; adapter.workspace_len(model).unwrap()];
    let mut weights = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(model);
    let h = session
        .add_adapter(adapter.prepare(model, &mut ws).unwrap())
        .unwrap();
    let mut scratch = vec![0.0f32; session.swap_fast_scratch_len()];
    session.activate(Some(h), &mut scratch).unwrap();
    if merged {
        session.enable_merged(&mut weights, &mut scratch).unwrap();
        // Swap away and back: the replaced bias is not part of the merged weights.
        session.activate(None, &mut scratch).unwrap();
        session.activate(Some(h), &mut scratch).unwrap();
    }
    let mut arena = vec![0.0f32; session.arena_len(0)];
    (0..20)
        .map(|i| {
            let x: Vec<f32> = (0..64)
                .map(|j| ((i * 7 + j * 3) % 17) as f32 / 16.0)
                .collect();
            let mut out = vec![0.0f32; 10];
            session
                .run(Input::Vector(&x), &mut out, &mut arena)
                .unwrap();
            out
        })
        .collect()
}

#[test]
fn a_replaced_bias_on_a_rotated_layer_applies_unmerged_merged_and_across_swaps() {
    let base = read_repo_file("models/digits/mlp.gguf");
    let adapter = read_repo_file("models/digits/mlp-rotated.gguf");
    let bias = new_bias();
    // The adapter with the bias of layers.0 replaced.
    let with_bias = with_tensor(&adapter, "layers.0.bias", vec![64], &bias);
    // The base with that bias written in place (riffle.model_id kept: the data changes,
    // the stored id does not, so the plain adapter still binds).
    let mut g = GgufFile::parse(&base);
    let i = g.tensor_index("layers.0.bias");
    for (j, v) in bias.iter().enumerate() {
        g.set_value(i, j, *v);
    }
    let edited_base = g.to_bytes();

    let model = Model::from_bytes(&base).unwrap();
    let edited = Model::from_bytes(&edited_base).unwrap();
    let a_bias = Adapter::from_bytes(&with_bias).unwrap();
    let a_plain = Adapter::from_bytes(&adapter).unwrap();

    let want = outputs(&edited, &a_plain, false);
    let got = outputs(&model, &a_bias, false);
    assert_eq!(
        got, want,
        "unmerged: the replaced bias is the edited base's"
    );
    let plain = outputs(&model, &a_plain, false);
    assert_ne!(got, plain, "the replacement changes the outputs");
    let merged = outputs(&model, &a_bias, true);
    for (m, u) in merged.iter().zip(&got) {
        for (a, b) in m.iter().zip(u) {
            assert!((a - b).abs() < 1e-4, "merged {a} vs unmerged {b}");
        }
    }
}

#[test]
fn replacing_the_weight_of_a_rotated_layer_is_refused_by_name() {
    let base = read_repo_file("models/digits/mlp.gguf");
    let adapter = read_repo_file("models/digits/mlp-rotated.gguf");
    let w: Vec<f32> = vec![0.01; 64 * 64];
    let bad = with_tensor(&adapter, "layers.1.weight", vec![64, 64], &w);
    let model = Model::from_bytes(&base).unwrap();
    let a = Adapter::from_bytes(&bad).unwrap();
    let e = a.workspace_len(&model).unwrap_err();
    assert!(matches!(e, Error::RotatedReplacement { .. }), "{e:?}");
    assert!(e.to_string().contains("also rotates"));
}
