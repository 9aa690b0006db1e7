"""The command's pipeline on real MNIST (``riemann-dnn symmetry``): :func:`run_symmetry`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ...models import ArchBN
from .invariance import invariance_report
from .rescaling import EXACT_EPS, set_batchnorm_eps
from .trajectories import trajectories

__all__ = ["run_symmetry"]


def run_symmetry(
    *,
    depth: int = 2,
    seed: int = 0,
    data_dir: str | Path | None = None,
    source: str = "auto",
    steps: int = 300,
    copies: int = 3,
    lr: float = 0.05,
    batch_size: int = 100,
    alpha_spread: float = 10.0,
    check_batch: int = 500,
    train_images: int | None = None,
    bn_eps: float = 1e-5,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """The whole analysis on real MNIST: :func:`invariance_report` for float32 and float64,
    each with BatchNorm ``eps`` = :data:`EXACT_EPS` and ``eps = bn_eps``, on ``check_batch`` random training
    images; then :func:`trajectories` (network with ``bn_eps``, ``dtype``) on
    ``train_images`` random training images (default: up to 10,000), test error on the test
    images. One ArchBN of
    ``depth`` initialised from ``seed`` is used throughout."""
    from ...data import as_tensors, load_mnist

    for arg, value in (("steps", steps), ("copies", copies), ("batch_size", batch_size)):
        if not (isinstance(value, int) and value >= (2 if arg == "copies" else 1)):
            raise ValueError(
                f"{arg} must be an int >= {2 if arg == 'copies' else 1}, got {value!r}"
            )  # checked before the minutes of work below
    mnist = load_mnist(data_dir, source=source)
    n_train = len(mnist.train_labels)
    if train_images is None:
        train_images = min(10_000, n_train)
    for arg, value, limit in (
        ("check_batch", check_batch, n_train),
        ("train_images", train_images, n_train),
    ):
        if not (isinstance(value, int) and 1 <= value <= limit):
            raise ValueError(
                f"{arg} must be an int in [1, {limit}] (the training images of "
                f"{mnist.source}), got {value!r}"
            )
    gen = torch.Generator().manual_seed(seed)
    check_idx = torch.randperm(n_train, generator=gen)[:check_batch].numpy()
    train_idx = torch.randperm(n_train, generator=gen)[:train_images].numpy()
    x_check, y_check = as_tensors(
        mnist.train_images[check_idx],
        mnist.train_labels[check_idx],
        device=device,
        dtype=torch.float64,
    )
    x_train, y_train = as_tensors(
        mnist.train_images[train_idx], mnist.train_labels[train_idx], device=device, dtype=dtype
    )
    x_test, y_test = as_tensors(mnist.test_images, mnist.test_labels, device=device, dtype=dtype)

    model = ArchBN(
        depth,
        in_features=x_check.shape[1],
        num_classes=mnist.num_classes,
        generator=torch.Generator().manual_seed(seed),
    ).to(device)
    checks = {}
    for eps in sorted({EXACT_EPS, float(bn_eps)}):
        net = set_batchnorm_eps(copy.deepcopy(model), eps)
        for check_dtype in (torch.float32, torch.float64):
            key = f"{str(check_dtype).replace('torch.', '')}, eps={eps:g}"
            checks[key] = invariance_report(
                net, x_check, y_check, alpha_spread, check_dtype, lr=lr, generator=seed + 1
            )
    trained = trajectories(
        set_batchnorm_eps(copy.deepcopy(model), bn_eps),
        x_train,
        y_train,
        copies=copies,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        alpha_spread=alpha_spread,
        seed=seed + 2,
        x_test=x_test,
        y_test=y_test,
        progress=progress,
    )
    return {
        "config": {
            "depth": depth,
            "seed": seed,
            "data": str(mnist.source),
            "steps": steps,
            "copies": copies,
            "lr": lr,
            "batch_size": batch_size,
            "alpha_spread": alpha_spread,
            "check_batch": check_batch,
            "train_images": train_images,
            "bn_eps": bn_eps,
            "dtype": str(dtype).replace("torch.", ""),
            "device": str(device),
            "torch": torch.__version__,
        },
        "invariance": checks,
        "trajectories": trained,
    }
