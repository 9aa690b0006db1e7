"""Train many independent copies of one architecture at once.

The copies' parameters and buffers are stacked along a leading axis
(``torch.func.stack_module_state``) and the module is evaluated with ``torch.func.vmap`` of
``functional_call``: one batched forward/backward for every copy, each on its own
mini-batch, with its own BatchNorm statistics. Each parameter is then stepped by the shared
Riemannian step (:func:`riemann_dnn.step.riemannian_sgd_step`) on its manifold, with a
learning rate per copy -- the same update ``RiemannianSGD`` applies to a single model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ..optim.geometry import Geometry, resolve_geometry
from ..step import SGDHyperparameters, riemannian_sgd_step, sphere_sgd_step_, unit_norm_axis

__all__ = ["Ensemble"]


class Ensemble:
    """``len(models)`` copies of one architecture, stacked and trained together.

    Args:
        models: modules of identical structure (their current weights are copied).
        manifolds: ``{parameter name: manifold name or object}``; unnamed parameters are
            Euclidean. Constrained parameters are mapped onto their manifold.
        retraction: retraction for named manifolds.
    """

    def __init__(self, models: Sequence[nn.Module], manifolds: dict[str, object] | None = None,
                 retraction: str | None = None):
        if not models:
            raise ValueError("Ensemble needs at least one model")
        self.size = len(models)
        params, buffers = stack_module_state(list(models))
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self._base = copy.deepcopy(models[0]).to("meta")
        manifolds = dict(manifolds or {})
        unknown = set(manifolds) - set(self.params)
        if unknown:
            raise ValueError(f"Ensemble: no parameters named {sorted(unknown)}")
        reference = dict(models[0].named_parameters())
        self.geometries: dict[str, Geometry] = {
            name: resolve_geometry(manifolds.get(name, "euclidean"), retraction, reference[name])
            for name in self.params
        }
        self._buffers_momentum: dict[str, torch.Tensor | None] = dict.fromkeys(self.params)
        with torch.no_grad():
            for name, geometry in self.geometries.items():
                if not geometry.is_euclidean:
                    point = geometry.view(self.params[name], 1)
                    point.copy_(geometry.manifold.project_point(point))

    # -- evaluation -----------------------------------------------------------------------
    def _call(self, params, buffers, x):
        return functional_call(self._base, (params, buffers), (x,))

    def forward(self, x: torch.Tensor, *, train: bool, shared_input: bool = False) -> torch.Tensor:
        """Outputs of every copy: ``x`` is ``(copies, batch, ...)`` (one batch per copy), or
        ``(batch, ...)`` shared by all copies when ``shared_input``. In training mode BatchNorm
        uses batch statistics and updates each copy's running statistics."""
        self._base.train(train)
        in_dims = (0, 0, None if shared_input else 0)
        return vmap(self._call, in_dims=in_dims, randomness="different")(
            self.params, self.buffers, x
        )

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

    # -- training -------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor,
                   momentum: float = 0.0, reduction: str = "mean"
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of every copy on its own batch ``x[i], y[i]`` with rate ``lr[i]``,
        on the cross-entropy averaged (``reduction="mean"``) or summed (``"sum"``) over the
        batch.

        Returns each copy's mean cross-entropy and number of misclassified samples (before
        the step). A copy with ``lr[i] == 0`` is not moved (its BN statistics still are).
        """
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        logits = self.forward(x, train=True)
        losses = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        losses = losses.view(y.shape).mean(dim=1)
        objective = losses.sum() * (y.shape[1] if reduction == "sum" else 1)
        grads = torch.autograd.grad(objective, list(self.params.values()))
        wrong = (logits.detach().argmax(-1) != y).sum(dim=1)
        self.apply_step(dict(zip(self.params, grads)), lr, momentum)
        return losses.detach(), wrong

    @torch.no_grad()
    def apply_step(self, grads: dict[str, torch.Tensor], lr: torch.Tensor,
                   momentum: float = 0.0) -> None:
        """Step every parameter on its manifold with the shared Riemannian step (its fused
        in-place form for unit-norm filters with the normalize retraction)."""
        for name, param in self.params.items():
            geometry = self.geometries[name]
            point = geometry.view(param, 1)
            rate = lr.view(-1, *([1] * (point.ndim - 1))).to(point.dtype)
            hp = SGDHyperparameters(lr=rate, momentum=momentum)
            buf = self._buffers_momentum[name]
            buf_view = None if buf is None else geometry.view(buf, 1)
            axis = unit_norm_axis(geometry.manifold)
            if axis is not None:
                new_buf = sphere_sgd_step_(point, geometry.view(grads[name], 1), buf_view,
                                           axis, hp)
            else:
                new_point, new_buf = riemannian_sgd_step(
                    geometry.manifold, point, geometry.view(grads[name], 1), buf_view, hp)
                point.copy_(new_point)
            if new_buf is not None and buf is None:
                storage = torch.empty_like(param)
                geometry.view(storage, 1).copy_(new_buf)
                self._buffers_momentum[name] = storage
            elif new_buf is not None and new_buf is not buf_view:
                buf_view.copy_(new_buf)

    # -- snapshots ------------------------------------------------------------------------
    def _tensors(self) -> dict[str, torch.Tensor]:
        momentum = {f"momentum:{k}": v for k, v in self._buffers_momentum.items() if v is not None}
        return {**self.params, **self.buffers, **momentum}

    def state(self) -> dict[str, torch.Tensor]:
        """A copy of every copy's parameters, buffers and momentum (for undo)."""
        return {k: v.detach().clone() for k, v in self._tensors().items()}

    @torch.no_grad()
    def restore(self, state: dict[str, torch.Tensor], members: torch.Tensor) -> None:
        """Put the copies selected by the boolean mask ``members`` back to ``state``."""
        for name, tensor in self._tensors().items():
            if name in state:
                tensor[members] = state[name][members].to(tensor.dtype)
            else:  # momentum that did not exist at the snapshot
                tensor[members] = 0

    def member(self, index: int) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of copy ``index`` (loadable into the original module)."""
        return {k: v[index].detach().clone() for k, v in {**self.params, **self.buffers}.items()}
