"""Test configuration for riemann_dnn.manifolds.

The cases (manifolds x backends) and helpers live in ``manifold_cases.py`` next to this
file; this conftest makes that module importable under any pytest import mode and gives
the tests a GPU-skip marker hook.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and str(item.fspath).startswith(_HERE):
            item.add_marker(skip)
