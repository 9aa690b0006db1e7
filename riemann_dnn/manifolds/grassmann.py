"""The Grassmann manifold of p-dimensional subspaces of R^n."""

from __future__ import annotations

import math

from ._array import Array, namespace, polar_factor, qr_unique, to_float, transpose
from .base import INF, TRANSPORTS, EmbeddedManifold
from .sphere import sphere_transport_along_geodesic
from .stiefel import _orthonormality_error

__all__ = ["Grassmann"]


class Grassmann(EmbeddedManifold):
    r"""The (product) Grassmann manifold :math:`\mathrm{Gr}(n, p)^k`.

    Drop-in for :class:`pymanopt.manifolds.Grassmann`: ``Grassmann(n, p, k=1)``. A subspace
    is represented by an orthonormal basis :math:`X \in \mathrm{St}(n, p)` (shape ``(n, p)``,
    or ``(k, n, p)``); tangent vectors are horizontal, :math:`X^TU = 0`. The geometry is the
    quotient :math:`\mathrm{St}(n, p)/O(p)`.

    - projection: :math:`P_X(V) = V - X X^TV`
    - Riemannian Hessian: :math:`P_X(\nabla^2 f[U]) - U X^T\nabla f`
    - ``exp``: with :math:`U = A\Sigma B^T`, :math:`\exp_X(U) = XB\cos\Sigma B^T + A\sin\Sigma B^T`
    - ``log``, ``dist``: from principal angles :math:`\theta = \arccos\sigma(X^TY)`,
      :math:`d = \|\theta\|`.

    Retractions: ``"polar"`` (default, like pymanopt: the SVD polar factor of :math:`X + U`),
    ``"qr"`` (the Q factor of :math:`X + U`; the same subspace as ``"polar"``, another basis,
    cheaper) and ``"exp"``. Both span :math:`X + U`, whose principal angles to :math:`X` are
    :math:`\arctan\sigma_i` instead of :math:`\sigma_i`: second order as subspaces.

    Lines, ``p = 1``: :math:`\mathrm{Gr}(n, 1)` is the sphere :math:`S^{n-1}` modulo sign, and
    its formulas are the sphere's (exp, projection; log and dist to the nearer of
    :math:`\pm y`). ``Grassmann(n, 1, k=out)`` is Cho & Lee's (2017) view of ``out``
    scale-invariant filters; with ``retraction="exp", transport="parallel"`` the SGD step is
    their SGD-G: a step along the geodesic and parallel transport of the momentum.

    Transports (:meth:`transport`): ``"projection"`` (default, :math:`P_Y(V)`),
    ``"parallel"`` (along the geodesic from :math:`X` to the subspace of :math:`Y`;
    Edelman, Arias & Smith 1998, Thm 2.4; for lines the sphere's formula, see
    :func:`~riemann_dnn.manifolds.sphere.sphere_transport_along_geodesic`) or, with the
    ``"polar"`` and ``"qr"`` retractions, ``"differentiated"`` (the differentiated retraction,
    :math:`P_Y(V)\,X^TY`: both retractions span :math:`X + \eta`, and
    :math:`X + \eta = Y (X^TY)^{-1}`). Each is the horizontal lift at the given basis
    :math:`Y`.
    """

    retractions = {"polar": 2, "qr": 2, "exp": INF}
    default_retraction = "polar"
    orthonormal_columns = True
    broadcasts_over_copies = True

    def __init__(
        self,
        n: int,
        p: int,
        *,
        k: int = 1,
        retraction: str | None = None,
        transport: str = "projection",
    ):
        if n < p or p < 1:
            raise ValueError(f"Grassmann: need n >= p >= 1, got n={n}, p={p}")
        if k < 1:
            raise ValueError(f"Grassmann: need k >= 1, got k={k}")
        self._n, self._p, self._k = n, p, k
        name = f"Grassmann manifold Gr({n},{p})" + (f"^{k}" if k > 1 else "")
        shape = (n, p) if k == 1 else (k, n, p)
        super().__init__(name, k * (n * p - p * p), shape, retraction)
        self._transport = self._checked_transport(transport)

    @property
    def transports(self) -> tuple[str, ...]:
        """``("projection", "parallel", "differentiated")`` with the ``"polar"`` and ``"qr"``
        retractions, ``("projection", "parallel")`` with ``"exp"``."""
        if self._retraction_name == "exp":
            return ("projection", "parallel")
        return TRANSPORTS

    def transport(self, point_a: Array, point_b: Array, tangent_vector_a: Array) -> Array:
        r""":math:`P_Y(V)` (``"projection"``); parallel transport along the geodesic
        (``"parallel"``): with the horizontal :math:`H = \log_X(Y) = U\Sigma W^T` (thin SVD),

        .. math:: \tau V = \bigl(-X W\sin\Sigma\, U^T + U\cos\Sigma\, U^T + I - UU^T\bigr) V
                  \; G^T Y,

        where :math:`G = XW\cos\Sigma W^T + U\sin\Sigma W^T` is the geodesic's end basis,
        so :math:`G^TY` moves the lift to the basis :math:`Y` (for lines, the sphere's
        formula at the representative :math:`\pm Y` nearer :math:`X`); or
        :math:`P_Y(V)\,X^TY` (``"differentiated"``)."""
        if self._transport == "parallel":
            if self._p == 1:
                return self._transport_lines(point_a, point_b, tangent_vector_a)
            return self._transport_parallel(point_a, point_b, tangent_vector_a)
        moved = self.projection(point_b, tangent_vector_a)
        if self._transport == "differentiated":
            return moved @ (transpose(point_a) @ point_b)
        return moved

    def _transport_lines(self, point_a: Array, point_b: Array, vector: Array) -> Array:
        xp = namespace(point_a, point_b)
        dot = xp.sum(point_a * point_b, axis=-2, keepdims=True)
        sign = xp.where(dot < 0, -xp.ones_like(dot), xp.ones_like(dot))
        return sign * sphere_transport_along_geodesic(point_a, sign * point_b, vector, -2)

    def _transport_parallel(self, point_a: Array, point_b: Array, vector: Array) -> Array:
        xp = namespace(point_a, point_b)
        u, s, wt = xp.linalg.svd(self.log(point_a, point_b), full_matrices=False)
        cos_s, sin_s = xp.cos(s)[..., None, :], xp.sin(s)[..., None, :]
        w = transpose(wt)
        ut_v = transpose(u) @ vector
        moved = vector - u @ ut_v + (u * cos_s - point_a @ (w * sin_s)) @ ut_v
        end = point_a @ ((w * cos_s) @ wt) + (u * sin_s) @ wt
        return moved @ (transpose(end) @ point_b)

    @property
    def typical_dist(self) -> float:
        return math.sqrt(self._p * self._k)

    def projection(self, point: Array, vector: Array) -> Array:
        return vector - point @ (transpose(point) @ vector)

    def euclidean_to_riemannian_hessian(
        self, point, euclidean_gradient, euclidean_hessian, tangent_vector
    ):
        return self.projection(point, euclidean_hessian) - tangent_vector @ (
            transpose(point) @ euclidean_gradient
        )

    def _retraction_polar(self, point: Array, tangent_vector: Array) -> Array:
        return polar_factor(point + tangent_vector)

    def _retraction_qr(self, point: Array, tangent_vector: Array) -> Array:
        return qr_unique(point + tangent_vector)

    def exp(self, point: Array, tangent_vector: Array) -> Array:
        xp = namespace(point, tangent_vector)
        u, s, vt = xp.linalg.svd(tangent_vector, full_matrices=False)
        cos_s, sin_s = xp.cos(s)[..., None, :], xp.sin(s)[..., None, :]
        y = point @ (transpose(vt) * cos_s) @ vt + (u * sin_s) @ vt
        return qr_unique(y)  # re-orthonormalise against rounding, as pymanopt does

    def log(self, point_a: Array, point_b: Array) -> Array:
        xp = namespace(point_a, point_b)
        ytx = transpose(point_b) @ point_a
        at = transpose(point_b) - ytx @ transpose(point_a)
        bt = xp.linalg.solve(ytx, at)
        u, s, vt = xp.linalg.svd(transpose(bt), full_matrices=False)
        return (u * xp.atan(s)[..., None, :]) @ vt

    def dist(self, point_a: Array, point_b: Array) -> float:
        r""":math:`\|\theta\|` over the principal angles, each from its pair of principal
        vectors: with :math:`X^TY = U\cos\Theta\, V^T`, :math:`\theta_i = 2\arcsin(\|Yv_i -
        Xu_i\|/2)` (the same as :math:`\arccos\sigma_i`, but accurate for nearby subspaces,
        where ``arccos`` bottoms out near 1.5e-8 in float64)."""
        xp = namespace(point_a, point_b)
        u, _, vt = xp.linalg.svd(transpose(point_a) @ point_b)
        chords = xp.linalg.vector_norm(point_b @ transpose(vt) - point_a @ u, axis=-2)
        angles = 2 * xp.asin(xp.clip(chords / 2, 0.0, 1.0))
        return to_float(xp.linalg.vector_norm(angles))

    def _to_manifold(self, ambient: Array) -> Array:
        return qr_unique(ambient)

    def constraint_violation(self, point: Array) -> float:
        r""":math:`\max|X^TX - I|` (the basis must be orthonormal)."""
        return _orthonormality_error(point, self._p)
