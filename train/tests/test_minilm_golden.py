"""The committed MiniLM adapter goldens (tests/data/golden/minilm-<task>.json) are what the
generator computes from the committed adapters, and the float32 torch path meets their tolerance."""

import hashlib
import json

import numpy as np
import pytest
import torch

from riffle_train import minilm
from riffle_train.minilm_golden import SENTENCES, adapter_reference


def _goldens(repo):
    return sorted((repo / "tests" / "data" / "golden").glob("minilm-*.json"))


def test_goldens_exist_for_every_adapter(repo):
    adapters = sorted(p.stem.removeprefix("minilm-") for p in (repo / "models" / "minilm-adapters").glob("minilm-*.gguf"))
    assert adapters and adapters == sorted(p.stem.removeprefix("minilm-") for p in _goldens(repo))


@pytest.mark.parametrize("task", sorted(SENTENCES))
def test_golden_current(task, repo, minilm_base):
    g = repo / "tests" / "data" / "golden" / f"minilm-{task}.json"
    if not g.exists():
        pytest.skip(f"no golden for {task}")
    doc = json.loads(g.read_text())
    ap = repo / doc["adapter"]
    assert hashlib.sha256(ap.read_bytes()).hexdigest() == doc["adapter_sha256"], "adapter changed: regenerate"
    cases = doc["cases"]
    assert [c["text"] for c in cases] == SENTENCES[task]
    assert [c["ids"] for c in cases] == minilm.encode(minilm.tokenizer(max_length=512), SENTENCES[task])
    pooled, logits, merged = adapter_reference(minilm_base, ap, [c["ids"] for c in cases])
    want = np.array([c["logits"] for c in cases])
    assert np.abs(logits - want).max() < 1e-10
    assert np.abs(pooled - np.array([c["pooled"] for c in cases])).max() < 1e-10
    assert np.abs(merged - want).max() < 1e-9
    # the float32 torch path (what a runtime does) within the stated tolerance
    enc, _ = minilm.encoder_from_gguf(minilm_base)
    minilm.apply_text_adapter(enc, ap)
    with torch.no_grad():
        for c in cases:
            t = torch.tensor([c["ids"]])
            out = enc(t, torch.ones_like(t))[0].double().numpy()
            assert np.abs(out - np.array(c["logits"])).max() < doc["tolerance"]["logits_abs"]
