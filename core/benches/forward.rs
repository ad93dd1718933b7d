//! Forward-pass latency of the base models (`cargo bench -p riffle-core --bench forward`).
//!
//! MiniLM (models/minilm/minilm-{f32,f16,q8_0}.gguf, built at set-up) at 16, 64 and 128
//! tokens, batch 1, one thread; medians of repeated runs. The side-by-side comparison
//! with ONNX Runtime and PyTorch is `scripts/bench`.

use std::time::Instant;

use riffle_core::runtime::{Input, Model};

/// CPU time of the calling thread from `clock_gettime(CLOCK_THREAD_CPUTIME_ID)`, which
/// the kernel brings up to date on every call (nanoseconds, unlike the tick-granular
/// `/proc` counters). Linux only.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn thread_cpu_seconds() -> Option<f64> {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable `struct timespec` (two 64-bit fields on 64-bit
    // Linux); the call writes only it.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.sec as f64 + ts.nsec as f64 * 1e-9)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu_seconds() -> Option<f64> {
    None
}

/// CPU seconds of this (single-threaded) process: robust to other processes sharing the
/// machine, unlike wall time. Linux `/proc/thread-self/schedstat` (nanoseconds), or
/// `/proc/self/stat` (user + system, 100 Hz ticks) where that is missing.
fn cpu_seconds() -> f64 {
    if let Some(s) = thread_cpu_seconds() {
        return s;
    }
    if let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
    {
        return ns * 1e-9;
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median_ms(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut v: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `RIFFLE_BENCH_ONE=f32:128` runs one forward of one configuration (for callgrind).
    if let Ok(one) = std::env::var("RIFFLE_BENCH_ONE") {
        let (kind, t) = one.split_once(':').expect("kind:tokens");
        let t: usize = t.parse().expect("tokens");
        let path = format!(
            "{}/../models/minilm/minilm-{kind}.gguf",
            env!("CARGO_MANIFEST_DIR")
        );
        let bytes = std::fs::read(&path).expect("model file");
        let model = Model::from_bytes(&bytes).unwrap();
        let ids: Vec<u32> = (0..t as u32).map(|i| 1000 + i * 7).collect();
        let mut arena = vec![0.0f32; model.arena_len(t, 0)];
        let mut out = vec![0.0f32; 384];
        // `RIFFLE_BENCH_ADAPTER=A.gguf` runs the adapter unmerged.
        let adapter_bytes = std::env::var("RIFFLE_BENCH_ADAPTER")
            .ok()
            .map(|p| std::fs::read(p).expect("adapter file"));
        let adapter = adapter_bytes
            .as_deref()
            .map(|b| riffle_core::runtime::Adapter::from_bytes(b).unwrap());
        let mut ws = vec![
            0.0f32;
            adapter
                .as_ref()
                .map_or(0, |a| a.workspace_len(&model).unwrap())
        ];
        let prepared = adapter
            .as_ref()
            .map(|a| a.prepare(&model, &mut ws).unwrap());
        let reps: usize = std::env::var("RIFFLE_BENCH_REPS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1);
        let mut run = |with: Option<&riffle_core::runtime::Prepared<'_, '_>>| {
            model
                .run(with, Input::Tokens(&ids), &mut out, &mut arena)
                .unwrap();
        };
        run(prepared.as_ref());
        if let Some(p) = prepared.as_ref() {
            // With an adapter: base and unmerged runs alternate one by one in this one
            // process; the medians of their CPU times and the ratio.
            run(None);
            let (mut base, mut with) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                for (which, times) in [(None, &mut base), (Some(p), &mut with)] {
                    let t0 = cpu_seconds();
                    run(which);
                    times.push((cpu_seconds() - t0) * 1e3);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (b, w) = (median(&mut base), median(&mut with));
            println!(
                "{one}: base {b:.3} ms, unmerged {w:.3} ms CPU per forward (medians of {} alternating runs): {:+.1}%",
                base.len(),
                (w / b - 1.0) * 100.0
            );
            return;
        }
        let (u0, t0) = (cpu_seconds(), Instant::now());
        for _ in 0..reps {
            run(None);
        }
        let (cpu, wall) = (
            (cpu_seconds() - u0) / reps as f64 * 1e3,
            t0.elapsed().as_secs_f64() / reps as f64 * 1e3,
        );
        println!("{one}: {cpu:.2} ms CPU, {wall:.2} ms wall per forward ({reps} runs)");
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/minilm");
    println!("| weights | tokens | forward (ms) |");
    println!("|---|---|---|");
    for kind in ["f32", "f16", "q8_0"] {
        let path = format!("{root}/minilm-{kind}.gguf");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipping {path}: not built (riffle-train minilm convert)");
            continue;
        };
        let model = Model::from_bytes(&bytes).unwrap();
        for t in [16usize, 64, 128] {
            let ids: Vec<u32> = (0..t as u32)
                .map(|i| {
                    if i == 0 {
                        101
                    } else if i + 1 == t as u32 {
                        102
                    } else {
                        1000 + i * 7
                    }
                })
                .collect();
            let mut arena = vec![0.0f32; model.arena_len(t, 0)];
            let mut out = vec![0.0f32; 384];
            let ms = median_ms(
                || {
                    model
                        .run(None, Input::Tokens(&ids), &mut out, &mut arena)
                        .unwrap();
                },
                7,
            );
            println!("| {kind} | {t} | {ms:.2} |");
        }
    }
}
