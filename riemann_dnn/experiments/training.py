"""The machinery every stage of the protocol shares: the runs' models stacked into one
:class:`~.ensemble.Ensemble`, an epoch over each run's images (through the one loop of
:mod:`.epoch`), the errors on held-out images (optionally with re-estimated BatchNorm
statistics), and the ensemble's checkpoint on disk.

Every function takes the :class:`~.distributed.Launch` of the processes that train the
ensemble together (``None``: this process alone). With several ranks the ensemble is trained
data-parallel: each rank takes its slice of every global batch, BatchNorm normalises over
the global batch, gradients and error counts are summed over the ranks, so every rank holds
the same weights and takes the same decisions; rank 0 writes the checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import math
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..models import ArchBN, ConvArchBN
from .config import ARCH_NAMES, RunConfig
from .distributed import Launch, all_reduce_sum, batch_share, broadcast_object, convert_batchnorm
from .ensemble import Ensemble
from .epoch import train_epoch
from .methods import METHODS
from .records import write_bytes
from .runs import MNISTTensors

__all__ = [
    "ARCHS",
    "build_ensemble",
    "rate_tensor",
    "rows",
    "ensemble_epoch",
    "errors_on",
    "test_errors",
    "estimated_bn",
    "Checkpoint",
    "ensemble_state",
    "restore_ensemble",
    "take_copies",
]

#: Architectures: the paper's MLP (:class:`ArchBN`) and its convolutional variant.
ARCHS = {"mlp": ArchBN, "conv": ConvArchBN}
assert tuple(ARCHS) == ARCH_NAMES


def _parallel(launch: Launch | None) -> bool:
    return launch is not None and launch.world_size > 1


def rows(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``tensor[index]`` for an index tensor of any shape (rows of ``tensor``), through
    ``index_select``: the same values, about 5x faster than advanced indexing for the
    protocol's batches on the CPU."""
    flat = torch.index_select(tensor, 0, index.reshape(-1).to(tensor.device))
    return flat.view(*index.shape, *tensor.shape[1:])


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


def build_ensemble(
    configs: list[RunConfig],
    copies: int,
    in_features: int,
    device,
    *,
    launch: Launch | None = None,
) -> Ensemble:
    """An ensemble of ``copies`` ArchBN models per config, initialised from each seed, with
    the filters on the run's manifold for constrained methods. BatchNorm becomes
    :class:`~.distributed.GlobalBatchNorm` when the ensemble is trained data-parallel over
    ``launch`` (statistics of the global batch) or under autocast (``amp``: normalised in
    float32); otherwise it is torch's."""
    config = configs[0]
    if config.arch not in ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose from {sorted(ARCHS)}")
    method = METHODS[config.method]
    models = _models(configs, copies, in_features, device)
    if _parallel(launch) or config.amp != "off":
        models = [convert_batchnorm(m, global_batch=_parallel(launch)) for m in models]
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
        optimizer=method.optimizer,
        momentum=method.momentum,
    )


def rate_tensor(rates: list[float]) -> torch.Tensor:
    """The optimizer's form of a list of rates (one per copy): a float64 tensor whose values
    are the rates rounded to float32 once. The protocol has always handed its candidate and
    chosen rates to the optimizer through a float32 tensor, so the rounding stays, here and
    only here, for every record to keep its numbers; the bold driver's own rates (and the
    records' ``lr`` curves) are the exact floats."""
    return torch.tensor(rates, dtype=torch.float32).to(torch.float64)


def epoch_batches(
    pools: torch.Tensor, generators: list[torch.Generator], copies: int, batch_size: int
):
    """Yield ``(members, batch)`` index tensors: each run's pool reshuffled (the same order
    for the ``copies`` members of a run), every image once per epoch."""
    orders = torch.stack([torch.randperm(pools.shape[1], generator=g) for g in generators])
    epoch = torch.gather(pools, 1, orders.to(pools.device)).repeat_interleave(copies, dim=0)
    for start in range(0, epoch.shape[1], batch_size):
        yield epoch[:, start : start + batch_size]


def ensemble_epoch(
    ens: Ensemble,
    data: MNISTTensors,
    pools: torch.Tensor,
    generators: list[torch.Generator],
    copies: int,
    protocol,
    *,
    amp: str = "off",
    launch: Launch | None = None,
) -> tuple[list[float], list[float]]:
    """One epoch of every member over its run's ``pools`` row (:func:`epoch_batches`);
    returns each member's epoch loss (mean over the batches) and training error."""
    rank = 0 if launch is None else launch.rank

    def objective(index: torch.Tensor, size: int):
        return ens.objective(
            rows(data.train_x, index),
            rows(data.train_y, index),
            protocol.loss_reduction,
            batch_size=size,
            penalty=rank == 0,
        )

    batches = epoch_batches(pools, generators, copies, protocol.batch_size)
    losses, wrong = train_epoch(
        ens.optimizer,
        batches,
        objective,
        launch=launch,
        amp=amp,
        device=pools.device,
        dim=1,
    )
    count = -(-pools.shape[1] // protocol.batch_size)
    return (losses / count).tolist(), (wrong / pools.shape[1]).tolist()


def _share(index: torch.Tensor, launch: Launch | None, dim: int) -> torch.Tensor:
    return batch_share(index, launch.rank, launch.world_size, dim) if _parallel(launch) else index


def errors_on(
    ens: Ensemble,
    data: MNISTTensors,
    pools: torch.Tensor,
    copies: int,
    *,
    launch: Launch | None = None,
    chunk: int = 2000,
) -> list[float]:
    """Each member's error on its run's held-out images ``pools[run]`` (each rank counts
    its share of them)."""
    wrong = torch.zeros(ens.size)
    members = _share(pools.repeat_interleave(copies, dim=0), launch, 1)
    for start in range(0, members.shape[1], chunk):
        index = members[:, start : start + chunk]
        with torch.no_grad():
            pred = ens.forward(rows(data.train_x, index), train=False).argmax(-1)
        wrong += (pred != rows(data.train_y, index)).sum(-1).float().cpu()
    if _parallel(launch):
        all_reduce_sum(wrong)
    return (wrong / pools.shape[1]).tolist()


def test_errors(ens: Ensemble, data: MNISTTensors, *, launch: Launch | None = None) -> list[float]:
    """Each member's error on the test images (each rank counts its share of them)."""
    if not _parallel(launch):
        return ens.errors(data.test_x, data.test_y, shared_input=True).tolist()
    mine = _share(torch.arange(data.test_y.shape[0], device=data.test_y.device), launch, 0)
    wrong = ens.misclassified(rows(data.test_x, mine), rows(data.test_y, mine), shared_input=True)
    return (all_reduce_sum(wrong) / data.test_y.shape[0]).tolist()


@contextmanager
def estimated_bn(
    ens: Ensemble,
    data: MNISTTensors,
    pools: torch.Tensor,
    copies: int,
    protocol,
    *,
    launch: Launch | None = None,
):
    """Evaluate inside with BatchNorm statistics re-estimated on the first
    ``protocol.bn_estimate`` images of each run's training ``pools`` (when set), then
    restore the running statistics training keeps. Data-parallel, each rank passes its
    slice of every estimation batch (BatchNorm sums over the ranks)."""
    size, step = min(protocol.bn_estimate, pools.shape[1]), protocol.batch_size
    if not size:
        yield
        return
    saved = {k: v.clone() for k, v in ens.buffers.items()}
    members = pools[:, :size].repeat_interleave(copies, dim=0)
    ens.stack.estimate_batchnorm(
        rows(data.train_x, _share(members[:, s : s + step], launch, 1))
        for s in range(0, max(size - step, 0) + 1, step)
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            ens.buffers[name].copy_(value)


class Checkpoint:
    """An ensemble's progress on disk, written atomically after every epoch, so that a run
    killed at any moment resumes where its last written epoch ended and finishes with the
    records an uninterrupted run writes (the random generators' states are saved too).

    One file per ensemble, ``out_dir/checkpoints/<hash of its runs' hashes>.pt``, holding a
    dict of stages: each round of rate selection and the training, either finished
    (their result) or in progress (the ensemble's, optimizer's, bold driver's and
    generators' states). It is removed when the ensemble's records are written.

    :meth:`put` serialises the stages on the calling thread (the state as it is then) and
    writes the bytes on a background thread, so training goes on while the file is written
    (and synced). At most one write is in flight: :meth:`put` first waits for the previous
    one (and raises its error, if any), so a kill loses at most the epoch in progress and,
    in the moments a write takes after an epoch, that epoch too.

    Data-parallel (``launch`` of several ranks), rank 0 alone reads and writes the file and
    sends what it read to the other ranks, so hosts need not share a file system.
    """

    def __init__(
        self, out_dir: Path | None, configs: list[RunConfig], *, launch: Launch | None = None
    ):
        key = hashlib.sha256("".join(sorted(c.run_hash for c in configs)).encode()).hexdigest()
        writes = out_dir is not None and (launch is None or launch.is_main)
        self.path = Path(out_dir) / "checkpoints" / f"{key[:16]}.pt" if writes else None
        self.stages: dict[str, Any] = {}
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None
        if self.path is not None and self.path.exists():
            try:
                self.stages = torch.load(self.path, weights_only=True)
            except Exception:  # noqa: BLE001 - a torn or foreign file: start afresh
                self.stages = {}
        if _parallel(launch):
            self.stages = broadcast_object(self.stages)

    def get(self, stage: str) -> Any:
        return self.stages.get(stage)

    def put(self, stage: str, value: Any) -> None:
        """Keep ``value`` as ``stage`` and write every stage to the file (in the
        background)."""
        self.stages[stage] = value
        if self.path is None:
            return
        buffer = io.BytesIO()
        torch.save(self.stages, buffer)
        self.flush()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending = self._writer.submit(write_bytes, self.path, buffer.getbuffer())

    def flush(self) -> None:
        """Wait for the write in flight; raise its error, if it failed."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def remove(self) -> None:
        """The ensemble's records are written: delete the file (after the last write)."""
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            if self.path is not None:
                self.path.unlink(missing_ok=True)


def ensemble_state(ens: Ensemble, generators: list[torch.Generator], **extra) -> dict:
    """What :meth:`Checkpoint.put` keeps of an ensemble in training (with ``extra``)."""
    return {
        "stack": {k: v.clone() for k, v in ens.stack.state_dict().items()},
        "optimizer": ens.optimizer.state_dict(),
        "generators": [g.get_state() for g in generators],
        **extra,
    }


def take_copies(state: Any, keep: list[int], copies: int) -> Any:
    """``state`` (nested dicts, lists and tensors, e.g. state dicts of a stack, its optimizer
    and its bold driver) for the copies ``keep`` of ``copies``: every tensor whose leading
    axis has ``copies`` entries is indexed along it, a ``"copies"`` count becomes
    ``len(keep)``, and everything else is kept (the convention of stacked copies, which
    :class:`~riemann_dnn.optim.BoldDriver` also merges by)."""
    index = torch.tensor(keep)
    if isinstance(state, dict):
        return {
            k: len(keep) if k == "copies" and v == copies else take_copies(v, keep, copies)
            for k, v in state.items()
        }
    if isinstance(state, (list, tuple)):
        return type(state)(take_copies(v, keep, copies) for v in state)
    if isinstance(state, torch.Tensor) and state.ndim >= 1 and state.shape[0] == copies:
        return state.index_select(0, index.to(state.device))
    return state


def restore_ensemble(ens: Ensemble, generators: list[torch.Generator], state: dict) -> None:
    """Load :func:`ensemble_state`'s ``state`` back."""
    ens.stack.load_state_dict(state["stack"])
    ens.optimizer.load_state_dict(state["optimizer"])
    for g, saved in zip(generators, state["generators"]):
        g.set_state(saved)
