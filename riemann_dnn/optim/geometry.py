"""Which manifold a parameter lives on, and how a parameter tensor is viewed as a point.

A param group names its manifold: ``"euclidean"`` (default), ``"oblique"`` (unit-norm
filters), ``"sphere"`` (the whole tensor unit-norm), ``"stiefel"`` (orthonormal filters),
``"grassmann"`` (each filter a point of G(1, n): the sphere modulo sign), or a manifold
object whose point shape matches the parameter or its filter matrix. Views share memory with
the parameter, so writing a new point into the view updates the parameter in place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from pymanopt.manifolds.manifold import Manifold

from ..manifolds import Euclidean, Grassmann, Oblique, Sphere, Stiefel, filter_matrix

__all__ = ["Geometry", "MANIFOLD_NAMES", "resolve_geometry", "parameter_from_point"]

MANIFOLD_NAMES = ("euclidean", "oblique", "sphere", "stiefel", "grassmann")


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
        return isinstance(self.manifold, Euclidean)

    @property
    def key(self) -> tuple:
        """Parameters with equal keys can be stacked and stepped together."""
        return (type(self.manifold), self.manifold.point_shape,
                getattr(self.manifold, "retraction_name", None), self.view)


def _named_geometry(name: str, shape: tuple[int, ...], retraction: str | None) -> Geometry:
    if name == "euclidean":
        return Geometry(Euclidean(*shape), _identity)
    if name == "sphere":
        return Geometry(Sphere(*shape, retraction=retraction), _identity)
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
        return Geometry(Oblique.for_filters(shape, retraction=retraction), _filters)
    if name == "stiefel":
        if out <= rest:  # orthonormal rows: W^T in St(rest, out)
            return Geometry(Stiefel(rest, out, retraction=retraction), _filters_transposed)
        return Geometry(Stiefel(out, rest, retraction=retraction), _filters)
    if name == "grassmann":
        return Geometry(Grassmann(rest, 1, k=out, retraction=retraction) if out > 1
                        else Grassmann(rest, 1, retraction=retraction), _filters_as_columns
                        if out > 1 else _filters_transposed)
    raise ValueError(
        f"unknown manifold {name!r} in a param group; use one of {MANIFOLD_NAMES} or a "
        f"riemann_dnn.manifolds object"
    )


def resolve_geometry(spec: str | Manifold | None, retraction: str | None,
                     param: torch.Tensor) -> Geometry:
    """The :class:`Geometry` of ``param`` in a group with ``manifold=spec``."""
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
    if len(shape) >= 2 and point_shape == tuple(filter_matrix(param.detach()).shape):
        return Geometry(spec, _filters)
    raise ValueError(
        f"manifold {spec} has points of shape {point_shape}, which fits neither the parameter "
        f"shape {shape} nor its filter matrix; give each parameter a manifold of its own "
        f"shape or name the manifold ('oblique', ...) so it is derived per parameter"
    )


_INVERSE_VIEWS = {
    _identity: lambda point, shape: point,
    _filters: lambda point, shape: point.reshape(shape),
    _filters_transposed: lambda point, shape: point.transpose(-1, -2).reshape(shape),
    _filters_as_columns: lambda point, shape: point.squeeze(-1).reshape(shape),
}


def parameter_from_point(geometry: Geometry, point: torch.Tensor,
                         shape: tuple[int, ...]) -> torch.Tensor:
    """The parameter of ``shape`` whose view is ``point`` (differentiable; the inverse of
    ``geometry.view``), e.g. to call a module functionally at a manifold point."""
    return _INVERSE_VIEWS[geometry.view](point, shape)
