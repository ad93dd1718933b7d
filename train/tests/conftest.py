import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
torch.set_num_threads(1)


@pytest.fixture
def repo():
    return REPO
