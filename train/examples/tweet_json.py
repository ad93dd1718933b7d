"""An example task for `llm train`: tweets to JSON (sentiment, mentions, hashtags).

    python train/examples/tweet_json.py write DIR        # DIR/tweets-train.jsonl, DIR/tweets-held.jsonl
    python -m riffle_train llm train --base M.gguf --data DIR/tweets-train.jsonl \
        --validation DIR/tweets-held.jsonl --task tweet_json --out tweet_json.gguf --steps 100
    python train/examples/tweet_json.py score DIR --model M.gguf [--adapter tweet_json.gguf]

The answer is built from the tweet itself: its sentiment label from the corpus, and the
`@mentions` and `#hashtags` it contains, in order. The split is the comparison's sentiment
split (`riffle_train.llm.split`, 2,000 training chats, the committed 200 held out). `score`
answers every held-out chat with `riffle generate --chat ... --temperature 0` (the runtime)
and prints the share of valid JSON objects, of each field right, and of exact answers.
"""

import argparse
import json
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def answer(text: str, label: str) -> str:
    return json.dumps({"sentiment": label, "mentions": re.findall(r"@\w+", text),
                       "hashtags": re.findall(r"#\w+", text)})


def write(folder: Path) -> None:
    from riffle_train import llm

    train, held, _ = llm.split("sentiment", 2000, 200)
    folder.mkdir(parents=True, exist_ok=True)
    for name, exs in (("train", train), ("held", held)):
        lines = [json.dumps({"messages": [{"role": "user", "content": e.text},
                                          {"role": "assistant", "content": answer(e.text, e.label)}]},
                            ensure_ascii=False) for e in exs]
        (folder / f"tweets-{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def score(folder: Path, model: str, adapter: str | None, riffle: str, threads: int) -> dict:
    recs = [json.loads(x) for x in (folder / "tweets-held.jsonl").read_text(encoding="utf-8").splitlines()]
    n = dict.fromkeys(("valid", "sentiment", "mentions", "hashtags", "exact"), 0)
    for r in recs:
        user, want = r["messages"][0]["content"], r["messages"][1]["content"]
        cmd = [riffle, "generate", "--model", model, "--chat", user, "--temperature", "0", "--max-tokens", "80",
               "--threads", str(threads)] + (["--adapter", adapter] if adapter else [])
        got = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
        n["exact"] += got == want
        try:
            g = json.loads(got)
        except json.JSONDecodeError:
            continue
        if isinstance(g, dict):
            n["valid"] += 1
            w = json.loads(want)
            for k in ("sentiment", "mentions", "hashtags"):
                n[k] += g.get(k) == w[k]
    return {k: round(100 * v / len(recs), 1) for k, v in n.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("dir", type=Path)
    s = sub.add_parser("score")
    s.add_argument("dir", type=Path)
    s.add_argument("--model", required=True)
    s.add_argument("--adapter", default=None)
    s.add_argument("--riffle", default=str(REPO / "target" / "release" / "riffle"))
    s.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "write":
        write(a.dir)
    else:
        print(json.dumps(score(a.dir, a.model, a.adapter, a.riffle, a.threads)))


if __name__ == "__main__":
    main()
