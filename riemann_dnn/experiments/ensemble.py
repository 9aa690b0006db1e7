"""Train many independent copies of one architecture at once, through the public optimizer.

The copies are :class:`~riemann_dnn.optim.StackedModules` (stacked tensors, one batched
``vmap`` forward/backward for every copy, each on its own mini-batch with its own
BatchNorm statistics), stepped by one :class:`~riemann_dnn.optim.RiemannianSGD` whose
groups carry the copies axis and one learning rate per copy -- the same update a single
model gets. A copy whose gradient is not finite is left untouched (``nonfinite="skip"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import RiemannianSGD, StackedModules

__all__ = ["Ensemble"]


class Ensemble:
    """``len(models)`` copies of one architecture, stacked and trained together.

    Args:
        models: modules of identical structure (their current weights are copied).
        manifolds: ``{parameter name: manifold name or object}``; unnamed parameters are
            Euclidean. Constrained parameters are mapped onto their manifold.
        retraction: retraction for named manifolds.
        momentum: of the optimizer (default 0).
    """

    def __init__(self, models: Sequence[nn.Module], manifolds: dict[str, object] | None = None,
                 retraction: str | None = None, *, momentum: float = 0.0):
        if not models:
            raise ValueError("Ensemble needs at least one model")
        self.stack = StackedModules(models)
        self.size = self.stack.size
        self.optimizer = RiemannianSGD(
            self.stack.param_groups(manifolds, retraction),
            lr=torch.zeros(self.size, dtype=torch.float64), momentum=momentum, copies=self.size, nonfinite="skip")

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.stack.params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return self.stack.buffers

    def set_lr(self, lr: torch.Tensor) -> None:
        """One learning rate per copy (0 freezes a copy's weights)."""
        for group in self.optimizer.param_groups:
            group["lr"].copy_(lr)

    def forward(self, x: torch.Tensor, *, train: bool, shared_input: bool = False) -> torch.Tensor:
        """See :meth:`StackedModules.forward`."""
        return self.stack.forward(x, train=train, shared_input=shared_input)

    @torch.no_grad()
    def errors(self, x: torch.Tensor, y: torch.Tensor, *, shared_input: bool = False,
               chunk: int = 2000) -> torch.Tensor:
        """Misclassification rate of each copy (eval mode: BN running statistics)."""
        batch_axis = 0 if shared_input else 1
        wrong = torch.zeros(self.size, device=y.device)
        for start in range(0, x.shape[batch_axis], chunk):
            xs = x.narrow(batch_axis, start, min(chunk, x.shape[batch_axis] - start))
            ys = y.narrow(batch_axis, start, xs.shape[batch_axis])
            pred = self.forward(xs, train=False, shared_input=shared_input).argmax(-1)
            wrong += (pred != ys).sum(-1).to(wrong.dtype)
        return wrong / x.shape[batch_axis]

    def train_step(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every copy on its own batch ``x[i], y[i]``, on the
        cross-entropy averaged (``reduction="mean"``) or summed (``"sum"``) over the batch.

        Returns each copy's mean cross-entropy and number of misclassified samples (before
        the step). A copy with rate 0 is not moved (its BN statistics still are).
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        logits = self.forward(x, train=True)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses = losses.view(y.shape).mean(dim=1)
        objective = losses.sum() * (y.shape[1] if reduction == "sum" else 1)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        wrong = (logits.detach().argmax(-1) != y).sum(dim=1)
        return losses.detach(), wrong

    def member(self, index: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of copy ``index`` (loadable into the original module)."""
        return self.stack.member(index)
