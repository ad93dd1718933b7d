//! Build script of the firmware. It runs on the host, with the host build of riffle-core
//! (a build-dependency), and does three things:
//!
//! 1. puts the right `memory.x` on the linker path for the target;
//! 2. sizes every static buffer: riffle-core's size functions (`Session::arena_len`,
//!    `Adapter::workspace_len`, `Model::merged_len`, `Session::swap_scratch_len`) are
//!    runtime methods over the parsed model, so they are evaluated here, on the very
//!    files that `include_bytes!` embeds, and emitted as `const`s (`generated.rs`);
//! 3. runs the boot self-check sequence (`src/selfcheck.rs`, included below, the same
//!    source the firmware runs) on the host and emits every prediction as the expected
//!    answers, plus `serial-expect.tsv` for `scripts/test-firmware`;
//! 4. bakes the base and adapter 0 into `baked.bin` (riffle-core's `baked` feature) for
//!    the `riffle-baked-only` probe, checking on the host that the blob gives the full
//!    runtime's logits bit for bit.

#[path = "src/selfcheck.rs"]
#[allow(dead_code)]
mod selfcheck;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use riffle_core::runtime::{Adapter, Input, Model, Prepared, Session};
use selfcheck::{Heldout, Probe, INPUT_LEN, STEPS, TASKS};

/// The adapter tasks embedded in flash, in this order (handles 0..4 on the device).
const ADAPTER_TASKS: [&str; 4] = ["rotated", "inverted", "noisy", "parity"];
/// Held-out examples whose pixels are integers 0..16, used by the serial-line test:
/// (task of the held-out set, example index).
const SERIAL_SAMPLES: [(usize, usize); 3] = [(0, 0), (1, 0), (2, 0)];

struct Recorder {
    preds: Vec<Vec<u8>>,
}

impl Probe for Recorder {
    fn now(&mut self) -> u64 {
        0
    }
    fn predicted(&mut self, step: usize, index: usize, pred: usize) {
        let v = &mut self.preds[step];
        if v.len() <= index {
            v.resize(index + 1, u8::MAX);
        }
        v[index] = pred as u8;
    }
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("riffle-firmware build.rs: {what}: {e}")
}

fn read(path: &Path) -> Vec<u8> {
    println!("cargo:rerun-if-changed={}", path.display());
    std::fs::read(path).unwrap_or_else(|e| fail(&path.display().to_string(), e))
}

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("manifest dir"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/selfcheck.rs");
    println!("cargo:rerun-if-env-changed=RIFFLE_FW_SELFCHECK_N");

    // 1. Linker memory map.
    let memory = if target.starts_with("riscv") {
        "memory/riscv-virt.x"
    } else {
        "memory/mps2.x"
    };
    std::fs::copy(manifest.join(memory), out.join("memory.x")).unwrap_or_else(|e| fail(memory, e));
    println!("cargo:rerun-if-changed={memory}");
    // cortex-m-rt's `device` feature includes `device.x` (weak aliases of the device's
    // interrupt handlers): the firmware handles no interrupt by name, so it is empty, and
    // `board.rs` supplies the interrupt vectors.
    std::fs::write(
        out.join("device.x"),
        "/* no device interrupt handlers (board.rs) */\n",
    )
    .unwrap_or_else(|e| fail("device.x", e));
    println!("cargo:rustc-link-search={}", out.display());

    // 2. The embedded files, parsed with the host build of the core.
    let base_name = if std::env::var_os("CARGO_FEATURE_BASE_CNN").is_some() {
        "cnn"
    } else {
        "mlp"
    };
    let models = manifest.join("../../models/digits");
    let models = models.canonicalize().unwrap_or(models);
    let base_path = models.join(format!("{base_name}.gguf"));
    let base_bytes = read(&base_path);
    let model = Model::from_bytes(&base_bytes).unwrap_or_else(|e| fail("base", e));
    let adapter_paths: Vec<PathBuf> = ADAPTER_TASKS
        .iter()
        .map(|t| models.join(format!("{base_name}-{t}.gguf")))
        .collect();
    let adapter_bytes: Vec<Vec<u8>> = adapter_paths.iter().map(|p| read(p)).collect();
    let adapters: Vec<Adapter<'_>> = adapter_bytes
        .iter()
        .map(|b| Adapter::from_bytes(b).unwrap_or_else(|e| fail("adapter", e)))
        .collect();
    for (a, t) in adapters.iter().zip(ADAPTER_TASKS) {
        assert_eq!(a.task_name(), t, "adapter task names");
    }
    let ws_lens: Vec<usize> = adapters
        .iter()
        .map(|a| {
            a.workspace_len(&model)
                .unwrap_or_else(|e| fail("workspace_len", e))
        })
        .collect();
    let mut workspaces: Vec<Vec<f32>> = ws_lens.iter().map(|&n| vec![0.0; n]).collect();
    let prepared: Vec<Prepared<'_, '_>> = adapters
        .iter()
        .zip(workspaces.iter_mut())
        .map(|(a, w)| a.prepare(&model, w).unwrap_or_else(|e| fail("prepare", e)))
        .collect();
    // Declared before the session, which borrows it for merged mode.
    let mut merged = vec![0.0f32; model.merged_len()];
    let mut session = Session::new(&model);
    let mut handles = [None; TASKS.len()];
    for p in &prepared {
        let h = session
            .add_adapter(p.clone())
            .unwrap_or_else(|e| fail("add_adapter", e));
        let t = TASKS
            .iter()
            .position(|t| *t == p.task_name())
            .expect("task");
        handles[t] = Some(h);
    }
    let arena_len = session.arena_len(0);
    // One term of the arena is the dense kernel's scratch, whose size depends on the
    // target (`weights::PANEL` is wider on x86-64): generated.rs has the target's compiler
    // evaluate that term (a `const fn`); the rest is the host's figure. The boot check
    // compares the result with what the target computes.
    let max_cols = model.slots().iter().map(|s| s.cols).max().unwrap_or(0);
    let batch = model.max_batch();
    let host_kernel = riffle_core::runtime::weights::weight_scratch_len(max_cols, batch);
    let for_target = |host_len: usize| {
        format!(
            "{} + riffle_core::runtime::weights::weight_scratch_len({max_cols}, {batch})",
            host_len - host_kernel
        )
    };
    let merged_len = model.merged_len();
    let swap_len = session.swap_scratch_len();
    let max_file = adapter_bytes.iter().map(Vec::len).max().unwrap_or(0);
    // An uploaded adapter lands in a buffer sized for the largest shipped adapter of this
    // base (rounded up to a power of two), and prepares into a workspace as large as the
    // largest shipped one needs.
    let upload_capacity = max_file.next_power_of_two();
    let upload_ws = ws_lens.iter().copied().max().unwrap_or(0);

    // 3. The self-check on the host: every prediction of every step.
    let set_paths: Vec<PathBuf> = TASKS
        .iter()
        .map(|t| models.join(format!("heldout-{t}.gguf")))
        .collect();
    let set_bytes: Vec<Vec<u8>> = set_paths.iter().map(|p| read(p)).collect();
    let sets: Vec<Heldout<'_>> = set_bytes
        .iter()
        .map(|b| Heldout::parse(b).unwrap_or_else(|e| fail("held-out set", e)))
        .collect();
    let sets: [Heldout<'_>; 5] = sets.try_into().unwrap_or_else(|_| fail("sets", "count"));
    let heldout_len = sets.iter().map(|s| s.len).min().unwrap_or(0);
    // Every example on a hardware-FPU target; 64 per task on soft-float targets, whose
    // emulated run is about ten times longer. RIFFLE_FW_SELFCHECK_N overrides.
    let default_n = if target.ends_with("eabihf") {
        heldout_len
    } else {
        64
    };
    let selfcheck_n: usize = std::env::var("RIFFLE_FW_SELFCHECK_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_n)
        .min(heldout_len);
    let mut arena = vec![0.0f32; arena_len];
    let mut scratch = vec![0.0f32; swap_len];
    let mut rec = Recorder {
        preds: vec![Vec::new(); STEPS.len()],
    };
    let (report, _) = selfcheck::run(
        &mut session,
        &handles,
        &sets,
        heldout_len,
        &mut merged,
        &mut arena,
        &mut scratch,
        &mut rec,
    )
    .unwrap_or_else(|e| fail("host self-check", e));

    // 4. Serial-line expectations: label and scores of a few inputs under every adapter,
    //    computed on the pixel bytes exactly as the firmware's `run` command sees them.
    let mut tsv = String::from("# sample\thex\tadapter\tindex\tlabel\tscores\n");
    let configs: Vec<(&str, Option<usize>)> = std::iter::once(("base", None))
        .chain(ADAPTER_TASKS.iter().enumerate().map(|(i, t)| (*t, Some(i))))
        .collect();
    for &(task, idx) in &SERIAL_SAMPLES {
        let mut x = [0.0f32; INPUT_LEN];
        sets[task]
            .input(idx, &mut x)
            .unwrap_or_else(|e| fail("sample", e));
        let mut hex = String::new();
        for v in &mut x {
            let p = (*v * 16.0).round();
            assert!(
                (*v * 16.0 - p).abs() < 1e-6 && (0.0..=16.0).contains(&p),
                "sample pixels"
            );
            write!(hex, "{:02x}", p as u8).ok();
            *v = p / 16.0;
        }
        for &(name, h) in &configs {
            session
                .activate(h, &mut scratch)
                .unwrap_or_else(|e| fail("activate", e));
            let mut o = [0.0f32; selfcheck::MAX_OUT];
            let k = session
                .run(Input::Vector(&x), &mut o, &mut arena)
                .unwrap_or_else(|e| fail("run", e));
            let pred = selfcheck::argmax(&o[..k]);
            let labels = h
                .and_then(|h| session.adapters()[h].labels())
                .or_else(|| model.labels());
            let label = labels
                .and_then(|l| l.get(pred))
                .map_or_else(|| pred.to_string(), str::to_string);
            let scores: Vec<String> = o[..k].iter().map(|s| format!("{s:.4}")).collect();
            writeln!(
                tsv,
                "{}#{idx}\t{hex}\t{name}\t{pred}\t{label}\t{}",
                TASKS[task],
                scores.join(",")
            )
            .ok();
        }
    }
    std::fs::write(out.join("serial-expect.tsv"), tsv).unwrap_or_else(|e| fail("tsv", e));

    // 5. The runtime-only image: base + adapter 0 in one slot, one sample of its task.
    let rt_task = TASKS
        .iter()
        .position(|t| *t == ADAPTER_TASKS[0])
        .expect("task");
    let mut rt_sample = [0.0f32; INPUT_LEN];
    sets[rt_task]
        .input(0, &mut rt_sample)
        .unwrap_or_else(|e| fail("sample", e));
    let mut rt_session = Session::new(&model);
    let rt_h = rt_session
        .add_adapter(prepared[0].clone())
        .unwrap_or_else(|e| fail("add_adapter", e));
    rt_session
        .activate(Some(rt_h), &mut [])
        .unwrap_or_else(|e| fail("activate", e));
    let rt_arena_len = rt_session.arena_len(0);
    let mut rt_arena = vec![0.0f32; rt_arena_len];
    let mut o = [0.0f32; selfcheck::MAX_OUT];
    let k = rt_session
        .run(Input::Vector(&rt_sample), &mut o, &mut rt_arena)
        .unwrap_or_else(|e| fail("run", e));
    let rt_expected = selfcheck::argmax(&o[..k]);

    // 6. The baked image: the base and adapter 0, validated and prepared above by the
    //    full runtime, written as one blob (MLP base only; the CNN build gets an empty
    //    one, and the baked probes refuse to build with `base-cnn`). The host reads it
    //    back with the same reader the device runs and checks that it gives the full
    //    runtime's logits bit for bit.
    let (baked, bk_ws_len, bk_arena_len) = if base_name == "mlp" {
        use riffle_core::runtime::baked::{bake, baked_len};
        let srcs = [&prepared[0]];
        let len = baked_len(&model, &srcs).unwrap_or_else(|e| fail("baked_len", e));
        let mut blob = vec![0u8; len];
        bake(&model, &srcs, &mut blob).unwrap_or_else(|e| fail("bake", e));
        let (ws_len, arena_len) = check_baked(&blob, &rt_sample, &o[..k]);
        assert_eq!(arena_len, rt_arena_len, "baked arena");
        (blob, ws_len, arena_len)
    } else {
        (Vec::new(), 0, rt_arena_len)
    };
    let baked_path = out.join("baked.bin");
    std::fs::write(&baked_path, &baked).unwrap_or_else(|e| fail("baked.bin", e));

    // 7. generated.rs.
    let mut g = String::new();
    let lit = |p: &Path| format!("{:?}", p.display().to_string());
    writeln!(
        g,
        "// @generated by build.rs from models/digits ({base_name} base)."
    )
    .ok();
    writeln!(g, "/// Name of the embedded base (`mlp` or `cnn`).").ok();
    writeln!(g, "pub const BASE_NAME: &str = {base_name:?};").ok();
    writeln!(g, "/// The base model file, in flash, 32-byte aligned.").ok();
    writeln!(
        g,
        "pub static BASE: &Aligned<[u8]> = &Aligned(*include_bytes!({}));",
        lit(&base_path)
    )
    .ok();
    writeln!(g, "/// Number of embedded adapters.").ok();
    writeln!(
        g,
        "pub const ADAPTER_COUNT: usize = {};",
        ADAPTER_TASKS.len()
    )
    .ok();
    writeln!(g, "/// The adapter files, in flash, 32-byte aligned.").ok();
    writeln!(
        g,
        "pub static ADAPTERS: [&Aligned<[u8]>; ADAPTER_COUNT] = ["
    )
    .ok();
    for p in &adapter_paths {
        writeln!(g, "    &Aligned(*include_bytes!({})),", lit(p)).ok();
    }
    writeln!(g, "];").ok();
    writeln!(g, "/// File names of the embedded adapters.").ok();
    writeln!(g, "pub const ADAPTER_FILES: [&str; ADAPTER_COUNT] = [").ok();
    for p in &adapter_paths {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        writeln!(g, "    {:?},", name.unwrap_or_default()).ok();
    }
    writeln!(g, "];").ok();
    writeln!(
        g,
        "/// `Adapter::workspace_len` of each embedded adapter (f32s)."
    )
    .ok();
    writeln!(
        g,
        "pub const WORKSPACE_LENS: [usize; ADAPTER_COUNT] = {ws_lens:?};"
    )
    .ok();
    writeln!(g, "/// Sum of [`WORKSPACE_LENS`].").ok();
    writeln!(
        g,
        "pub const WORKSPACE_TOTAL: usize = {};",
        ws_lens.iter().sum::<usize>()
    )
    .ok();
    writeln!(
        g,
        "/// `Session::arena_len(0)` with every embedded adapter resident (f32s)."
    )
    .ok();
    writeln!(g, "pub const ARENA_LEN: usize = {};", for_target(arena_len)).ok();
    writeln!(g, "/// `Model::merged_len` (f32s).").ok();
    writeln!(g, "pub const MERGED_LEN: usize = {merged_len};").ok();
    writeln!(g, "/// `Session::swap_scratch_len` (f32s).").ok();
    writeln!(g, "pub const SWAP_SCRATCH_LEN: usize = {swap_len};").ok();
    writeln!(g, "/// Bytes an uploaded adapter may have.").ok();
    writeln!(g, "pub const UPLOAD_CAPACITY: usize = {upload_capacity};").ok();
    writeln!(g, "/// Workspace (f32s) an uploaded adapter may need.").ok();
    writeln!(g, "pub const UPLOAD_WORKSPACE_LEN: usize = {upload_ws};").ok();
    writeln!(
        g,
        "/// The held-out sets, in flash, in the order of `selfcheck::TASKS`."
    )
    .ok();
    writeln!(g, "pub static HELDOUT: [&Aligned<[u8]>; 5] = [").ok();
    for p in &set_paths {
        writeln!(g, "    &Aligned(*include_bytes!({})),", lit(p)).ok();
    }
    writeln!(g, "];").ok();
    writeln!(g, "/// Examples per held-out set.").ok();
    writeln!(g, "pub const HELDOUT_LEN: usize = {heldout_len};").ok();
    writeln!(g, "/// Examples per set that the boot self-check runs.").ok();
    writeln!(g, "pub const SELFCHECK_N: usize = {selfcheck_n};").ok();
    writeln!(
        g,
        "/// The host build's prediction of every example in every self-check step."
    )
    .ok();
    writeln!(
        g,
        "pub static EXPECTED: [[u8; HELDOUT_LEN]; {}] = [",
        STEPS.len()
    )
    .ok();
    for (si, p) in rec.preds.iter().enumerate() {
        let mut row = p.clone();
        row.resize(heldout_len, u8::MAX);
        if !report.steps[si].ran {
            row.fill(u8::MAX);
        }
        writeln!(g, "    {row:?},").ok();
    }
    writeln!(g, "];").ok();
    writeln!(
        g,
        "/// The host build's correct counts per step (on all examples)."
    )
    .ok();
    let correct: Vec<usize> = report.steps.iter().map(|s| s.correct).collect();
    writeln!(
        g,
        "pub const HOST_CORRECT: [usize; {}] = {correct:?};",
        STEPS.len()
    )
    .ok();
    writeln!(
        g,
        "/// Runtime-only image: `Session::arena_len(0)` with adapter 0 alone."
    )
    .ok();
    writeln!(
        g,
        "pub const RT_ARENA_LEN: usize = {};",
        for_target(rt_arena_len)
    )
    .ok();
    writeln!(
        g,
        "/// Runtime-only image: held-out example 0 of adapter 0's task."
    )
    .ok();
    writeln!(g, "pub static RT_SAMPLE: [f32; {INPUT_LEN}] = [").ok();
    for v in rt_sample {
        writeln!(g, "    f32::from_bits({:#010x}),", v.to_bits()).ok();
    }
    writeln!(g, "];").ok();
    writeln!(
        g,
        "/// Runtime-only image: the host build's prediction for it."
    )
    .ok();
    writeln!(g, "pub const RT_EXPECTED: usize = {rt_expected};").ok();
    writeln!(
        g,
        "/// Baked image: the base and adapter 0, baked by build.rs (empty for the cnn base)."
    )
    .ok();
    writeln!(
        g,
        "pub static BAKED: &Aligned<[u8; BAKED_LEN]> = &Aligned(*include_bytes!({}));",
        lit(&baked_path)
    )
    .ok();
    writeln!(g, "/// Bytes of [`BAKED`].").ok();
    writeln!(g, "pub const BAKED_LEN: usize = {};", baked.len()).ok();
    writeln!(
        g,
        "/// Baked image: `BakedModel::workspace_len(0)` (f32s: adapter 0's blocks and scales)."
    )
    .ok();
    writeln!(g, "pub const BK_WORKSPACE_LEN: usize = {bk_ws_len};").ok();
    writeln!(
        g,
        "/// Baked image: `BakedModel::arena_len()` (equal to [`RT_ARENA_LEN`])."
    )
    .ok();
    writeln!(
        g,
        "pub const BK_ARENA_LEN: usize = {};",
        for_target(bk_arena_len)
    )
    .ok();
    std::fs::write(out.join("generated.rs"), g).unwrap_or_else(|e| fail("generated.rs", e));
}

/// Opens `blob` with the device's reader and checks that adapter 0 gives `want` on `x`,
/// bit for bit; returns its workspace and arena lengths.
fn check_baked(blob: &[u8], x: &[f32], want: &[f32]) -> (usize, usize) {
    use riffle_core::runtime::baked::BakedModel;
    let bm = BakedModel::open(blob).unwrap_or_else(|e| fail("baked open", e));
    let ws_len = bm.workspace_len(0).unwrap_or_else(|e| fail("baked ws", e));
    let mut ws = vec![0.0f32; ws_len];
    let ad = bm
        .activate(0, &mut ws)
        .unwrap_or_else(|e| fail("baked activate", e));
    let mut arena = vec![0.0f32; bm.arena_len()];
    let mut out = [0.0f32; selfcheck::MAX_OUT];
    let n = bm
        .run(Some(&ad), x, &mut out, &mut arena)
        .unwrap_or_else(|e| fail("baked run", e));
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&out[..n]),
        bits(want),
        "baked logits differ from the full runtime's"
    );
    (ws_len, bm.arena_len())
}
