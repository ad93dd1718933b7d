"""``llm train``: your own chats in, an adapter file the runtime runs out."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from riffle_train import gguf_io, llm
from riffle_train import llm_finetune as ft
from riffle_train.cli import main
from riffle_train.llama import SMOLLM2_Q4_1, base_model_id

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "data" / "llama" / "tiny-llama-f32.gguf"


def riffle_bin() -> Path | None:
    """The CLI as `cargo test` or `cargo build --release` left it (the newer one)."""
    found = [p for p in (REPO / "target" / "debug" / "riffle", REPO / "target" / "release" / "riffle") if p.exists()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def test_both_formats_parse_and_weight_zero_answers_stay_context():
    c = ft.parse_chat(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello", "weight": 0}, {"role": "user", "content": "bye"},
        {"role": "assistant", "content": "goodbye"}]}), "f:1")
    assert [m["role"] for m in c.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert c.trained == [False, False, False, False, True]
    p = ft.parse_chat('{"prompt": "2+2?", "completion": "4"}', "f:2")
    assert p.messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert p.trained == [False, True]


@pytest.mark.parametrize("line, says", [
    ("{not json", "f:7: not JSON"),
    ("[1, 2]", "f:7: not a JSON object"),
    ('{"text": "x"}', "expected `messages`"),
    ('{"messages": []}', "non-empty list"),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "role 'bot'"),
    ('{"messages": [{"role": "user", "content": 3}]}', "no text `content`"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant message to train on"),
    ('{"messages": [{"role": "assistant", "content": "x", "weight": 0}]}', "no assistant message to train on"),
    ('{"messages": [{"role": "assistant", "content": "x", "weight": 0.5}]}', "weight 0.5"),
    ('{"prompt": "x"}', "must both be strings"),
])
def test_a_bad_line_is_named(line, says):
    with pytest.raises(ft.DataError) as e:
        ft.parse_chat(line, "f:7")
    assert says in str(e.value) and str(e.value).startswith("f:7: ")
    assert "\n" not in str(e.value)


def test_the_template_renders_as_the_comparison_renders_and_labels_only_answers():
    kv = gguf_io.read_kv_only(TINY)
    tok = llm.tokenizer_from_gguf(TINY)
    t = ft.ChatTemplate(kv, str(TINY))
    msgs = [{"role": "user", "content": "the tea"}]
    assert t.render(msgs, True) == llm.render_chat(msgs)
    stops = ft.stop_ids(kv, tok)
    im_end = tok.token_to_id("<|im_end|>")
    assert im_end in stops
    # One turn: the comparison's (prompt, answer + <|im_end|>), the newline after it left out.
    chat = ft.parse_chat(json.dumps({"prompt": "the tea", "completion": "he said"}), "f:1")
    ids, labels = ft.encode_chat(tok, t, chat, stops)
    prompt, answer = llm.encode_example(tok, chat.messages[:1], "he said")
    assert ids == prompt + answer
    assert labels == [-100] * len(prompt) + answer
    # Two turns, the first answer kept as context only; a system message replaces the default.
    chat = ft.parse_chat(json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
        {"role": "assistant", "content": "first", "weight": 0}, {"role": "user", "content": "b"},
        {"role": "assistant", "content": "second"}]}), "f:1")
    ids, labels = ft.encode_chat(tok, t, chat, stops)
    text = t.render(chat.messages, False)
    assert "SmolLM" not in text and tok.decode(ids, skip_special_tokens=False) + "\n" == text
    trained = [x for x in labels if x != -100]
    assert trained == llm.encode(tok, "second") + [im_end]


def test_long_conversations_keep_their_end():
    ids, labels = list(range(10)), [-100] * 7 + [7, 8, 9]
    assert ft.fit(ids, labels, 4) == ([6, 7, 8, 9], [-100, 7, 8, 9])
    assert ft.fit(ids, labels, 2) == ([8, 9], [8, 9])
    assert ft.fit(ids, [-100] * 9 + [9], 1) is None  # the first label has nothing before it to predict it


def chats_for(n: int, answer: str):
    words = ["the tea", "he said", "the end", "tea 42", "she said the", "then the", "a 1999 tea", "he he"]
    return [{"messages": [{"role": "user", "content": f"{words[i % len(words)]} {i}"},
                          {"role": "assistant", "content": answer}]} for i in range(n)]


def test_an_adapter_trained_on_chats_answers_in_the_runtime_as_in_the_trainer(tmp_path, capsys):
    """The tiny llama learns one fixed answer; the file binds to the base, the trainer scores it
    reloaded from F16, and `riffle generate --chat` answers each held-out chat as the trainer does."""
    chats = chats_for(28, "he said the end")
    data = write_jsonl(tmp_path / "train.jsonl", chats[:24])
    held = write_jsonl(tmp_path / "held.jsonl", chats[24:])
    out = tmp_path / "ok.gguf"
    rc = main(["llm", "train", "--base", str(TINY), "--data", str(data), "--validation", str(held), "--task", "ok",
               "--out", str(out), "--steps", "60", "--batch", "8", "--lr", "0.02", "--compatible", str(TINY),
               "--report", str(tmp_path / "report.json")])
    assert rc == 0
    out_lines = capsys.readouterr().out.strip().splitlines()
    assert len(out_lines) == 1  # progress goes to stderr, the report alone to stdout
    rep = json.loads(out_lines[0])
    assert json.loads((tmp_path / "report.json").read_text()) == rep
    assert sorted(p.name for p in tmp_path.iterdir()) == ["held.jsonl", "ok.gguf", "report.json", "train.jsonl"]
    kv = gguf_io.read_kv_only(out)
    assert kv["adapter.task_name"] == "ok" and kv["adapter.orthogonal.method"] == "gsoft"
    assert kv["adapter.base_model_id"] == base_model_id(TINY) == rep["base_model_id"]
    assert rep["compatible_model_ids"] == []  # the base itself is not listed twice
    assert rep["train_conversations"] == 24 and rep["steps"] == 60
    v = rep["validation"]
    assert rep["loss_last_10"] < rep["loss_first"] / 100
    assert v["adapter_loss"] < v["base_loss"] / 100
    assert v["adapter_exact"] == 1.0 and v["base_exact"] == 0.0
    exe = riffle_bin()
    if exe is None:
        pytest.skip("no riffle binary (cargo build)")
    for c, ex in zip(chats[24:], v["examples"]):
        prompt = c["messages"][0]["content"]
        r = subprocess.run([str(exe), "generate", "--model", str(TINY), "--adapter", str(out), "--chat", prompt,
                            "--temperature", "0", "--max-tokens", "16"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == ex["answer"] == "he said the end"


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "riffle_train", "llm", "train", *args], capture_output=True,
                          text=True, timeout=120, cwd=REPO / "train")


def test_bad_input_exits_2_with_one_line_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "a.gguf"
    out.write_bytes(b"the user's file")
    bad = write_jsonl(tmp_path / "bad.jsonl", [chats_for(1, "x")[0], "{oops"])
    no_template = tmp_path / "plain.gguf"
    gguf_io.write_gguf(no_template, "llama", {"tokenizer.ggml.model": "gpt2"}, [])
    cases = [
        (["--data", str(bad)], f"{bad}:2: not JSON"),
        (["--data", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--data", str(bad), "--base", str(tmp_path / "none.gguf")], "none.gguf: no such file"),
        (["--data", str(bad), "--blocks", "0,x"], "--blocks"),
        (["--data", str(bad), "--task", "two words"], "must be one word"),
    ]
    for extra, says in cases:
        args = ["--base", str(TINY), "--task", "t", "--out", str(out), *extra]
        r = run_cli(*args)
        assert r.returncode == 2, (extra, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("riffle-train llm train: ") and says in lines[0], lines
        assert out.read_bytes() == b"the user's file"
    good = write_jsonl(tmp_path / "good.jsonl", chats_for(24, "x"))
    base_copy = tmp_path / "base.gguf"
    base_copy.write_bytes(TINY.read_bytes())
    for args, says in [
        (["--base", str(base_copy), "--out", str(base_copy)], "is the --base file"),
        (["--base", str(TINY), "--out", str(good)], "is the --data file"),
        (["--base", str(TINY), "--out", str(tmp_path)], "is a folder"),
        (["--base", str(TINY), "--out", str(out), "--report", str(good)], f"--report {good} is the --data file"),
        (["--base", str(TINY), "--out", str(out), "--report", str(out)], "is the --out file"),
        (["--base", str(TINY), "--out", str(out), "--validation-split", "1"], "--validation-split"),
        (["--base", str(TINY), "--out", str(out), "--epochs", "0"], "--epochs must be a positive number"),
        (["--base", str(TINY), "--out", str(out), "--steps", "0"], "--steps must be at least 1"),
        (["--base", str(TINY), "--out", str(out), "--block-size", "7", "--steps", "1"], "gsoft with block size 7"),
    ]:
        r = run_cli("--data", str(good), "--task", "t", *args)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0], (args, lines)
    assert base_copy.read_bytes() == TINY.read_bytes() and out.read_bytes() == b"the user's file"
    assert good.read_text().count("\n") == 24
    r = run_cli("--base", str(no_template), "--data", str(good), "--task", "t", "--out", str(out))
    assert r.returncode == 2 and "its tokenizer is not one this command reads" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"the user's file"
    kv = {k: v for k, v in gguf_io.read_kv_only(TINY).items() if k != "tokenizer.chat_template"}
    with pytest.raises(ft.DataError, match="x.gguf: has no chat template"):
        ft.ChatTemplate(kv, "x.gguf")


@pytest.mark.skipif(not SMOLLM2_Q4_1.exists(), reason="SmolLM2 Q4_1 GGUF not in ~/.cache/riffle/smollm2")
def test_smollm2_chats_encode_as_the_comparison_encodes_them():
    kv = gguf_io.read_kv_only(SMOLLM2_Q4_1)
    tok = llm.tokenizer_from_gguf(SMOLLM2_Q4_1)
    t = ft.ChatTemplate(kv, str(SMOLLM2_Q4_1))
    stops = ft.stop_ids(kv, tok)
    assert tok.token_to_id("<|im_end|>") in stops
    for text, answer in [("I love this phone!", "positive"), ("Je voudrais un café.", "french"),
                         ("Shares fell 3% on Monday.", '{"topic": "business", "title": "Shares fall"}')]:
        chat = ft.parse_chat(json.dumps({"prompt": text, "completion": answer}), "f:1")
        ids, labels = ft.encode_chat(tok, t, chat, stops)
        prompt, ans = llm.encode_example(tok, chat.messages[:1], answer)
        assert ids == prompt + ans and labels == [-100] * len(prompt) + ans
