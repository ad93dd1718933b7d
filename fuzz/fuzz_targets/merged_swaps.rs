//! Fuzz-driven sequences of session operations over the committed digits adapters:
//! activate (valid, invalid, with a short scratch), enter and leave merged mode,
//! re-merge, add residents. After every step the merged session must agree with an
//! unmerged mirror of it, outputs must stay finite, and a failed operation must change
//! nothing (same active adapter, byte-identical merged weights).
#![no_main]

use libfuzzer_sys::fuzz_target;
use riffle_core::runtime::{Input, Session, MAX_RESIDENT};
use riffle_core::Error;

/// Most operations per input: a swap on the MLP costs about 0.4 M multiply-adds.
const MAX_OPS: usize = 192;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, ops)) = data.split_first() else {
        return;
    };
    let fx = if kind & 1 == 0 {
        riffle_fuzz::mlp()
    } else {
        riffle_fuzz::cnn()
    };
    let model = &fx.model;
    let inputs = riffle_fuzz::heldout_inputs();
    let mut weights = vec![0.0f32; model.merged_len()];
    let mut spare: Option<&mut [f32]> = Some(&mut weights);
    let mut session = Session::new(model);
    let mut mirror = Session::new(model);
    for p in &fx.prepared {
        session.add_adapter(p.clone()).expect("resident");
        mirror.add_adapter(p.clone()).expect("resident");
    }
    let mut scratch = vec![0.0f32; session.swap_scratch_len()];
    let mut arena = vec![0.0f32; session.arena_len(0).max(mirror.arena_len(0))];
    let (mut out, mut want) = (vec![0.0f32; 64], vec![0.0f32; 64]);
    // Swaps since the weights were last merged from the base (drift grows with them).
    let mut swaps = 0usize;
    for op in ops.chunks(2).take(MAX_OPS) {
        let (code, arg) = (op[0], op.get(1).copied().unwrap_or(0) as usize);
        let n = session.adapters().len();
        let before_active = session.active();
        let before_weights = session.merged_weights().map(<[f32]>::to_vec);
        match code % 8 {
            0 | 1 => {
                let h = (arg % (n + 1) < n).then_some(arg % (n + 1));
                session.activate(h, &mut scratch).expect("resident handle");
                mirror.activate(h, &mut scratch).expect("resident handle");
                if session.is_merged() {
                    swaps += 1;
                }
            }
            2 => {
                if let Some(w) = spare.take() {
                    session
                        .enable_merged(w, &mut scratch)
                        .expect("enable merged");
                    swaps = 0;
                }
            }
            3 => {
                if let Some(w) = session.disable_merged() {
                    spare = Some(w);
                }
            }
            4 => {
                session.remerge(&mut scratch).expect("remerge");
                swaps = 0;
            }
            5 => {
                let bad = n + arg;
                assert_eq!(
                    session.activate(Some(bad), &mut scratch),
                    Err(Error::UnknownTask)
                );
            }
            6 => {
                let short = &mut scratch[..arg.min(session.swap_scratch_len().saturating_sub(1))];
                let r = session.activate(Some(arg % n.max(1)), short);
                if session.is_merged() {
                    assert!(matches!(r, Err(Error::BufferTooSmall { .. })), "{r:?}");
                } else {
                    // Unmerged activation needs no scratch.
                    assert_eq!(r, Ok(()));
                    mirror
                        .activate(Some(arg % n.max(1)), &mut scratch)
                        .expect("mirror");
                }
                if session.is_merged() && r.is_ok() {
                    swaps += 1;
                }
            }
            _ => {
                let p = fx.prepared[arg % fx.prepared.len()].clone();
                let r = session.add_adapter(p.clone());
                if n < MAX_RESIDENT {
                    assert_eq!(r, Ok(n));
                    mirror.add_adapter(p).expect("mirror");
                } else {
                    assert_eq!(r.err(), Some(Error::CapacityExceeded));
                }
            }
        }
        // A failed operation changes nothing.
        if matches!(code % 8, 5) || (code % 8 == 6 && session.is_merged()) {
            assert_eq!(session.active(), before_active);
            let after = session.merged_weights().map(<[f32]>::to_vec);
            let same = match (&before_weights, &after) {
                (Some(a), Some(b)) => a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()),
                (None, None) => true,
                _ => false,
            };
            assert!(same, "a failed activation changed the merged weights");
        }
        assert_eq!(session.active(), mirror.active());
        // Merged (or not) against the unmerged mirror, on one held-out input.
        let x = &inputs[arg % inputs.len()];
        let k = session
            .run(Input::Vector(x), &mut out, &mut arena)
            .expect("run");
        let kw = mirror
            .run(Input::Vector(x), &mut want, &mut arena)
            .expect("mirror run");
        assert_eq!(k, kw);
        assert!(
            out[..k].iter().all(|v| v.is_finite()),
            "non-finite output {:?}",
            &out[..k]
        );
        let big = want[..k].iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let d = riffle_fuzz::max_diff(&out[..k], &want[..k]);
        let tol = 1e-4 * big * (1 + swaps) as f32;
        assert!(
            d <= tol,
            "merged vs unmerged: {d} > {tol} after {swaps} swaps"
        );
        if !session.is_merged() {
            assert_eq!(d, 0.0, "two unmerged sessions disagree");
        }
    }
});
