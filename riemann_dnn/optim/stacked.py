"""Many independent copies of one architecture as stacked tensors, for one optimizer.

``torch.func.stack_module_state`` stacks the copies' parameters and buffers along a
leading axis; ``torch.func.vmap`` of ``functional_call`` evaluates every copy in one batched
forward/backward, each on its own mini-batch and with its own BatchNorm statistics.
:meth:`StackedModules.param_groups` gives :class:`~riemann_dnn.optim.RiemannianSGD` groups
with ``"copies"``, so every copy is stepped on its manifold with its own learning rate, and
:class:`~riemann_dnn.optim.BoldDriver` (``copies=n``) drives and undoes each copy alone.

Example::

    stack = StackedModules([ArchBN(4) for _ in range(10)])
    lr = torch.full((10,), 0.01)
    opt = RiemannianSGD(stack.param_groups({"linears.0.weight": "oblique"}), lr=lr,
                        copies=10)
    loss = F.cross_entropy(stack(x).flatten(0, 1), y.flatten())   # x: (10, batch, 784)
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["StackedModules"]


class StackedModules:
    """``len(models)`` copies of one architecture, stacked (their current weights copied).

    ``params`` and ``buffers`` map names to tensors with a leading axis of copies; calling
    the object evaluates every copy (see :meth:`forward`).
    """

    def __init__(self, models: Sequence[nn.Module]):
        if not models:
            raise ValueError("StackedModules needs at least one model")
        self.size = len(models)
        params, buffers = stack_module_state(list(models))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self._base = copy.deepcopy(models[0]).to("meta")

    def _call(self, params, buffers, x):
        return functional_call(self._base, (params, buffers), (x,))

    def forward(
        self, x: torch.Tensor, *, train: bool = True, shared_input: bool = False
    ) -> torch.Tensor:
        """Outputs of every copy: ``x`` is ``(copies, batch, ...)`` (one batch per copy), or
        ``(batch, ...)`` shared by all copies when ``shared_input``. In training mode
        BatchNorm uses batch statistics and updates each copy's running statistics."""
        self._base.train(train)
        in_dims = (0, 0, None if shared_input else 0)
        return vmap(self._call, in_dims=in_dims, randomness="different")(
            self.params, self.buffers, x
        )

    __call__ = forward

    def param_groups(
        self, manifolds: dict[str, Any] | None = None, retraction: str | None = None
    ) -> list[dict[str, Any]]:
        """Param groups with ``"copies"``: one per named manifold (``{parameter name:
        manifold name or object}``), the other parameters Euclidean."""
        manifolds = dict(manifolds or {})
        unknown = set(manifolds) - set(self.params)
        if unknown:
            raise ValueError(
                f"StackedModules: no parameters named {sorted(unknown)}; the "
                f"names are {sorted(self.params)}"
            )
        groups: dict[Any, dict[str, Any]] = {}
        for name, param in self.params.items():
            spec = manifolds.get(name, "euclidean")
            key = spec if isinstance(spec, str) else id(spec)
            group = groups.setdefault(key, {"params": [], "manifold": spec, "copies": self.size})
            if spec != "euclidean":
                group["retraction"] = retraction
            group["params"].append(param)
        return list(groups.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Every stacked parameter and buffer (the live tensors, detached)."""
        return {**{k: v.detach() for k, v in self.params.items()}, **self.buffers}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state`` (as from :meth:`state_dict`) into the stacked tensors."""
        for name, tensor in self.state_dict().items():
            tensor.copy_(state[name])

    @torch.no_grad()
    def estimate_batchnorm(self, batches: Iterable[torch.Tensor], *, shared_input: bool = False):
        r"""Replace every copy's BatchNorm running statistics by their averages over
        ``batches`` (PreciseBN, Wu & Johnson 2021): after :math:`K` equal batches,
        :math:`\hat\mu = \frac1K\sum_k \mu_k` and :math:`\hat\sigma^2 = \frac1K\sum_k
        \sigma_k^2` (unbiased batch variances), the statistics of the current weights
        rather than a lagging exponential average. ``num_batches_tracked`` is kept; the
        weights are not touched. Batches are as in :meth:`forward`."""
        norms = [m for m in self._base.modules() if isinstance(m, _BatchNorm)]
        saved = [m.momentum for m in norms]
        tracked = {k: v.clone() for k, v in self.buffers.items() if k.endswith("_tracked")}
        for name, buffer in self.buffers.items():
            if name.endswith("running_mean"):
                buffer.zero_()
            elif name.endswith("running_var"):
                buffer.fill_(1.0)
        try:
            for k, x in enumerate(batches, start=1):
                for m in norms:
                    m.momentum = 1.0 / k  # running = (1 - 1/k) running + batch / k
                self.forward(x, train=True, shared_input=shared_input)
        finally:
            for m, momentum in zip(norms, saved):
                m.momentum = momentum
            for name, value in tracked.items():
                self.buffers[name].copy_(value)

    def member(self, index: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of copy ``index`` (loadable into the original module)."""
        return {k: v[index].detach().clone() for k, v in self.state_dict().items()}
