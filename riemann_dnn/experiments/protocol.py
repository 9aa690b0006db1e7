"""The paper's training protocol for ArchBN on MNIST (§4; SPEC §4), run for many seeds at once.

Per run (one seed):

(a) learning-rate selection: each candidate rate trains for ``selection_epochs`` epochs on
    ``selection_train`` random training images (reshuffled every epoch, each image once per
    epoch) and is scored by its error on ``selection_val`` other training images; diverged
    candidates (non-finite loss, or a final epoch loss not below the first) are ignored;
(b) full training with the chosen rate on a random split of the training images
    (``validation`` held out, default 10,000), with the bold driver after every epoch (loss
    fell: rate x1.05; rose: rate x0.5 and the epoch undone), at least ``min_epochs`` and at
    most ``max_epochs`` epochs, stopping early when the training error < 1e-5, the
    validation error rose against the one ``patience`` epochs before, or two successive
    validation errors differ by < 1e-5;
(c) the test error on the test images after the last epoch.

All runs of one (depth, method) are trained together as an :class:`~.ensemble.Ensemble`;
each run's record is written as JSON the moment the run stops.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..optim import BoldDriver
from ..problems.archbn import ArchBN
from .ensemble import Ensemble

__all__ = ["Protocol", "Method", "METHODS", "RunConfig", "MNISTTensors", "train_runs",
           "quick_protocol", "progress_total", "welch_t_test",
           "run_path", "load_finished"]


@dataclass(frozen=True)
class Protocol:
    """The protocol's constants (defaults: the paper's, batch size 100)."""

    lr_candidates: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    selection_train: int = 1000
    selection_val: int = 500
    selection_epochs: int = 50
    validation: int | None = None  # None: 10,000, or a sixth of the images if fewer
    min_epochs: int = 25
    max_epochs: int = 60
    batch_size: int = 100
    # the minibatch loss, "sum" or "mean" of per-image losses: the paper does not say; with
    # "sum" and batch 100 its learning-rate grid reproduces its numbers (docs/table2.md)
    loss_reduction: str = "sum"
    increase: float = 1.05
    decrease: float = 0.5
    patience: int = 5
    min_train_error: float = 1e-5
    min_val_change: float = 1e-5

    def __post_init__(self):
        if not self.lr_candidates or any(not lr > 0 for lr in self.lr_candidates):
            raise ValueError(f"lr_candidates must be positive rates, got {self.lr_candidates}")
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ValueError(
                f"need 1 <= min_epochs <= max_epochs, got {self.min_epochs}, {self.max_epochs}"
            )
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}")
        for name in ("selection_train", "selection_val", "selection_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def validation_size(self, num_images: int) -> int:
        size = self.validation if self.validation is not None else min(10_000, num_images // 6)
        if not 0 < size < num_images:
            raise ValueError(f"validation size {size} does not fit {num_images} training images")
        return size


@dataclass(frozen=True)
class Method:
    """A training method of Table 2."""

    name: str
    label: str
    init: str  # "unit" or "pytorch"
    constrained: bool  # filters on a manifold (UN) or Euclidean


METHODS = {
    "un": Method("un", "UN", "unit", True),
    "bsgd": Method("bsgd", "B-SGD", "unit", False),
    "sgd": Method("sgd", "SGD (PyTorch init)", "pytorch", False),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers (its JSON record repeats it).

    Besides the protocol, the seed and the method: the data (``data``, where it was read
    from, and ``data_checksum``, :attr:`riemann_dnn.data.MNIST.checksum` of its four files),
    the float ``dtype``, the ``device`` and the torch intra-op ``threads`` of the training
    process (a different thread count can change the last bits of every sum). Their hash,
    :attr:`run_hash`, names the record's file (:func:`run_path`), so runs that differ in any of
    them never share or overwrite a record. ``world_size`` and ``rank`` describe the process
    layout: ``world_size`` is the number of processes that trained this one run (DDP under
    ``torchrun ... train archbn``; 1 for every run of a sweep, whatever the sweep's own world
    size, since each run is trained by one process), ``rank`` the process that trained it;
    the rank does not enter the hash. ``amp`` (``"off"`` or ``"bf16"``, autocast of the
    forward pass) enters the hash when it is not ``"off"`` (records from before the option
    keep their hash). ``data_parallel`` is True for a run trained as one model by
    :func:`~.distributed.train_archbn_run` (under ``torchrun``, at any world size) rather
    than as a member of an ensemble; it too enters the hash only when set.
    """

    depth: int
    method: str
    seed: int
    protocol: Protocol = field(default_factory=Protocol)
    constraint: str = "oblique"
    retraction: str | None = None
    width: int = 64
    data: str = ""
    data_checksum: str = ""
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    world_size: int = 1
    rank: int = 0
    amp: str = "off"
    data_parallel: bool = False

    @property
    def name(self) -> str:
        tag = "" if self.constraint == "oblique" and self.retraction is None else (
            f"-{self.constraint}" + (f"-{self.retraction}" if self.retraction else ""))
        return f"depth{self.depth}-{self.method}{tag if METHODS[self.method].constrained else ''}" \
               f"-seed{self.seed}"

    @property
    def run_hash(self) -> str:
        """sha256 (hex) of every field that determines the run's numbers (all but ``rank``)."""
        values = self._values()
        values.pop("rank")
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()

    def _values(self) -> dict[str, Any]:
        values = json.loads(json.dumps(asdict(self)))
        if values["amp"] == "off":
            values.pop("amp")
        if not values["data_parallel"]:
            values.pop("data_parallel")
        return values

    def to_json(self) -> dict[str, Any]:
        """The configuration as plain JSON values (tuples become lists), with its
        :attr:`run_hash` (``amp`` and ``data_parallel`` only when set)."""
        return {**self._values(), "run_hash": self.run_hash}


@dataclass
class MNISTTensors:
    """Training and test images as flat float tensors in [0, 1] on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    checksum: str = ""  # riemann_dnn.data.MNIST.checksum of the files

    @classmethod
    def load(cls, data_dir=None, *, source: str = "auto", device="cpu") -> MNISTTensors:
        from ..data import as_tensors, load_mnist

        mnist = load_mnist(data_dir, source=source)
        train_x, train_y = as_tensors(mnist.train_images, mnist.train_labels, device=device)
        test_x, test_y = as_tensors(mnist.test_images, mnist.test_labels, device=device)
        return cls(train_x, train_y, test_x, test_y, str(mnist.source), mnist.checksum)


def run_path(out_dir: Path, config: RunConfig) -> Path:
    """``out_dir/runs/<name>-<first 12 hex digits of the run hash>.json``."""
    return Path(out_dir) / "runs" / f"{config.name}-{config.run_hash[:12]}.json"


def load_finished(out_dir: Path, config: RunConfig) -> dict | None:
    """The record of a finished run with exactly this configuration (same hash), if any."""
    path = run_path(out_dir, config)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("config", {}).get("run_hash") == config.run_hash else None


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


# -- building ensembles -----------------------------------------------------------------------
def _models(configs: list[RunConfig], copies: int, in_features: int, device) -> list[ArchBN]:
    models = []
    for config in configs:
        for _ in range(copies):
            gen = torch.Generator().manual_seed(config.seed)
            torch.manual_seed(config.seed)  # PyTorch's default init, for method "sgd"
            models.append(ArchBN(config.depth, config.width, in_features=in_features,
                                 init=METHODS[config.method].init, generator=gen).to(device))
    return models


def build_ensemble(configs: list[RunConfig], copies: int, in_features: int, device) -> Ensemble:
    """An ensemble of ``copies`` ArchBN models per config, initialised from each seed, with
    the filters on the run's manifold for constrained methods."""
    config = configs[0]
    models = _models(configs, copies, in_features, device)
    manifolds = {}
    if METHODS[config.method].constrained:
        manifolds = dict.fromkeys(ArchBN.scale_invariant_names(config.depth), config.constraint)
    return Ensemble(models, manifolds, retraction=config.retraction)


def _epoch_batches(pools: torch.Tensor, generators: list[torch.Generator], copies: int,
                   batch_size: int):
    """Yield ``(members, batch)`` index tensors: each run's pool reshuffled (the same order
    for the ``copies`` members of a run), every image once per epoch."""
    orders = torch.stack([torch.randperm(pools.shape[1], generator=g) for g in generators])
    epoch = torch.gather(pools, 1, orders.to(pools.device)).repeat_interleave(copies, dim=0)
    for start in range(0, epoch.shape[1], batch_size):
        yield epoch[:, start:start + batch_size]


def _train_epoch(ens: Ensemble, data: MNISTTensors, pools, generators, copies, protocol):
    losses = torch.zeros(ens.size, device=pools.device)
    wrong = torch.zeros(ens.size, device=pools.device)
    batches = 0
    for index in _epoch_batches(pools, generators, copies, protocol.batch_size):
        loss, miss = ens.train_step(data.train_x[index], data.train_y[index],
                                    reduction=protocol.loss_reduction)
        losses += loss
        wrong += miss
        batches += 1
    return (losses / batches).tolist(), (wrong / pools.shape[1]).tolist()


def _errors_on(ens: Ensemble, data: MNISTTensors, pools: torch.Tensor, copies: int,
               chunk: int = 2000) -> list[float]:
    """Each member's error on its run's held-out images ``pools[run]``."""
    wrong = torch.zeros(ens.size)
    members = pools.repeat_interleave(copies, dim=0)
    for start in range(0, members.shape[1], chunk):
        index = members[:, start:start + chunk]
        with torch.no_grad():
            pred = ens.forward(data.train_x[index], train=False).argmax(-1)
        wrong += (pred != data.train_y[index]).sum(-1).float().cpu()
    return (wrong / members.shape[1]).tolist()


# -- the protocol -----------------------------------------------------------------------------
def _select_rates(configs, data, splits, device, progress) -> list[dict]:
    protocol = configs[0].protocol
    rates = protocol.lr_candidates
    ens = build_ensemble(configs, len(rates), data.train_x.shape[1], device)
    lr = torch.tensor([r for _ in configs for r in rates], device=device)
    ens.set_lr(lr)
    generators = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    pools = torch.stack([s["selection_train"] for s in splits]).to(device)
    val = torch.stack([s["selection_val"] for s in splits]).to(device)
    first_loss, last_loss = None, None
    finite = torch.ones(ens.size, dtype=torch.bool)
    for _ in range(protocol.selection_epochs):
        loss, _ = _train_epoch(ens, data, pools, generators, len(rates), protocol)
        loss_t = torch.tensor(loss)
        finite &= torch.isfinite(loss_t)
        lr[~finite.to(device)] = 0  # stop moving diverged members
        ens.set_lr(lr)
        first_loss = loss_t if first_loss is None else first_loss
        last_loss = loss_t
        progress(1)
    val_error = _errors_on(ens, data, val, len(rates))
    selections = []
    for r in range(len(configs)):
        candidates = []
        for c, rate in enumerate(rates):
            m = r * len(rates) + c
            diverged = not bool(finite[m]) or not float(last_loss[m]) < float(first_loss[m])
            candidates.append({"lr": rate, "val_error": val_error[m], "diverged": diverged,
                               "first_loss": float(first_loss[m]), "last_loss": float(last_loss[m])})
        usable = [c for c in candidates if not c["diverged"]] or candidates
        best = min(usable, key=lambda c: c["val_error"])
        selections.append({"candidates": candidates, "chosen_lr": best["lr"],
                           "all_diverged": not any(not c["diverged"] for c in candidates)})
    return selections


def _splits(config: RunConfig, num_images: int) -> dict[str, torch.Tensor]:
    """The run's random subsets of training-image indices (disjoint where they must be)."""
    protocol = config.protocol
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(num_images, generator=gen)
    sel_val = order[: protocol.selection_val]
    sel_train = order[protocol.selection_val: protocol.selection_val + protocol.selection_train]
    order = torch.randperm(num_images, generator=gen)
    validation = protocol.validation_size(num_images)
    return {"selection_val": sel_val, "selection_train": sel_train,
            "validation": order[:validation], "train": order[validation:]}


def _stop_reason(protocol: Protocol, epoch: int, train_error: float, val_errors: list[float]):
    if epoch >= protocol.max_epochs:
        return "max_epochs"
    if epoch < protocol.min_epochs:
        return None
    if train_error < protocol.min_train_error:
        return "training_error_below_threshold"
    if len(val_errors) > protocol.patience and val_errors[-1] > val_errors[-1 - protocol.patience]:
        return "validation_error_rose"
    if len(val_errors) > 1 and abs(val_errors[-1] - val_errors[-2]) < protocol.min_val_change:
        return "validation_error_flat"
    return None


def train_runs(
    configs: list[RunConfig],
    data: MNISTTensors,
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] = lambda n: None,
    world_size: int = 1,
) -> list[dict]:
    """Run the protocol for runs that share depth, method and constraint (different seeds),
    as one ensemble; write and return each run's record.

    ``world_size``: the processes of the launch (a sweep sharded by ``torchrun``), recorded
    with the rank that trained the runs (``configs[i].rank``); neither changes a number."""
    if not configs:
        return []
    keys = {(c.depth, c.method, c.constraint, c.retraction, c.protocol, c.width) for c in configs}
    if len(keys) != 1:
        raise ValueError("train_runs: configs must differ only in their seeds")
    protocol, device = configs[0].protocol, torch.device(device)
    start = time.perf_counter()
    splits = [_splits(c, data.train_x.shape[0]) for c in configs]
    selections = _select_rates(configs, data, splits, device, progress)
    selection_seconds = time.perf_counter() - start

    ens = build_ensemble(configs, 1, data.train_x.shape[1], device)
    chosen = [s["chosen_lr"] for s in selections]
    ens.set_lr(torch.tensor(chosen, device=device))
    driver = BoldDriver(ens.optimizer, ens.stack, lr=torch.tensor(chosen, dtype=torch.float64),
                        increase=protocol.increase, decrease=protocol.decrease,
                        copies=len(configs))
    generators = [torch.Generator().manual_seed(c.seed + 2) for c in configs]
    pools = torch.stack([s["train"] for s in splits]).to(device)
    val_pools = torch.stack([s["validation"] for s in splits]).to(device)
    curves = [{"train_loss": [], "train_error": [], "val_error": [], "lr": [], "accepted": []}
              for _ in configs]
    active = [True] * len(configs)
    records: list[dict | None] = [None] * len(configs)
    epoch_seconds = []
    epoch = 0
    while any(active):
        epoch += 1
        tick = time.perf_counter()
        loss, train_error = _train_epoch(ens, data, pools, generators, 1, protocol)
        epoch_seconds.append(time.perf_counter() - tick)
        accepted = driver.step(torch.tensor(loss, dtype=torch.float64))
        for r in range(len(configs)):
            if active[r]:
                curves[r]["accepted"].append(bool(accepted[r]))
        val_error = _errors_on(ens, data, val_pools, 1)
        stopping = []
        for r in range(len(configs)):
            if not active[r]:
                continue
            c = curves[r]
            c["train_loss"].append(loss[r])
            c["train_error"].append(train_error[r])
            c["val_error"].append(val_error[r])
            c["lr"].append(float(driver.rates[r]))
            reason = _stop_reason(protocol, epoch, train_error[r], c["val_error"])
            if reason is not None:
                stopping.append((r, reason))
        if stopping:
            test_error = ens.errors(data.test_x, data.test_y, shared_input=True).tolist()
            done = torch.zeros(len(configs), dtype=torch.bool)
            for r, reason in stopping:
                active[r] = False
                done[r] = True
                records[r] = {
                    "config": configs[r].to_json(),
                    "name": configs[r].name,
                    "data": data.source,
                    "selection": selections[r],
                    "chosen_lr": selections[r]["chosen_lr"],
                    "epochs": epoch,
                    "stop_reason": reason,
                    "curves": curves[r],
                    "final_val_error": curves[r]["val_error"][-1],
                    "test_error": test_error[r],
                    "ensemble_size": len(configs),
                    "selection_seconds": selection_seconds,
                    "epoch_seconds": list(epoch_seconds),
                    "seconds": time.perf_counter() - start,
                    "device": str(device),
                    "torch_threads": torch.get_num_threads(),
                    "world_size": world_size,
                    "rank": configs[r].rank,
                }
                _write_json(run_path(out_dir, configs[r]), records[r])
            driver.freeze(done)
        progress(1)
    return records


def quick_protocol(**overrides) -> Protocol:
    """A few-minute version of the protocol (the README's main command, smoke tests):
    10 selection epochs, 10 to 15 training epochs."""
    base = Protocol(selection_epochs=10, min_epochs=10, max_epochs=15)
    return replace(base, **overrides)


def progress_total(configs: list[RunConfig]) -> int:
    """Upper bound of progress ticks :func:`train_runs` gives for ``configs``."""
    return configs[0].protocol.selection_epochs + configs[0].protocol.max_epochs if configs else 0


def welch_t_test(a: list[float], b: list[float]) -> dict[str, float]:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) (two-sided p-value)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"t": math.nan, "p_value": math.nan}
    result = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(result.statistic), "p_value": float(result.pvalue)}
