"""``ManifoldParameter``: a ``torch.nn.Parameter`` that carries its manifold, so that the
model (and a checkpoint of the whole model) holds the constraint, as in geoopt.

Every :class:`~riemann_dnn.optim.RiemannianOptimizer` reads a parameter's manifold (and
retraction) when its param group names none; naming the manifold in the group stays the
other way in, and wins where both are given.
"""

from __future__ import annotations

from typing import Any

import torch
from pymanopt.manifolds.manifold import Manifold

from .geometry import MANIFOLD_NAMES, resolve_geometry

__all__ = ["ManifoldParameter"]


class ManifoldParameter(torch.nn.Parameter):
    r"""A parameter on a manifold: a name (``"oblique"``: every filter -- row of the
    weight viewed as ``(out, -1)`` -- of unit norm; ``"sphere"``, ``"stiefel"``,
    ``"grassmann"``, ``"euclidean"``) or a manifold object whose point shape fits the
    tensor or its filter matrix, and optionally a ``retraction`` (e.g. ``"exp"``, or
    ``"exp+parallel"`` to name the transport; ``None``: the manifold's default).

    It behaves as the ``nn.Parameter`` it is (arithmetic gives plain tensors). The manifold
    survives ``copy.deepcopy``, ``module.to(...)``, ``module.load_state_dict`` (which copies
    values into the parameter; with ``assign=True`` torch replaces it by a plain
    ``nn.Parameter``) and a pickled module (``torch.save(model)``, then
    ``torch.load(..., weights_only=False)``). A state dict holds values only: it loads with
    ``weights_only=True``, and the manifolds come from the model it is loaded into.
    ``torch.load(..., weights_only=True)`` of a whole pickled module is refused by torch,
    for any module.

    The tensor is not moved onto the manifold here; the optimizer does that when it is
    built (``project_initial=True``).

    Example::

        layer = torch.nn.Linear(784, 64, bias=False)
        layer.weight = ManifoldParameter(layer.weight.detach(), "oblique")
        opt = riemann_dnn.optim.RiemannianSGD(model.parameters(), lr=0.01, momentum=0.9)
    """

    manifold: str | Manifold
    retraction: str | None

    def __new__(
        cls,
        data: torch.Tensor | None = None,
        manifold: str | Manifold = "oblique",
        requires_grad: bool = True,
        *,
        retraction: str | None = None,
    ):
        if data is None:
            data = torch.empty(0)
        _check_manifold(manifold, retraction, data)
        instance = super().__new__(cls, data, requires_grad)
        instance.manifold = manifold.lower() if isinstance(manifold, str) else manifold
        instance.retraction = retraction
        return instance

    def __deepcopy__(self, memo: dict) -> ManifoldParameter:
        if id(self) in memo:
            return memo[id(self)]
        import copy

        result = type(self)(
            self.data.clone(memory_format=torch.preserve_format),
            copy.deepcopy(self.manifold, memo),
            self.requires_grad,
            retraction=self.retraction,
        )
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, proto: int):
        # nn.Parameter's own rebuild makes a plain Parameter; rebuild this class (hooks
        # are not saved, as for nn.Parameter)
        return (
            _rebuild_manifold_parameter,
            (self.data, self.manifold, self.requires_grad, self.retraction),
        )

    def __repr__(self) -> str:
        retraction = "" if self.retraction is None else f", retraction={self.retraction!r}"
        return (
            f"ManifoldParameter on {self.manifold!r}{retraction} containing:\n"
            f"{torch.Tensor.__repr__(self.detach())}"
        )


def _rebuild_manifold_parameter(
    data: torch.Tensor, manifold: Any, requires_grad: bool, retraction: str | None
) -> ManifoldParameter:
    return ManifoldParameter(data, manifold, requires_grad, retraction=retraction)


def _check_manifold(manifold: Any, retraction: str | None, data: torch.Tensor) -> None:
    """A clear error, now, for a manifold that is unknown or does not fit the tensor."""
    if isinstance(manifold, str):
        if manifold.lower() not in MANIFOLD_NAMES:
            raise ValueError(
                f"ManifoldParameter: unknown manifold {manifold!r}; use one of "
                f"{MANIFOLD_NAMES} or a riemann_dnn.manifolds object"
            )
    elif not isinstance(manifold, Manifold):
        raise TypeError(
            f"ManifoldParameter: manifold must be a name {MANIFOLD_NAMES} or a manifold "
            f"object, got {type(manifold).__name__}"
        )
    if data.numel() == 0 and isinstance(manifold, str):
        return  # nothing to constrain (e.g. a lazily shaped parameter)
    try:
        resolve_geometry(manifold, retraction, data)
    except ValueError as err:
        raise ValueError(f"ManifoldParameter of shape {tuple(data.shape)}: {err}") from None
