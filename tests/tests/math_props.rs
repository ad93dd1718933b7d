//! Property tests of the orthogonal-adapter math (issue: "tests must be able to fail").
//! References come from `riffle_tests::reference`, an independent float64 implementation.

use half::f16;
use proptest::prelude::*;
use riffle_core::math::{
    merge, prepare_chain, swap, swap_fast_scratch_len, swap_scratch_len, unmerge, Chain, ChainSpec,
    LayerTransform, Permutation, Scalars, WeightsMut,
};
use riffle_tests::reference::chain_dense;
use riffle_tests::{max_abs_diff, norm, widen};

/// A random valid chain configuration with parameters.
#[derive(Debug, Clone)]
struct Case {
    n: usize,
    b: usize,
    m: usize,
    perm: Permutation,
    params: Vec<Vec<f32>>,
    f16_params: bool,
}

impl Case {
    fn spec(&self) -> ChainSpec {
        ChainSpec::new(self.n, self.b, self.m, self.perm).unwrap()
    }
    /// Parameters as the runtime stores them, and the same values in f64 for the reference.
    fn stored(&self) -> (Vec<Vec<f16>>, Vec<Vec<f64>>) {
        let h: Vec<Vec<f16>> = self
            .params
            .iter()
            .map(|p| p.iter().map(|&v| f16::from_f32(v)).collect())
            .collect();
        let wide = if self.f16_params {
            h.iter()
                .map(|p| p.iter().map(|v| v.to_f64()).collect())
                .collect()
        } else {
            self.params.iter().map(|p| widen(p)).collect()
        };
        (h, wide)
    }
    fn smax(&self) -> f64 {
        self.params
            .iter()
            .flatten()
            .fold(0.0f64, |a, &v| a.max(v.abs() as f64))
    }
    /// gs-math.md section 9 bound for a chain (per entry), with ||S||_F <= b·max|p|.
    fn bound(&self) -> f64 {
        self.m as f64 * (1e-5 + 2f64.powi(-23) * self.smax() * self.b as f64)
    }
}

fn perm_name(p: Permutation) -> &'static str {
    p.name()
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        0usize..3,
        2usize..=12,
        1usize..=8,
        1usize..=3,
        prop_oneof![Just(0.05f32), Just(1.0f32), Just(30.0f32), Just(1000.0f32)],
        any::<bool>(),
    )
        .prop_flat_map(|(kind, b, k, m, mag, f16p)| {
            let (perm, b, k, m) = match kind {
                0 => (Permutation::None, b, k, 1),
                1 => (Permutation::Gs, b, k, m),
                // Butterfly: even b, k a multiple of 2^(m-1).
                _ => (Permutation::Butterfly, b + b % 2, k * (1 << (m - 1)), m),
            };
            let n = b * k;
            let np = k * b * (b - 1) / 2;
            (
                Just((perm, n, b, m, f16p)),
                proptest::collection::vec(proptest::collection::vec(-mag..mag, np), m),
            )
        })
        .prop_map(|((perm, n, b, m, f16_params), params)| Case {
            n,
            b,
            m,
            perm,
            params,
            f16_params,
        })
}

/// Prepares the chain of a case into `blocks`.
fn prepare<'w>(c: &Case, h: &[Vec<f16>], blocks: &'w mut Vec<f32>) -> Chain<'w> {
    let spec = c.spec();
    blocks.resize(spec.blocks_len(), 0.0);
    let mut scratch = vec![0.0f32; spec.prepare_scratch_len()];
    let scal: Vec<Scalars> = if c.f16_params {
        h.iter().map(|p| Scalars::F16(p)).collect()
    } else {
        c.params.iter().map(|p| Scalars::F32(p)).collect()
    };
    prepare_chain(spec, &scal, blocks, &mut scratch).unwrap()
}

fn dense(q: &Chain) -> Vec<f32> {
    let n = q.spec().width();
    let mut d = vec![0.0f32; n * n];
    let mut s = vec![0.0f32; q.spec().apply_scratch_len()];
    q.to_dense(&mut d, &mut s).unwrap();
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn chain_is_orthogonal(c in case_strategy()) {
        let (h, _) = c.stored();
        let mut blocks = Vec::new();
        let q = prepare(&c, &h, &mut blocks);
        let n = c.n;
        let d = widen(&dense(&q));
        let mut worst = 0.0f64;
        for i in 0..n {
            for j in 0..n {
                let dotp: f64 = (0..n).map(|r| d[r * n + i] * d[r * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((dotp - want).abs());
            }
        }
        prop_assert!(worst <= c.bound(), "||Q^T Q - I||_max = {worst:e} > {:e}", c.bound());
    }

    #[test]
    fn apply_equals_dense_reference(c in case_strategy(), seed in any::<u64>()) {
        let (h, wide) = c.stored();
        let mut blocks = Vec::new();
        let q = prepare(&c, &h, &mut blocks);
        let reference = chain_dense(&wide, c.n, c.b, perm_name(c.perm));
        let mut rng = seed;
        let x: Vec<f32> = (0..c.n).map(|_| { rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); ((rng >> 40) as f32 / (1u64 << 24) as f32) - 0.5 }).collect();
        let mut s = vec![0.0f32; q.spec().apply_scratch_len()];
        let xn = norm(&widen(&x)).max(1e-3);
        for transpose in [false, true] {
            let mut y = x.clone();
            q.apply(&mut y, transpose, &mut s).unwrap();
            let want = if transpose { reference.t().mul_vec(&widen(&x)) } else { reference.mul_vec(&widen(&x)) };
            let err = max_abs_diff(&widen(&y), &want) / xn;
            prop_assert!(err <= c.bound() * (c.b as f64).sqrt(), "transpose={transpose}: relative error {err:e}");
        }
    }

    #[test]
    fn feature_major_batch_equals_per_row_apply(c in case_strategy(), batch in 1usize..=9, transpose in any::<bool>()) {
        let (h, _) = c.stored();
        let mut blocks = Vec::new();
        let q = prepare(&c, &h, &mut blocks);
        let n = c.n;
        let rows: Vec<f32> = (0..batch * n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02).collect();
        let mut per_row = rows.clone();
        let mut s = vec![0.0f32; q.spec().apply_scratch_len()];
        q.apply_rows(&mut per_row, transpose, &mut s).unwrap();
        // The same vectors as columns of a feature-major (n × batch) matrix.
        let mut xt = vec![0.0f32; n * batch];
        for r in 0..batch {
            for i in 0..n {
                xt[i * batch + r] = rows[r * n + i];
            }
        }
        // Out of place (the forward pass's form): the same values as in place.
        let mut out = vec![f32::NAN; batch * n];
        q.apply_rows_from(&rows, &mut out, transpose, &mut s).unwrap();
        for (i, (a, b)) in out.iter().zip(&per_row).enumerate() {
            prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "apply_rows_from entry {i}: {a} vs {b}");
        }
        let mut cs = vec![0.0f32; q.columns_scratch_len(batch)];
        q.apply_columns(&mut xt, batch, transpose, &mut cs).unwrap();
        for r in 0..batch {
            for i in 0..n {
                let (a, b) = (xt[i * batch + r], per_row[r * n + i]);
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "row {r} entry {i}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn zero_parameters_give_identity_exactly(c in case_strategy()) {
        let zero = Case { params: c.params.iter().map(|p| vec![0.0; p.len()]).collect(), ..c };
        let (h, _) = zero.stored();
        let mut blocks = Vec::new();
        let q = prepare(&zero, &h, &mut blocks);
        let d = dense(&q);
        for i in 0..zero.n {
            for j in 0..zero.n {
                prop_assert_eq!(d[i * zero.n + j], if i == j { 1.0 } else { 0.0 });
            }
        }
        let x: Vec<f32> = (0..zero.n).map(|i| i as f32 * 0.37 - 1.0).collect();
        let mut y = x.clone();
        let mut s = vec![0.0f32; q.spec().apply_scratch_len()];
        q.apply(&mut y, false, &mut s).unwrap();
        prop_assert_eq!(y, x);
    }

    #[test]
    fn transpose_inverts_apply(c in case_strategy()) {
        let (h, _) = c.stored();
        let mut blocks = Vec::new();
        let q = prepare(&c, &h, &mut blocks);
        let x: Vec<f32> = (0..c.n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
        let mut y = x.clone();
        let mut s = vec![0.0f32; q.spec().apply_scratch_len()];
        q.apply(&mut y, false, &mut s).unwrap();
        q.apply(&mut y, true, &mut s).unwrap();
        let err = max_abs_diff(&widen(&y), &widen(&x)) / norm(&widen(&x)).max(1.0);
        prop_assert!(err <= 2.0 * c.bound() * (c.b as f64).sqrt(), "Q^T Q x != x: {err:e}");
    }

    #[test]
    fn gsoft_with_b_at_least_k_is_dense(b in 2usize..=8, k in 1usize..=8, seed in any::<u64>()) {
        prop_assume!(b >= k);
        let n = b * k;
        let np = k * b * (b - 1) / 2;
        let mut rng = seed | 1;
        let mut draw = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; 0.2 + (rng >> 40) as f32 / (1u64 << 24) as f32 };
        let params: Vec<Vec<f32>> = (0..2).map(|_| (0..np).map(|_| draw()).collect()).collect();
        let c = Case { n, b, m: 2, perm: Permutation::Gs, params, f16_params: false };
        let (h, _) = c.stored();
        let mut blocks = Vec::new();
        let q = prepare(&c, &h, &mut blocks);
        let d = dense(&q);
        prop_assert!(d.iter().all(|&v| v != 0.0), "structural zero in GSOFT with b >= n/b");
    }

    #[test]
    fn merge_unmerge_roundtrip_and_swap(a in case_strategy(), bb in case_strategy(), rows in 1usize..=12, seed in any::<u64>(), double in any::<bool>()) {
        // Two adapters on the input side of one (rows, n) weight; B gets A's width.
        let n = a.n;
        let b_case = Case { n, b: a.b, m: bb.m.min(a.m), perm: a.perm, params: Vec::new(), f16_params: bb.f16_params };
        let np = n / a.b * a.b * (a.b - 1) / 2;
        let b_case = Case { params: (0..b_case.m).map(|f| (0..np).map(|i| ((i * 31 + f * 17) as f32 * 0.013).sin() * 0.8).collect()).collect(), ..b_case };
        let (ha, _) = a.stored();
        let (hb, _) = b_case.stored();
        let (mut ba, mut bbk) = (Vec::new(), Vec::new());
        let qa = prepare(&a, &ha, &mut ba);
        let qb = prepare(&b_case, &hb, &mut bbk);
        // Output side for the double-sided variant: OFT with b = rows (when rows >= 2).
        let out_params: Vec<f32> = (0..rows * (rows.saturating_sub(1)) / 2).map(|i| (i as f32 * 0.7).cos() * 0.5).collect();
        let mut out_blocks = Vec::new();
        let q_out = if double && rows >= 2 {
            let spec = ChainSpec::new(rows, rows, 1, Permutation::None).unwrap();
            out_blocks.resize(spec.blocks_len(), 0.0);
            let mut s = vec![0.0f32; spec.prepare_scratch_len()];
            Some(prepare_chain(spec, &[Scalars::F32(&out_params)], &mut out_blocks, &mut s).unwrap())
        } else { None };
        let sa: Vec<f32> = (0..rows).map(|r| 0.6 + 0.05 * r as f32).collect();
        let sb: Vec<f32> = (0..rows).map(|r| 1.3 - 0.04 * r as f32).collect();
        let ta = LayerTransform { q_in: Some(qa), q_out, scale: Some(Scalars::F32(&sa)) };
        let tb = LayerTransform { q_in: Some(qb), q_out: None, scale: Some(Scalars::F32(&sb)) };

        let mut rng = seed | 1;
        let w0: Vec<f32> = (0..rows * n).map(|_| { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; (rng >> 40) as f32 / (1u64 << 23) as f32 - 1.0 }).collect();
        let w0n = norm(&widen(&w0)).max(1e-6);
        let mut scratch = vec![0.0f32; swap_scratch_len(rows, n)];
        // gs-math.md section 9: relative 1e-5 per chain, plus the large-parameter block term.
        let out_bound = if double { 1e-5 } else { 0.0 };
        let tol = |k: f64| k * (a.bound() + b_case.bound() + out_bound);

        // merge A then unmerge A returns W.
        let mut w = w0.clone();
        merge(WeightsMut::F32(&mut w), rows, n, &ta, &mut scratch).unwrap();
        let mut back = w.clone();
        unmerge(WeightsMut::F32(&mut back), rows, n, &ta, &mut scratch).unwrap();
        let rel = norm(&widen(&back).iter().zip(widen(&w0)).map(|(x, y)| x - y).collect::<Vec<_>>()) / w0n;
        prop_assert!(rel <= tol(2.0), "merge/unmerge relative error {rel:e}");

        // swap A -> B equals merging B into the base.
        swap(WeightsMut::F32(&mut w), rows, n, &ta, &tb, &mut scratch).unwrap();
        let mut direct = w0.clone();
        merge(WeightsMut::F32(&mut direct), rows, n, &tb, &mut scratch).unwrap();
        let dn = norm(&widen(&direct)).max(1e-6);
        let rel = norm(&widen(&w).iter().zip(widen(&direct)).map(|(x, y)| x - y).collect::<Vec<_>>()) / dn;
        prop_assert!(rel <= tol(4.0), "swap vs direct merge relative error {rel:e}");

        // The batched path (large scratch) gives the same weights as the per-line path.
        let mut fast_scratch = vec![0.0f32; swap_fast_scratch_len(rows, n)];
        let mut wf = w0.clone();
        merge(WeightsMut::F32(&mut wf), rows, n, &ta, &mut fast_scratch).unwrap();
        swap(WeightsMut::F32(&mut wf), rows, n, &ta, &tb, &mut fast_scratch).unwrap();
        let rel = norm(&widen(&wf).iter().zip(widen(&w)).map(|(x, y)| x - y).collect::<Vec<_>>()) / dn;
        prop_assert!(rel <= tol(4.0), "batched vs per-line swap relative error {rel:e}");
        unmerge(WeightsMut::F32(&mut wf), rows, n, &tb, &mut fast_scratch).unwrap();
        let rel = norm(&widen(&wf).iter().zip(widen(&w0)).map(|(x, y)| x - y).collect::<Vec<_>>()) / w0n;
        prop_assert!(rel <= tol(6.0), "batched unmerge relative error {rel:e}");
    }
}

#[test]
fn failed_swap_leaves_weights_untouched() {
    let spec = ChainSpec::new(4, 2, 2, Permutation::Gs).unwrap();
    let mut blocks = vec![0.0f32; spec.blocks_len()];
    let mut s = vec![0.0f32; 8];
    let p = [0.3f32, -0.2];
    let q = prepare_chain(
        spec,
        &[Scalars::F32(&p), Scalars::F32(&p)],
        &mut blocks,
        &mut s,
    )
    .unwrap();
    let zero_scale = [1.0f32, 0.0];
    let from = LayerTransform {
        q_in: Some(q),
        q_out: None,
        scale: Some(Scalars::F32(&zero_scale)),
    };
    let mut w: Vec<f32> = (0..8).map(|i| i as f32).collect();
    let before = w.clone();
    let mut scratch = vec![0.0f32; swap_scratch_len(2, 4)];
    let err = swap(
        WeightsMut::F32(&mut w),
        2,
        4,
        &from,
        &LayerTransform::IDENTITY,
        &mut scratch,
    )
    .unwrap_err();
    assert_eq!(err, riffle_core::Error::ZeroScale { index: 1 });
    assert_eq!(w, before);
    let nan_scale = [1.0f32, f32::NAN];
    let to = LayerTransform {
        q_in: Some(q),
        q_out: None,
        scale: Some(Scalars::F32(&nan_scale)),
    };
    let err = merge(WeightsMut::F32(&mut w), 2, 4, &to, &mut scratch).unwrap_err();
    assert_eq!(err, riffle_core::Error::NonFiniteParameter { index: 1 });
    assert_eq!(w, before);
    let mut short = vec![0.0f32; 3];
    assert!(matches!(
        merge(WeightsMut::F32(&mut w), 2, 4, &to, &mut short),
        Err(riffle_core::Error::NonFiniteParameter { .. })
            | Err(riffle_core::Error::BufferTooSmall { .. })
    ));
    assert_eq!(w, before);
}

#[test]
fn huge_f16_parameters_stay_orthogonal() {
    // f16's largest finite value: gs-math.md section 9 says no-pivot elimination gives NaN here.
    let b = 16;
    let np = b * (b - 1) / 2;
    let params: Vec<f16> = (0..np)
        .map(|i| {
            f16::from_f32(if i % 2 == 0 {
                65504.0
            } else {
                -30000.0 + i as f32
            })
        })
        .collect();
    let spec = ChainSpec::new(b, b, 1, Permutation::None).unwrap();
    let mut blocks = vec![0.0f32; spec.blocks_len()];
    let mut s = vec![0.0f32; spec.prepare_scratch_len()];
    let q = prepare_chain(spec, &[Scalars::F16(&params)], &mut blocks, &mut s).unwrap();
    let d = widen(&dense(&q));
    let smax = 65504.0f64;
    let bound = 1e-5 + 2f64.powi(-23) * smax * b as f64;
    for i in 0..b {
        for j in 0..b {
            let dotp: f64 = (0..b).map(|r| d[r * b + i] * d[r * b + j]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            assert!((dotp - want).abs() <= bound, "({i},{j}): {dotp}");
        }
    }
}

#[test]
fn invalid_shapes_are_typed_errors() {
    use riffle_core::Error;
    assert_eq!(
        ChainSpec::new(10, 3, 1, Permutation::Gs),
        Err(Error::NotDivisible { dim: 10, block: 3 })
    );
    assert_eq!(
        ChainSpec::new(8, 1, 1, Permutation::Gs),
        Err(Error::InvalidBlockSize { block: 1 })
    );
    assert_eq!(
        ChainSpec::new(8, 128, 1, Permutation::Gs),
        Err(Error::InvalidBlockSize { block: 128 })
    );
    assert_eq!(
        ChainSpec::new(8, 2, 0, Permutation::Gs),
        Err(Error::InvalidFactorCount { factors: 0 })
    );
    assert_eq!(
        ChainSpec::new(12, 2, 3, Permutation::Butterfly),
        Err(Error::ButterflyShape {
            dim: 12,
            block: 2,
            factors: 3
        })
    );
    assert_eq!(
        ChainSpec::new(18, 3, 2, Permutation::Butterfly),
        Err(Error::ButterflyShape {
            dim: 18,
            block: 3,
            factors: 2
        })
    );
    let spec = ChainSpec::new(4, 2, 1, Permutation::None).unwrap();
    let mut blocks = vec![0.0f32; 8];
    let mut s = vec![0.0f32; 8];
    let bad = [1.0f32, f32::INFINITY];
    assert!(matches!(
        prepare_chain(spec, &[Scalars::F32(&bad)], &mut blocks, &mut s),
        Err(Error::NonFiniteParameter { index: 1 })
    ));
    assert!(
        blocks.iter().all(|&v| v == 0.0),
        "a failed prepare wrote blocks"
    );
    let short = [1.0f32];
    assert!(matches!(
        prepare_chain(spec, &[Scalars::F32(&short)], &mut blocks, &mut s),
        Err(Error::LengthMismatch { .. })
    ));
    let q = prepare_chain(spec, &[Scalars::F32(&[0.1, 0.2])], &mut blocks, &mut s).unwrap();
    let mut x = [0.0f32; 5];
    assert!(matches!(
        q.apply(&mut x, false, &mut s),
        Err(Error::LengthMismatch {
            expected: 4,
            found: 5
        })
    ));
}
