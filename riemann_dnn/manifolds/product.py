"""Cartesian products of manifolds (e.g. oblique x oblique x Euclidean for a BN network)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pymanopt.manifolds import Product as _PymanoptProduct
from pymanopt.manifolds.manifold import Manifold
from pymanopt.manifolds.product import _ProductTangentVector

from ._array import Generator, is_torch, resolve_generator
from .base import check_transport

__all__ = ["Product"]


class Product(_PymanoptProduct):
    r"""The product :math:`\mathcal{M}_1 \times \dots \times \mathcal{M}_k` with the sum metric.

    Drop-in for :class:`pymanopt.manifolds.Product`: points and tangent vectors are lists
    with one array per factor; every operation acts factor-wise, and inner products add.
    With riemann_dnn factors the arrays may be numpy or torch (any device).

    The declared facts of :class:`~riemann_dnn.manifolds.EmbeddedManifold` derive from the
    factors (a factor without them, e.g. a pymanopt manifold, counts as broadcasting over
    nothing and as having projection transport only).

    Example::

        Product([Oblique(64, 784, unit="rows"), Oblique(64, 32, unit="rows"), Euclidean(10, 32)])
    """

    #: Points are lists of arrays, not one array with unit-norm axes.
    unit_norm_axis = None

    def __init__(self, manifolds: Sequence[Manifold]):
        manifolds = list(manifolds)
        if not manifolds:
            raise ValueError("Product needs at least one manifold")
        for index, manifold in enumerate(manifolds):
            if not isinstance(manifold, Manifold):
                raise TypeError(
                    f"Product: factor {index} is a {type(manifold).__name__}, not a manifold"
                )
        super().__init__(manifolds)

    @property
    def broadcasts_over_copies(self) -> bool:
        """Whether every factor's formulas broadcast over a leading axis of copies (each
        array of a point then holds a stack of that factor's points)."""
        return all(getattr(m, "broadcasts_over_copies", False) for m in self.manifolds)

    @property
    def transports(self) -> tuple[str, ...]:
        """The transports every factor can be built with."""
        each = [getattr(m, "transports", ("projection",)) for m in self.manifolds]
        return tuple(t for t in each[0] if all(t in other for other in each[1:]))

    @property
    def transport_name(self) -> str:
        """The factors' transport when they share one, else ``"mixed"``."""
        names = {getattr(m, "transport_name", "projection") for m in self.manifolds}
        return names.pop() if len(names) == 1 else "mixed"

    def with_transport(self, transport: str) -> Product:
        """The product of the factors built with ``transport`` (one of :attr:`transports`)."""
        check_transport("Product", transport)
        if transport not in self.transports:
            raise ValueError(
                f"Product: transport {transport!r} is not available on every factor; choose "
                f"one of {list(self.transports)}"
            )
        return Product(
            [
                m.with_transport(transport) if hasattr(m, "with_transport") else m
                for m in self.manifolds
            ]
        )

    def random_point(
        self, *, device: Any = None, dtype: Any = None, generator: Generator = None
    ) -> list:
        """A random point: one array per factor (see ``EmbeddedManifold.random_point``)."""
        generator = resolve_generator(generator, device=device, dtype=dtype)
        kwargs = {"device": device, "dtype": dtype, "generator": generator}
        if all(value is None for value in kwargs.values()):
            return [manifold.random_point() for manifold in self.manifolds]
        return [manifold.random_point(**kwargs) for manifold in self.manifolds]

    def random_tangent_vector(self, point, *, generator: Generator = None):
        r"""A random unit-norm tangent vector: one draw per factor, scaled by
        :math:`1/\sqrt{k}`. An int seed becomes one generator (of the points' kind and
        device) shared by the factors, so their draws are independent."""
        if isinstance(generator, (int, np.integer)) and len(point) > 0:
            device = point[0].device if is_torch(point[0]) else None
            generator = resolve_generator(generator, device=device)
        scale = len(self.manifolds) ** -0.5
        vectors = [
            scale
            * (
                m.random_tangent_vector(x, generator=generator)
                if generator is not None
                else m.random_tangent_vector(x)
            )
            for m, x in zip(self.manifolds, point)
        ]
        return _ProductTangentVector(vectors)

    def constraint_violation(self, point) -> float:
        """The largest constraint violation over the factors."""
        return max(
            float(getattr(m, "constraint_violation", lambda _: 0.0)(x))
            for m, x in zip(self.manifolds, point)
        )

    def check_point(self, point, *, atol: float | None = None) -> None:
        """Raise ``ValueError`` naming the factor whose point is malformed or off-manifold."""
        if len(point) != len(self.manifolds):
            raise ValueError(
                f"Product: expected a point with {len(self.manifolds)} factors, got {len(point)}"
            )
        for index, (manifold, x) in enumerate(zip(self.manifolds, point)):
            if hasattr(manifold, "check_point"):
                try:
                    manifold.check_point(x, atol=atol)
                except ValueError as err:
                    raise ValueError(f"Product factor {index}: {err}") from None

    @property
    def typical_dist(self) -> float:
        return float(np.sqrt(sum(m.typical_dist**2 for m in self.manifolds)))
