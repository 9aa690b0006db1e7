r"""Which manifold a parameter lives on, and how a parameter tensor is viewed as a point.

A param group names its manifold: ``"euclidean"`` (default), ``"oblique"`` (unit-norm
filters), ``"sphere"`` (the whole tensor unit-norm), ``"stiefel"`` (orthonormal filters),
``"grassmann"`` (each filter a point of G(1, n): the sphere modulo sign), or a manifold
object whose point shape matches the parameter or its filter matrix (or, for a weight of
``out`` filters of size ``n``: ``(out, n, 1)``, e.g. ``Grassmann(n, 1, k=out)``, or for a
Stiefel/Grassmann object ``(n, out)``, the transposed filter matrix, e.g.
``Stiefel(n, out)`` for orthonormal rows). Views share
memory with the parameter, so writing a new point into the view updates the parameter in
place.

For a weight with ``out`` filters of size ``n = prod(rest)`` (the filter matrix ``W`` is
``out x n``):

- ``"stiefel"``: orthonormal rows when ``out <= n`` (:math:`WW^T = I`, the point is
  :math:`W^T \in \mathrm{St}(n, out)`), else orthonormal columns (:math:`W^TW = I`,
  :math:`W \in \mathrm{St}(out, n)`); retractions ``"qr"`` (default), ``"polar"``,
  ``"cayley"``, ``"exp"``.
- ``"grassmann"``: ``Grassmann(n, 1, k=out)``, the filters as columns of shape ``(out, n, 1)``;
  retractions ``"polar"`` (default), ``"qr"``, ``"exp"``.

A name may carry the number of unit rows after a colon, ``"oblique:groups=G"``: the weight
as ``G`` rows of a contiguous reshape, each a block of ``out / G`` consecutive filters on
one unit sphere (GroupNorm's symmetry: the oblique manifold over row-blocks);
``"oblique:groups=1"`` is the whole weight as one unit row (the sphere, stepped by the same
row kernel as oblique filters). ``"stiefel:groups=G"`` and ``"grassmann:groups=G"`` put
the same ``(G, numel / G)`` row matrix on those manifolds. :func:`~riemann_dnn.params.param_groups` names each
weight's manifold this way.

The group's ``"retraction"`` may also name the vector transport after a ``+``:
``"exp+parallel"`` on ``"grassmann"`` (or ``"oblique"``, ``"sphere"``) is Cho & Lee's
(2017) SGD-G -- a step along the geodesic and parallel transport of the momentum; without
``+...`` the transport is ``"projection"``. ``None`` means the manifold's defaults.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from pymanopt.manifolds.manifold import Manifold

from ..manifolds import TRANSPORTS, Euclidean, Grassmann, Oblique, Sphere, Stiefel, filter_matrix

__all__ = [
    "Geometry",
    "MANIFOLD_NAMES",
    "resolve_geometry",
    "parameter_from_point",
    "split_retraction",
    "split_manifold_name",
    "RowView",
]

MANIFOLD_NAMES = ("euclidean", "oblique", "sphere", "stiefel", "grassmann")


def split_retraction(spec: str | None) -> tuple[str | None, str]:
    """``"exp+parallel"`` -> ``("exp", "parallel")``; ``"qr"`` -> ``("qr", "projection")``;
    ``None`` -> ``(None, "projection")``; ``"+parallel"`` keeps the default retraction."""
    if spec is None or "+" not in spec:
        return spec, "projection"
    retraction, _, transport = spec.partition("+")
    if transport not in TRANSPORTS:
        raise ValueError(
            f"retraction {spec!r}: unknown vector transport {transport!r} after '+'; use "
            f"one of {list(TRANSPORTS)}, e.g. 'exp+parallel'"
        )
    return retraction or None, transport


def split_manifold_name(name: str) -> tuple[str, int | None]:
    """``"oblique"`` -> ``("oblique", None)``; ``"oblique:groups=8"`` -> ``("oblique", 8)``."""
    base, sep, arg = name.partition(":")
    if not sep:
        return base, None
    key, _, value = arg.partition("=")
    if key != "groups" or not value.isdigit() or int(value) < 1:
        raise ValueError(
            f"manifold {name!r}: after ':' give the number of unit rows as 'groups=G' "
            f"with G >= 1, e.g. 'oblique:groups=8'"
        )
    return base, int(value)


@dataclass(frozen=True)
class RowView:
    """The parameter as ``rows`` rows of a contiguous reshape, ``(*batch, rows, numel / rows)``
    (a view, no copy): ``rows`` blocks of consecutive filters, or the whole tensor as one row."""

    rows: int

    def __call__(self, tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        return tensor.view(*tensor.shape[:batch_dims], self.rows, -1)


@dataclass(frozen=True)
class _RowViewTransposed(RowView):
    def __call__(self, tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        return super().__call__(tensor, batch_dims).transpose(-1, -2)


@dataclass(frozen=True)
class _RowViewAsColumns(RowView):
    def __call__(self, tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
        return super().__call__(tensor, batch_dims).unsqueeze(-1)


def _identity(tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    return tensor


def _filters(tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    """``(*batch, out, *rest)`` viewed as ``(*batch, out, prod(rest))`` without a copy."""
    if batch_dims == 0:
        return filter_matrix(tensor)
    return tensor.view(*tensor.shape[: batch_dims + 1], -1)


def _filters_transposed(tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    return _filters(tensor, batch_dims).transpose(-1, -2)


def _filters_as_columns(tensor: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    return _filters(tensor, batch_dims).unsqueeze(-1)


@dataclass(frozen=True)
class Geometry:
    """A parameter's manifold and the map from the parameter tensor to a point (a view).

    ``view(tensor, batch_dims=0)`` also views a stack of parameters (leading ``batch_dims``
    axes, e.g. an ensemble of models) as a stack of points; the manifold's formulas
    broadcast over such leading axes.
    """

    manifold: Manifold
    view: Callable[..., torch.Tensor]

    @property
    def is_euclidean(self) -> bool:
        return getattr(self.manifold, "is_flat", False)

    @property
    def key(self) -> tuple:
        """Parameters with equal keys can be stacked and stepped together."""
        return (
            type(self.manifold),
            self.manifold.point_shape,
            getattr(self.manifold, "retraction_name", None),
            getattr(self.manifold, "transport_name", "projection"),
            self.view,
        )


def _named_geometry(name: str, shape: tuple[int, ...], spec: str | None) -> Geometry:
    name, rows = split_manifold_name(name)
    if name == "euclidean":  # plain SGD: a retraction named for the constrained groups is moot
        return Geometry(Euclidean(*shape), _identity)
    retraction, transport = split_retraction(spec)
    if transport != "projection" and name not in ("sphere", "oblique", "grassmann"):
        raise ValueError(
            f"retraction {spec!r}: transport {transport!r} is available on 'sphere', "
            f"'oblique' and 'grassmann' (lines), not on {name!r}; drop the '+{transport}'"
        )
    if name == "sphere" and rows is None:
        return Geometry(Sphere(*shape, retraction=retraction, transport=transport), _identity)
    if rows is not None:
        return _row_geometry(name, shape, rows, retraction, transport)
    if len(shape) < 2:
        raise ValueError(
            f"manifold {name!r} constrains the filters (rows) of a weight of shape (out, in, "
            f"...), but this parameter has shape {shape}; put 1-D parameters (biases, "
            f"BatchNorm scale/shift) in a Euclidean group"
        )
    out = shape[0]
    rest = 1
    for size in shape[1:]:
        rest *= size
    if name == "oblique":
        oblique = Oblique.for_filters(shape, retraction=retraction)
        return Geometry(oblique.with_transport(transport), _filters)
    if name == "stiefel":
        if out <= rest:  # orthonormal rows: W^T in St(rest, out)
            return Geometry(Stiefel(rest, out, retraction=retraction), _filters_transposed)
        return Geometry(Stiefel(out, rest, retraction=retraction), _filters)
    if name == "grassmann":
        if out == 1:  # one filter: the (rest, 1) column
            return Geometry(
                Grassmann(rest, 1, retraction=retraction, transport=transport), _filters_transposed
            )
        return Geometry(
            Grassmann(rest, 1, k=out, retraction=retraction, transport=transport),
            _filters_as_columns,
        )
    raise ValueError(
        f"unknown manifold {name!r} in a param group; use one of {MANIFOLD_NAMES} or a "
        f"riemann_dnn.manifolds object"
    )


def _row_geometry(
    name: str, shape: tuple[int, ...], rows: int, retraction: str | None, transport: str
) -> Geometry:
    """``name`` on the ``(rows, numel / rows)`` row matrix of a parameter of ``shape``."""
    numel = math.prod(shape)
    blocks = shape[0] if shape else 1
    if blocks % rows:
        raise ValueError(
            f"manifold '{name}:groups={rows}': a parameter of shape {shape} has {blocks} "
            f"filters along dim 0, which do not split into {rows} equal groups; give a "
            f"divisor of {blocks}"
        )
    n = numel // rows
    if name in ("oblique", "sphere"):
        oblique = Oblique(rows, n, unit="rows", retraction=retraction)
        return Geometry(oblique.with_transport(transport), RowView(rows))
    if name == "stiefel":
        if rows <= n:
            return Geometry(Stiefel(n, rows, retraction=retraction), _RowViewTransposed(rows))
        return Geometry(Stiefel(rows, n, retraction=retraction), RowView(rows))
    if name == "grassmann":
        if rows == 1:
            return Geometry(
                Grassmann(n, 1, retraction=retraction, transport=transport),
                _RowViewTransposed(rows),
            )
        return Geometry(
            Grassmann(n, 1, k=rows, retraction=retraction, transport=transport),
            _RowViewAsColumns(rows),
        )
    raise ValueError(
        f"unknown manifold {name!r} in a param group; use one of {MANIFOLD_NAMES} (with "
        f"':groups=G' for row-blocks) or a riemann_dnn.manifolds object"
    )


def resolve_geometry(
    spec: str | Manifold | None, retraction: str | None, param: torch.Tensor
) -> Geometry:
    """The :class:`Geometry` of ``param`` in a group with ``manifold=spec`` and
    ``retraction`` (a name, optionally ``"+parallel"``/``"+projection"`` for the transport of
    named sphere, oblique and grassmann groups; see the module docstring)."""
    shape = tuple(param.shape)
    if spec is None:
        spec = "euclidean"
    if isinstance(spec, str):
        return _named_geometry(spec.lower(), shape, retraction)
    if not isinstance(spec, Manifold):
        raise TypeError(
            f"a param group's 'manifold' must be a name {MANIFOLD_NAMES} or a manifold object, "
            f"got {type(spec).__name__}"
        )
    if retraction is not None and retraction != getattr(spec, "retraction_name", retraction):
        raise ValueError(
            f"param group gives manifold {spec!r} and retraction {retraction!r}; choose the "
            f"retraction when constructing the manifold instead"
        )
    point_shape = tuple(getattr(spec, "point_shape", ()))
    if point_shape == shape:
        return Geometry(spec, _identity)
    if len(shape) >= 2:
        out, rest = tuple(filter_matrix(param.detach()).shape)
        views = [((out, rest), _filters), ((out, rest, 1), _filters_as_columns)]
        if getattr(spec, "orthonormal_columns", False):  # orthonormal rows: W^T is the point
            views.append(((rest, out), _filters_transposed))
        for view_shape, view in views:
            if point_shape == view_shape:
                return Geometry(spec, view)
    raise ValueError(
        f"manifold {spec} has points of shape {point_shape}, which fits neither the parameter "
        f"shape {shape} nor its filter matrix (out, n), its filters as columns (out, n, 1) "
        f"or, for Stiefel/Grassmann, its transpose (n, out); give each parameter a manifold "
        f"of its own shape or name the manifold ('oblique', ...) so it is derived per "
        f"parameter"
    )


_INVERSE_VIEWS = {
    _identity: lambda point, shape: point,
    _filters: lambda point, shape: point.reshape(shape),
    _filters_transposed: lambda point, shape: point.transpose(-1, -2).reshape(shape),
    _filters_as_columns: lambda point, shape: point.squeeze(-1).reshape(shape),
}


def parameter_from_point(
    geometry: Geometry, point: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """The parameter of ``shape`` whose view is ``point`` (differentiable; the inverse of
    ``geometry.view``), e.g. to call a module functionally at a manifold point."""
    view = geometry.view
    if isinstance(view, _RowViewTransposed):
        return point.transpose(-1, -2).reshape(shape)
    if isinstance(view, _RowViewAsColumns):
        return point.squeeze(-1).reshape(shape)
    if isinstance(view, RowView):
        return point.reshape(shape)
    return _INVERSE_VIEWS[view](point, shape)
