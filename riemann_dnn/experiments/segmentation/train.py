"""How one segmentation model is trained: :func:`train_segmentation` through one of two doors.

- ``door="torch"``: a training loop with :class:`~riemann_dnn.optim.RiemannianSGD`, a
  checkpoint after every epoch and an exact resume; under ``torchrun`` one model trained
  data-parallel on every process.
- ``door="pymanopt"``: the model as a :class:`~riemann_dnn.problems.ModuleProblem`
  solved by :class:`~riemann_dnn.solvers.StochasticGradient` with a fixed step; no resume.

Both evaluate the test set after every epoch, and both end in the same record and reports
(:mod:`.report`).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import SegmentationSet
from .. import distributed
from ..epoch import train_epoch
from .build import (
    build_model,
    build_optimizer,
    load_segmentation_data,
    loss_for,
    parameter_groups,
)
from .checkpoint import (
    CHECKPOINT,
    CheckpointMismatchError,
    check_resumable,
    load_checkpoint,
    restore_rng_states,
    rng_states,
    save_checkpoint,
)
from .config import SegmentationConfig
from .metrics import evaluate, loss_normaliser, majority_baseline
from .report import write_run_report

__all__ = ["SegmentationResult", "train_segmentation"]


@dataclass
class SegmentationResult:
    """What :func:`train_segmentation` returns: the JSON record and the trained model."""

    record: dict[str, Any]
    model: nn.Module


def _shuffle_generator(seed: int) -> torch.Generator:
    """The generator of the training order, independent of the initialisation's stream."""
    (state,) = np.random.SeedSequence([seed, 1]).generate_state(1)
    return torch.Generator().manual_seed(int(state))


def _move(data: SegmentationSet, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels on ``device`` when they fit comfortably (< 1 GiB), else on the CPU."""
    size = data.images.element_size() * data.images.nelement() + 8 * data.labels.nelement()
    if device.type != "cpu" and size < 2**30:
        return data.images.to(device), data.labels.to(device)
    return data.images, data.labels


def train_segmentation(
    config: SegmentationConfig,
    out_dir: str | Path,
    *,
    data: tuple[SegmentationSet, SegmentationSet] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
    resume: bool = False,
    progress: bool = True,
    figure_images: int = 5,
) -> SegmentationResult:
    """Train one model on ``data`` (default: :func:`load_segmentation_data`) and write the
    checkpoint and reports into ``out_dir``.

    A checkpoint is written after every epoch. With ``resume=True`` an existing checkpoint
    (same configuration except ``epochs``) is loaded and training continues from it with the
    same data order, so the result equals an uninterrupted run; with ``resume=False`` an existing
    checkpoint raises :class:`CheckpointMismatchError` rather than being overwritten.

    Epochs go through the experiments' one loop (:func:`~..epoch.train_epoch`). Under
    ``torchrun`` (after :func:`~.distributed.launch_from_env`) one model trains on every
    process: each rank takes its slice of every global batch (the batches of one process),
    BN normalises over the global batch, the gradients of the ranks' parts of the global
    batch's loss are summed, and :class:`~riemann_dnn.optim.RiemannianSGD` steps on every
    rank alike. Rank 0
    alone evaluates and writes the checkpoint and reports; a resume reads rank 0's checkpoint
    and broadcasts it, so a kill of any rank is resumed by the same command.

    Returns:
        :class:`SegmentationResult` with the record (config, data description, per-epoch
        history, final test metrics, majority-class baseline, file paths) and the model.
    """
    out = Path(out_dir)
    launch = distributed.current_launch()
    parallel = launch.distributed
    if launch.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    device = torch.device(launch.device if parallel else device)
    if distributed.broadcast_object(ckpt_path.exists()) and not resume:
        raise CheckpointMismatchError(
            f"{str(out)!r} already holds a checkpoint ({CHECKPOINT}); pass resume=True "
            "(--resume) to continue it, or choose another output directory"
        )
    train, test = data if data is not None else load_segmentation_data(config, data_dir=data_dir)
    if train.num_classes != test.num_classes or train.in_channels != test.in_channels:
        raise ValueError(
            f"train ({train.num_classes} classes, {train.in_channels} channels) and "
            f"test ({test.num_classes}, {test.in_channels}) sets do not match"
        )

    model = build_model(config, train.in_channels, train.num_classes).to(device)
    optimizer, constrained = build_optimizer(model, config)
    loss_fn = loss_for(config, train).to(device)
    shuffle = _shuffle_generator(config.seed)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and distributed.broadcast_object(ckpt_path.exists()):
        saved = distributed.broadcast_object(
            load_checkpoint(ckpt_path) if launch.is_main else None
        )
        check_resumable(saved["config"], config, ckpt_path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        history = list(saved["history"])
        start_epoch = int(saved["epoch"])
        restore_rng_states(saved["rng"], shuffle)

    if parallel:
        if config.door != "torch":
            raise ValueError("door='pymanopt' does not run under torchrun; use door='torch'")
        distributed.convert_batchnorm(model)  # BN over the global batch, same tensors
    images, labels = _move(train, device)
    n = len(train)
    batches = math.ceil(n / config.batch_size)
    remaining = max(config.epochs - start_epoch, 0)
    bar = _progress(remaining * batches, f"{config.name}", progress and launch.is_main)

    def objective(index: torch.Tensor, size: int):
        x = images[index.to(images.device)].to(device, non_blocking=True)
        y = labels[index.to(labels.device)].to(device, non_blocking=True)
        logits = model(x).float()
        loss = _global_batch_loss(loss_fn, logits, y) if parallel else loss_fn(logits, y)
        return loss, (loss.detach().double(),)

    def on_batch(b: int, stats) -> None:
        bar.update(1)
        if b % 10 == 0:
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(stats[0]):.3f}")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle)
        _synchronize(device)
        started = time.perf_counter()
        (loss_sum,) = train_epoch(
            optimizer,
            (order[b * config.batch_size : (b + 1) * config.batch_size] for b in range(batches)),
            objective,
            launch=launch,
            amp=config.amp,
            device=device,
            on_batch=on_batch if bar is not None else None,
        )
        _synchronize(device)
        seconds = time.perf_counter() - started
        if not launch.is_main:  # rank 0 evaluates and writes
            continue
        history.append(
            _epoch_entry(
                epoch + 1, float(loss_sum) / batches, seconds, model, test, loss_fn, config, device
            )
        )
        save_checkpoint(
            ckpt_path,
            config,
            epoch=epoch + 1,
            model=model,
            optimizer=optimizer.state_dict(),
            history=history,
            rng=rng_states(shuffle),
        )
    if bar is not None:
        bar.close()
    if not launch.is_main:
        return SegmentationResult(distributed.broadcast_object(None), model)

    final = evaluate(model, test, loss_fn, batch_size=config.batch_size, device=device)
    record = {
        "config": config.to_json(),
        "door": config.door,
        "device": str(device),
        "world_size": launch.world_size,
        "rank": launch.rank,
        "data": {
            "train": train.name,
            "test": test.name,
            "train_images": len(train),
            "test_images": len(test),
            "image_shape": list(train.images.shape[1:]),
            "num_classes": train.num_classes,
            "class_names": list(train.class_names),
            "ignore_index": train.ignore_index,
            "class_weights": (
                None if loss_fn.weight is None else [float(w) for w in loss_fn.weight.cpu()]
            ),
        },
        "parameters": {
            "oblique": constrained,
            "count": sum(p.numel() for p in model.parameters()),
            "oblique_count": sum(
                p.numel() for n_, p in model.named_parameters() if n_ in set(constrained)
            ),
        },
        "epochs_done": len(history),
        "history": history,
        "final": final,
        "baseline_majority": majority_baseline(train, test),
        "epoch_seconds_mean": (
            statistics.fmean(h["seconds"] for h in history) if history else float("nan")
        ),
        "files": {"checkpoint": str(ckpt_path)},
    }
    write_run_report(record, model, test, out, figure_images=figure_images, device=device)
    return SegmentationResult(distributed.broadcast_object(record), model)


def _epoch_entry(
    epoch: int,
    train_loss: float,
    seconds: float,
    model: nn.Module,
    test: SegmentationSet,
    loss_fn: nn.CrossEntropyLoss,
    config: SegmentationConfig,
    device: torch.device,
) -> dict[str, Any]:
    """The history entry of ``epoch`` (both doors): the training loss and time the door
    measured, and the loss and metrics of ``model`` on ``test``."""
    metrics = evaluate(model, test, loss_fn, batch_size=config.batch_size, device=device)
    return {
        "epoch": epoch,
        "train_loss": train_loss,
        "test_loss": metrics["loss"],
        "global_accuracy": metrics["global_accuracy"],
        "class_accuracy": metrics["class_accuracy"],
        "mean_iou": metrics["mean_iou"],
        "seconds": seconds,
    }


def _global_batch_loss(
    loss_fn: nn.CrossEntropyLoss, logits: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """This rank's share of the global batch's (weighted, mean-reduced) cross-entropy: its
    summed pixel losses over the normaliser of the whole global batch (all-reduced)."""
    total = loss_fn.__class__(
        weight=loss_fn.weight, ignore_index=loss_fn.ignore_index, reduction="sum"
    )(logits, y)
    norm = torch.tensor(loss_normaliser(loss_fn, y), dtype=torch.float64, device=y.device)
    return total / distributed.all_reduce_sum(norm).to(total.dtype)


def _train_pymanopt(config, model, loss_fn, train, test, device, progress) -> list[dict]:
    """Train ``model`` as a finite-sum problem on the product manifold of its parameters with
    pymanopt-side ``StochasticGradient`` (fixed step ``config.lr``, same momentum, batch size,
    epochs and manifolds as the torch door); returns the per-epoch history."""
    from ...problems import ModuleProblem
    from ...solvers import StochasticGradient

    problem = ModuleProblem(
        model,
        loss_fn,
        (train.images.to(device), train.labels.to(device)),
        groups=parameter_groups(model, config),
        eval_batch_size=config.batch_size,
    )
    history: list[dict] = []
    clock = {"start": time.perf_counter(), "cost": 0.0, "last": 0}

    def callback(iteration: int, point, stats: dict) -> None:
        if iteration == 0:
            return
        _synchronize(device)
        seconds = time.perf_counter() - clock["start"]
        problem.load_point(point)
        # train_loss: the solver's estimate on its check batch, not the epoch's mean
        train_loss = float(stats["cost"])
        history.append(
            _epoch_entry(
                len(history) + 1, train_loss, seconds, model, test, loss_fn, config, device
            )
        )
        clock["start"] = time.perf_counter()

    batches = math.ceil(len(train) / config.batch_size)
    solver = StochasticGradient(
        batch_size=config.batch_size,
        max_iterations=None,
        max_epochs=config.epochs,
        max_time=None,
        step_size="fixed",
        initial_step_size=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        check_period=batches,
        check_samples=config.batch_size,
        callback=callback,
        seed=config.seed,
        verbosity=1 if progress else 0,
        progress_bar=progress,
    )
    result = solver.run(problem, initial_point=problem.point_from_model())
    problem.load_point(result.point)
    return history


def _progress(total: int, desc: str, enabled: bool):
    if not enabled or total <= 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
