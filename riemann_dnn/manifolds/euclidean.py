"""The Euclidean space R^{n1 x ... x nk}."""

from __future__ import annotations

import math

from ._array import Array, namespace, to_float
from .base import INF, EmbeddedManifold

__all__ = ["Euclidean"]


class Euclidean(EmbeddedManifold):
    r"""Euclidean space :math:`\mathbb{R}^{n_1 \times \dots \times n_k}` with the trace metric.

    Drop-in for :class:`pymanopt.manifolds.Euclidean`: ``Euclidean(*shape)``. Projection is
    the identity, :math:`\exp_X(U) = X + U`, :math:`\log_X(Y) = Y - X`, and transport is the
    identity. In a network, it hosts parameters without a symmetry (classifier, BN scale
    and shift).

    Args:
        shape: the shape of points, e.g. ``Euclidean(10, 32)``.
    """

    retractions = {"exp": INF}
    default_retraction = "exp"
    is_flat = True
    broadcasts_over_copies = True

    def __init__(self, *shape: int, retraction: str | None = None):
        if len(shape) == 0:
            raise TypeError("Euclidean needs a shape, e.g. Euclidean(10, 32)")
        if any(int(s) < 1 for s in shape):
            raise ValueError(f"Euclidean: every dimension must be >= 1, got shape {shape}")
        dims = "x".join(str(s) for s in shape)
        super().__init__(
            f"Euclidean manifold of {dims} arrays", math.prod(shape), shape, retraction
        )

    @property
    def typical_dist(self) -> float:
        return math.sqrt(self.dim)

    def projection(self, point: Array, vector: Array) -> Array:
        """:math:`P_X(V) = V`."""
        return vector

    def weingarten(self, point: Array, tangent_vector: Array, normal_vector: Array) -> Array:
        return namespace(tangent_vector).zeros_like(tangent_vector)

    def euclidean_to_riemannian_hessian(
        self, point, euclidean_gradient, euclidean_hessian, tangent_vector
    ):
        return euclidean_hessian

    def exp(self, point: Array, tangent_vector: Array) -> Array:
        """:math:`\\exp_X(U) = X + U`."""
        return point + tangent_vector

    def log(self, point_a: Array, point_b: Array) -> Array:
        return point_b - point_a

    def dist(self, point_a: Array, point_b: Array) -> float:
        return to_float(namespace(point_a).linalg.vector_norm(point_b - point_a))

    def transport(self, point_a: Array, point_b: Array, tangent_vector_a: Array) -> Array:
        return tangent_vector_a

    def pair_mean(self, point_a: Array, point_b: Array) -> Array:
        return (point_a + point_b) / 2

    def _to_manifold(self, ambient: Array) -> Array:
        return ambient
