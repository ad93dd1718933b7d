//! riffle-core's math against golden vectors computed by an independent float64
//! implementation (tests/data/math/make_golden.py), including PEFT's OFT and BOFT
//! formulas with the sign and factor-order conversions of gs-math.md.

use half::f16;
use riffle_core::math::{
    prepare_chain, swap_scratch_len, ChainSpec, LayerTransform, Permutation, Scalars, WeightsMut,
};
use riffle_tests::{data_path, max_abs_diff, norm, widen};
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(data_path("math/golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .flat_map(|x| match x {
            Value::Array(_) => f64s(x),
            _ => vec![x.as_f64().expect("number")],
        })
        .collect()
}

fn perm(name: &str) -> Permutation {
    Permutation::from_name(name).expect("known permutation")
}

/// Packed parameters per factor, stored as f32 or f16 as the case says.
struct Params {
    f32s: Vec<Vec<f32>>,
    f16s: Vec<Vec<f16>>,
    is_f16: bool,
}

impl Params {
    fn from_json(params: &Value, dtype: &str) -> Self {
        let per: Vec<Vec<f64>> = params.as_array().unwrap().iter().map(f64s).collect();
        Params {
            f32s: per
                .iter()
                .map(|p| p.iter().map(|&x| x as f32).collect())
                .collect(),
            f16s: per
                .iter()
                .map(|p| p.iter().map(|&x| f16::from_f64(x)).collect())
                .collect(),
            is_f16: dtype == "f16",
        }
    }
    fn scalars(&self) -> Vec<Scalars<'_>> {
        if self.is_f16 {
            self.f16s.iter().map(|p| Scalars::F16(p)).collect()
        } else {
            self.f32s.iter().map(|p| Scalars::F32(p)).collect()
        }
    }
}

#[test]
fn chains_match_float64_reference_and_peft() {
    let g = golden();
    let cases = g["chains"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let n = c["n"].as_u64().unwrap() as usize;
        let b = c["b"].as_u64().unwrap() as usize;
        let m = c["m"].as_u64().unwrap() as usize;
        let spec = ChainSpec::new(n, b, m, perm(c["permutation"].as_str().unwrap())).unwrap();
        let params = Params::from_json(&c["params"], c["dtype"].as_str().unwrap());
        let mut blocks = vec![0.0f32; spec.blocks_len()];
        let mut scratch = vec![0.0f32; spec.prepare_scratch_len().max(spec.apply_scratch_len())];
        let q = prepare_chain(spec, &params.scalars(), &mut blocks, &mut scratch).unwrap();
        let x: Vec<f32> = f64s(&c["x"]).iter().map(|&v| v as f32).collect();
        let xn = norm(&widen(&x));
        // gs-math.md section 9: relative 1e-5, plus the large-parameter term of the block bound.
        let smax = f64s(&c["params"])
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()));
        let tol = (1e-5 + 2f64.powi(-23) * smax * (b * b) as f64) * m as f64 * xn.max(1.0);
        for (key, transpose) in [("qx", false), ("qtx", true)] {
            let mut y = x.clone();
            q.apply(&mut y, transpose, &mut scratch).unwrap();
            let err = max_abs_diff(&widen(&y), &f64s(&c[key]));
            assert!(err <= tol, "{name} {key}: error {err:e} > {tol:e}");
        }
        if let Some(dq) = c.get("dense_q") {
            let mut dense = vec![0.0f32; n * n];
            q.to_dense(&mut dense, &mut scratch).unwrap();
            let err = max_abs_diff(&widen(&dense), &f64s(dq));
            assert!(err <= 1e-5 * m as f64, "{name} dense Q: error {err:e}");
        }
    }
}

fn side<'a>(
    v: &Value,
    n: usize,
    store: &'a mut Vec<f32>,
    scratch: &mut [f32],
    params: &'a mut Option<Params>,
) -> Option<riffle_core::math::Chain<'a>> {
    if v.is_null() {
        return None;
    }
    let b = v["b"].as_u64().unwrap() as usize;
    let m = v["m"].as_u64().unwrap() as usize;
    let spec = ChainSpec::new(n, b, m, perm(v["permutation"].as_str().unwrap())).unwrap();
    *params = Some(Params::from_json(&v["params"], "f32"));
    store.resize(spec.blocks_len(), 0.0);
    Some(prepare_chain(spec, &params.as_ref().unwrap().scalars(), store, scratch).unwrap())
}

#[test]
fn merges_match_float64_reference() {
    let g = golden();
    for c in g["merges"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let rows = c["rows"].as_u64().unwrap() as usize;
        let cols = c["cols"].as_u64().unwrap() as usize;
        let mut scratch = vec![0.0f32; swap_scratch_len(rows, cols)];
        let (mut bi, mut bo) = (Vec::new(), Vec::new());
        let (mut pi, mut po) = (None, None);
        let q_in = side(&c["q_in"], cols, &mut bi, &mut scratch, &mut pi);
        let q_out = side(&c["q_out"], rows, &mut bo, &mut scratch, &mut po);
        let scale: Option<Vec<f32>> =
            (!c["scale"].is_null()).then(|| f64s(&c["scale"]).iter().map(|&v| v as f32).collect());
        let t = LayerTransform {
            q_in,
            q_out,
            scale: scale.as_deref().map(Scalars::F32),
        };
        let w = f64s(&c["w"]);
        let want = f64s(&c["merged"]);
        let wn = norm(&want);
        let got: Vec<f64> = if c["weight_dtype"] == "f16" {
            let mut wh: Vec<f16> = w.iter().map(|&v| f16::from_f64(v)).collect();
            riffle_core::math::merge(WeightsMut::F16(&mut wh), rows, cols, &t, &mut scratch)
                .unwrap();
            wh.iter().map(|h| h.to_f64()).collect()
        } else {
            let mut wf: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            riffle_core::math::merge(WeightsMut::F32(&mut wf), rows, cols, &t, &mut scratch)
                .unwrap();
            widen(&wf)
        };
        let rel = norm(
            &got.iter()
                .zip(&want)
                .map(|(a, b)| a - b)
                .collect::<Vec<_>>(),
        ) / wn;
        let tol = if c["weight_dtype"] == "f16" {
            2f64.powi(-10)
        } else {
            1e-5
        };
        assert!(rel <= tol, "{name}: relative error {rel:e} > {tol:e}");
    }
}
