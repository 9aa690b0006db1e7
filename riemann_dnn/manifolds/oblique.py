"""The oblique manifold: matrices whose columns (or rows) have unit norm."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ._array import Array, namespace
from .base import EmbeddedManifold
from .sphere import Sphere

__all__ = ["Oblique", "filter_matrix"]


class Oblique(Sphere):
    r"""The oblique manifold :math:`\mathcal{OB}(m, n)`: a product of unit spheres.

    ``unit="columns"`` (default, pymanopt's convention): :math:`\operatorname{diag}(X^TX) = 1`,
    each of the ``n`` columns on :math:`S^{m-1}`. ``unit="rows"`` (the paper's, Manopt's
    ``obliquefactory(..., true)``): :math:`\operatorname{diag}(XX^T) = 1`, each of the ``m``
    rows -- one filter of a layer -- on :math:`S^{n-1}`. Points have shape ``(m, n)``;
    the formulas broadcast over leading axes (stacks of points: a copy per leading index).

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

    broadcasts_over_copies = True

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

    def project_point(self, ambient: Array) -> Array:
        """Normalise each row (``unit="rows"``) or column of ``ambient`` onto its sphere.

        Raises:
            ValueError: a row (column) has zero or non-finite norm, so it has no direction
                to keep: ``"Oblique.project_point: row 3 of 8 has norm 0 (a zero filter has
                no direction to put on the unit sphere); re-initialise it, e.g. with random
                values"`` (``non-finite filter`` for a NaN or infinite norm). Callers may prefix the parameter's name.
        """
        if ambient.shape[-2:] != self._shape:
            raise ValueError(
                f"Oblique.project_point: expected shape {self._shape}, got {tuple(ambient.shape)}"
            )
        xp = namespace(ambient)
        norms = xp.linalg.vector_norm(ambient.reshape(-1, *self._shape), axis=self._axis)
        bad = ~(xp.isfinite(norms) & (norms > 0))
        if bool(bad.any()):  # one host sync: project_point places initial weights
            flat = bad.reshape(-1).tolist().index(True)
            index = flat % norms.shape[-1]
            what = "row" if self._unit == "rows" else "column"
            value = float(norms.reshape(-1)[flat])
            raise ValueError(
                f"Oblique.project_point: {what} {index} of {norms.shape[-1]} has norm "
                f"{value:g} (a {'zero' if value == 0 else 'non-finite'} filter has no "
                f"direction to put on the unit sphere); "
                f"re-initialise it, e.g. with random values"
            )
        return self._to_manifold(ambient)

    @classmethod
    def for_filters(
        cls, weight_shape: tuple[int, ...], *, retraction: str | None = None
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


def _channels_last_hint(weight) -> str:
    """The fix for a model in a channels-last memory format, whose conv weights are not
    contiguous (each filter's entries are, in another order)."""
    import torch

    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    layout = formats.get(weight.ndim)
    if layout is None or not weight.is_contiguous(memory_format=layout):
        return ""
    return (
        " (the weight is channels-last, whose filters the row view does not support: keep "
        "the model in the default layout, model.to(memory_format=torch.contiguous_format))"
    )


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
                + _channels_last_hint(weight)
            ) from err
    view = weight.reshape(shape)
    if not np.shares_memory(view, weight):
        raise ValueError(
            f"filter_matrix: array of shape {weight.shape} cannot be viewed as {shape} "
            f"without a copy; use numpy.ascontiguousarray first"
        )
    return view
