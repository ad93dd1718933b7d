"""lm-eval-harness against `riffle serve`: a classification adapter's held-out set scored as
log-likelihoods, with the adapter and with the bare base, through the harness's own
`local-completions` model (the OpenAI completions API with `echo` and `logprobs`).

    python3 bench/lm_eval_adapters.py [--task sentiment|language] [--limit N]
        [--model ~/.cache/riffle/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf] [--threads 1]

It installs lm-eval-harness (pinned) into its own environment, ~/.cache/riffle/lmeval-venv
(network needed once), builds a Hugging Face tokenizer from the GGUF file (with the
project's transformers environment, `train/peft-env`) for the harness to count context
tokens and send token ids, writes the task (the
chat template's prompt for each held-out chat of models/smollm2-adapters/heldout, the
task's labels as the choices, nothing between prompt and label), starts `riffle serve`
(target/release/riffle) on a free port with the committed adapter, runs the harness for
the adapter's task name and for the base, and prints their accuracies. Not part of the
tests: it needs the network the first time and takes minutes (each choice is one request,
its prompt scored in steps that write every position's logits).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "riffle"
VENV = CACHE / "lmeval-venv"
PINS = ["lm_eval[api]==0.4.13", "transformers==5.25.0"]
LABELS = {"sentiment": ["negative", "neutral", "positive"]}


def venv_python() -> Path:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    have = subprocess.run([str(py), "-c", "import lm_eval, transformers"],
                          capture_output=True)
    if have.returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", *PINS], check=True)
    return py


def write_task(model: Path, task: str, out: Path) -> None:
    """The tokenizer directory, the data (prompt, label index) and the task's YAML."""
    py = subprocess.run([str(ROOT / "train" / "peft-env")], check=True, capture_output=True,
                        text=True).stdout.strip()
    rows = [json.loads(line) for line in
            (ROOT / "models/smollm2-adapters/heldout" / f"{task}.jsonl").open()]
    labels = LABELS.get(task) or sorted({r["answer"] for r in rows})
    (out / "rows.json").write_text(json.dumps({"rows": rows, "labels": labels}))
    script = f"""
import json
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({str(model.parent)!r}, gguf_file={model.name!r})
tok.save_pretrained({str(out / 'tokenizer')!r})
spec = json.load(open({str(out / 'rows.json')!r}))
with open({str(out / 'data.jsonl')!r}, "w") as f:
    for r in spec["rows"]:
        p = tok.apply_chat_template(r["messages"], tokenize=False, add_generation_prompt=True)
        f.write(json.dumps({{"prompt": p, "label": spec["labels"].index(r["answer"])}}) + "\\n")
"""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    subprocess.run([py, "-c", script], check=True, env=env, capture_output=True)
    choices = ", ".join(json.dumps(label) for label in labels)
    (out / f"riffle_{task}.yaml").write_text(f"""task: riffle_{task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {out / 'data.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: [{choices}]
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
""")


def accuracy(py: Path, url: str, name: str, task: str, out: Path, limit: int | None) -> dict:
    args = [str(py), "-m", "lm_eval", "--model", "local-completions", "--model_args",
            f"model={name},base_url={url}/v1/completions,tokenizer={out / 'tokenizer'},"
            "tokenized_requests=True,num_concurrent=1,max_retries=1",
            "--tasks", f"riffle_{task}", "--include_path", str(out),
            "--output_path", str(out / f"results-{name}")]
    if limit:
        args += ["--limit", str(limit)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    subprocess.run(args, check=True, env=env, capture_output=True)
    found = sorted((out / f"results-{name}").rglob("results_*.json"))
    res = json.loads(found[-1].read_text())["results"][f"riffle_{task}"]
    return {"acc": res["acc,none"], "stderr": res["acc_stderr,none"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="sentiment", choices=["sentiment", "language"])
    ap.add_argument("--model", type=Path,
                    default=CACHE / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--limit", type=int, default=None, help="held-out chats (default: all)")
    ap.add_argument("--threads", default="1")
    a = ap.parse_args()
    riffle = ROOT / "target" / "release" / "riffle"
    adapter = ROOT / "models/smollm2-adapters" / f"smollm2-{a.task}.gguf"
    py = venv_python()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_task(a.model, a.task, out)
        server = subprocess.Popen([str(riffle), "serve", "--model", str(a.model), "--adapter",
                                   str(adapter), "--port", "0", "--parallel", "1",
                                   "--threads", a.threads], stdout=subprocess.PIPE, text=True)
        try:
            line = server.stdout.readline()
            while "listening on" not in line:
                if not line:
                    sys.exit("riffle serve did not start")
                line = server.stdout.readline()
            url = re.search(r"http://\S+", line).group(0)
            rows = [(name, accuracy(py, url, name, a.task, out, a.limit))
                    for name in (a.task, "base")]
        finally:
            server.terminate()
            server.wait()
    n = a.limit or "all"
    print(f"| model ({a.task}, {n} held-out chats, {a.model.name}) | accuracy | stderr |")
    print("|---|---:|---:|")
    for name, r in rows:
        label = f"adapter `{name}`" if name != "base" else "base (no adapter)"
        print(f"| {label} | {100 * r['acc']:.1f}% | {100 * r['stderr']:.1f} |")


if __name__ == "__main__":
    main()
