r"""The pymanopt door for any ``torch.nn.Module``: a model, a loss and a data set as a
finite-sum problem on the product manifold of its parameters.

The manifold of each parameter comes from the same param groups ``RiemannianSGD`` uses
(:func:`riemann_dnn.params.param_groups` by default: BatchNorm-fed weights on the oblique
manifold, the rest Euclidean), so

.. math:: \mathcal{M} = \mathcal{M}_1 \times \dots \times \mathcal{M}_P, \qquad
          f_B(x) = \frac{1}{|B|}\sum_{i\in B} \operatorname{loss}(\text{model}_x(u_i), v_i),

evaluated functionally with ``torch.func.functional_call`` (the module's own parameters are
not touched until :meth:`ModuleProblem.load_point`). BatchNorm layers see the batch's
statistics; their running statistics are updated once per *gradient* evaluation (one
solver step), exactly as a torch training loop updates them once per step, and left alone
by cost evaluations (which run without gradients) and by a solver's statistics
(:meth:`ModuleProblem.evaluating`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ..manifolds import Product
from ..params import param_groups, resolve_geometry
from ..params.geometry import Geometry, parameter_from_point
from .finite_sum import FiniteSumProblem

__all__ = ["ModuleProblem"]


class ModuleProblem(FiniteSumProblem):
    """``model`` + ``loss_fn`` + ``(inputs, targets)`` as a :class:`FiniteSumProblem`.

    Args:
        model: any ``nn.Module``.
        loss_fn: ``loss_fn(outputs, targets)`` -> the mean loss (e.g. ``F.cross_entropy``).
        data: ``(inputs, targets)`` tensors sharing the first axis, on the model's device.
        groups: param groups naming manifolds, as for ``RiemannianSGD`` (default:
            ``param_groups(model)``); parameters in no group are held fixed.
        eval_batch_size: evaluate full costs/gradients in chunks of this many samples.

    The point is a list with one tensor per parameter (its manifold view, e.g. the
    ``(out, in*k*k)`` filter matrix of a conv weight). :meth:`point_from_model` reads it off
    the model and :meth:`load_point` writes one back.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        data: Sequence[torch.Tensor],
        *,
        groups: list[dict[str, Any]] | None = None,
        eval_batch_size: int | None = None,
    ):
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("ModuleProblem: data must be a pair (inputs, targets) of tensors")
        groups = param_groups(model) if groups is None else groups
        names = {id(p): n for n, p in model.named_parameters()}
        self.model = model
        self.names: list[str] = []
        self.geometries: list[Geometry] = []
        for group in groups:
            for param in group["params"]:
                if id(param) not in names:
                    raise ValueError(
                        "ModuleProblem: a param group holds a tensor that is not "
                        "a parameter of the model"
                    )
                self.names.append(names[id(param)])
                self.geometries.append(
                    resolve_geometry(group.get("manifold"), group.get("retraction"), param)
                )
        self._shapes = [tuple(dict(model.named_parameters())[n].shape) for n in self.names]
        super().__init__(
            Product([g.manifold for g in self.geometries]),
            self._cost_on_batch,
            tuple(data),
            backend="torch",
            eval_batch_size=eval_batch_size,
        )
        self.loss_fn = loss_fn
        self._measuring = False

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluations inside leave the BatchNorm running statistics untouched."""
        previous, self._measuring = self._measuring, True
        try:
            yield
        finally:
            self._measuring = previous

    def _cost_on_batch(self, *args):
        *point, (inputs, targets) = args
        params = {
            name: parameter_from_point(geometry, value, shape)
            for name, geometry, value, shape in zip(
                self.names, self.geometries, point, self._shapes
            )
        }
        buffers = dict(self.model.named_buffers())
        if self._measuring or not torch.is_grad_enabled():  # a measurement: leave them alone
            buffers = {k: v.clone() for k, v in buffers.items()}
        was_training = self.model.training
        self.model.train()
        try:
            outputs = functional_call(self.model, {**params, **buffers}, (inputs,), strict=False)
        finally:
            self.model.train(was_training)
        return self.loss_fn(outputs, targets)

    def point_from_model(self) -> list[torch.Tensor]:
        """The model's current parameters as a point (copies of their manifold views)."""
        params = dict(self.model.named_parameters())
        return [g.view(params[n].detach()).clone() for n, g in zip(self.names, self.geometries)]

    @torch.no_grad()
    def load_point(self, point: Sequence[torch.Tensor]) -> None:
        """Write ``point`` into the model's parameters (in place)."""
        params = dict(self.model.named_parameters())
        for name, geometry, value in zip(self.names, self.geometries, point):
            geometry.view(params[name]).copy_(value)
