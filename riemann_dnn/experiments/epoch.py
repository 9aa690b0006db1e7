"""The one training loop of the experiments: an epoch of optimizer steps on global batches,
in one process or data-parallel over a ``torchrun`` launch, with or without autocast.

:func:`train_epoch` is what the protocol's ensembles (:mod:`.training`) and ``segment``
(:mod:`.segmentation.train`) step through. For each global batch (a tensor of sample
indices) it

1. takes this process's share (:func:`~.distributed.batch_share`; all of it in one
   process, or when the training is not data-parallel);
2. evaluates the caller's ``objective(share, size)`` under :func:`autocast`: this share's
   part of the global batch's objective (``size`` samples in all), so that the parts sum to
   the objective of the global batch over the ranks;
3. back-propagates, sums the gradients over the ranks
   (:func:`~.distributed.all_reduce_gradients`) and steps the optimizer;

and returns the per-batch statistics the objective reports, summed over the epoch's batches
and over the ranks. Nothing is scaled by the world size: the ranks' objectives already sum to
the global one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch
from torch.optim import Optimizer

from .distributed import Launch, all_reduce_gradients, all_reduce_sum, batch_share

__all__ = ["AMP_MODES", "autocast", "train_epoch"]

#: ``--amp`` values: ``"off"`` (float32 everywhere) or ``"bf16"`` (the forward pass and loss
#: under ``torch.autocast`` in bfloat16; weights, gradients, BatchNorm and the Riemannian
#: step stay float32).
AMP_MODES = ("off", "bf16")

#: ``objective(share, size) -> (loss, stats)``: ``loss`` a scalar to back-propagate,
#: ``stats`` tensors to sum over the batches (and ranks).
Objective = Callable[[torch.Tensor, int], tuple[torch.Tensor, Sequence[torch.Tensor]]]


def autocast(device: str | torch.device, amp: str | None):
    """``torch.autocast`` in bfloat16 for ``amp == "bf16"``, else a no-op context."""
    if amp not in (None, *AMP_MODES):
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    if amp != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def train_epoch(
    optimizer: Optimizer,
    batches: Iterable[torch.Tensor],
    objective: Objective,
    *,
    launch: Launch | None = None,
    amp: str | None = "off",
    device: str | torch.device = "cpu",
    dim: int = 0,
    on_batch: Callable[[int, Sequence[torch.Tensor]], None] | None = None,
) -> list[torch.Tensor]:
    """One epoch of ``optimizer`` steps, one per global batch of ``batches`` (index tensors
    whose axis ``dim`` runs over the batch's samples), on ``objective`` (see the module
    docstring). ``launch``: the processes that train together (data-parallel when it has
    several ranks; ``None``: this process alone). ``on_batch(b, stats)`` is called after
    each step (e.g. a progress bar). Returns the statistics summed over the batches and the
    ranks."""
    parallel = launch is not None and launch.world_size > 1
    params = [p for group in optimizer.param_groups for p in group["params"]]
    totals: list[torch.Tensor] | None = None
    for b, index in enumerate(batches):
        share = batch_share(index, launch.rank, launch.world_size, dim) if parallel else index
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp):
            loss, stats = objective(share, index.shape[dim])
        loss.backward()
        if parallel:
            all_reduce_gradients(params)
        optimizer.step()
        totals = list(stats) if totals is None else [t + s for t, s in zip(totals, stats)]
        if on_batch is not None:
            on_batch(b, stats)
    if totals is None:
        raise ValueError("train_epoch: no batches")
    return [all_reduce_sum(t) for t in totals] if parallel else totals
