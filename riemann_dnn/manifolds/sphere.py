r"""Unit spheres: the whole array (:class:`Sphere`) or each row/column (``Oblique``).

The module-level kernels take ``axis``: the axes that form one sphere (``None`` for all).
They are the single implementation of the sphere's formulas; :class:`Sphere`,
:class:`~riemann_dnn.manifolds.Oblique` and ``Grassmann(n, 1)`` (the sphere modulo sign)
all call them.
"""

from __future__ import annotations

import math

from ._array import Array, namespace, normalize, to_float
from .base import INF, TRANSPORTS, EmbeddedManifold, check_transport

__all__ = ["Sphere", "TRANSPORTS", "check_transport"]

Axis = int | tuple[int, ...] | None


def _dot(a: Array, b: Array, axis: Axis) -> Array:
    """:math:`\\langle a, b\\rangle` over ``axis``, kept broadcastable."""
    xp = namespace(a, b)
    if axis is None:
        return xp.sum(a * b)
    return xp.sum(a * b, axis=axis, keepdims=True)


def _norm(a: Array, axis: Axis) -> Array:
    xp = namespace(a)
    if axis is None:
        return xp.linalg.vector_norm(a)
    return xp.linalg.vector_norm(a, axis=axis, keepdims=True)


def sphere_projection(x: Array, v: Array, axis: Axis) -> Array:
    r""":math:`P_x(v) = v - \langle x, v\rangle x`."""
    return v - x * _dot(x, v, axis)


def sphere_weingarten(x: Array, u: Array, normal: Array, axis: Axis) -> Array:
    r""":math:`W_x(u, n) = -\langle x, n\rangle u`."""
    return -u * _dot(x, normal, axis)


def sphere_exp(x: Array, u: Array, axis: Axis) -> Array:
    r""":math:`\exp_x(u) = \cos(\|u\|)\,x + \frac{\sin\|u\|}{\|u\|}\,u`, rescaled to unit
    norm: exact arithmetic lands on the sphere, and the rescaling (a relative change of
    rounding size) keeps rounding from accumulating over chained steps (float32: a norm
    error of ~1e-5 after 10,000 steps without it; ~1e-7 with it)."""
    xp = namespace(x, u)
    t = _norm(u, axis)
    return normalize(x * xp.cos(t) + u * xp.sinc(t / math.pi), axis)


def sphere_angles(x: Array, y: Array, axis: Axis) -> Array:
    r"""Geodesic distances per sphere, :math:`\theta = 2\arcsin(\|x - y\|/2)`.

    Equal to :math:`\arccos\langle x, y\rangle` on the sphere, but accurate for nearby
    points too (``arccos`` near 1 resolves angles only down to about
    :math:`\sqrt{2\varepsilon}`, e.g. 1.5e-8 in float64); Manopt uses the same formula.
    """
    xp = namespace(x, y)
    return 2 * xp.asin(xp.clip(_norm(x - y, axis) / 2, 0.0, 1.0))


def sphere_log(x: Array, y: Array, axis: Axis) -> Array:
    r""":math:`\log_x(y) = \theta\, P_x(y - x) / \|P_x(y - x)\|`, :math:`\theta = \arccos\langle x,
    y\rangle`."""
    xp = namespace(x, y)
    v = sphere_projection(x, y - x, axis)
    eps = xp.finfo(v.dtype).eps
    return v * ((sphere_angles(x, y, axis) + eps) / (_norm(v, axis) + eps))


def sphere_parallel_transport(x: Array, u: Array, v: Array, axis: Axis) -> Array:
    r"""Parallel transport of :math:`v` along the geodesic :math:`t \mapsto \exp_x(tu)` to
    :math:`t = 1`:

    .. math:: v - \frac{\langle u, v\rangle}{\|u\|^2}\big((1 - \cos\|u\|)\,u + \|u\|\sin\|u\|\,x\big).
    """
    xp = namespace(x, u, v)
    t = _norm(u, axis)
    safe = xp.where(t > 0, t, xp.ones_like(t))
    coef = _dot(u, v, axis) / (safe * safe)
    return v - coef * ((1 - xp.cos(t)) * u + t * xp.sin(t) * x)


def sphere_transport_along_geodesic(x: Array, y: Array, v: Array, axis: Axis) -> Array:
    r"""Parallel transport of the tangent part of :math:`v` from :math:`x` to :math:`y` along
    the minimising geodesic: :func:`sphere_parallel_transport` with :math:`u = \log_x(y)`.

    With the ``"exp"`` retraction, :math:`y = \exp_x(u)` and this is the transport along
    the step's own geodesic; with another retraction, along the geodesic joining the two
    points. Projecting :math:`v` onto :math:`T_x` first keeps rounding from accumulating
    in a chain of transports (momentum); the result is tangent at :math:`y` and has the
    norm of :math:`P_x(v)`.
    """
    return sphere_parallel_transport(
        x, sphere_log(x, y, axis), sphere_projection(x, v, axis), axis
    )


def sphere_differentiated_retraction(x: Array, y: Array, v: Array, axis: Axis) -> Array:
    r"""The differentiated ``"normalize"`` retraction :math:`R_x(\eta) = (x + \eta)/\|x +
    \eta\|` at the :math:`\eta` with :math:`R_x(\eta) = y` (:math:`\eta = y/\langle x, y\rangle
    - x`, defined for :math:`\langle x, y\rangle > 0`), applied to :math:`v`:

    .. math:: \mathrm{D}R_x(\eta)[v] = \frac{P_y(v)}{\|x + \eta\|} = \langle x, y\rangle\, P_y(v).

    The vector transport of Sato, Kasai & Mishra (2019) and Kasai, Sato & Mishra (2018)
    for this retraction; it shrinks vectors by :math:`\langle x, y\rangle \le 1`.
    """
    return _dot(x, y, axis) * sphere_projection(y, v, axis)


class Sphere(EmbeddedManifold):
    r"""The unit sphere :math:`\{X \in \mathbb{R}^{n_1\times\dots\times n_k} : \|X\|_F = 1\}`.

    Drop-in for :class:`pymanopt.manifolds.Sphere`: ``Sphere(*shape)``. Riemannian submanifold
    of the ambient space; :math:`P_X(V) = V - \langle X, V\rangle X`.

    Retractions: ``"normalize"`` (default, :math:`R_X(U) = (X + U)/\|X + U\|`, second order;
    the paper's Orth) and ``"exp"`` (the exponential map).

    Transports (what :meth:`transport` does, e.g. to momentum in the SGD step):
    ``"projection"`` (default, :math:`P_Y(V)`), ``"parallel"``, parallel transport along the
    geodesic from :math:`X` to :math:`Y` (with ``"exp"``: the exponential map and parallel
    transport of momentum, Cho & Lee 2017's SGD-G), or with ``"normalize"``
    ``"differentiated"``, the differentiated retraction :math:`\langle X, Y\rangle P_Y(V)`. Choose it with ``transport=...`` or
    :meth:`~riemann_dnn.manifolds.EmbeddedManifold.with_transport` (``Oblique`` inherits
    both behaviours).
    """

    retractions = {"normalize": 2, "exp": INF}
    default_retraction = "normalize"
    _axis: Axis = None

    def __init__(self, *shape: int, retraction: str | None = None, transport: str = "projection"):
        if len(shape) == 0:
            raise TypeError("Sphere needs a shape, e.g. Sphere(3) or Sphere(4, 5)")
        if any(int(s) < 1 for s in shape):
            raise ValueError(f"Sphere: every dimension must be >= 1, got shape {shape}")
        dims = "x".join(str(s) for s in shape)
        super().__init__(
            f"Sphere manifold of {dims} arrays", math.prod(shape) - 1, shape, retraction
        )
        self._transport = self._checked_transport(transport)

    @property
    def unit_norm_axis(self) -> int | tuple[int, ...]:
        """Every axis (the whole array is one unit sphere); for ``Oblique``, the axis of
        its unit rows (-1) or columns (-2)."""
        return tuple(range(-len(self._shape), 0)) if self._axis is None else self._axis

    @property
    def transports(self) -> tuple[str, ...]:
        """``("projection", "parallel", "differentiated")`` with the ``"normalize"``
        retraction, ``("projection", "parallel")`` with ``"exp"``."""
        if self._retraction_name == "normalize":
            return TRANSPORTS
        return ("projection", "parallel")

    @property
    def typical_dist(self) -> float:
        return math.pi

    def projection(self, point: Array, vector: Array) -> Array:
        return sphere_projection(point, vector, self._axis)

    def weingarten(self, point: Array, tangent_vector: Array, normal_vector: Array) -> Array:
        return sphere_weingarten(point, tangent_vector, normal_vector, self._axis)

    def exp(self, point: Array, tangent_vector: Array) -> Array:
        return sphere_exp(point, tangent_vector, self._axis)

    def _retraction_normalize(self, point: Array, tangent_vector: Array) -> Array:
        return normalize(point + tangent_vector, self._axis)

    def log(self, point_a: Array, point_b: Array) -> Array:
        return sphere_log(point_a, point_b, self._axis)

    def dist(self, point_a: Array, point_b: Array) -> float:
        """Geodesic distance; for products of spheres, the root sum of squares."""
        angles = sphere_angles(point_a, point_b, self._axis)
        return to_float(namespace(angles).linalg.vector_norm(angles))

    def parallel_transport(self, point: Array, tangent_vector: Array, vector: Array) -> Array:
        """Transport ``vector`` from ``point`` to ``exp(point, tangent_vector)`` along the
        geodesic (an isometry, unlike projection transport)."""
        return sphere_parallel_transport(point, tangent_vector, vector, self._axis)

    def transport(self, point_a: Array, point_b: Array, tangent_vector_a: Array) -> Array:
        r"""Carry a tangent vector at ``point_a`` to ``point_b``: :math:`P_Y(V)`
        (``"projection"``) or parallel transport along the geodesic (``"parallel"``,
        :func:`sphere_transport_along_geodesic`), or the differentiated ``"normalize"``
        retraction (``"differentiated"``, ``sphere_differentiated_retraction``), per
        :attr:`~riemann_dnn.manifolds.EmbeddedManifold.transport_name`."""
        if self._transport == "parallel":
            return sphere_transport_along_geodesic(point_a, point_b, tangent_vector_a, self._axis)
        if self._transport == "differentiated":
            return sphere_differentiated_retraction(point_a, point_b, tangent_vector_a, self._axis)
        return self.projection(point_b, tangent_vector_a)

    def pair_mean(self, point_a: Array, point_b: Array) -> Array:
        return normalize(point_a + point_b, self._axis)

    def _to_manifold(self, ambient: Array) -> Array:
        return normalize(ambient, self._axis)

    def constraint_violation(self, point: Array) -> float:
        """Largest :math:`|\\,\\|x\\| - 1|` over the spheres."""
        xp = namespace(point)
        return to_float(xp.max(xp.abs(_norm(point, self._axis) - 1)))
