"""The machinery every stage of the protocol shares: the runs' models stacked into one
:class:`~.ensemble.Ensemble`, an epoch over each run's images, the errors on held-out images
(optionally with re-estimated BatchNorm statistics), and the ensemble's checkpoint on disk."""

from __future__ import annotations

import hashlib
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..models import ArchBN, ConvArchBN
from .config import ARCH_NAMES, RunConfig
from .ensemble import Ensemble
from .methods import METHODS
from .records import save_torch
from .runs import MNISTTensors

__all__ = ["ARCHS", "build_ensemble"]

#: Architectures: the paper's MLP (:class:`ArchBN`) and its convolutional variant.
ARCHS = {"mlp": ArchBN, "conv": ConvArchBN}
assert tuple(ARCHS) == ARCH_NAMES


def _models(configs: list[RunConfig], copies: int, in_features: int, device) -> list[ArchBN]:
    models = []
    for config in configs:
        for _ in range(copies):
            gen = torch.Generator().manual_seed(config.seed)
            torch.manual_seed(config.seed)  # PyTorch's default init, for method "sgd"
            init = METHODS[config.method].init
            if config.arch == "conv":
                side = math.isqrt(in_features)
                model = ConvArchBN(
                    config.depth, config.width, image_size=side, init=init, generator=gen
                )
            else:
                model = ArchBN(
                    config.depth, config.width, in_features=in_features, init=init, generator=gen
                )
            models.append(model.to(device))
    return models


def build_ensemble(configs: list[RunConfig], copies: int, in_features: int, device) -> Ensemble:
    """An ensemble of ``copies`` ArchBN models per config, initialised from each seed, with
    the filters on the run's manifold for constrained methods."""
    config = configs[0]
    if config.arch not in ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose from {sorted(ARCHS)}")
    method = METHODS[config.method]
    models = _models(configs, copies, in_features, device)
    filters = ARCHS[config.arch].scale_invariant_names(config.depth)
    manifolds = {}
    if method.constrained:
        manifolds = dict.fromkeys(filters, config.constraint)
    special = method.filter_rate is not None or method.weight_decay or method.split_rates
    return Ensemble(
        models,
        manifolds,
        retraction=config.retraction,
        filters=filters if special else (),
        filter_rate=method.filter_rate,
    )


def _epoch_batches(
    pools: torch.Tensor, generators: list[torch.Generator], copies: int, batch_size: int
):
    """Yield ``(members, batch)`` index tensors: each run's pool reshuffled (the same order
    for the ``copies`` members of a run), every image once per epoch."""
    orders = torch.stack([torch.randperm(pools.shape[1], generator=g) for g in generators])
    epoch = torch.gather(pools, 1, orders.to(pools.device)).repeat_interleave(copies, dim=0)
    for start in range(0, epoch.shape[1], batch_size):
        yield epoch[:, start : start + batch_size]


def _train_epoch(ens: Ensemble, data: MNISTTensors, pools, generators, copies, protocol):
    losses = torch.zeros(ens.size, device=pools.device)
    wrong = torch.zeros(ens.size, device=pools.device)
    batches = 0
    for index in _epoch_batches(pools, generators, copies, protocol.batch_size):
        loss, miss = ens.train_step(
            data.train_x[index], data.train_y[index], reduction=protocol.loss_reduction
        )
        losses += loss
        wrong += miss
        batches += 1
    return (losses / batches).tolist(), (wrong / pools.shape[1]).tolist()


def _errors_on(
    ens: Ensemble, data: MNISTTensors, pools: torch.Tensor, copies: int, chunk: int = 2000
) -> list[float]:
    """Each member's error on its run's held-out images ``pools[run]``."""
    wrong = torch.zeros(ens.size)
    members = pools.repeat_interleave(copies, dim=0)
    for start in range(0, members.shape[1], chunk):
        index = members[:, start : start + chunk]
        with torch.no_grad():
            pred = ens.forward(data.train_x[index], train=False).argmax(-1)
        wrong += (pred != data.train_y[index]).sum(-1).float().cpu()
    return (wrong / members.shape[1]).tolist()


@contextmanager
def _estimated_bn(ens: Ensemble, data: MNISTTensors, pools: torch.Tensor, copies: int, protocol):
    """Evaluate inside with BatchNorm statistics re-estimated on the first
    ``protocol.bn_estimate`` images of each run's training ``pools`` (when set), then
    restore the running statistics training keeps."""
    size, step = min(protocol.bn_estimate, pools.shape[1]), protocol.batch_size
    if not size:
        yield
        return
    saved = {k: v.clone() for k, v in ens.buffers.items()}
    members = pools[:, :size].repeat_interleave(copies, dim=0)
    ens.stack.estimate_batchnorm(
        data.train_x[members[:, s : s + step]] for s in range(0, max(size - step, 0) + 1, step)
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            ens.buffers[name].copy_(value)


class _Checkpoint:
    """An ensemble's progress on disk, written atomically after every epoch, so that a run
    killed at any moment resumes within one epoch of where it stopped and finishes with the
    records an uninterrupted run writes (the random generators' states are saved too).

    One file per ensemble, ``out_dir/checkpoints/<hash of its runs' hashes>.pt``, holding a
    dict of stages: each round of rate selection and the training, either finished
    (their result) or in progress (the ensemble's, optimizer's, bold driver's and
    generators' states). It is removed when the ensemble's records are written.
    """

    def __init__(self, out_dir: Path | None, configs: list[RunConfig]):
        key = hashlib.sha256("".join(sorted(c.run_hash for c in configs)).encode()).hexdigest()
        self.path = None if out_dir is None else Path(out_dir) / "checkpoints" / f"{key[:16]}.pt"
        self.stages: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                self.stages = torch.load(self.path, weights_only=True)
            except Exception:  # noqa: BLE001 - a torn or foreign file: start afresh
                self.stages = {}

    def get(self, stage: str) -> Any:
        return self.stages.get(stage)

    def put(self, stage: str, value: Any) -> None:
        self.stages[stage] = value
        if self.path is None:
            return
        save_torch(self.path, self.stages)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _ensemble_state(ens: Ensemble, generators: list[torch.Generator], **extra) -> dict:
    return {
        "stack": {k: v.clone() for k, v in ens.stack.state_dict().items()},
        "optimizer": ens.optimizer.state_dict(),
        "generators": [g.get_state() for g in generators],
        **extra,
    }


def _restore_ensemble(ens: Ensemble, generators: list[torch.Generator], state: dict) -> None:
    ens.stack.load_state_dict(state["stack"])
    ens.optimizer.load_state_dict(state["optimizer"])
    for g, saved in zip(generators, state["generators"]):
        g.set_state(saved)
