"""Bring your own model: train networks whose symmetries are not BatchNorm's with
``RiemannianSGD`` on the groups :func:`~riemann_dnn.params.param_groups` finds, against
Euclidean SGD and its controls, on MNIST (``riemann-dnn byom``).

Two architectures written as a user would write them (plain ``torch.nn``, nothing of ours):

- ``resnet-gn-ws``: a small ResNet with GroupNorm and weight-standardized convolutions
  (BiT-style ``StdConv2d``): every conv weight is invariant per filter, by construction;
- ``convnext``: a small ConvNeXt-style net (depthwise 7x7 convs without bias, channels-last
  LayerNorm, inverted MLP, layer scale, residuals): the stem and depthwise conv weights are
  invariant as a whole (LayerNorm over the channels they produce).

The methods (names, labels and colours from :data:`~riemann_dnn.experiments.methods.METHODS`),
all with momentum ``momentum``; "the invariant weights" are those ``param_groups(model)``
finds and checks:

- ``un``: ``RiemannianSGD`` on those groups (each invariant weight on the manifold of its
  symmetry, unit rows), plain SGD on the rest;
- ``bsgd``: ``torch.optim.SGD`` on every parameter, from the same initial point as ``un``
  (the invariant weights projected onto their manifold), so that only the update differs;
- ``bsgd-elr``: ``bsgd`` whose invariant filters step with rate ``lr * ||w||**2``
  (``RiemannianSGD``'s Euclidean ``"filter_rate": "norm2"``): the angular step of a
  scale-invariant filter is ``lr ||g|| / ||w||``, i.e. ``lr / ||w||**2`` at unit norm, so
  this undoes the effective rate's decay as ``||w||`` grows (per-filter symmetries only);
- ``sgd``: ``torch.optim.SGD`` from PyTorch's default initialisation.

Protocol, per architecture and method: a run trains ``epochs`` epochs on ``train_images``
images (minibatches of ``batch_size``, reshuffled each epoch, rate ``lr`` constant or
annealed by ``schedule``). The rate is chosen by the validation error (``validation_images``
held out of the training set) after the last epoch of seed 0, among ``lr_candidates``
extended by factors ``lr_extend_factor`` (at most ``lr_extend`` steps each way) while the
best is the smallest or largest tried; diverged runs (a non-finite loss or gradient stops a
run) are never chosen. Then seeds ``0 .. seeds - 1`` run at that rate and report the test
error on the MNIST test set. Seed ``s`` fixes the initial weights and the minibatch order of
every method, so runs are paired: comparisons are paired over seeds (paired t-test,
Wilcoxon, bootstrap CI, Holm over all comparisons; :mod:`.stats`). Every run records, per
epoch, its training loss, validation error, the mean norm of the invariant filters and the
mean angle by which one step turns them (the effective step the loss sees).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import as_tensors, load_mnist
from ..optim import NonFiniteGradientError, RiemannianSGD
from ..params import param_groups, resolve_geometry
from .methods import METHODS
from .records import figure, read_json, write_json, write_text
from .selection import at_edge, best_candidate, grid_extensions
from .stats import holm, paired_comparison

__all__ = [
    "ByomConfig",
    "ARCHS",
    "BYOM_METHODS",
    "COMPARISONS",
    "build_model",
    "make_optimizer",
    "train_one",
    "run_byom",
    "write_byom",
]

#: The methods ``byom`` compares (see the module docstring).
BYOM_METHODS = ("un", "bsgd", "bsgd-elr", "sgd")
#: The paired comparisons (a, b): a - b in test error.
COMPARISONS = (("un", "sgd"), ("un", "bsgd"), ("un", "bsgd-elr"), ("bsgd", "sgd"))
SCHEDULES = ("constant", "cosine")
#: The cross-entropy of a uniform guess over the ten digits: a finished run whose last
#: epoch's mean training loss is not below it did not train (counted as "untrained").
CHANCE_LOSS = math.log(10)


# -- the models, as a user writes them -----------------------------------------------------
class StdConv2d(nn.Conv2d):
    """Weight-standardized convolution (BiT): each filter standardized to zero mean and unit
    variance before the convolution."""

    def forward(self, x):
        w = self.weight.reshape(1, self.out_channels, -1)
        w = F.batch_norm(w, None, None, training=True, momentum=0.0, eps=1e-6)
        return self._conv_forward(x, w.reshape_as(self.weight), self.bias)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = StdConv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = StdConv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = nn.GroupNorm(groups, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                StdConv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout)
            )

    def forward(self, x):
        out = F.relu(self.gn1(self.conv1(x)))
        out = self.gn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNetGNWS(nn.Module):
    """Stem conv, two stages of one basic block each (the second halves the resolution),
    global average pooling, a linear classifier."""

    def __init__(self, width: int = 16, groups: int = 4):
        super().__init__()
        self.stem = StdConv2d(1, width, 3, 1, 1, bias=False)
        self.gn = nn.GroupNorm(groups, width)
        self.stage1 = _Block(width, width, 1, groups)
        self.stage2 = _Block(width, 2 * width, 2, groups)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = F.relu(self.gn(self.stem(x)))
        x = self.stage2(self.stage1(x))
        return self.fc(x.mean((2, 3)))


class _LayerNorm2d(nn.LayerNorm):
    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.1 * torch.ones(dim))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
        return x + y.permute(0, 3, 1, 2)


class ConvNeXtSmall(nn.Module):
    """Patchify stem (2x2, stride 2) + LayerNorm, a block, downsampling (LayerNorm + 2x2
    stride-2 conv), a block, pooled LayerNorm, a linear classifier."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 2, 2, bias=False)
        self.stem_norm = _LayerNorm2d(width)
        self.block1 = _ConvNeXtBlock(width)
        self.down_norm = _LayerNorm2d(width)
        self.down = nn.Conv2d(width, 2 * width, 2, 2, bias=False)
        self.block2 = _ConvNeXtBlock(2 * width)
        self.head_norm = nn.LayerNorm(2 * width)
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x):
        x = self.block1(self.stem_norm(self.stem(x)))
        x = self.block2(self.down(self.down_norm(x)))
        return self.fc(self.head_norm(x.mean((2, 3))))


ARCHS: dict[str, Callable[[int], nn.Module]] = {
    "resnet-gn-ws": lambda width: ResNetGNWS(width),
    "convnext": lambda width: ConvNeXtSmall(width),
}


def build_model(arch: str, width: int, seed: int) -> nn.Module:
    """The architecture with the seed's initial weights."""
    torch.manual_seed(seed)
    return ARCHS[arch](width)


# -- the protocol --------------------------------------------------------------------------
@dataclass(frozen=True)
class ByomConfig:
    """What determines the numbers of a ``riemann-dnn byom`` run."""

    archs: tuple[str, ...] = ("resnet-gn-ws",)
    methods: tuple[str, ...] = BYOM_METHODS
    width: int = 8
    train_images: int = 10_000
    validation_images: int = 2_000
    test_images: int = 10_000
    epochs: int = 6
    batch_size: int = 50
    momentum: float = 0.9
    schedule: str = "constant"
    lr_candidates: tuple[float, ...] = (10**-1.5, 0.1, 10**-0.5)
    lr_extend: int = 2
    lr_extend_factor: float = 10**0.5
    seeds: int = 5
    data_dir: str | None = None
    source: str = "auto"

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in BYOM_METHODS]
        if unknown:
            raise ValueError(f"ByomConfig: methods {unknown}; choose from {list(BYOM_METHODS)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"ByomConfig: schedule {self.schedule!r}; choose from {list(SCHEDULES)}"
            )
        if len(self.lr_candidates) < 2 and self.lr_extend:
            raise ValueError(
                "ByomConfig: extending the rate grid (lr_extend > 0) needs at least two "
                f"lr_candidates, got {list(self.lr_candidates)}"
            )

    @classmethod
    def quick(cls, **overrides: Any) -> ByomConfig:
        """Under a minute on one core: 600 images, two epochs of 12 steps, two rates
        (extended at most once each way), two seeds."""
        values = dict(
            train_images=600,
            validation_images=300,
            test_images=500,
            epochs=2,
            lr_candidates=(0.1, 10**-0.5),
            lr_extend=1,
            seeds=2,
        )
        return cls(**{**values, **overrides})

    def run_key(self) -> dict[str, Any]:
        """The fields a single run's numbers depend on (besides arch, method, rate, seed)."""
        fields = ("width", "train_images", "validation_images", "test_images", "epochs")
        fields += ("batch_size", "momentum", "schedule", "data_dir", "source")
        return {k: getattr(self, k) for k in fields}


def _data(config: ByomConfig):
    mnist = load_mnist(config.data_dir, source=config.source)
    n_train = len(mnist.train_labels)
    need = config.train_images + config.validation_images
    if need > n_train:
        raise ValueError(
            f"{config.train_images} training + {config.validation_images} validation images "
            f"exceed the {n_train} training images of {mnist.source}"
        )
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(1234))
    images = mnist.train_images[order[:need].numpy()]
    labels = mnist.train_labels[order[:need].numpy()]
    x, y = as_tensors(images, labels, flatten=False)
    x = x.view(-1, 1, 28, 28)
    n_test = config.test_images
    if n_test > len(mnist.test_labels):
        raise ValueError(
            f"{n_test} test images exceed the {len(mnist.test_labels)} of {mnist.source}"
        )
    xt, yt = as_tensors(mnist.test_images[:n_test], mnist.test_labels[:n_test], flatten=False)
    split = config.train_images
    return {
        "train": (x[:split], y[:split]),
        "validation": (x[split:], y[split:]),
        "test": (xt.view(-1, 1, 28, 28), yt),
        "source": mnist.source,
    }


def _rows(group: dict, param: torch.Tensor) -> torch.Tensor:
    """The unit rows of an invariant weight on its group's manifold (a view)."""
    return resolve_geometry(group["manifold"], group.get("retraction"), param).view(param)


def invariant_groups(model: nn.Module, example: torch.Tensor) -> list[dict]:
    """``param_groups(model)``: the groups of invariant weights first, the Euclidean rest
    last (``"names"`` in each)."""
    return param_groups(model, example_input=example)


def applicable(arch: str, method: str, width: int = 8) -> str:
    """Why ``method`` cannot run on ``arch`` (``""`` when it can): ``bsgd-elr``'s per-filter
    rates need every invariant weight to be invariant per filter."""
    if METHODS[method].filter_rate is None:
        return ""
    model = build_model(arch, width, 0)
    groups = invariant_groups(model, torch.rand(2, 1, 28, 28))
    other = [g["manifold"] for g in groups if g["manifold"] not in ("oblique", "euclidean")]
    if other:
        return (
            f"per-filter rates need per-filter symmetries; {arch}'s invariant weights are "
            f"on {sorted(set(other))}"
        )
    return ""


@torch.no_grad()
def _project(constrained: list[dict]) -> None:
    """Put the invariant weights on their manifolds (as ``RiemannianSGD`` does at start)."""
    for group in constrained:
        for param in group["params"]:
            geometry = resolve_geometry(group["manifold"], group.get("retraction"), param)
            view = geometry.view(param)
            view.copy_(geometry.manifold.project_point(view))


def make_optimizer(
    model: nn.Module, method: str, lr: float, momentum: float, example: torch.Tensor
) -> tuple[torch.optim.Optimizer, list[dict]]:
    """The optimizer of ``method`` (see the module docstring) and the invariant groups."""
    spec = METHODS[method]
    groups = invariant_groups(model, example)
    constrained = [g for g in groups if g["manifold"] != "euclidean"]
    if spec.init == "unit":
        _project(constrained)
    if spec.constrained:
        return RiemannianSGD(groups, lr=lr, momentum=momentum), constrained
    if spec.filter_rate is not None:
        flat = [
            {"params": g["params"], "names": g["names"], "filter_rate": spec.filter_rate}
            for g in constrained
        ]
        rest = [g for g in groups if g["manifold"] == "euclidean"]
        return RiemannianSGD(flat + rest, lr=lr, momentum=momentum), constrained
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum), constrained


@torch.no_grad()
def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    wrong = sum(
        int((model(xb).argmax(1) != yb).sum()) for xb, yb in zip(x.split(500), y.split(500))
    )
    model.train()
    return wrong / len(y)


class _Turning:
    """The mean angle (radians) by which optimizer steps turn the invariant rows, and their
    mean norm: the step the loss sees, whatever the weights' scale."""

    def __init__(self, constrained: list[dict]):
        self.rows = [_rows(g, p) for g in constrained for p in g["params"]]
        self.angles: list[float] = []

    def _directions(self) -> list[torch.Tensor]:
        return [F.normalize(r.detach().double(), dim=-1) for r in self.rows]

    def before(self) -> None:
        self._last = self._directions()

    def after(self) -> None:
        cosines = torch.cat(
            [(a * b).sum(-1) for a, b in zip(self._last, self._directions())]
        ).clamp(-1, 1)
        self.angles.append(float(torch.arccos(cosines).mean()))

    def epoch(self) -> tuple[float, float]:
        """(mean angle per step, mean row norm) of the epoch; resets the angles."""
        angle = statistics.fmean(self.angles) if self.angles else math.nan
        self.angles = []
        norms = torch.cat([r.detach().double().norm(dim=-1) for r in self.rows])
        return angle, float(norms.mean())


def train_one(
    config: ByomConfig, arch: str, method: str, lr: float, seed: int, data: dict
) -> dict[str, Any]:
    """One run: ``config.epochs`` epochs from the seed's weights. Per epoch: mean training
    loss, validation error, mean norm of the invariant filters and mean angle per step by
    which they turn; at the end the validation and test errors (``nan`` if diverged)."""
    x, y = data["train"]
    start, cpu = time.perf_counter(), time.process_time()
    model = build_model(arch, config.width, seed)
    optimizer, constrained = make_optimizer(model, method, lr, config.momentum, x[:8])
    steps = config.epochs * math.ceil(len(y) / config.batch_size)
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps))
        )
    turning = _Turning(constrained)
    generator = torch.Generator().manual_seed(seed)
    history, diverged = [], False
    for epoch in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for batch in order.split(config.batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            total += float(loss.detach()) * len(batch)
            if not math.isfinite(total):
                diverged = True
                break
            loss.backward()
            turning.before()
            try:
                optimizer.step()
            except NonFiniteGradientError:
                diverged = True
                break
            turning.after()
            if scheduler is not None:
                scheduler.step()
        if diverged:
            break
        angle, norm = turning.epoch()
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": total / len(y),
                "val_error": _error(model, *data["validation"]),
                "angle": angle,
                "filter_norm": norm,
            }
        )
    return {
        "arch": arch,
        "method": method,
        "lr": lr,
        "seed": seed,
        "diverged": diverged,
        "val_error": math.nan if diverged else history[-1]["val_error"],
        "test_error": math.nan if diverged else _error(model, *data["test"]),
        "history": history,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "torch_threads": torch.get_num_threads(),
        "data": data["source"],
        "constrained": [{"manifold": g["manifold"], "names": g["names"]} for g in constrained],
    }


# -- running the tasks: in this process or on a worker pool, each run saved as it ends ------
_WORKER: dict[str, Any] = {}


def _init_worker(config: ByomConfig) -> None:
    _WORKER["config"], _WORKER["data"] = config, _data(config)


def _task(task: tuple) -> dict:
    return train_one(_WORKER["config"], *task, _WORKER["data"])


def _run_file(folder: Path, task: tuple) -> Path:
    arch, method, lr, seed = task
    return folder / f"{arch}-{method}-lr{lr:.6g}-seed{seed}.json"


class _Runner:
    """Runs tasks ``(arch, method, lr, seed)`` as they are submitted -- in this process, or on
    a worker pool -- and hands back each finished one; each is saved to ``out/runs`` as it
    ends and read back instead of rerun when its file holds the same run configuration."""

    def __init__(self, config, out, pool, progress):
        self.config, self.pool, self.progress = config, pool, progress
        self.folder = None if out is None else Path(out) / "runs"
        self.key = config.run_key()
        self.memory: dict[tuple, dict] = {}
        self.ready: list[tuple] = []  # finished earlier (this run or a previous one)
        self.queue: list[tuple] = []  # to run in this process
        self.futures: dict = {}  # running on the pool

    def _saved(self, task: tuple) -> dict | None:
        if task in self.memory:
            return self.memory[task]
        if self.folder is None or not _run_file(self.folder, task).exists():
            return None
        record = read_json(_run_file(self.folder, task))
        return record if record.get("run_key") == self.key else None

    def _done(self, task: tuple, record: dict) -> tuple[tuple, dict]:
        record["run_key"] = self.key
        self.memory[task] = record
        if self.folder is not None:
            write_json(_run_file(self.folder, task), record)
        self.progress(_describe(record))
        return task, record

    def submit(self, task: tuple) -> None:
        saved = self._saved(task)
        if saved is not None:
            self.memory[task] = saved
            self.ready.append(task)
        elif self.pool is None:
            self.queue.append(task)
        else:
            self.futures[self.pool.submit(_task, task)] = task

    def next(self) -> tuple[tuple, dict] | None:
        """A finished ``(task, record)``, waiting for one if need be; ``None`` when
        nothing is left."""
        if self.ready:
            task = self.ready.pop(0)
            return task, self.memory[task]
        if self.queue:
            task = self.queue.pop(0)
            return self._done(task, _task(task))
        if self.futures:
            from concurrent.futures import FIRST_COMPLETED, wait

            done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
            future = min(done, key=lambda f: list(self.futures).index(f))
            return self._done(self.futures.pop(future), future.result())
        return None


def _describe(record: dict) -> str:
    name = f"{record['arch']} {record['method']} lr {record['lr']:.3g} seed {record['seed']}"
    if record["diverged"]:
        return f"{name}: diverged"
    return (
        f"{name}: validation error {record['val_error']:.4f}, test error "
        f"{record['test_error']:.4f} ({record['seconds']:.0f} s)"
    )


class _Cell:
    """One (arch, method): rate selection on seed 0 (the grid, extended while the best is
    on its edge), then the seeds at the chosen rate. Each cell moves on as soon as its own
    runs end, so the workers stay busy."""

    def __init__(self, cell: tuple[str, str], config: ByomConfig, runner: _Runner):
        self.cell, self.config, self.runner = cell, config, runner
        self.tried: list[dict] = []
        self.steps: dict = {}
        self.pending: set[tuple] = set()
        self.chosen: float | None = None
        self.runs: dict[int, dict] = {}
        self._try(config.lr_candidates)

    def _submit(self, task: tuple) -> None:
        self.pending.add(task)
        self.runner.submit(task)

    def _try(self, rates) -> None:
        for lr in rates:
            self._submit((*self.cell, lr, 0))

    def finished(self, task: tuple, record: dict) -> None:
        self.pending.discard(task)
        if self.chosen is not None and task[2] == self.chosen:
            self.runs[task[3]] = record
        if self.chosen is None:
            self.tried.append({"lr": task[2], **record})
            if self.pending:
                return
            new = grid_extensions(
                self.tried,
                self.steps,
                factor=self.config.lr_extend_factor,
                limit=self.config.lr_extend,
            )
            if new:
                self._try(c["lr"] for c in new)
                return
            best = best_candidate(self.tried, "val_error")
            if best is None:
                return
            self.chosen = best["lr"]
            self.runs[0] = self.runner.memory[(*self.cell, self.chosen, 0)]
            for seed in range(1, self.config.seeds):
                self._submit((*self.cell, self.chosen, seed))

    def selection(self) -> dict:
        candidates = sorted(self.tried, key=lambda c: c["lr"])
        best = best_candidate(candidates, "val_error")
        return {
            "candidates": candidates,
            "chosen_lr": self.chosen,
            "interior": best is not None and not at_edge(candidates, best),
        }


def run_byom(
    config: ByomConfig,
    progress: Callable[[str], None] = lambda _: None,
    *,
    out: str | Path | None = None,
    jobs: int = 1,
    threads: int = 1,
) -> dict:
    """Rate selection, the seeded runs and their paired comparisons, for every architecture
    and method (see the module docstring); with ``out``, each run is saved to
    ``out/runs/*.json`` as it ends, and a rerun reads back those of the same configuration.
    ``jobs`` worker processes with ``threads`` torch threads each (``jobs=1``: this process)."""
    start, load = time.perf_counter(), os.getloadavg()
    skipped = {
        (arch, method): why
        for arch in config.archs
        for method in config.methods
        if (why := applicable(arch, method, config.width))
    }
    cells = [
        (arch, method)
        for arch in config.archs
        for method in config.methods
        if (arch, method) not in skipped
    ]
    if jobs > 1:
        from .pool import worker_pool

        with worker_pool(
            jobs, threads=threads, initializer=_init_worker, initargs=(config,)
        ) as pool:
            result = _run(config, cells, _Runner(config, out, pool, progress))
    else:
        _init_worker(config)
        try:
            result = _run(config, cells, _Runner(config, out, None, progress))
        finally:
            _WORKER.clear()
    result["config"] = {**asdict(config), "data": result.pop("source")}
    result["not_run"] = [{"arch": a, "method": m, "why": w} for (a, m), w in skipped.items()]
    result["timing"] = {
        "wall_seconds": time.perf_counter() - start,
        "load_start": load,
        "load_end": os.getloadavg(),
        "jobs": jobs,
        "threads": threads,
    }
    return result


def _run(config: ByomConfig, cells: list[tuple[str, str]], runner: _Runner) -> dict:
    states = {cell: _Cell(cell, config, runner) for cell in cells}
    while (finished := runner.next()) is not None:
        states[finished[0][:2]].finished(*finished)
    selection = {cell: state.selection() for cell, state in states.items()}
    runs = [state.runs[seed] for state in states.values() for seed in sorted(state.runs)]
    return {
        "source": runs[0]["data"] if runs else config.source,
        "selection": [{"arch": a, "method": m, **s} for (a, m), s in selection.items()],
        "runs": runs,
        "summary": _summary(runs, selection),
        "comparisons": _comparisons(runs),
    }


def _cells(runs: Sequence[dict]) -> dict[tuple[str, str], list[dict]]:
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        cells.setdefault((row["arch"], row["method"]), []).append(row)
    return cells


def _mean(values) -> float:
    values = [v for v in values if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def _summary(runs: Sequence[dict], selection: dict) -> list[dict]:
    out = []
    for (arch, method), rows in _cells(runs).items():
        finished = [r for r in rows if not r["diverged"]]
        errors = [r["test_error"] for r in finished]
        first = [r["history"][0] for r in finished]
        last = [r["history"][-1] for r in finished]
        out.append(
            {
                "arch": arch,
                "method": method,
                "lr": rows[0]["lr"],
                "interior": selection[(arch, method)]["interior"],
                "runs": len(rows),
                "diverged": len(rows) - len(finished),
                "untrained": sum(
                    not r["history"][-1]["train_loss"] < CHANCE_LOSS for r in finished
                ),
                "test_error_mean": statistics.fmean(errors) if errors else math.nan,
                "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "final_train_loss_mean": _mean(h["train_loss"] for h in last),
                "angle_first_epoch": _mean(h["angle"] for h in first),
                "angle_last_epoch": _mean(h["angle"] for h in last),
                "filter_norm_last_epoch": _mean(h["filter_norm"] for h in last),
                "seconds_mean": statistics.fmean(r["seconds"] for r in rows),
                "constrained": rows[0]["constrained"],
            }
        )
    return out


def _comparisons(runs: Sequence[dict]) -> list[dict]:
    """:data:`COMPARISONS` per architecture, paired over the seeds both methods finished,
    with Holm's correction over all of them."""
    cells = _cells(runs)
    out = []
    for arch in dict.fromkeys(r["arch"] for r in runs):
        for a, b in COMPARISONS:
            if (arch, a) not in cells or (arch, b) not in cells:
                continue
            ea = {r["seed"]: r["test_error"] for r in cells[(arch, a)] if not r["diverged"]}
            eb = {r["seed"]: r["test_error"] for r in cells[(arch, b)] if not r["diverged"]}
            seeds = sorted(set(ea) & set(eb))
            stats = paired_comparison([ea[s] for s in seeds], [eb[s] for s in seeds])
            out.append({"arch": arch, "a": a, "b": b, "seeds": seeds, **stats})
    for row, p in zip(out, holm([c["p_paired"] for c in out])):
        row["p_holm"] = p
    for row, p in zip(out, holm([c["p_wilcoxon"] for c in out])):
        row["p_wilcoxon_holm"] = p
    return out


# -- the report -----------------------------------------------------------------------------
def _p(value) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _markdown(result: dict) -> str:
    cfg, timing = result["config"], result["timing"]
    rates = ", ".join(f"{lr:.3g}" for lr in cfg["lr_candidates"])
    lines = [
        "# Bring your own model: RiemannianSGD on the symmetries param_groups finds",
        "",
        f"MNIST ({cfg['data']}): {cfg['train_images']} training images, "
        f"{cfg['validation_images']} validation images (held out of the training set), "
        f"{cfg['test_images']} test images; width {cfg['width']}, {cfg['epochs']} epochs, "
        f"batch {cfg['batch_size']}, momentum {cfg['momentum']}, rate schedule "
        f"{cfg['schedule']}. Rate chosen per method by the validation error of seed 0 from "
        f"[{rates}], extended by x{cfg['lr_extend_factor']:.3g} (at most {cfg['lr_extend']} "
        f"steps each way) while the best is on the edge; then seeds 0-{cfg['seeds'] - 1} "
        f"(paired: same initial weights and minibatch order for every method). "
        f"Wall time {timing['wall_seconds']:.0f} s with {timing['jobs']} process(es) of "
        f"{timing['threads']} thread(s); load average "
        f"{timing['load_start'][0]:.1f} at the start, {timing['load_end'][0]:.1f} at the end.",
        "",
        "| architecture | method | lr | interior | test error (mean ± std) | diverged / "
        "untrained | "
        "final training loss | angle/step, first → last epoch | filter norm (end) | s/run |",
        "|---|---|---:|---|---|---:|---:|---|---:|---:|",
    ]
    for s in result["summary"]:
        lines.append(
            f"| {s['arch']} | {METHODS[s['method']].label} | {s['lr']:.3g} | "
            f"{'yes' if s['interior'] else 'no'} | {s['test_error_mean']:.4f} ± "
            f"{s['test_error_std']:.4f} ({s['runs']} runs) | {s['diverged']} / "
            f"{s['untrained']} | "
            f"{s['final_train_loss_mean']:.4f} | {s['angle_first_epoch']:.2e} → "
            f"{s['angle_last_epoch']:.2e} | {s['filter_norm_last_epoch']:.2f} | "
            f"{s['seconds_mean']:.0f} |"
        )
    for skip in result["not_run"]:
        lines.append(
            f"| {skip['arch']} | {METHODS[skip['method']].label} | not run: {skip['why']} |"
        )
    lines += [
        "",
        "Paired comparisons (a − b in test error over the seeds both finished; Holm over "
        "all rows):",
        "",
        "| architecture | a | b | n | mean a − b | 95 % CI (bootstrap) | images /10k | "
        "p (paired t) | p (Wilcoxon) | p Holm |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for c in result["comparisons"]:
        lines.append(
            f"| {c['arch']} | {c['a']} | {c['b']} | {c['n']} | {c['mean_diff']:+.4f} | "
            f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] | {c['effect_images']:+.1f} | "
            f"{_p(c['p_paired'])} | {_p(c['p_wilcoxon'])} | {_p(c['p_holm'])} |"
        )
    lines += ["", "Rate selection (validation error after the last epoch, seed 0):", ""]
    for s in result["selection"]:
        cells = ", ".join(
            f"{c['lr']:.3g}: " + ("diverged" if c["diverged"] else f"{c['val_error']:.4f}")
            for c in s["candidates"]
        )
        chosen = "none" if s["chosen_lr"] is None else f"{s['chosen_lr']:.3g}"
        lines.append(f"- {s['arch']} {s['method']} (chosen {chosen}): {cells}")
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> Path:
    archs = list(dict.fromkeys(s["arch"] for s in result["summary"]))
    panels = ("selection", "val_error", "angle", "filter_norm")
    titles = {
        "selection": "validation error vs rate (seed 0)",
        "val_error": "validation error (chosen rate)",
        "angle": "mean angle per step (rad)",
        "filter_norm": "mean norm of invariant filters",
    }
    with figure(
        path, len(archs), len(panels), figsize=(4.2 * len(panels), 3.4 * len(archs)), squeeze=False
    ) as (_, axes):
        for row, arch in zip(axes, archs):
            for s in result["selection"]:
                if s["arch"] != arch:
                    continue
                spec = METHODS[s["method"]]
                ok = [c for c in s["candidates"] if not c["diverged"]]
                row[0].plot(
                    [c["lr"] for c in ok],
                    [c["val_error"] for c in ok],
                    marker="o",
                    color=spec.colour,
                    label=spec.label,
                )
            row[0].set_xscale("log")
            row[0].set_yscale("log")
            row[0].set_xlabel("learning rate")
            for ax, key in zip(row[1:], panels[1:]):
                for r in result["runs"]:
                    if r["arch"] != arch or r["diverged"]:
                        continue
                    ax.plot(
                        [h["epoch"] for h in r["history"]],
                        [h[key] for h in r["history"]],
                        color=METHODS[r["method"]].colour,
                        alpha=0.6,
                    )
                ax.set_xlabel("epoch")
                ax.set_yscale("log")
            for ax, key in zip(row, panels):
                ax.set_title(f"{arch}: {titles[key]}", fontsize=9)
            row[0].legend(fontsize=7)
    return path


def write_byom(result: dict, out: Path) -> list[Path]:
    """``byom.json``, ``byom.md`` and ``byom.png`` (selection curves, then per epoch of
    every seeded run: validation error, angle per step, filter norm)."""
    out = Path(out)
    return [
        write_json(out / "byom.json", result),
        write_text(out / "byom.md", _markdown(result)),
        _plot(result, out / "byom.png"),
    ]
