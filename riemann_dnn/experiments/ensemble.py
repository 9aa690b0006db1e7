"""Train many independent copies of one architecture at once, through the public optimizer.

The copies are :class:`~riemann_dnn.optim.StackedModules` (stacked tensors, one batched
``vmap`` forward/backward for every copy, each on its own mini-batch with its own
BatchNorm statistics), stepped by one optimizer whose groups carry the copies axis and one
learning rate per copy -- the same update a single model gets. The optimizer is the
method's (:data:`~.methods.OPTIMIZERS`), constructed here and nowhere else:
:class:`~riemann_dnn.optim.RiemannianSGD` or :class:`~riemann_dnn.optim.RiemannianAdam`
on the stacked tensors, or ``torch.optim.AdamW``, ``adamp.SGDP`` and ``adamp.AdamP`` on
every copy (:class:`~.per_copy.PerCopy`). A copy whose gradient is not finite is left
untouched (``nonfinite="skip"``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..optim import RiemannianAdam, RiemannianSGD, StackedModules
from .epoch import train_epoch
from .methods import OPTIMIZERS
from .per_copy import PerCopy

__all__ = ["Ensemble", "build_optimizer", "missing_optimizers"]

#: The optimizers that come from the ``adamp`` package (``pip install "riemann-dnn[study]"``).
_ADAMP = ("sgdp", "adamp")

#: The optimizers whose weight decay is decoupled (the optimizer's, one value per copy), not
#: the L2 penalty the objective adds.
_DECOUPLED = ("adamw", "adamp")


def missing_optimizers(optimizers) -> list[str]:
    """The names of ``optimizers`` (:data:`~.methods.OPTIMIZERS`) this environment cannot
    construct: ``"sgdp"`` and ``"adamp"`` without the ``adamp`` package."""
    wanted = [name for name in optimizers if name in _ADAMP]
    if not wanted:
        return []
    try:
        import adamp  # noqa: F401
    except ImportError:
        return wanted
    return []


def build_optimizer(
    name: str,
    groups: list[dict],
    lr: float | torch.Tensor,
    *,
    copies: int | None = None,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
):
    """The one place a method's optimizer (``name``, :data:`~.methods.OPTIMIZERS`) is
    constructed, on ``groups`` (param groups naming their manifolds; only ``"sgd"`` and
    ``"adam"`` take constrained ones). With ``copies`` the groups hold stacked copies with a
    rate per copy (``lr``: a tensor), a copy whose gradient is not finite is left untouched,
    and the optimizers written for single models step every copy through
    :class:`~.per_copy.PerCopy`; without, they step one model (as ``segment`` does).
    ``momentum``: of ``"sgd"`` and ``"sgdp"``; ``weight_decay``: of every group (L2 for
    ``"sgd"`` and ``"adam"``, decoupled for ``"adamw"`` and ``"adamp"``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    stacked = {} if copies is None else {"copies": copies, "nonfinite": "skip"}
    if name == "sgd":
        return RiemannianSGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay, **stacked
        )
    if name == "adam":
        return RiemannianAdam(groups, lr=lr, weight_decay=weight_decay, **stacked)
    constrained = [
        g.get("manifold") for g in groups if g.get("manifold", "euclidean") != "euclidean"
    ]
    if constrained:
        raise ValueError(f"optimizer {name!r} steps Euclidean parameters only, not {constrained}")
    if missing_optimizers([name]):
        raise ImportError(
            f'optimizer {name!r} needs the adamp package: pip install "riemann-dnn[study]"'
        )
    if name == "adamw":
        cls, options = torch.optim.AdamW, {}
    else:
        from adamp import SGDP, AdamP

        cls, options = (SGDP, {"momentum": momentum}) if name == "sgdp" else (AdamP, {})
    if weight_decay:
        options["weight_decay"] = weight_decay
    elif name != "sgdp":
        options["weight_decay"] = 0.0  # AdamW's default is 0.01; set decay explicitly
    if copies is None:
        plain = [
            {k: v for k, v in g.items() if k not in ("manifold", "retraction")} for g in groups
        ]
        return cls(plain, lr=lr, **options)
    decay = options.pop("weight_decay", None)
    for group in groups:  # each group's, so that one may hold a decay per copy
        if decay is not None:
            group.setdefault("weight_decay", decay)
    return PerCopy(groups, cls, copies, **options)


class Ensemble:
    """``len(models)`` copies of one architecture, stacked and trained together.

    Args:
        models: modules of identical structure (their current weights are copied).
        manifolds: ``{parameter name: manifold name or object}``; unnamed parameters are
            Euclidean. Constrained parameters are mapped onto their manifold.
        retraction: retraction for named manifolds.
        momentum: of the optimizer (default 0; ``"sgd"`` and ``"sgdp"``).
        filters: the names of the BN-fed filters (a group of their own, first).
        filter_rate: RiemannianSGD's per-filter rate of the filters.
        optimizer: a name of :data:`~.methods.OPTIMIZERS` (default ``"sgd"``).
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        manifolds: dict[str, object] | None = None,
        retraction: str | None = None,
        *,
        momentum: float = 0.0,
        filters: Sequence[str] = (),
        filter_rate: str | None = None,
        optimizer: str = "sgd",
    ):
        if not models:
            raise ValueError("Ensemble needs at least one model")
        self.stack = StackedModules(models)
        self.size = self.stack.size
        self.filters = list(filters)
        groups = self.stack.param_groups(manifolds, retraction)
        if self.filters:
            groups = _filters_first(groups, self.stack.params, self.filters, filter_rate)
        elif filter_rate is not None:
            raise ValueError("Ensemble: filter_rate needs the names of the filters (filters=...)")
        self.weight_decay: torch.Tensor | None = None
        self.decoupled = optimizer in _DECOUPLED
        for group in groups:  # a rate tensor per group (the default would be one shared tensor)
            group["lr"] = torch.zeros(self.size, dtype=torch.float64)
        self.optimizer = build_optimizer(
            optimizer,
            groups,
            torch.zeros(self.size, dtype=torch.float64),
            copies=self.size,
            momentum=momentum,
        )

    @property
    def params(self) -> dict[str, torch.Tensor]:
        return self.stack.params

    @property
    def buffers(self) -> dict[str, torch.Tensor]:
        return self.stack.buffers

    def set_lr(self, lr: torch.Tensor, other_lr: torch.Tensor | None = None) -> None:
        """One learning rate per copy (0 freezes a copy's weights); with ``other_lr`` (and
        ``filters``), the filters step with ``lr`` and every other parameter with
        ``other_lr``."""
        for index, group in enumerate(self.optimizer.param_groups):
            group["lr"].copy_(lr if other_lr is None or index == 0 else other_lr)

    def freeze(self, copies: torch.Tensor) -> None:
        """Set the rate of the copies in the mask ``copies`` to 0 in every group (e.g.
        diverged candidates), leaving the others' rates as they are."""
        for group in self.optimizer.param_groups:
            group["lr"].masked_fill_(copies.to(group["lr"].device), 0.0)

    def set_weight_decay(self, weight_decay: torch.Tensor | None) -> None:
        r"""One weight-decay strength :math:`\omega_c` per copy on the ``filters``: the loss
        gains :math:`\tfrac{\omega_c}{2}\sum_k\lVert W_{k,c}\rVert^2`, whose gradient
        :math:`\omega_c W` is what ``torch.optim.SGD``'s ``weight_decay`` adds (so a step is
        :math:`W - \lambda(g + \omega W)`, the L2 penalty of van Laarhoven 2017). With a
        decoupled optimizer (AdamW, AdamP) :math:`\omega_c` is instead the optimizer's own
        weight decay of the filters' group (AdamW: :math:`W \leftarrow W(1 - \lambda\omega)`
        before the Adam step)."""
        if weight_decay is not None:
            if not self.filters:
                raise ValueError(
                    "Ensemble: weight decay needs the names of the filters (filters=...)"
                )
            weight_decay = torch.as_tensor(weight_decay, dtype=torch.float64)
            if weight_decay.shape != (self.size,) or not bool((weight_decay >= 0).all()):
                raise ValueError(
                    f"Ensemble: weight_decay must be {self.size} numbers >= 0, got {weight_decay}"
                )
            if self.decoupled:
                self.optimizer.param_groups[0]["weight_decay"] = weight_decay.clone()
                return
        self.weight_decay = weight_decay

    def forward(self, x: torch.Tensor, *, train: bool, shared_input: bool = False) -> torch.Tensor:
        """See :meth:`StackedModules.forward`."""
        return self.stack.forward(x, train=train, shared_input=shared_input)

    @torch.no_grad()
    def misclassified(
        self, x: torch.Tensor, y: torch.Tensor, *, shared_input: bool = False, chunk: int = 2000
    ) -> torch.Tensor:
        """Number of misclassified samples of each copy, as floats (eval mode: BN running
        statistics); ``x`` as in :meth:`forward`."""
        batch_axis = 0 if shared_input else 1
        wrong = torch.zeros(self.size, device=y.device)
        for start in range(0, x.shape[batch_axis], chunk):
            xs = x.narrow(batch_axis, start, min(chunk, x.shape[batch_axis] - start))
            ys = y.narrow(batch_axis, start, xs.shape[batch_axis])
            pred = self.forward(xs, train=False, shared_input=shared_input).argmax(-1)
            wrong += (pred != ys).sum(-1).to(wrong.dtype)
        return wrong

    def errors(
        self, x: torch.Tensor, y: torch.Tensor, *, shared_input: bool = False, chunk: int = 2000
    ) -> torch.Tensor:
        """Misclassification rate of each copy (:meth:`misclassified` over the samples)."""
        wrong = self.misclassified(x, y, shared_input=shared_input, chunk=chunk)
        return wrong / x.shape[0 if shared_input else 1]

    def objective(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        reduction: str = "mean",
        *,
        batch_size: int | None = None,
        penalty: bool = True,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The objective of one step of every copy on its batch ``x[i], y[i]``: the sum over
        the copies of the cross-entropy averaged (``reduction="mean"``) or summed (``"sum"``)
        over the batch, plus the weight-decay penalty (with ``penalty``).

        ``batch_size``: the size of the global batch when ``x, y`` are this process's share
        of it (data-parallel): the losses are then the share's sums over ``batch_size``, so
        the shares' objectives sum to the global batch's (give ``penalty`` to one share only).

        Returns the objective, and each copy's loss (its mean cross-entropy; its share of it
        when data-parallel) and number of misclassified samples, both detached.
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        size = y.shape[1] if batch_size is None else batch_size
        logits = self.forward(x, train=True)
        if logits.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float32
            logits = logits.float()
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses = losses.view(y.shape)
        losses = losses.mean(dim=1) if size == y.shape[1] else losses.sum(dim=1) / size
        objective = losses.sum() * (size if reduction == "sum" else 1)
        if self.weight_decay is not None and penalty:
            for name in self.filters:
                weight = self.params[name]
                decay = self.weight_decay.to(weight.device, weight.dtype)
                objective = objective + 0.5 * (decay * weight.pow(2).flatten(1).sum(1)).sum()
        wrong = (logits.detach().argmax(-1) != y).sum(dim=1)
        return objective, (losses.detach(), wrong)

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step of every copy on its own batch ``x[i], y[i]`` (see
        :meth:`objective`), through the experiments' one loop
        (:func:`~.epoch.train_epoch`). Returns each copy's mean cross-entropy and number of
        misclassified samples (before the step). A copy with rate 0 is not moved (its BN
        statistics still are)."""
        losses, wrong = train_epoch(
            self.optimizer,
            [torch.arange(y.shape[1])],
            lambda share, size: self.objective(x, y, reduction),
        )
        return losses, wrong

    def member(self, index: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of copy ``index`` (loadable into the original module)."""
        return self.stack.member(index)


def _filters_first(
    groups: list[dict],
    params: dict[str, torch.Tensor],
    filters: Sequence[str],
    filter_rate: str | None,
) -> list[dict]:
    """``groups`` with the ``filters`` (one manifold) moved into a group of their own, first."""
    unknown = [n for n in filters if n not in params]
    if unknown:
        raise ValueError(
            f"Ensemble: no parameters named {unknown}; the names are {sorted(params)}"
        )
    chosen = {id(params[n]) for n in filters}
    first, rest = None, []
    for group in groups:
        mine = [p for p in group["params"] if id(p) in chosen]
        others = [p for p in group["params"] if id(p) not in chosen]
        if mine:
            if first is not None:
                raise ValueError("Ensemble: the filters must all be on one manifold")
            first = {**group, "params": mine}
            if filter_rate is not None:
                first["filter_rate"] = filter_rate
        if others:
            rest.append({**group, "params": others})
    return [first, *rest]
