"""Bring your own model: train networks whose symmetries are not BatchNorm's with
``RiemannianSGD`` on the groups :func:`~riemann_dnn.params.param_groups` finds, against
``torch.optim.SGD``, on MNIST (``riemann-dnn byom``).

Two architectures written as a user would write them (plain ``torch.nn``, nothing of ours):

- ``resnet-gn-ws``: a small ResNet with GroupNorm and weight-standardized convolutions
  (BiT-style ``StdConv2d``): every conv weight is invariant per filter, by construction;
- ``convnext``: a small ConvNeXt-style net (depthwise 7x7 convs without bias, channels-last
  LayerNorm, inverted MLP, layer scale, residuals): the stem and depthwise conv weights are
  invariant as a whole (LayerNorm over the channels they produce).

Protocol, per architecture and method (``rsgd``: RiemannianSGD, momentum 0.9, on the
groups ``param_groups(model)`` finds and checks; ``sgd``: torch.optim.SGD, momentum 0.9, on
every parameter): the learning rate is chosen from ``lr_candidates`` by the validation
error after ``epochs`` epochs of seed 0 (validation images held out of the training set);
then ``seeds`` runs with that rate, each reporting its test error (the MNIST test set) and
its training loss per epoch. A run whose loss or gradient becomes non-finite is stopped and
counted as diverged (error ``nan``); diverged candidates are never chosen. Minibatches of ``batch_size``, reshuffled each epoch; the
same data, initial weights and minibatch order for both methods of a seed.
"""

from __future__ import annotations

import math
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
from ..params import param_groups
from .records import figure, write_json, write_text

__all__ = ["ByomConfig", "ARCHS", "METHODS", "build_model", "run_byom", "write_byom"]

METHODS = ("rsgd", "sgd")


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

    archs: tuple[str, ...] = tuple(ARCHS)
    methods: tuple[str, ...] = METHODS
    width: int = 8
    train_images: int = 5_000
    validation_images: int = 2_000
    test_images: int = 10_000
    epochs: int = 3
    batch_size: int = 50
    momentum: float = 0.9
    lr_candidates: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    seeds: int = 2
    data_dir: str | None = None
    source: str = "auto"

    @classmethod
    def quick(cls, **overrides: Any) -> ByomConfig:
        """Under a minute on one core: 1,000 images, two epochs of 20 steps, two rates,
        two seeds."""
        values = dict(
            width=8,
            train_images=1_000,
            validation_images=500,
            test_images=1_000,
            epochs=2,
            batch_size=50,
            lr_candidates=(0.03, 0.1),
            seeds=2,
        )
        return cls(**{**values, **overrides})


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
    n_test = min(config.test_images, len(mnist.test_labels))
    xt, yt = as_tensors(mnist.test_images[:n_test], mnist.test_labels[:n_test], flatten=False)
    split = config.train_images
    return (
        (x[:split], y[:split]),
        (x[split:], y[split:]),
        (xt.view(-1, 1, 28, 28), yt),
        mnist.source,
    )


def _optimizer(model: nn.Module, method: str, lr: float, momentum: float, example):
    if method == "rsgd":
        return RiemannianSGD(param_groups(model, example_input=example), lr=lr, momentum=momentum)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


@torch.no_grad()
def _error(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    wrong = sum(
        int((model(xb).argmax(1) != yb).sum()) for xb, yb in zip(x.split(500), y.split(500))
    )
    model.train()
    return wrong / len(y)


def train_one(
    config: ByomConfig, arch: str, method: str, lr: float, seed: int, train, evaluate
) -> dict[str, Any]:
    """One run: ``config.epochs`` epochs from the seed's weights; the error on ``evaluate``
    and the mean training loss of each epoch."""
    x, y = train
    model = build_model(arch, config.width, seed)
    optimizer = _optimizer(model, method, lr, config.momentum, x[:8])
    constrained = []
    if method == "rsgd":
        constrained = [
            {"manifold": g["manifold"], "names": g["names"]}
            for g in optimizer.param_groups
            if g["manifold"] != "euclidean"
        ]
    generator = torch.Generator().manual_seed(seed)
    losses, start, diverged = [], time.perf_counter(), False
    for _ in range(config.epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for batch in order.split(config.batch_size):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            try:
                optimizer.step()
            except NonFiniteGradientError:
                diverged = True
            total += float(loss.detach()) * len(batch)
            if diverged or not math.isfinite(total):
                break
        losses.append(total / len(y) if not diverged else math.nan)
        if diverged or not math.isfinite(losses[-1]):
            diverged = True
            break
    return {
        "arch": arch,
        "method": method,
        "lr": lr,
        "seed": seed,
        "error": math.nan if diverged else _error(model, *evaluate),
        "diverged": diverged,
        "train_loss": losses,
        "seconds": time.perf_counter() - start,
        "constrained": constrained,
    }


def run_byom(config: ByomConfig, progress: Callable[[str], None] = lambda _: None) -> dict:
    """Rate selection and the seeded runs, for every architecture and method."""
    train, validation, test, source = _data(config)
    selection, runs = [], []
    for arch in config.archs:
        for method in config.methods:
            scores = []
            for lr in config.lr_candidates:
                row = train_one(config, arch, method, lr, 0, train, validation)
                selection.append(row)
                scores.append((row["error"] if math.isfinite(row["error"]) else math.inf, lr))
                progress(f"{arch} {method} lr {lr:g}: validation error {row['error']:.4f}")
            best = min(scores)[1]
            for seed in range(config.seeds):
                row = train_one(config, arch, method, best, seed, train, test)
                runs.append(row)
                progress(f"{arch} {method} lr {best:g} seed {seed}: test error {row['error']:.4f}")
    return {
        "config": {**asdict(config), "data": source},
        "selection": selection,
        "runs": runs,
        "summary": _summary(runs),
    }


def _summary(runs: Sequence[dict]) -> list[dict]:
    cells: dict[tuple[str, str], list[dict]] = {}
    for row in runs:
        cells.setdefault((row["arch"], row["method"]), []).append(row)
    out = []
    for (arch, method), rows in cells.items():
        errors = [r["error"] for r in rows]
        out.append(
            {
                "arch": arch,
                "method": method,
                "lr": rows[0]["lr"],
                "runs": len(rows),
                "test_error_mean": statistics.fmean(errors),
                "test_error_std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "final_train_loss_mean": statistics.fmean(r["train_loss"][-1] for r in rows),
                "constrained": rows[0]["constrained"],
            }
        )
    return out


def _markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [
        "# Bring your own model: RiemannianSGD on the symmetries param_groups finds",
        "",
        f"MNIST ({cfg['data']}): {cfg['train_images']} training images, "
        f"{cfg['validation_images']} validation images (rate selection), "
        f"{cfg['test_images']} test images; width {cfg['width']}, {cfg['epochs']} epoch(s), "
        f"batch {cfg['batch_size']}, momentum {cfg['momentum']}; rate chosen from "
        f"{list(cfg['lr_candidates'])} on validation error (seed 0), then seeds "
        f"0-{cfg['seeds'] - 1}.",
        "",
        "| architecture | method | lr | test error (mean ± std) | final training loss | constrained weights |",
        "|---|---|---:|---|---:|---|",
    ]
    for s in result["summary"]:
        constrained = (
            ", ".join(f"{len(g['names'])} on {g['manifold']}" for g in s["constrained"]) or "-"
        )
        lines.append(
            f"| {s['arch']} | {s['method']} | {s['lr']:g} | {s['test_error_mean']:.4f} ± "
            f"{s['test_error_std']:.4f} ({s['runs']} runs) | {s['final_train_loss_mean']:.4f} "
            f"| {constrained} |"
        )
    lines += ["", "Rate selection (validation error, seed 0):", ""]
    lines += [
        "| architecture | method | "
        + " | ".join(f"lr {lr:g}" for lr in cfg["lr_candidates"])
        + " |"
    ]
    lines += ["|---|---|" + "---:|" * len(cfg["lr_candidates"])]
    cells: dict[tuple[str, str], list[str]] = {}
    for row in result["selection"]:
        cells.setdefault((row["arch"], row["method"]), []).append(f"{row['error']:.4f}")
    for (arch, method), errors in cells.items():
        lines.append(f"| {arch} | {method} | " + " | ".join(errors) + " |")
    return "\n".join(lines) + "\n"


def _plot(result: dict, path: Path) -> Path:
    archs = list(dict.fromkeys(s["arch"] for s in result["summary"]))
    with figure(path, 1, len(archs), figsize=(5 * len(archs), 3.6), squeeze=False) as (_, axes):
        for ax, arch in zip(axes[0], archs):
            for method in result["config"]["methods"]:
                rows = [r for r in result["runs"] if r["arch"] == arch and r["method"] == method]
                for i, row in enumerate(rows):
                    epochs = range(1, len(row["train_loss"]) + 1)
                    label = f"{method} (lr {row['lr']:g})" if i == 0 else None
                    color = "C0" if method == "rsgd" else "C1"
                    ax.plot(
                        epochs, row["train_loss"], color=color, marker="o", label=label, alpha=0.8
                    )
            ax.set_title(arch)
            ax.set_xticks(range(1, result["config"]["epochs"] + 1))
            ax.set_xlabel("epoch")
            ax.set_ylabel("training loss")
            ax.set_yscale("log")
            ax.legend()
    return path


def write_byom(result: dict, out: Path) -> list[Path]:
    """``byom.json``, ``byom.md`` and ``byom.png`` (training loss per epoch, every run)."""
    out = Path(out)
    return [
        write_json(out / "byom.json", result),
        write_text(out / "byom.md", _markdown(result)),
        _plot(result, out / "byom.png"),
    ]
