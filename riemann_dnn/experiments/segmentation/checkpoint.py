"""What a segmentation run leaves to resume from: ``checkpoint.pt`` (model, optimizer, epoch,
metrics history and the states of every random generator the run draws from), written
atomically after every epoch, read back with a version and configuration check, and the
trained model it holds."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..records import save_torch
from .build import build_model
from .config import SegmentationConfig

__all__ = [
    "CHECKPOINT",
    "CheckpointMismatchError",
    "rng_states",
    "restore_rng_states",
    "save_checkpoint",
    "load_checkpoint",
    "check_resumable",
    "load_trained_model",
]

CHECKPOINT = "checkpoint.pt"
_CHECKPOINT_VERSION = 1


class CheckpointMismatchError(ValueError):
    """The checkpoint in the output directory belongs to a different configuration."""


def rng_states(shuffle: torch.Generator) -> dict[str, Any]:
    """The states of the training-order generator ``shuffle`` and of torch's, numpy's, python's
    (and CUDA's) global generators, in a form ``torch.load(weights_only=True)`` reads."""
    states = {
        "shuffle": shuffle.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state_to_json(np.random.get_state()),
        "python": repr(random.getstate()),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any], shuffle: torch.Generator) -> None:
    """Set ``shuffle`` and the global generators back to ``states`` (from :func:`rng_states`)."""
    shuffle.set_state(states["shuffle"])
    torch.set_rng_state(states["torch"])
    np.random.set_state(_numpy_state_from_json(states["numpy"]))
    random.setstate(_literal_tuple(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _numpy_state_to_json(state: tuple) -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = state
    return {
        "name": name,
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _numpy_state_from_json(state: dict[str, Any]) -> tuple:
    return (
        state["name"],
        state["keys"].numpy().astype(np.uint32),
        state["pos"],
        state["has_gauss"],
        state["cached"],
    )


def _literal_tuple(text: str) -> tuple:
    import ast

    return ast.literal_eval(text)


def save_checkpoint(
    path: Path,
    config: SegmentationConfig,
    *,
    epoch: int,
    model: nn.Module,
    optimizer: dict[str, Any],
    history: list[dict[str, Any]],
    rng: dict[str, Any],
) -> None:
    """Write the checkpoint of ``config``'s run after ``epoch`` epochs (``optimizer``: its
    state dict; ``rng``: :func:`rng_states`), atomically
    (:func:`~riemann_dnn.experiments.records.save_torch`)."""
    payload = {
        "version": _CHECKPOINT_VERSION,
        "config": config.to_json(),
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer,
        "history": history,
        "rng": rng,
    }
    save_torch(path, payload)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of :func:`save_checkpoint` at ``path``, on the CPU; an unreadable file or
    another version raises :class:`CheckpointMismatchError`."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointMismatchError(
            f"cannot read the checkpoint {str(path)!r} ({type(err).__name__}: {err}); delete it "
            "to start over, or choose another --out"
        ) from None
    if payload.get("version") != _CHECKPOINT_VERSION:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} has version {payload.get('version')!r}, expected "
            f"{_CHECKPOINT_VERSION}; delete it to start over, or choose another --out"
        )
    return payload


def check_resumable(saved: dict[str, Any], config: SegmentationConfig, path: Path) -> None:
    """Everything but ``epochs`` must match for a resume."""
    now = config.to_json()
    differ = {k: (saved.get(k), v) for k, v in now.items() if k != "epochs" and saved.get(k) != v}
    if differ:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
        raise CheckpointMismatchError(
            f"the checkpoint {str(path)!r} was written by a different configuration ({shown}); "
            "rerun with the checkpoint's settings to resume, or choose another --out"
        )


def load_trained_model(run_dir: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """The model saved in ``run_dir/checkpoint.pt`` (a run of :func:`~.train.train_segmentation`)."""
    payload = load_checkpoint(Path(run_dir) / CHECKPOINT)
    config = SegmentationConfig.from_json(payload["config"])
    weight = next(v for k, v in payload["model"].items() if k.endswith("classifier.weight"))
    first = next(v for k, v in payload["model"].items() if k.endswith(".weight") and v.ndim == 4)
    model = build_model(config, first.shape[1], weight.shape[0])
    model.load_state_dict(payload["model"])
    return model.to(device)
