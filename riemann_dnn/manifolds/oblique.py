"""The oblique manifold: matrices whose columns (or rows) have unit norm."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ._array import Array
from .base import EmbeddedManifold
from .sphere import Sphere

__all__ = ["Oblique", "filter_matrix"]


class Oblique(Sphere):
    r"""The oblique manifold :math:`\mathcal{OB}(m, n)`: a product of unit spheres.

    ``unit="columns"`` (default, pymanopt's convention): :math:`\operatorname{diag}(X^TX) = 1`,
    each of the ``n`` columns on :math:`S^{m-1}`. ``unit="rows"`` (the paper's, Manopt's
    ``obliquefactory(..., true)``): :math:`\operatorname{diag}(XX^T) = 1`, each of the ``m``
    rows -- one filter of a layer -- on :math:`S^{n-1}`. Points have shape ``(m, n)``.

    With unit rows and :math:`w_i` the rows of :math:`X`:

    - projection (Table 1's :math:`\Pi_W`): :math:`P_X(Z) = Z - \operatorname{Diag}(\operatorname{diag}(ZX^T))X`
    - ``"normalize"`` retraction (the paper's Orth, default): :math:`R_X(U) = \operatorname{rownormalize}(X + U)`
    - ``"exp"``: :math:`w_i \mapsto \cos\|u_i\| w_i + \sin\|u_i\|\, u_i/\|u_i\|`
    - Riemannian Hessian: :math:`P_X(\nabla^2 f[U]) - \operatorname{Diag}(\operatorname{diag}(\nabla f\, X^T))U`

    Args:
        m, n: the point shape.
        unit: ``"columns"`` or ``"rows"``.
        retraction: ``"normalize"`` or ``"exp"``.
    """

    def __init__(
        self,
        m: int,
        n: int,
        *,
        unit: Literal["columns", "rows"] = "columns",
        retraction: str | None = None,
    ):
        if unit not in ("columns", "rows"):
            raise ValueError(f"Oblique: unit must be 'columns' or 'rows', got {unit!r}")
        if int(m) < 1 or int(n) < 1:
            raise ValueError(f"Oblique: need m, n >= 1, got m={m}, n={n}")
        self._unit = unit
        self._axis = -2 if unit == "columns" else -1
        spheres, sphere_dim = (n, m - 1) if unit == "columns" else (m, n - 1)
        EmbeddedManifold.__init__(
            self,
            f"Oblique manifold OB({m},{n}) with unit {unit}",
            spheres * sphere_dim,
            (m, n),
            retraction,
        )
        self._num_spheres = spheres

    @property
    def unit(self) -> str:
        return self._unit

    @property
    def typical_dist(self) -> float:
        return math.pi * math.sqrt(self._num_spheres)

    @classmethod
    def for_filters(cls, weight_shape: tuple[int, ...], *, retraction: str | None = None
                    ) -> Oblique:
        """The manifold of a layer whose weight of shape ``(out, *rest)`` has unit-norm
        filters: ``Oblique(out, prod(rest), unit="rows")``."""
        if len(weight_shape) < 2:
            raise ValueError(
                f"Oblique.for_filters: a weight needs >= 2 dimensions (out, in, ...), got "
                f"shape {tuple(weight_shape)}"
            )
        out, rest = int(weight_shape[0]), math.prod(int(s) for s in weight_shape[1:])
        return cls(out, rest, unit="rows", retraction=retraction)


def filter_matrix(weight: Array) -> Array:
    """View a weight of shape ``(out, *rest)`` as the ``(out, prod(rest))`` matrix of its
    filters, sharing memory (no copy). Raises ``ValueError`` if that needs a copy."""
    if weight.ndim < 2:
        raise ValueError(f"filter_matrix: need a weight with >= 2 dimensions, got {weight.ndim}")
    shape = (weight.shape[0], math.prod(weight.shape[1:]))
    if hasattr(weight, "view") and not hasattr(weight, "__array_interface__"):  # torch
        try:
            return weight.view(shape)
        except RuntimeError as err:
            raise ValueError(
                f"filter_matrix: weight of shape {tuple(weight.shape)} is not contiguous, so "
                f"it cannot be viewed as {shape} without a copy; call .contiguous() first"
            ) from err
    view = weight.reshape(shape)
    if not np.shares_memory(view, weight):
        raise ValueError(
            f"filter_matrix: array of shape {weight.shape} cannot be viewed as {shape} "
            f"without a copy; use numpy.ascontiguousarray first"
        )
    return view
