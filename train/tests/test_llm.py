"""SmolLM2 chat adapters: the llama loader, tokenizer, chat framing, answer-only loss, scoring,
export round trip, the runtime fixture, DDP. All on a tiny random llama on the CPU, except the
checks against the real Q4_1 file and llama.cpp / transformers, which skip when those are absent."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from riffle_train import gguf_io, llm
from riffle_train.layers import adapted_modules, inject
from riffle_train.llama import SMOLLM2_Q4_1, Llama, base_model_id, greedy_generate, llama_from_gguf
from riffle_train.llm_fixture import write_fixture, write_random_adapter, write_tiny_llama

REPO = Path(__file__).resolve().parents[2]
LLAMA_BIN = Path.home() / ".cache/riffle/llama.cpp/build/bin"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    p = d / "tiny.gguf"
    write_tiny_llama(p)
    return p


def _hf_reference_logits(model: Llama, ids: torch.Tensor) -> torch.Tensor:
    """Hugging Face's llama computation written out: un-permute llama.cpp's Q/K rows, then
    half-split (rotate_half) RoPE. Independent of ``llama.rope_adjacent``."""
    c = model.cfg
    hd = c.head_dim

    def unpermute(w, n_head):
        return w.reshape(n_head, hd // 2, 2, -1).transpose(1, 2).reshape(w.shape)

    def rope(x, pos):
        inv = c.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = pos[:, None].double() * inv[None]
        emb = torch.cat((ang, ang), -1)
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * emb.cos() + torch.cat((-x2, x1), -1) * emb.sin()

    t = ids.shape[1]
    pos = torch.arange(t)
    x = model.token_embd.weight[ids[0]].double()
    norm = lambda v, w: v / torch.sqrt((v * v).mean(-1, keepdim=True) + c.eps) * w.double()  # noqa: E731
    for blk in model.blk:
        h = norm(x, blk.attn_norm.weight)
        q = (h @ unpermute(blk.attn_q.weight.double(), c.heads).T).view(t, c.heads, hd).transpose(0, 1)
        k = (h @ unpermute(blk.attn_k.weight.double(), c.kv_heads).T).view(t, c.kv_heads, hd).transpose(0, 1)
        v = (h @ blk.attn_v.weight.double().T).view(t, c.kv_heads, hd).transpose(0, 1)
        q, k = rope(q, pos), rope(k, pos)
        k = k.repeat_interleave(c.heads // c.kv_heads, 0)
        v = v.repeat_interleave(c.heads // c.kv_heads, 0)
        a = (q @ k.transpose(1, 2)) / hd ** 0.5
        a = a.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        x = x + (a @ v).transpose(0, 1).reshape(t, -1) @ blk.attn_output.weight.double().T
        h = norm(x, blk.ffn_norm.weight)
        g = h @ blk.ffn_gate.weight.double().T
        x = x + (torch.nn.functional.silu(g) * (h @ blk.ffn_up.weight.double().T)) @ blk.ffn_down.weight.double().T
    x = norm(x, model.output_norm.weight)
    return x @ model.token_embd.weight.double().T


def test_llama_layout_matches_hf_half_split_rope(tiny):
    model, kv = llama_from_gguf(tiny, dtype=torch.float64)
    assert model.cfg.heads == 4 and model.cfg.kv_heads == 2 and model.output is None
    ids = torch.tensor([[1, 50, 60, 70, 80, 2, 13, 100, 101]])
    ours = model(ids)[0]
    ref = _hf_reference_logits(model, ids)
    assert torch.allclose(ours, ref, atol=1e-10), (ours - ref).abs().max()


def test_kv_cache_and_left_padding_match_full_forward(tiny):
    model, _ = llama_from_gguf(tiny, dtype=torch.float64)
    a, b = [1, 40, 41, 42, 43, 44], [1, 90, 91]
    full_a = model(torch.tensor([a]))[0]
    # left-padded batch: b's logits equal its own unpadded run
    ids = torch.tensor([a, [0, 0, 0] + b])
    att = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    out = model(ids, att)
    assert torch.allclose(out[0], full_a, atol=1e-9)
    assert torch.allclose(out[1, 3:], model(torch.tensor([b]))[0], atol=1e-9)
    # cached decoding equals the full forward on the extended sequence
    gen = greedy_generate(model, [a, b], max_new=4, stop=-1, batch=2)
    for p, g in zip([a, b], gen):
        seq = list(p)
        for tkn in g:
            assert int(model(torch.tensor([seq]))[0, -1].argmax()) == tkn
            seq.append(tkn)


def test_logits_equal_transformers_on_tiny_llama(tiny, tmp_path):
    transformers = pytest.importorskip("transformers")
    shutil.copy(tiny, tmp_path / "tiny.gguf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="tiny.gguf",
                                                           dtype=torch.float32)
    model, _ = llama_from_gguf(tiny)
    ids = torch.tensor([[1, 50, 60, 70, 80, 2, 13, 100, 101, 7]])
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-4)


@pytest.mark.skipif(not SMOLLM2_Q4_1.exists(), reason="SmolLM2 Q4_1 GGUF not in ~/.cache/riffle/smollm2")
def test_smollm2_logits_equal_transformers():
    transformers = pytest.importorskip("transformers")
    model, kv = llama_from_gguf(SMOLLM2_Q4_1)
    assert (model.cfg.layers, model.cfg.d, model.cfg.heads, model.cfg.kv_heads, model.cfg.ff, model.cfg.vocab) == \
        (30, 576, 9, 3, 1536, 49152)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(SMOLLM2_Q4_1.parent), gguf_file=SMOLLM2_Q4_1.name,
                                                           dtype=torch.float32)
    tok = llm.tokenizer_from_gguf(SMOLLM2_Q4_1)
    ids = torch.tensor([llm.encode(tok, llm.render_chat([{"role": "user", "content": "What is 123+45?"}]))])
    with torch.no_grad():
        a, b = model(ids), hf(ids).logits
    assert (a - b).abs().max() < 1e-3 * b.abs().max()


@pytest.mark.skipif(not SMOLLM2_Q4_1.exists() or not (LLAMA_BIN / "llama-tokenize").exists(),
                    reason="needs the SmolLM2 GGUF and llama.cpp's llama-tokenize (scripts/llama-cpp)")
def test_tokenizer_equals_llama_tokenize():
    tok = llm.tokenizer_from_gguf(SMOLLM2_Q4_1)
    texts = [llm.render_chat([{"role": "user", "content": "RT @bob: 2024 was GREAT!!  1,234.50 $ :)"}]) + "positive<|im_end|>",
             "Ceci est une phrase.\n\n  Zwei  Leerzeichen 007\tTab",
             '{"topic": "sport", "title": "Wenger 3-1 win"}']
    for t in texts:
        r = subprocess.run([str(LLAMA_BIN / "llama-tokenize"), "-m", str(SMOLLM2_Q4_1), "-p", t, "--ids",
                            "--log-disable"], capture_output=True, text=True, check=True)
        assert llm.encode(tok, t) == json.loads(r.stdout.strip().splitlines()[-1]), t


def test_chat_template_equals_the_gguf_template(tiny):
    jinja2 = pytest.importorskip("jinja2")
    tmpl = gguf_io.read_kv_only(tiny)["tokenizer.chat_template"]
    if SMOLLM2_Q4_1.exists():
        assert gguf_io.read_kv_only(SMOLLM2_Q4_1)["tokenizer.chat_template"] == tmpl
    for msgs in ([{"role": "user", "content": "hi"}],
                 [{"role": "system", "content": "s"}, {"role": "user", "content": "a"},
                  {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]):
        for gen in (True, False):
            want = jinja2.Template(tmpl).render(messages=msgs, add_generation_prompt=gen)
            assert llm.render_chat(msgs, gen) == want


def test_tokenizer_digits_and_specials(tiny):
    tok = llm.tokenizer_from_gguf(tiny)
    ids = llm.encode(tok, "<|im_start|>a the 42<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids[1:-1]) == "a the 42"
    # " the" is "Ġt" + "he" (the merges); each digit its own pre-token (smollm)
    assert ids[1:-1] == [tok.token_to_id(t) for t in ("a", "Ġt", "he", "Ġ", "4", "2")]


def test_encode_example_answer_only_labels(tiny):
    tok = llm.tokenizer_from_gguf(tiny)
    p, a = llm.encode_example(tok, [{"role": "user", "content": "the tea"}], "he")
    assert p + a == llm.encode(tok, llm.render_chat([{"role": "user", "content": "the tea"}]) + "he<|im_end|>")
    assert a[-1] == tok.token_to_id("<|im_end|>")
    ids, lab, att = next(llm.make_batches([(p, a), (p[:5], a)], 2, 1, 0, 1000, 2))
    assert (lab[0] != -100).sum() == len(a) and (lab[0, :len(p)] == -100).all()
    assert att[1].sum() == 5 + len(a)
    model, _ = llama_from_gguf(tiny)
    base = llm.answer_loss(model, ids, lab, att)
    ids2 = ids.clone()
    ids2[0, 3] = 77  # a prompt token changes the context only: the loss still counts answer tokens
    lab2 = lab.clone()
    lab2[0, len(p) - 1:] = -100  # drop row 0's answer: the loss becomes row 1's alone
    assert not torch.isclose(base, llm.answer_loss(model, ids, lab2, att))


def test_score_classification_and_json():
    labels = ["negative", "neutral", "positive"]
    s = llm.score("sentiment", ["Positive!", "neutral, I think", "great", " negative"],
                  ["positive", "negative", "positive", "negative"], labels)
    assert s == {"score": 0.5, "well_formed": 0.75, "n": 4}
    exp = [json.dumps({"topic": "sport", "title": "A  b"}), json.dumps({"topic": "tech", "title": "T"})]
    s = llm.score("news_json", ['{"topic": "sport", "title": "A b"}', '{"topic": "tech", "title": "X", "z": 1}'],
                  exp)
    assert s == {"score": 0.5, "well_formed": 0.5, "n": 2, "topic": 0.5, "title": 0.5}
    s = llm.score("news_json", ['{"topic": "business", "title": "T"}', "not json"], exp[::-1])
    assert s["score"] == 0.25 and (s["topic"], s["title"]) == (0.0, 0.5)
    s = llm.score("news_json", ['{"topic": " Sport ", "title": "A b "}', '{"topic": "tech", "title": "t"}'], exp)
    assert (s["score"], s["topic"], s["title"]) == (0.75, 1.0, 0.5)
    with pytest.raises(ValueError):
        llm.score("sentiment", ["a"], [], labels)


def test_score_command_reads_predictions(tmp_path):
    from riffle_train.cli import main

    held = tmp_path / "held"
    held.mkdir()
    recs = [{"id": "a", "messages": [{"role": "user", "content": "x"}], "answer": "positive"},
            {"id": "b", "messages": [{"role": "user", "content": "y"}], "answer": "neutral"}]
    (held / "sentiment.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pred = tmp_path / "p.jsonl"
    pred.write_text(json.dumps({"id": "a", "text": "positive"}) + "\n" + json.dumps("negative") + "\n")
    assert main(["llm", "score", "--task", "sentiment", "--predictions", str(pred), "--heldout-dir", str(held)]) == 0
    pred.write_text(json.dumps("positive") + "\n")
    assert main(["llm", "score", "--task", "sentiment", "--predictions", str(pred), "--heldout-dir", str(held)]) == 2


def test_committed_heldout_files_are_the_split():
    for task in ("sentiment", "language"):
        p = llm.HELDOUT_DIR / f"{task}.jsonl"
        if not p.exists():
            pytest.skip("held-out files not written yet")
        recs = llm.read_heldout(task)
        try:
            _, te, _ = llm.split(task, 10**9, len(recs))
        except FileNotFoundError:
            pytest.skip("corpora not installed")
        assert [r["answer"] for r in recs] == [e.answer for e in te]
        assert [r["messages"] for r in recs] == [e.messages() for e in te]


def _toy_split(folder: Path, n: int = 24):
    """A task the tiny model can learn: the answer is the first word of the text."""
    words = ["ab", "cd", "ef", "gh"]  # two byte tokens each: equal answer lengths on every rank
    exs = [llm.Example(f"t{i}", f"{words[i % 4]} {i}", words[i % 4], words[i % 4]) for i in range(n)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sentiment.split.json").write_text(json.dumps(
        {"labels": words, "train": [e.__dict__ for e in exs[: n - 8]], "heldout": [e.__dict__ for e in exs[n - 8:]]}))


@pytest.mark.parametrize("method", llm.OUR_METHODS)
def test_export_round_trip_same_outputs(tiny, tmp_path, method):
    model, _ = llama_from_gguf(tiny)
    b = llm.Budget(block_size=8, boft_block_size=4)
    llm.apply_method(model, method, llm.targets(model, (1,)), b)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, mod in adapted_modules(model):
            for p in [*mod.oft_in.params, *(mod.oft_out.params if mod.oft_out is not None else [])]:
                p.copy_((torch.randn(p.shape, generator=g) * 0.3).half().float())
            mod.oft_scale.copy_((1 + 0.1 * torch.randn(mod.oft_scale.shape, generator=g)).half().float())
    out = tmp_path / "a.gguf"
    facts = llm.export_adapter(model, method, b, "sentiment", out, base_model_id(tiny), ["ab" * 32], ["x"])
    kv, t, types = gguf_io.read_tensors(out)
    assert kv["adapter.base_model_id"] == gguf_io.verify_span(tiny)["model_id"]
    assert kv["adapter.compatible_model_ids"] == ["ab" * 32] and kv["adapter.task_name"] == "sentiment"
    assert kv["riffle.data_crc32"] == facts["data_crc32"]
    assert "blk.1.attn_q.weight.oft_in.0" in t and all(v == "F16" for v in types.values())
    assert not any(n.startswith("blk.0.") for n in t)
    fresh, _ = llama_from_gguf(tiny)
    llm.load_adapter(fresh, out, base_model_id(tiny))
    ids = torch.tensor([[1, 50, 60, 70, 80, 2, 13, 100]])
    with torch.no_grad():
        assert torch.allclose(model(ids), fresh(ids), atol=1e-5)
        assert not torch.allclose(llama_from_gguf(tiny)[0](ids), fresh(ids), atol=1e-3)
    with pytest.raises(ValueError):
        llm.load_adapter(llama_from_gguf(tiny)[0], out, "00" * 32)


def test_compare_on_tiny_llama_trains_and_scores(tiny, tmp_path):
    pytest.importorskip("peft")
    prep = tmp_path / "prep"
    _toy_split(prep)
    b = llm.Budget(train=16, heldout=8, steps=30, batch=8, lr=2e-2, few_shot=2, eval_batch=8, block_size=8,
                   boft_block_size=4)
    res = llm.run_compare(tiny, ["sentiment"], ["gsoft", "lora"], tmp_path / "out", b, device="cpu",
                          prepared_dir=prep, keep_best=tmp_path / "best", log=lambda *a, **k: None)
    rows = res[0]["rows"]
    assert {"base zero-shot", "base 2-shot", "base, bare text", "gsoft", "lora"} <= set(rows)
    for m in ("gsoft", "lora"):
        assert rows[m]["last_loss"] < rows[m]["first_loss"]
        assert rows[m]["bytes"] > 0 and 0 <= rows[m]["score"] <= 1
    assert (tmp_path / "best" / "smollm2-sentiment.gguf").exists()
    assert "| GSOFT |" in (tmp_path / "out" / "llm.md").read_text()
    assert json.loads((tmp_path / "out" / "llm.json").read_text())[0]["task"] == "sentiment"


def test_fixture_is_reproducible(tmp_path):
    committed = REPO / "tests" / "data" / "llama"
    if not (committed / "tiny-llama.json").exists():
        pytest.skip("fixture not committed yet")
    doc = write_fixture(tmp_path)
    files = ["tiny-llama-f32.gguf"] + [a["file"] for a in doc["adapters"]]
    assert [a["method"] for a in doc["adapters"]] == ["gsoft", "double_gsoft", "oft", "boft"]
    for f in files:
        assert (tmp_path / f).read_bytes() == (committed / f).read_bytes(), f
    old = json.loads((committed / "tiny-llama.json").read_text())
    assert [p["tokens"] for p in old["prompts"]] == [p["tokens"] for p in doc["prompts"]]
    assert np.allclose(old["logits"][0], doc["logits"][0], atol=1e-9)
    for a, b in zip(old["adapters"], doc["adapters"]):
        for k in range(len(doc["prompts"])):
            assert np.allclose(a["logits"][k], b["logits"][k], atol=1e-9), a["method"]
            # every adapter moves the logits far more than any runtime tolerance
            assert np.abs(np.array(a["logits"][k]) - np.array(old["logits"][k])).max() > 5


def _ddp_cmd(world, tiny, prep, out, steps=4):
    args = ["-m", "riffle_train.llm_ddp", "--base", str(tiny), "--prepared", str(prep), "--task", "sentiment",
            "--steps", str(steps), "--batch", str(8 // world), "--lr", "1e-2", "--out", str(out), "--train", "16",
            "--heldout", "8"]
    if world == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *args]


def test_ddp_world_size_2_equals_one_process(tiny, tmp_path):
    prep = tmp_path / "prep"
    _toy_split(prep)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "train")}
    for world in (1, 2):
        r = subprocess.run(_ddp_cmd(world, tiny, prep, tmp_path / f"w{world}.gguf"), capture_output=True, text=True,
                           env=env, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"world {world} on cpu" in r.stdout
    _, a, _ = gguf_io.read_tensors(tmp_path / "w1.gguf")
    _, b, _ = gguf_io.read_tensors(tmp_path / "w2.gguf")
    assert a.keys() == b.keys()
    moved = max(np.abs(a[k] - (1.0 if k.endswith("oft_scale") else 0.0)).max() for k in a)
    assert moved > 1e-3  # training changed the adapter
    for k in a:  # the same global batch, gradients averaged: the same adapter up to F16 rounding
        assert np.allclose(a[k], b[k], atol=2e-3), k


def test_committed_results_rescore_from_the_heldout_files():
    """The scorer on the committed held-out files and the trainer's committed predictions
    reproduces the committed table (what the runtime's parity check will run)."""
    p = REPO / "train" / "results" / "llm" / "llm.json"
    if not p.exists():
        pytest.skip("no committed results")
    for r in json.loads(p.read_text()):
        if r["task"] not in llm.LICENCE_FREE:
            continue
        recs = llm.read_heldout(r["task"])
        for name, texts in r["predictions"].items():
            s = llm.score(r["task"], texts, [x["answer"] for x in recs], r["labels"])
            assert s["score"] == pytest.approx(r["rows"][name]["score"]), (r["task"], name)


def test_eval_command_scores_an_adapter_file(tmp_path, capsys):
    from riffle_train.cli import main

    base, adapter = tmp_path / "b.gguf", tmp_path / "a.gguf"
    write_tiny_llama(base)
    write_random_adapter(base, adapter)
    held = tmp_path / "held"
    held.mkdir()
    recs = [{"id": str(i), "messages": [{"role": "user", "content": f"ab {i}"}], "answer": "neutral"} for i in range(3)]
    (held / "sentiment.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pred = tmp_path / "p.jsonl"
    args = ["llm", "eval", "--task", "sentiment", "--base", str(base), "--heldout-dir", str(held)]
    assert main(args + ["--adapter", str(adapter), "--predictions", str(pred)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 3 and len(llm.read_predictions(pred)) == 3
    other = tmp_path / "other.gguf"
    write_tiny_llama(other, seed=5)
    assert main(args + ["--base", str(other), "--adapter", str(adapter)]) == 2  # bound to another base


def test_saved_for_backward_counts_the_plain_chains_activations_and_not_the_lean_ones(tiny):
    from riffle_train.llm_memory import saved_for_backward

    ours = ["oft", "gsoft", "double_gsoft"]
    r = saved_for_backward(str(tiny), [f"{m}+{p}" for p in ("plain", "lean") for m in ours], batch=2, tokens=16)
    plain = [r[f"{m}+plain"]["saved_bytes"] for m in ours]
    lean = [r[f"{m}+lean"]["saved_bytes"] for m in ours]
    # plain: one factor < two factors on the input side < two on each side
    assert 0 < plain[0] < plain[1] < plain[2]
    # lean: the layers' inputs only, whatever the chains, and the Cayley blocks of the GS chains
    # that take the grouped form (2 n b values a chain: parameter-sized)
    from riffle_train import llm
    from riffle_train.layers import adapted_modules
    from riffle_train.llama import llama_from_gguf

    def blocks_bytes(method):
        model = llm.apply_method(llama_from_gguf(str(tiny))[0], method, llm.targets(llama_from_gguf(str(tiny))[0], None),
                                 llm.Budget(), "lean")
        total = 0
        for _, mod in adapted_modules(model):  # a layer takes the grouped form when all its chains can
            chains = [c for c in (mod.oft_in, mod.oft_out) if c is not None]
            total += sum(2 * c.n * c.b * 4 for c in chains) if all(c.paired() for c in chains) else 0
        return total

    assert 0 < lean[0] < plain[0] and blocks_bytes("gsoft") > 0
    assert [lean[1] - lean[0], lean[2] - lean[0]] == [blocks_bytes("gsoft"), blocks_bytes("double_gsoft")]
    assert {r[f"{m}+lean"]["adapter_path"] for m in ours} == {"lean"}


def test_parity_table_keeps_bbc_text_out():
    from riffle_train.llm_parity import markdown

    row = lambda s: {"score": s, "well_formed": 1.0, "n": 2}  # noqa: E731
    res = [{"task": "sentiment", "adapter": "a.gguf", "n": 2, "trainer": row(0.5), "runtime": row(1.0),
            "difference_points": 50.0, "identical_answers": 1,
            "differing": [{"id": "s1", "trainer_correct": 0.0, "runtime_correct": 1.0, "expected": "positive",
                           "trainer": "negative", "runtime": "positive"}]},
           {"task": "news_json", "adapter": "b.gguf", "n": 2, "trainer": row(1.0), "runtime": row(1.0),
            "difference_points": 0.0, "identical_answers": 1,
            "differing": [{"id": "tech/001", "trainer_correct": 1.0, "runtime_correct": 1.0}]}]
    md = markdown(res, {"base": "q.gguf", "torch": "x", "command": "c"})
    assert "| sentiment | `a.gguf` | 2 | 50.0 | 100.0 | +50.0 |" in md
    assert '"positive"' in md and "(BBC text not committed)" in md


def test_steptime_interleaves_methods_and_divides_by_the_reference(tiny):
    from riffle_train.llm_steptime import markdown, run_steptime

    r = run_steptime(str(tiny), ["gsoft+plain", "gsoft+lean"], "gsoft+plain", rounds=3, batch=1, tokens=8)
    assert r["paths"] == {"gsoft+plain": "plain", "gsoft+lean": "lean"}
    assert r["ratios"]["gsoft+plain"] == [1.0, 1.0, 1.0]
    lean = r["ratios"]["gsoft+lean"]
    assert len(lean) == 3 and all(x > 0 for x in lean)
    assert lean == [round(a / b, 3) for a, b in zip(r["seconds"]["gsoft+lean"], r["seconds"]["gsoft+plain"])]
    md = markdown(r, {"base": "t.gguf", "torch": "x", "batch": 1, "tokens": 8, "rounds": 3,
                      "reference": "gsoft+plain", "command": "c"})
    assert "| GSOFT (lean) |" in md and "| GSOFT (plain) |" in md
    with pytest.raises(ValueError, match="reference"):
        run_steptime(str(tiny), ["gsoft+lean"], "lora", rounds=1)
