"""Past one process: ``torch.distributed`` as launched by ``torchrun``, for our commands.

Nothing here schedules or trains anything: ``torchrun`` (``python -m torch.distributed.run``)
starts the processes, on one host or many (its rendezvous), and sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; the protocol engine (:func:`~.protocol.train_runs`) and ``segment`` train
through the one epoch loop of :mod:`.epoch`. This module holds

- the launch: :func:`launch_from_env` joins the process group (gloo on the CPU, NCCL on CUDA)
  and pins this process's device from ``LOCAL_RANK``; without ``torchrun`` it returns a
  one-process :class:`Launch` and initialises nothing, so every command behaves as before;
- the collectives: :func:`barrier`, :func:`all_gather_objects`, :func:`broadcast_object`,
  :func:`all_reduce_sum`, :func:`all_reduce_gradients`, and the splits :func:`shard` (a
  rank's share of a list of tasks, for sweeps) and :func:`batch_share` (a rank's contiguous
  slice of one global batch, for one model on many processes);
- batch normalization over the global batch: :class:`GlobalBatchNorm` and
  :func:`convert_batchnorm` (on any backend, and inside ``vmap`` for stacked copies).

>>> shard(list("abcde"), rank=1, world_size=2)
['b', 'd']
"""

from __future__ import annotations

import datetime
import gc
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
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
    "all_reduce_gradients",
    "shard",
    "batch_share",
    "GlobalBatchNorm",
    "convert_batchnorm",
]

T = TypeVar("T")

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


def all_reduce_gradients(params: Iterable[torch.Tensor]) -> None:
    """Replace every ``param.grad`` by its sum over the ranks, in one collective per device
    and dtype (a no-op in one process). With each rank's loss its part of the global batch's
    loss, the sum is the gradient of the global batch. Every rank must hold gradients for the
    same parameters."""
    if not _active():
        return
    buckets: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for param in params:
        if param.grad is not None:
            buckets[(param.grad.device, param.grad.dtype)].append(param.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        for grad, value in zip(grads, flat.split([g.numel() for g in grads])):
            grad.copy_(value.view_as(grad))


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s share of ``items``: every ``world_size``-th item from ``rank`` (a
    deterministic split; the items together are ``items``)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"shard: rank must be in [0, {world_size}), got {rank}")
    return list(items[rank::world_size])


def batch_share(index: torch.Tensor, rank: int, world_size: int, dim: int = 0) -> torch.Tensor:
    """Rank ``rank``'s contiguous slice of one global batch ``index`` along ``dim``
    (``torch.tensor_split``: sizes differ by at most one), so the ranks together see exactly
    the global batch."""
    return torch.tensor_split(index, world_size, dim=dim)[rank]


# -- batch normalization over the global batch --------------------------------------------------
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch normalization in float32 whose training statistics are those of the global
    batch: with ``global_batch`` (the default) and a process group of several ranks, the sums
    over every rank's slice are all-reduced (differentiably), so ``N`` processes normalise as
    one would. Works on any backend (gloo included) and inside ``torch.func.vmap`` (stacked
    copies). In one process, or with ``global_batch=False``, it is :class:`torch.nn.BatchNorm1d`
    (or 2d) on a float32 input: a low-precision input (``autocast``) is normalised in float32
    and cast back.

    Over several ranks the mean and the biased variance :math:`\\sigma^2 = \\sum (x - \\mu)^2 / n`
    are taken over the batch and spatial axes of all ranks (two all-reduces); the running
    variance is updated with the unbiased estimate, as :class:`torch.nn.BatchNorm2d` does.
    """

    def __init__(self, *args, global_batch: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.global_batch = global_batch

    def _check_input_dim(self, input: torch.Tensor) -> None:  # noqa: A002 - torch's name
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm: expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002
        self._check_input_dim(input)
        x = input.float() if input.dtype in _LOW_PRECISION else input
        if not (self.training and self.global_batch and _active()):
            return super().forward(x).to(input.dtype)
        axes = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        total = _differentiable_sum(torch.cat([x.sum(axes), count]))
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = _differentiable_sum((centred * centred).sum(axes)) / n
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    1.0 / self.num_batches_tracked if self.momentum is None else self.momentum
                )
                unbiased = torch.where(n > 1, var * n / (n - 1), var)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.detach())
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks; its gradient is the sum of the ranks' gradients. Under ``vmap``
    the stacked tensor is reduced whole (a sum is elementwise over the copies)."""

    @staticmethod
    def forward(tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        pass

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad

    @staticmethod
    def vmap(info, in_dims, tensor):
        return _AllReduceSum.apply(tensor), in_dims[0]


def _differentiable_sum(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


def convert_batchnorm(module: nn.Module, *, global_batch: bool = True) -> nn.Module:
    """``module`` with every BatchNorm layer replaced by :class:`GlobalBatchNorm` (with
    ``global_batch``), sharing the same parameter and buffer tensors (optimizer groups built
    before stay valid; state-dict keys are unchanged)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
            global_batch=global_batch,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child, global_batch=global_batch))
    return module
