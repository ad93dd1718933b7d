import json

import numpy as np
import torch

from riffle_train import digits, golden


def test_golden_matches_torch_layers(repo):
    """The float32 torch path reproduces the committed float64 goldens within the stated tolerance."""
    g = repo / "tests" / "data" / "golden"
    d = repo / "models" / "digits"
    for spec in digits.ADAPTERS:
        doc = json.loads((g / f"{spec.name}.json").read_text())
        model, _ = digits.adapted_model_from_gguf(d / f"{spec.arch}.gguf", d / f"{spec.name}.gguf")
        out = model(torch.tensor(doc["inputs"], dtype=torch.float32)).detach().double().numpy()
        assert np.abs(out - np.array(doc["adapter_logits"])).max() < doc["tolerance"]["logits_abs"]
    for arch in ("mlp", "cnn"):
        doc = json.loads((g / f"{arch}.json").read_text())
        model, _ = digits.model_from_gguf(d / f"{arch}.gguf")
        out = model(torch.tensor(doc["inputs"], dtype=torch.float32)).detach().double().numpy()
        assert np.abs(out - np.array(doc["base_logits"])).max() < doc["tolerance"]["logits_abs"]


def test_golden_files_are_current(repo, tmp_path):
    """Regenerating the goldens from the committed models gives the committed files."""
    golden.write_golden(repo / "models" / "digits", tmp_path)
    for p in tmp_path.iterdir():
        if p.name == "manifest.json":
            continue
        assert p.read_text() == (repo / "tests" / "data" / "golden" / p.name).read_text(), p.name
