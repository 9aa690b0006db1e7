"""Past one process: ``torch.distributed`` as launched by ``torchrun``, for our commands.

Nothing here schedules anything: ``torchrun`` (``python -m torch.distributed.run``) starts the
processes, on one host or many (its rendezvous), and sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``. This module turns that into

- :func:`launch_from_env`: join the process group (gloo on the CPU, NCCL on CUDA) and pin this
  process's device from ``LOCAL_RANK``; without ``torchrun`` it returns a one-process
  :class:`Launch` and initialises nothing, so every command behaves as before;
- the collectives our commands need: :func:`barrier`, :func:`all_gather_objects`,
  :func:`broadcast_object`, :func:`all_reduce_sum`;
- :func:`shard` (a rank's share of a list of tasks, for sweeps) and :func:`batch_share` (a
  rank's contiguous slice of one global batch, for one model on many processes);
- :class:`GlobalBatchNorm` and :func:`prepare_ddp_model`: batch normalization over the global
  batch on any backend (torch's :class:`~torch.nn.SyncBatchNorm` needs a GPU), then
  :class:`~torch.nn.parallel.DistributedDataParallel`. With it a model with BN trained on
  ``N`` processes follows the one-process model on the same global batch (to rounding);
- :func:`train_archbn_run`: one run of the paper's protocol (:mod:`.protocol`) as a single
  model, through :class:`~riemann_dnn.optim.RiemannianSGD` and
  :class:`~riemann_dnn.optim.BoldDriver`, data-parallel over the launch
  (``torchrun ... riemann-dnn train archbn``).

>>> shard(list("abcde"), rank=1, world_size=2)
['b', 'd']
"""

from __future__ import annotations

import datetime
import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Launch",
    "launch_from_env",
    "under_torchrun",
    "current_launch",
    "shutdown",
    "barrier",
    "all_gather_objects",
    "broadcast_object",
    "all_reduce_sum",
    "shard",
    "batch_share",
    "GlobalBatchNorm",
    "convert_batchnorm",
    "prepare_ddp_model",
    "autocast",
    "AMP_MODES",
    "train_archbn_run",
]

T = TypeVar("T")

#: ``--amp`` values: ``"off"`` (float32 everywhere) or ``"bf16"`` (forward and loss under
#: ``torch.autocast`` in bfloat16; weights, gradients and the Riemannian step stay float32).
AMP_MODES = ("off", "bf16")

_TIMEOUT = datetime.timedelta(hours=float(os.environ.get("RIEMANN_DNN_DIST_TIMEOUT_H", "24")))


@dataclass(frozen=True)
class Launch:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    host, and the ``device`` it trains on (``cuda:LOCAL_RANK`` for ``--device cuda``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: str = "cpu"

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised (launched by ``torchrun``)."""
        return dist.is_available() and dist.is_initialized()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes records, checkpoints and figures."""
        return self.rank == 0


_LAUNCH: Launch | None = None


def under_torchrun() -> bool:
    """True when ``torchrun`` (or any launcher with its environment) started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ
    )


def current_launch() -> Launch:
    """The :class:`Launch` of :func:`launch_from_env` (one process when never called)."""
    return _LAUNCH or Launch()


def launch_from_env(device: str = "cpu") -> Launch:
    """Join ``torchrun``'s process group (once) and pin the device; a one-process
    :class:`Launch` without ``torchrun``.

    The backend is NCCL for a CUDA ``device`` and gloo otherwise. ``--device cuda`` (or
    ``cuda:K``) becomes ``cuda:LOCAL_RANK``: one GPU per process, whatever the host.
    """
    global _LAUNCH
    if _LAUNCH is not None:
        return _LAUNCH
    if not under_torchrun():
        _LAUNCH = Launch(device=device)
        return _LAUNCH
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if cuda else "gloo",
            timeout=_TIMEOUT,
            **({"device_id": torch.device(device)} if cuda else {}),
        )
    _LAUNCH = Launch(rank, world, local_rank, local_world, device)
    return _LAUNCH


def shutdown() -> None:
    """Leave the process group (a no-op without one).

    Objects that still hold the group (DDP wrappers of finished runs, in reference cycles)
    are collected first: gloo's worker threads must not outlive the group holding tensors
    until interpreter exit, where freeing them aborts the process (SIGABRT, "terminate
    called without an active exception"; pytorch/pytorch#179291)."""
    global _LAUNCH
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
    _LAUNCH = None


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if _active():
        dist.barrier()


def all_gather_objects(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    if not _active():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def broadcast_object(value: T, src: int = 0) -> T:
    """Rank ``src``'s ``value`` on every rank."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (in place; returned)."""
    if _active():
        dist.all_reduce(tensor)
    return tensor


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item from ``rank`` (a
    deterministic split; the items together are ``items``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank must be in [0, {world_size}), got {rank}")
    return list(items[rank::world_size])


def batch_share(index: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of one global batch ``index`` (``torch.tensor_split``:
    sizes differ by at most one), so the ranks together see exactly the global batch."""
    return torch.tensor_split(index, world_size)[rank]


# -- one model on many processes ----------------------------------------------------------------
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization whose training statistics are those of the global batch: the sums
    over every rank's slice are all-reduced (differentiably), so ``N`` processes normalise as
    one would. Works on any backend (gloo included); in one process it is plain BN.

    The mean and the biased variance :math:`\\sigma^2 = \\sum (x - \\mu)^2 / n` are taken
    over the batch and spatial axes of all ranks (two all-reduces); the running variance is
    updated with the unbiased estimate, as :class:`torch.nn.BatchNorm2d` does.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        self._check_input_dim(input)
        if not self.training:
            return super().forward(input)
        axes = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        total = _differentiable_sum(torch.cat([x.sum(axes), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = _differentiable_sum((centred * centred).sum(axes)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * (n / (n - 1)) if float(n) > 1 else var
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _differentiable_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor) if _active() else tensor


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by :class:`GlobalBatchNorm`, sharing the
    same parameter and buffer tensors (optimizer groups built before stay valid; state-dict
    keys are unchanged)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module


def prepare_ddp_model(model: nn.Module, launch: Launch) -> nn.Module:
    """BN over the global batch (torch's SyncBatchNorm on CUDA, :class:`GlobalBatchNorm`
    elsewhere), wrapped in ``DistributedDataParallel`` when a process group is up. Build the
    optimizer from ``model``'s parameters before or after: they are the same tensors."""
    if torch.device(launch.device).type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    else:
        model = convert_batchnorm(model)
    if not launch.distributed:
        return model
    ids = (
        [torch.device(launch.device).index] if torch.device(launch.device).type == "cuda" else None
    )
    # buffers (BN running statistics) are updated identically on every rank from the global
    # statistics: no need to broadcast them each forward
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def autocast(device: str | torch.device, amp: str | None):
    """``torch.autocast`` in bfloat16 for ``amp == "bf16"``, else a no-op context."""
    if amp not in (None, "off", "bf16"):
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp == "bf16")


# -- one run of the ArchBN protocol, data-parallel ----------------------------------------------
def _archbn(config, in_features: int, launch: Launch) -> tuple[nn.Module, nn.Module]:
    from ..models import ArchBN
    from .methods import METHODS

    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # PyTorch's default init, for method "sgd"
    raw = ArchBN(
        config.depth,
        config.width,
        in_features=in_features,
        init=METHODS[config.method].init,
        generator=gen,
    ).to(launch.device)
    return raw, prepare_ddp_model(raw, launch)


def _optimizer(config, raw: nn.Module, lr: float):
    from ..models import ArchBN
    from ..optim import RiemannianSGD
    from .methods import METHODS

    constrained = (
        set(ArchBN.scale_invariant_names(config.depth))
        if METHODS[config.method].constrained
        else set()
    )
    named = dict(raw.named_parameters())
    groups = [
        {"params": [named[n] for n in named if n in constrained], "manifold": config.constraint},
        {"params": [named[n] for n in named if n not in constrained]},
    ]
    groups = [g for g in groups if g["params"]]
    return RiemannianSGD(groups, lr=lr, retraction=config.retraction)


def _epoch(model, optimizer, data, pool, generator, config, launch, amp) -> tuple[float, float]:
    """One epoch over ``pool`` (reshuffled by ``generator``, as the ensemble path draws it):
    each global batch split across the ranks; returns the epoch's loss (mean of the batches'
    mean cross-entropy) and training error, both of the global batches."""
    protocol = config.protocol
    order = pool[torch.randperm(pool.shape[0], generator=generator).to(pool.device)]
    loss_sum = torch.zeros((), dtype=torch.float64, device=launch.device)
    wrong = torch.zeros((), dtype=torch.float64, device=launch.device)
    batches = 0
    model.train()
    for start in range(0, order.shape[0], protocol.batch_size):
        index = order[start : start + protocol.batch_size]
        mine = batch_share(index, launch.rank, launch.world_size)
        with autocast(launch.device, amp):
            logits = model(data.train_x[mine])
            losses = F.cross_entropy(logits.float(), data.train_y[mine], reduction="none")
        # DDP averages the ranks' gradients: scale so the average is the gradient of the
        # global batch's loss (its mean, or its sum)
        local = losses.sum() / index.shape[0]
        scale = launch.world_size * (index.shape[0] if protocol.loss_reduction == "sum" else 1)
        optimizer.zero_grad(set_to_none=True)
        (local * scale).backward()
        optimizer.step()
        loss_sum += local.detach().double()
        wrong += (logits.detach().argmax(-1) != data.train_y[mine]).sum().double()
        batches += 1
    totals = all_reduce_sum(torch.stack([loss_sum, wrong]))
    return float(totals[0]) / batches, float(totals[1]) / pool.shape[0]


@torch.no_grad()
def _error(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, launch: Launch, chunk: int = 2000
) -> float:
    """Misclassification rate on ``(x, y)`` (eval mode), each rank counting its share."""
    model.eval()
    mine = batch_share(torch.arange(x.shape[0]), launch.rank, launch.world_size)
    wrong = torch.zeros((), dtype=torch.float64, device=launch.device)
    for start in range(0, mine.shape[0], chunk):
        index = mine[start : start + chunk].to(x.device)
        wrong += (model(x[index]).argmax(-1) != y[index]).sum().double()
    model.train()
    return float(all_reduce_sum(wrong)) / x.shape[0]


def train_archbn_run(
    config, data, out_dir: str | Path, *, progress: Callable[[int], None] = lambda n: None
) -> dict:
    """One run of the protocol of :mod:`.protocol` (learning-rate selection, bold-driver
    training, stopping rules, test error) for ``config`` as one ArchBN model on every
    process of the launch (:func:`launch_from_env`; one process without ``torchrun``).

    Every rank takes its slice of each global batch (the global batches are those of one
    process: the same seeds draw them); BN normalises over the global batch
    (:func:`prepare_ddp_model`); gradients are averaged by DDP and stepped by
    :class:`~riemann_dnn.optim.RiemannianSGD`; the bold driver sees the global epoch loss,
    so every rank takes the same decisions. Rank 0 writes the record (the same fields as
    :func:`~.protocol.train_runs`'s), and every rank returns it.
    """
    from ..optim import BoldDriver
    from .protocol import _stop_reason
    from .runs import _splits, write_record
    from .training import _Checkpoint

    launch = current_launch()
    protocol, amp = config.protocol, config.amp
    if protocol.bn_estimate:
        raise ValueError(
            "a data-parallel run does not re-estimate BatchNorm statistics: use a protocol "
            f"with bn_estimate=0 (e.g. 'paper-sum'), got bn_estimate={protocol.bn_estimate}"
        )
    start = time.perf_counter()
    device = torch.device(launch.device)
    splits = {k: v.to(device) for k, v in _splits(config, data.train_x.shape[0]).items()}
    in_features = data.train_x.shape[1]
    # rank 0 keeps the checkpoint (one file, written after every epoch) and sends what it
    # read to the others, so hosts need not share a file system
    checkpoint = _Checkpoint(Path(out_dir) if launch.is_main else None, [config])
    checkpoint.stages = broadcast_object(checkpoint.stages)
    candidates = []
    for rate in protocol.lr_candidates:
        stage = f"select-{rate!r}"
        saved = checkpoint.get(stage)
        if saved is not None and "candidate" in saved:
            candidates.append(saved["candidate"])
            progress(protocol.selection_epochs)
            continue
        raw, model = _archbn(config, in_features, launch)
        optimizer = _optimizer(config, raw, rate)
        generator = torch.Generator().manual_seed(config.seed + 1)
        first = last = None
        finite, done = True, 0
        if saved is not None:
            _restore(raw, optimizer, generator, saved)
            done, first, last, finite = (
                saved["epoch"],
                saved["first"],
                saved["last"],
                saved["finite"],
            )
            progress(done)
        for epoch in range(done, protocol.selection_epochs):
            loss, _ = _epoch(
                model, optimizer, data, splits["selection_train"], generator, config, launch, amp
            )
            finite = finite and math.isfinite(loss)
            if not finite:  # stop moving a diverged candidate, as the ensemble does
                for group in optimizer.param_groups:
                    group["lr"] = 0.0
            first = loss if first is None else first
            last = loss
            checkpoint.put(
                stage,
                _state(
                    raw,
                    optimizer,
                    generator,
                    epoch=epoch + 1,
                    first=first,
                    last=last,
                    finite=finite,
                ),
            )
            progress(1)
        val = _error(
            model,
            data.train_x[splits["selection_val"]],
            data.train_y[splits["selection_val"]],
            launch,
        )
        diverged = not finite or not last < first
        candidates.append(
            {
                "lr": rate,
                "val_error": val,
                "diverged": diverged,
                "first_loss": first,
                "last_loss": last,
            }
        )
        checkpoint.put(stage, {"candidate": candidates[-1]})
    usable = [c for c in candidates if not c["diverged"]] or candidates
    chosen = min(usable, key=lambda c: c["val_error"])["lr"]
    selection = {
        "candidates": candidates,
        "chosen_lr": chosen,
        "all_diverged": all(c["diverged"] for c in candidates),
    }
    selection_seconds = time.perf_counter() - start

    raw, model = _archbn(config, in_features, launch)
    optimizer = _optimizer(config, raw, chosen)
    driver = BoldDriver(optimizer, raw, increase=protocol.increase, decrease=protocol.decrease)
    generator = torch.Generator().manual_seed(config.seed + 2)
    val_x, val_y = data.train_x[splits["validation"]], data.train_y[splits["validation"]]
    curves: dict[str, list] = {
        "train_loss": [],
        "train_error": [],
        "val_error": [],
        "lr": [],
        "accepted": [],
    }
    epoch_seconds, epoch, reason = [], 0, None
    saved = checkpoint.get("train")
    if saved is not None:  # resume after the last finished epoch
        _restore(raw, optimizer, generator, saved)
        driver.load_state_dict(saved["driver"])
        epoch, curves, epoch_seconds = saved["epoch"], saved["curves"], saved["epoch_seconds"]
        progress(epoch)
        reason = _stop_reason(protocol, epoch, curves["train_error"][-1], curves["val_error"])
    while reason is None:
        epoch += 1
        tick = time.perf_counter()
        loss, train_error = _epoch(
            model, optimizer, data, splits["train"], generator, config, launch, amp
        )
        epoch_seconds.append(time.perf_counter() - tick)
        curves["accepted"].append(bool(driver.step(loss)))
        curves["train_loss"].append(loss)
        curves["train_error"].append(train_error)
        curves["val_error"].append(_error(model, val_x, val_y, launch))
        curves["lr"].append(float(driver.lr))
        reason = _stop_reason(protocol, epoch, train_error, curves["val_error"])
        checkpoint.put(
            "train",
            _state(
                raw,
                optimizer,
                generator,
                driver=driver.state_dict(),
                epoch=epoch,
                curves=curves,
                epoch_seconds=epoch_seconds,
            ),
        )
        progress(1)
    record = {
        "config": config.to_json(),
        "name": config.name,
        "data": data.source,
        "selection": selection,
        "chosen_lr": chosen,
        "epochs": epoch,
        "stop_reason": reason,
        "curves": curves,
        "final_val_error": curves["val_error"][-1],
        "test_error": _error(model, data.test_x, data.test_y, launch),
        "ensemble_size": 1,
        "selection_seconds": selection_seconds,
        "epoch_seconds": epoch_seconds,
        "seconds": time.perf_counter() - start,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "world_size": launch.world_size,
        "rank": launch.rank,
    }
    if launch.is_main:
        write_record(Path(out_dir), config, record)
        checkpoint.remove()
    barrier()
    return record


def _state(raw: nn.Module, optimizer, generator: torch.Generator, **extra) -> dict:
    return {
        "model": {k: v.clone() for k, v in raw.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        **extra,
    }


def _restore(raw: nn.Module, optimizer, generator: torch.Generator, state: dict) -> None:
    raw.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
