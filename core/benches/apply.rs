//! Unmerged apply cost against a dense matrix-vector product (issue 3's benchmark).
//!
//! `cargo bench -p riffle-core --bench apply` prints a Markdown table: for each width n,
//! block size b and factor count m (1, 2, and the least m with b^m >= n, "log"), the
//! median time of `Q x` on one vector, the median time of a dense n x n `W x`, and their
//! ratio (theory: m·b/n). A plain harness (no criterion) keeps riffle-core's
//! dev-dependencies light; each figure is the median of 15 timed batches.
//!
//! `cargo bench -p riffle-core --bench apply -- --rows` times the batched form instead:
//! rows of tokens through one GS chain, as the unmerged forward pass rotates its inputs.

use std::hint::black_box;
use std::time::Instant;

use riffle_core::math::{gemv, prepare_chain, ChainSpec, Permutation, Scalars};

fn median_ns(mut f: impl FnMut(), inner: usize) -> f64 {
    for _ in 0..inner {
        f();
    }
    let mut v: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..inner {
                f();
            }
            t.elapsed().as_nanos() as f64 / inner as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn log_factors(n: usize, b: usize) -> usize {
    let mut m = 1;
    let mut reach = b;
    while reach < n {
        reach *= b;
        m += 1;
    }
    m
}

/// `--one n,b,m`: 1000 applications of one GS chain and 1000 dense products, for
/// instruction counting under `valgrind --tool=callgrind` (deterministic on a busy machine).
fn one(arg: &str) {
    let v: Vec<usize> = arg.split(',').map(|x| x.parse().expect("n,b,m")).collect();
    let (n, b, m) = (v[0], v[1], v[2]);
    let spec = ChainSpec::new(n, b, m, Permutation::Gs).unwrap();
    let params: Vec<f32> = (0..spec.params_per_factor())
        .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
        .collect();
    let per: Vec<Scalars> = (0..m).map(|_| Scalars::F32(&params)).collect();
    let mut blocks = vec![0.0f32; spec.blocks_len()];
    let mut scratch = vec![0.0f32; spec.prepare_scratch_len().max(spec.apply_scratch_len())];
    let q = prepare_chain(spec, &per, &mut blocks, &mut scratch).unwrap();
    let w: Vec<f32> = (0..n * n)
        .map(|i| ((i * 2654435761) % 1000) as f32 * 1e-3 - 0.5)
        .collect();
    let mut x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
    let mut y = vec![0.0f32; n];
    for _ in 0..1000 {
        q.apply(black_box(&mut x), false, &mut scratch).unwrap();
    }
    for _ in 0..1000 {
        gemv(black_box(&w), n, n, black_box(&x), &mut y).unwrap();
    }
    black_box((x, y));
}

/// `--rows`: a batch of token rows through one GS chain (b = 8; m = 1 is the contiguous
/// factor alone, m = 2 adds the strided one), as the unmerged forward pass rotates a
/// layer's input (`Chain::apply_rows_from`), at MiniLM's two widths: median µs per call
/// and ns per element. The kernels behind issue 4's unmerged
/// overhead (docs/runtime.md).
fn rows() {
    println!("| n | m | rows | apply_rows_from (µs) | ns per element |");
    println!("|---|---|---|---|---|");
    for (n, m) in [(384usize, 1usize), (384, 2), (1536, 1), (1536, 2)] {
        let spec = ChainSpec::new(n, 8, m, Permutation::Gs).unwrap();
        let params: Vec<f32> = (0..spec.params_per_factor())
            .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
            .collect();
        let per = vec![Scalars::F32(&params); m];
        let mut blocks = vec![0.0f32; spec.blocks_len()];
        let mut scratch = vec![0.0f32; spec.prepare_scratch_len().max(spec.apply_scratch_len())];
        let q = prepare_chain(spec, &per, &mut blocks, &mut scratch).unwrap();
        for rows in [16usize, 64, 128] {
            let src: Vec<f32> = (0..rows * n).map(|i| (i as f32 * 0.1).sin()).collect();
            let mut dst = vec![0.0f32; rows * n];
            let t = median_ns(
                || {
                    q.apply_rows_from(black_box(&src), &mut dst, false, &mut scratch)
                        .unwrap()
                },
                200,
            );
            println!(
                "| {n} | {m} | {rows} | {:.2} | {:.3} |",
                t * 1e-3,
                t / (rows * n) as f64
            );
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--rows") {
        rows();
        return;
    }
    if let Some(pos) = std::env::args().position(|a| a == "--one") {
        let arg = std::env::args().nth(pos + 1).expect("--one n,b,m");
        one(&arg);
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let widths: &[usize] = if quick { &[384] } else { &[384, 768, 1536] };
    println!("| n | b | m | apply Q x (ns) | dense W x (ns) | ratio | theory m·b/n |");
    println!("|---|---|---|---|---|---|---|");
    for &n in widths {
        let w: Vec<f32> = (0..n * n)
            .map(|i| ((i * 2654435761) % 1000) as f32 * 1e-3 - 0.5)
            .collect();
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.1).sin()).collect();
        let mut y = vec![0.0f32; n];
        let dense = median_ns(
            || gemv(black_box(&w), n, n, black_box(&x), &mut y).unwrap(),
            200,
        );
        for b in [4usize, 8, 16, 32, 64] {
            let mut ms = vec![1, 2, log_factors(n, b)];
            ms.dedup();
            for m in ms {
                let Ok(spec) = ChainSpec::new(n, b, m, Permutation::Gs) else {
                    continue;
                };
                let params: Vec<f32> = (0..spec.params_per_factor())
                    .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
                    .collect();
                let per: Vec<Scalars> = (0..m).map(|_| Scalars::F32(&params)).collect();
                let mut blocks = vec![0.0f32; spec.blocks_len()];
                let mut scratch =
                    vec![0.0f32; spec.prepare_scratch_len().max(spec.apply_scratch_len())];
                let q = prepare_chain(spec, &per, &mut blocks, &mut scratch).unwrap();
                let mut v = x.clone();
                let t = median_ns(
                    || q.apply(black_box(&mut v), false, &mut scratch).unwrap(),
                    400,
                );
                let label = if m > 2 {
                    format!("{m} (log)")
                } else {
                    m.to_string()
                };
                println!(
                    "| {n} | {b} | {label} | {t:.0} | {dense:.0} | {:.3} | {:.3} |",
                    t / dense,
                    (m * b) as f64 / n as f64
                );
            }
        }
    }
}
