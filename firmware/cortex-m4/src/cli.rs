//! Boot, self-check report and the serial command line.
//!
//! Commands (one per line; `\r`, `\n` or both end a line):
//!
//! | command | effect |
//! |---|---|
//! | `help` | lists the commands |
//! | `list` | the base and the resident adapters, the active one marked |
//! | `use NAME` / `use N` | activates an adapter by task name or list index |
//! | `base` | back to the bare base |
//! | `run HEX` | 128 hex digits = 64 pixels 0..16 (row-major 8x8); prints label and scores |
//! | `stats` | RAM buffers, flash bytes, instructions of the last inference |
//! | `merge on` / `merge off` | merged mode (weights copied to RAM, adapters swapped in place) |
//! | `upload HEX` | an adapter file as hex; validated completely before it replaces the previous upload |
//! | `quit` | exits with success |

use riffle_core::runtime::{Adapter, AdapterHandle, Input, Model, Prepared};
use riffle_core::Error;

use crate::selfcheck::{self, Heldout, Probe, MAX_OUT, STEPS, TASKS};
use crate::{say, Buffers, FwSession, Platform};
use crate::{
    ADAPTERS, ADAPTER_COUNT, ADAPTER_FILES, ARENA_LEN, BASE, BASE_NAME, EXPECTED, HELDOUT,
    MERGED_LEN, SELFCHECK_N, SWAP_SCRATCH_LEN, UPLOAD_CAPACITY, UPLOAD_WORKSPACE_LEN,
    WORKSPACE_LENS, WORKSPACE_TOTAL,
};

/// Longest ordinary command line (`run` + 128 hex digits fits with room to spare).
const LINE: usize = 192;

/// Splits `n` values off the front of `rest`.
fn take<'x>(rest: &mut &'x mut [f32], n: usize) -> &'x mut [f32] {
    let all = core::mem::take(rest);
    let (head, tail) = all.split_at_mut(n.min(all.len()));
    *rest = tail;
    head
}

fn fail<P: Platform>(p: &mut P, what: &str, e: Error) -> ! {
    say!(p, "FAIL: {what}: {e}\r\n");
    p.exit(false)
}

/// Boot: parse and prepare, self-check, then the command line.
pub fn main<P: Platform>(p: &mut P, bufs: &'static mut Buffers) -> ! {
    let Buffers {
        arena,
        workspace,
        merged,
        scratch,
        upload_workspace,
        upload,
        staging,
    } = bufs;
    say!(
        p,
        "\r\nriffle firmware on {}: digits {} base + {} adapters in flash, no heap\r\n",
        P::TARGET,
        BASE_NAME,
        ADAPTER_COUNT
    );
    match p.calibrate() {
        Some((instr, counted)) => say!(
            p,
            "counter: {}; calibration loop of {} instructions counted {} ({})\r\n",
            P::COUNTER,
            instr,
            counted,
            if counted.abs_diff(instr) * 100 <= instr {
                "within 1%"
            } else {
                "NOT within 1%: run QEMU with -icount shift=0"
            }
        ),
        None => say!(p, "counter: {}\r\n", P::COUNTER),
    }

    let model = parse_base(p);
    self_check(p, &model, workspace, merged, arena, scratch);

    command_line(
        p,
        &model,
        Bufs {
            workspace,
            arena,
            merged,
            scratch,
            upload_workspace,
            upload: &mut upload.0,
            staging: &mut staging.0,
        },
    )
}

/// Parses the base (out of line, so that the parser's temporaries leave the stack).
#[inline(never)]
fn parse_base<P: Platform>(p: &mut P) -> Model<'static> {
    let t0 = p.now();
    let model = match Model::from_bytes(&BASE.0) {
        Ok(m) => m,
        Err(e) => fail(p, "base model", e),
    };
    let parse_cost = p.now() - t0;
    say!(
        p,
        "base {}: {} bytes in flash, parsed in {} instructions\r\n",
        BASE_NAME,
        BASE.0.len(),
        parse_cost
    );
    model
}

/// Parses (CRC checked) and prepares every embedded adapter into its slice of the
/// static workspace, straight into `session`; with `report`, prints what each costs.
/// Returns the handle of each task's adapter. Out of line, like [`parse_base`].
#[inline(never)]
fn load_adapters<'a, 'w, P: Platform>(
    p: &mut P,
    model: &Model<'a>,
    session: &mut FwSession<'_, 'a, 'w>,
    workspace: &'w mut [f32],
    report: bool,
) -> [Option<AdapterHandle>; TASKS.len()] {
    let mut handles = [None; TASKS.len()];
    let mut rest = workspace;
    for i in 0..ADAPTER_COUNT {
        let ws = take(&mut rest, WORKSPACE_LENS[i]);
        let t0 = p.now();
        let r = Adapter::from_bytes(&ADAPTERS[i].0).and_then(|a| a.prepare(model, ws));
        let cost = p.now() - t0;
        let a = match r {
            Ok(a) => a,
            Err(e) => fail(p, ADAPTER_FILES[i], e),
        };
        if report {
            say!(
                p,
                "adapter {} ({}, {} b={} m={}): {} bytes, workspace {} bytes, parsed + prepared in {} instructions\r\n",
                a.task_name(),
                ADAPTER_FILES[i],
                a.method().name(),
                a.block_size(),
                a.factors(),
                a.file_bytes(),
                WORKSPACE_LENS[i] * 4,
                cost
            );
        }
        let t = TASKS.iter().position(|t| *t == a.task_name());
        match (session.add_adapter(a), t) {
            (Ok(h), Some(t)) => handles[t] = Some(h),
            (Err(e), _) => fail(p, "add_adapter", e),
            _ => {}
        }
    }
    handles
}

/// The buffer sizes were computed by build.rs with the *host* build of the core; the
/// target recomputes them here and refuses to go on if any differs (a size function
/// that depended on the target would otherwise go unnoticed).
fn check_sizes<P: Platform>(p: &mut P, model: &Model<'_>, session: &FwSession<'_, '_, '_>) {
    let mut ok = true;
    let checks = [
        ("Session::arena_len", session.arena_len(0), ARENA_LEN),
        ("Model::merged_len", model.merged_len(), MERGED_LEN),
        (
            "Session::swap_scratch_len",
            session.swap_scratch_len(),
            SWAP_SCRATCH_LEN,
        ),
    ];
    for (what, target, host) in checks {
        if target != host {
            say!(
                p,
                "FAIL: {what}: the target computes {target}, build.rs computed {host}\r\n"
            );
            ok = false;
        }
    }
    for (i, bytes) in ADAPTERS.iter().enumerate() {
        let target = Adapter::from_bytes(&bytes.0).and_then(|a| a.workspace_len(model));
        if target != Ok(WORKSPACE_LENS[i]) {
            say!(
                p,
                "FAIL: workspace_len of {}: the target computes {:?}, build.rs computed {}\r\n",
                ADAPTER_FILES[i],
                target,
                WORKSPACE_LENS[i]
            );
            ok = false;
        }
    }
    if !ok {
        p.exit(false);
    }
    say!(
        p,
        "buffers (f32s, from build.rs, equal to what the target computes): arena {}, workspaces {:?}, merged {}, swap scratch {}\r\n",
        ARENA_LEN,
        WORKSPACE_LENS,
        MERGED_LEN,
        SWAP_SCRATCH_LEN
    );
}

/// The firmware's probe: compares every prediction with the host's.
struct Check<'p, P: Platform> {
    p: &'p mut P,
    mismatches: usize,
    compared: usize,
    first: Option<(usize, usize, usize)>,
}

impl<P: Platform> Probe for Check<'_, P> {
    fn now(&mut self) -> u64 {
        self.p.now()
    }
    fn predicted(&mut self, step: usize, index: usize, pred: usize) {
        self.compared += 1;
        let want = EXPECTED[step].get(index).copied().unwrap_or(u8::MAX);
        if usize::from(want) != pred {
            self.mismatches += 1;
            if self.first.is_none() {
                self.first = Some((step, index, pred));
            }
        }
    }
}

fn percent(correct: usize, n: usize) -> (usize, usize) {
    let bp = (correct * 10_000 + n / 2) / n.max(1);
    (bp / 100, bp % 100)
}

// Not inlined into `main`: its session's stack frame is gone before the command line's.
#[inline(never)]
fn self_check<P: Platform>(
    p: &mut P,
    model: &Model<'static>,
    workspace: &mut [f32; WORKSPACE_TOTAL],
    merged: &mut [f32; MERGED_LEN],
    arena: &mut [f32; ARENA_LEN],
    scratch: &mut [f32; SWAP_SCRATCH_LEN],
) {
    let mut session = FwSession::with_capacity(model);
    let handles = load_adapters(p, model, &mut session, &mut workspace[..], true);
    check_sizes(p, model, &session);
    let sets = match parse_sets() {
        Ok(s) => s,
        Err(e) => fail(p, "held-out set", e),
    };
    say!(
        p,
        "self-check: first {} held-out examples of each task, base and adapters, unmerged then merged (predictions compared with the host build)\r\n",
        SELFCHECK_N
    );
    let mut probe = Check {
        p,
        mismatches: 0,
        compared: 0,
        first: None,
    };
    let r = selfcheck::run(
        &mut session,
        &handles,
        &sets,
        SELFCHECK_N,
        &mut merged[..],
        &mut arena[..],
        &mut scratch[..],
        &mut probe,
    );
    let Check {
        p,
        mismatches,
        compared,
        first,
    } = probe;
    let report = match r {
        Ok((report, _)) => report,
        Err(e) => fail(p, "self-check", e),
    };
    say!(
        p,
        "  {:<9} {:<9} {:<10} {:>17} {:>16} {:>14}\r\n",
        "task",
        "mode",
        "adapter",
        "accuracy",
        "instr/inference",
        "switch instr"
    );
    for (st, r) in STEPS.iter().zip(report.steps.iter()) {
        if !r.ran {
            continue;
        }
        let (a, b) = percent(r.correct, r.n);
        let adapter = if st.adapted { TASKS[st.task] } else { "-" };
        say!(
            p,
            "  {:<9} {:<9} {:<10} {:>3}.{:02}% ({:>3}/{:<3}) {:>16} {:>14}\r\n",
            TASKS[st.task],
            st.mode.name(),
            adapter,
            a,
            b,
            r.correct,
            r.n,
            r.run_cost / r.n.max(1) as u64,
            r.switch_cost
        );
    }
    say!(
        p,
        "  merged mode entered in {} instructions (base weights decoded to {} bytes of RAM)\r\n",
        report.enable_merged_cost,
        MERGED_LEN * 4
    );
    if mismatches != 0 {
        if let Some((s, i, pred)) = first {
            say!(
                p,
                "FAIL: {} of {} predictions differ from the host build (first: step {} {} {}, example {}: got {}, host {})\r\n",
                mismatches,
                compared,
                s,
                STEPS[s].mode.name(),
                TASKS[STEPS[s].task],
                i,
                pred,
                EXPECTED[s].get(i).copied().unwrap_or(u8::MAX)
            );
        }
        p.exit(false);
    }
    say!(
        p,
        "self-check PASS: {} predictions identical to the host build\r\n",
        compared
    );
}

fn parse_sets() -> Result<[Heldout<'static>; TASKS.len()], Error> {
    Ok([
        Heldout::parse(&HELDOUT[0].0)?,
        Heldout::parse(&HELDOUT[1].0)?,
        Heldout::parse(&HELDOUT[2].0)?,
        Heldout::parse(&HELDOUT[3].0)?,
        Heldout::parse(&HELDOUT[4].0)?,
    ])
}

/// RAM buffers the command line borrows.
struct Bufs<'b> {
    workspace: &'b mut [f32; WORKSPACE_TOTAL],
    arena: &'b mut [f32; ARENA_LEN],
    merged: &'b mut [f32; MERGED_LEN],
    scratch: &'b mut [f32; SWAP_SCRATCH_LEN],
    upload_workspace: &'b mut [f32; UPLOAD_WORKSPACE_LEN],
    upload: &'b mut [u8; UPLOAD_CAPACITY],
    staging: &'b mut [u8; UPLOAD_CAPACITY],
}

/// What ends one session epoch.
enum Action {
    /// A validated adapter of this many bytes waits in `staging`.
    Upload(usize),
}

/// State that survives rebuilding the session after an upload.
struct State {
    /// Task name of the active adapter, and whether it is the uploaded one.
    active: Option<(heapless::String<32>, bool)>,
    merged: bool,
    last_instr: u64,
}

#[inline(never)]
fn command_line<P: Platform>(p: &mut P, model: &Model<'static>, b: Bufs<'_>) -> ! {
    let Bufs {
        workspace,
        arena,
        merged,
        scratch,
        upload_workspace,
        upload,
        staging,
    } = b;
    let mut upload_len: Option<usize> = None;
    let mut state = State {
        active: None,
        merged: false,
        last_instr: 0,
    };
    say!(p, "ready: type `help`\r\n");
    loop {
        // Build the session: embedded adapters, then the upload (if any).
        // (Re-preparing the embedded adapters costs a few million instructions, only at
        // start and after an upload, and saves keeping a second copy of their tables.)
        let mut session = FwSession::with_capacity(model);
        load_adapters(p, model, &mut session, &mut workspace[..], false);
        let mut uploaded: Option<AdapterHandle> = None;
        if let Some(len) = upload_len {
            let r = Adapter::from_bytes(&upload[..len])
                .and_then(|a| a.prepare(model, &mut upload_workspace[..]))
                .and_then(|a| session.add_adapter(a));
            match r {
                Ok(h) => uploaded = Some(h),
                Err(e) => say!(p, "error: uploaded adapter dropped: {e}\r\n"),
            }
        }
        // Restore what was active, and merged mode.
        let handle = state.active.as_ref().and_then(|(name, up)| {
            if *up {
                uploaded
            } else {
                session.adapters()[..ADAPTER_COUNT]
                    .iter()
                    .position(|a| a.task_name() == name.as_str())
            }
        });
        if state.active.is_some() && handle.is_none() {
            say!(
                p,
                "note: the previously active adapter is gone; bare base active\r\n"
            );
            state.active = None;
        }
        let mut merged_buf: Option<&mut [f32]> = Some(&mut merged[..]);
        let mut ok = session.activate(handle, &mut scratch[..]);
        if ok.is_ok() && state.merged {
            if let Some(w) = merged_buf.take() {
                ok = session.enable_merged(w, &mut scratch[..]);
            }
        }
        if let Err(e) = ok {
            say!(p, "error: {e}; merged mode off\r\n");
            state.merged = false;
        }

        let action = epoch(
            p,
            model,
            &mut session,
            uploaded,
            merged_buf,
            &mut state,
            &mut arena[..],
            &mut scratch[..],
            staging,
        );
        drop(session);
        match action {
            Action::Upload(len) => {
                upload[..len].copy_from_slice(&staging[..len]);
                upload_len = Some(len);
            }
        }
    }
}

/// Handles commands until one needs the session rebuilt.
#[allow(clippy::too_many_arguments)]
fn epoch<'w, P: Platform>(
    p: &mut P,
    model: &Model<'_>,
    session: &mut FwSession<'_, '_, 'w>,
    uploaded: Option<AdapterHandle>,
    mut merged_buf: Option<&'w mut [f32]>,
    state: &mut State,
    arena: &mut [f32],
    scratch: &mut [f32],
    staging: &mut [u8; UPLOAD_CAPACITY],
) -> Action {
    loop {
        say!(p, "> ");
        let mut line = [0u8; LINE];
        let cmd = read_command(p, &mut line, staging);
        let text = match cmd {
            Command::Upload(Ok(len)) => match validate_upload(model, &staging[..len]) {
                Ok(task) => {
                    say!(
                        p,
                        "ok: uploaded adapter `{task}` ({len} bytes) validated; it replaces the previous upload\r\n"
                    );
                    return Action::Upload(len);
                }
                Err(e) => {
                    say!(
                        p,
                        "error: upload rejected: {e}; the active adapter is unchanged\r\n"
                    );
                    continue;
                }
            },
            Command::Upload(Err(msg)) => {
                say!(
                    p,
                    "error: upload rejected: {msg}; the active adapter is unchanged\r\n"
                );
                continue;
            }
            Command::TooLong => {
                say!(p, "error: line too long\r\n");
                continue;
            }
            Command::Line(n) => match core::str::from_utf8(&line[..n]) {
                Ok(t) => t,
                Err(_) => {
                    say!(p, "error: not text\r\n");
                    continue;
                }
            },
        };
        let mut words = text.split_ascii_whitespace();
        let Some(word) = words.next() else { continue };
        let arg = words.next();
        match (word, arg) {
            ("help", _) => say!(
                p,
                "commands: list | use NAME|N | base | run HEX128 | stats | merge on|off | upload HEX | quit\r\n"
            ),
            ("list", _) => list(p, model, session, uploaded),
            ("use", Some(name)) => {
                let h = name
                    .parse::<usize>()
                    .ok()
                    .filter(|&i| i < session.adapters().len())
                    .or_else(|| {
                        // The upload wins over an embedded adapter of the same task.
                        uploaded
                            .filter(|&h| session.adapters()[h].task_name() == name)
                            .or_else(|| session.find(name))
                    });
                match h {
                    None => say!(p, "error: no adapter `{name}` (see `list`)\r\n"),
                    Some(h) => {
                        let t0 = p.now();
                        let r = session.activate(Some(h), scratch);
                        let cost = p.now() - t0;
                        match r {
                            Ok(()) => {
                                let a = &session.adapters()[h];
                                let mut s = heapless::String::new();
                                let _ = s.push_str(a.task_name());
                                state.active = Some((s, Some(h) == uploaded));
                                say!(
                                    p,
                                    "ok: {} active ({}; switch took {} instructions)\r\n",
                                    a.task_name(),
                                    mode_name(session),
                                    cost
                                );
                            }
                            Err(e) => say!(p, "error: {e}\r\n"),
                        }
                    }
                }
            }
            ("base", _) => {
                let t0 = p.now();
                let r = session.activate(None, scratch);
                let cost = p.now() - t0;
                match r {
                    Ok(()) => {
                        state.active = None;
                        say!(
                            p,
                            "ok: bare base active ({}; switch took {} instructions)\r\n",
                            mode_name(session),
                            cost
                        );
                    }
                    Err(e) => say!(p, "error: {e}\r\n"),
                }
            }
            ("run", Some(hex)) => run_command(p, model, session, state, hex, arena),
            ("stats", _) => stats(p, model, session, state),
            ("merge", Some("on")) => {
                if session.is_merged() {
                    say!(p, "ok: already merged\r\n");
                    continue;
                }
                match merged_buf.take() {
                    Some(w) => {
                        let t0 = p.now();
                        let r = session.enable_merged(w, scratch);
                        let cost = p.now() - t0;
                        match r {
                            Ok(()) => {
                                state.merged = true;
                                say!(
                                    p,
                                    "ok: merged mode on ({} bytes of RAM weights, took {} instructions)\r\n",
                                    MERGED_LEN * 4,
                                    cost
                                );
                            }
                            Err(e) => say!(p, "error: {e}\r\n"),
                        }
                    }
                    None => say!(p, "error: merge buffer unavailable\r\n"),
                }
            }
            ("merge", Some("off")) => {
                if let Some(w) = session.disable_merged() {
                    merged_buf = Some(w);
                }
                state.merged = false;
                say!(p, "ok: merged mode off\r\n");
            }
            ("quit", _) => {
                say!(p, "bye\r\n");
                p.exit(true);
            }
            _ => say!(p, "error: unknown command `{text}` (try `help`)\r\n"),
        }
    }
}

fn mode_name(session: &FwSession<'_, '_, '_>) -> &'static str {
    if session.is_merged() {
        "merged"
    } else {
        "unmerged"
    }
}

/// Checks an uploaded adapter completely (container, CRC, every tensor against the base,
/// the buffers it would need) without touching anything in use. Returns its task name.
fn validate_upload<'x>(model: &Model<'x>, bytes: &'x [u8]) -> Result<&'x str, Error> {
    let a = Adapter::from_bytes(bytes)?;
    let ws = a.workspace_len(model)?;
    if ws > UPLOAD_WORKSPACE_LEN {
        return Err(Error::BufferTooSmall {
            needed: ws,
            got: UPLOAD_WORKSPACE_LEN,
        });
    }
    let head_rows = a.labels().map_or(0, |l| l.len());
    let need = model.arena_len(0, head_rows);
    if need > ARENA_LEN || head_rows > MAX_OUT {
        return Err(Error::BufferTooSmall {
            needed: need,
            got: ARENA_LEN,
        });
    }
    Ok(a.task_name())
}

fn list<P: Platform>(
    p: &mut P,
    model: &Model<'_>,
    session: &FwSession<'_, '_, '_>,
    uploaded: Option<AdapterHandle>,
) {
    let active = session.active();
    say!(
        p,
        "  -  base      {} ({} slots, {} bytes){}\r\n",
        BASE_NAME,
        model.slots().len(),
        BASE.0.len(),
        if active.is_none() { "  [active]" } else { "" }
    );
    for (h, a) in session.adapters().iter().enumerate() {
        say!(
            p,
            "  {}  {:<9} {} b={} m={}, {} bytes{}{}\r\n",
            h,
            a.task_name(),
            a.method().name(),
            a.block_size(),
            a.factors(),
            a.file_bytes(),
            if Some(h) == uploaded {
                ", uploaded"
            } else {
                ""
            },
            if active == Some(h) { "  [active]" } else { "" }
        );
    }
    say!(p, "  mode: {}\r\n", mode_name(session));
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn run_command<P: Platform>(
    p: &mut P,
    model: &Model<'_>,
    session: &FwSession<'_, '_, '_>,
    state: &mut State,
    hex: &str,
    arena: &mut [f32],
) {
    let h = hex.as_bytes();
    if h.len() != 2 * selfcheck::INPUT_LEN {
        say!(
            p,
            "error: `run` needs {} hex digits (64 pixels 0..16), got {}\r\n",
            2 * selfcheck::INPUT_LEN,
            h.len()
        );
        return;
    }
    let mut x = [0.0f32; selfcheck::INPUT_LEN];
    for (v, pair) in x.iter_mut().zip(h.chunks_exact(2)) {
        match (hex_val(pair[0]), hex_val(pair[1])) {
            (Some(a), Some(b)) if a * 16 + b <= 16 => *v = f32::from(a * 16 + b) / 16.0,
            _ => {
                say!(p, "error: pixels are hex bytes 00..10 (0..16)\r\n");
                return;
            }
        }
    }
    let mut out = [0.0f32; MAX_OUT];
    let t0 = p.now();
    let r = session.run(Input::Vector(&x), &mut out, arena);
    let cost = p.now() - t0;
    match r {
        Ok(k) => {
            state.last_instr = cost;
            let pred = selfcheck::argmax(&out[..k]);
            let labels = session
                .active_adapter()
                .and_then(|a| a.labels())
                .or_else(|| model.labels());
            let adapter = session.active_adapter().map_or("base", |a| a.task_name());
            say!(
                p,
                "result adapter={} mode={} index={} label=",
                adapter,
                mode_name(session),
                pred
            );
            match labels.and_then(|l| l.get(pred)) {
                Some(l) => say!(p, "{l}"),
                None => say!(p, "{pred}"),
            }
            say!(p, " instructions={} scores=", cost);
            for (i, s) in out[..k].iter().enumerate() {
                say!(p, "{}{:.4}", if i == 0 { "" } else { "," }, s);
            }
            say!(p, "\r\n");
        }
        Err(e) => say!(p, "error: {e}\r\n"),
    }
}

fn stats<P: Platform>(
    p: &mut P,
    model: &Model<'_>,
    session: &FwSession<'_, '_, '_>,
    state: &State,
) {
    say!(
        p,
        "arena: {} bytes static (the active configuration needs {})\r\n",
        ARENA_LEN * 4,
        session.arena_len(0) * 4
    );
    say!(p, "adapter workspaces: {} bytes (", WORKSPACE_TOTAL * 4);
    for (i, w) in WORKSPACE_LENS.iter().enumerate() {
        say!(
            p,
            "{}{} {}",
            if i == 0 { "" } else { ", " },
            ADAPTER_FILES[i],
            w * 4
        );
    }
    say!(p, ")\r\n");
    say!(
        p,
        "merged weights: {} bytes ({}); swap scratch: {} bytes\r\n",
        MERGED_LEN * 4,
        if session.is_merged() {
            "in use"
        } else {
            "idle"
        },
        SWAP_SCRATCH_LEN * 4
    );
    say!(
        p,
        "upload: 2 x {} bytes + workspace {} bytes\r\n",
        UPLOAD_CAPACITY,
        UPLOAD_WORKSPACE_LEN * 4
    );
    let (ram, peak) = (p.static_ram(), p.stack_peak());
    say!(p, "static RAM (.data + .bss): {} bytes", ram);
    match peak {
        Some(s) => say!(p, "; stack peak: {} bytes\r\n", s),
        None => say!(p, "\r\n"),
    }
    say!(
        p,
        "core structs: Model {} bytes, Prepared {} bytes, Session {} bytes\r\n",
        core::mem::size_of::<Model<'_>>(),
        core::mem::size_of::<Prepared<'_, '_>>(),
        core::mem::size_of::<FwSession<'_, '_, '_>>()
    );
    say!(
        p,
        "flash: base {} bytes ({} bytes of tensor data); adapters {} bytes (",
        BASE.0.len(),
        model.gguf().data_span().len(),
        ADAPTERS.iter().map(|a| a.0.len()).sum::<usize>()
    );
    for (i, a) in ADAPTERS.iter().enumerate() {
        say!(
            p,
            "{}{} {}",
            if i == 0 { "" } else { ", " },
            ADAPTER_FILES[i],
            a.0.len()
        );
    }
    say!(p, ")\r\n");
    say!(
        p,
        "last inference: {} instructions ({})\r\n",
        state.last_instr,
        P::COUNTER
    );
}

/// One line read from the console.
enum Command {
    /// An ordinary command of this many bytes in the line buffer.
    Line(usize),
    /// `upload HEX`: the decoded length in `staging`, or why it could not be decoded.
    Upload(Result<usize, &'static str>),
    /// An ordinary line longer than the buffer.
    TooLong,
}

/// Reads one line, echoing it. `upload ` switches to streaming the hex into `staging`,
/// so an adapter of several kilobytes needs no line buffer.
fn read_command<P: Platform>(
    p: &mut P,
    line: &mut [u8; LINE],
    staging: &mut [u8; UPLOAD_CAPACITY],
) -> Command {
    let mut n = 0usize;
    let mut too_long = false;
    loop {
        let c = p.read_byte();
        match c {
            b'\r' | b'\n' => {
                if n == 0 && !too_long {
                    continue;
                }
                p.write_bytes(b"\r\n");
                return if too_long {
                    Command::TooLong
                } else {
                    Command::Line(n)
                };
            }
            0x08 | 0x7f => {
                if n > 0 {
                    n -= 1;
                    p.write_bytes(b"\x08 \x08");
                }
            }
            b' ' if &line[..n] == b"upload" => {
                p.write_bytes(b" ");
                return Command::Upload(read_upload(p, staging));
            }
            _ => {
                if n < LINE {
                    line[n] = c;
                    n += 1;
                    p.write_bytes(&[c]);
                } else {
                    too_long = true;
                }
            }
        }
    }
}

fn read_upload<P: Platform>(
    p: &mut P,
    staging: &mut [u8; UPLOAD_CAPACITY],
) -> Result<usize, &'static str> {
    let mut len = 0usize;
    let mut high: Option<u8> = None;
    let mut error: Option<&'static str> = None;
    let mut digits = 0usize;
    loop {
        let c = p.read_byte();
        match c {
            b'\r' | b'\n' => {
                if digits > 32 {
                    p.write_bytes(b"...");
                }
                p.write_bytes(b"\r\n");
                if error.is_none() && high.is_some() {
                    error = Some("odd number of hex digits");
                }
                if error.is_none() && len == 0 {
                    error = Some("no data");
                }
                return match error {
                    Some(e) => Err(e),
                    None => Ok(len),
                };
            }
            b' ' | b'\t' => {}
            _ => {
                digits += 1;
                if digits <= 32 {
                    p.write_bytes(&[c]);
                }
                if error.is_some() {
                    continue;
                }
                match (hex_val(c), high) {
                    (None, _) => error = Some("not a hex digit"),
                    (Some(v), None) => high = Some(v),
                    (Some(v), Some(h)) => {
                        high = None;
                        if len < UPLOAD_CAPACITY {
                            staging[len] = h * 16 + v;
                            len += 1;
                        } else {
                            error = Some("adapter larger than the upload buffer");
                        }
                    }
                }
            }
        }
    }
}
