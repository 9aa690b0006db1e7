"""Any model's symmetries, weight by weight: ``riemann-dnn symmetry --model module:factory``.

``load_factory`` imports ``package.module:factory``; ``explain_model`` builds the
model, runs :func:`riemann_dnn.params.explain` on a random batch (of ``input_shape``, else
the one :func:`riemann_dnn.params.example_batch` builds) and ``write_explanation``
writes the table as ``explain.json`` and ``explain.md``.
"""

from __future__ import annotations

import importlib
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...params import Explanation, explain
from ..records import write_json, write_text

__all__ = ["load_factory", "explain_model", "write_explanation"]


def load_factory(spec: str) -> Callable[[], nn.Module]:
    """The callable named by ``"package.module:factory"`` (attributes may be dotted,
    ``"pkg.mod:Class.build"``); ``ValueError`` saying what is wrong otherwise."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is not 'package.module:factory'")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the same usage error
        raise ValueError(f"cannot import {module_name!r} ({type(err).__name__}: {err})") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(
            f"{spec} is a {type(target).__name__}, not a callable that builds a model"
        )
    return target


def build_model(factory: Callable[[], nn.Module], spec: str) -> nn.Module:
    """``factory()``, checked to be an ``nn.Module``."""
    try:
        model = factory()
    except Exception as err:  # noqa: BLE001 - a factory that fails with no arguments
        raise ValueError(f"{spec}() failed ({type(err).__name__}: {err})") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"{spec}() returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def explain_model(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    trace: str = "auto",
) -> Explanation:
    """:func:`~riemann_dnn.params.explain` on a standard-normal batch of ``input_shape``
    (seeded), or on the batch built from the model's first layer."""
    model = model.to(device)
    batch = None
    if input_shape is not None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        generator = torch.Generator().manual_seed(seed)
        batch = torch.randn(tuple(input_shape), generator=generator, dtype=dtype).to(device)
    return explain(model, batch, trace=trace)


def write_explanation(explanation: Explanation, out: Path, *, model: str) -> list[Path]:
    """``explain.json`` (rows, summary, trace, input shapes, versions) and ``explain.md``."""
    meta = {
        "model": model,
        "trace": explanation.trace,
        "input_shapes": [list(s) for s in explanation.input_shapes],
        "rtol": explanation.rtol,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    text = (
        f"# Symmetries of `{model}`\n\n"
        f"{explanation.summary()['weights']} weights; traced by {explanation.trace} on a "
        f"batch of shape {meta['input_shapes']}, training mode. A claim is kept when "
        f"rescaling the weight as claimed changes the output by at most {explanation.rtol:g} "
        f"(relative; the change column); weights with no claim are rescaled per filter.\n\n"
        f"{explanation.markdown()}\n"
    )
    return [
        write_json(
            out / "explain.json",
            {"meta": meta, "summary": explanation.summary(), "weights": explanation.rows()},
        ),
        write_text(out / "explain.md", text),
    ]
