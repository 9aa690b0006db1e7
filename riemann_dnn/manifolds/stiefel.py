"""The Stiefel manifold of matrices with orthonormal columns."""

from __future__ import annotations

import math

from ._array import (
    Array,
    expm,
    eye_like,
    namespace,
    polar_factor,
    qr_unique,
    sym,
    to_float,
    transpose,
)
from .base import INF, EmbeddedManifold

__all__ = ["Stiefel", "orthonormality_error"]


def orthonormality_error(point: Array, p: int) -> float:
    r""":math:`\max |X^TX - I|` (stacked matrices included)."""
    xp = namespace(point)
    return to_float(xp.max(xp.abs(transpose(point) @ point - eye_like(point, p))))


class Stiefel(EmbeddedManifold):
    r"""The (product) Stiefel manifold :math:`\mathrm{St}(n, p)^k = \{X : X^TX = I_p\}`.

    Drop-in for :class:`pymanopt.manifolds.Stiefel`: ``Stiefel(n, p, k=1)``; points of shape
    ``(n, p)`` (``(k, n, p)`` for ``k > 1``); Riemannian submanifold of
    :math:`\mathbb{R}^{n\times p}` with the trace metric.

    - projection: :math:`P_X(V) = V - X\,\mathrm{sym}(X^TV)`
    - Weingarten map: :math:`W_X(U, N) = -U X^TN - X\,\mathrm{sym}(U^TN)`

    Retractions (order of agreement with ``exp``):

    - ``"qr"`` (default, first order): :math:`R_X(U) = \mathrm{qf}(X + U)`, Q with
      :math:`\mathrm{diag}(R) > 0`; one thin QR, :math:`O(np^2)`.
    - ``"polar"`` (second order): :math:`R_X(U) = (X + U)(I + U^TU)^{-1/2} = AB^T` from the thin
      SVD :math:`X + U = A\Sigma B^T`; :math:`O(np^2)`, slower constant.
    - ``"cayley"`` (first order; second order when :math:`X^TU = 0`): :math:`R_X(U) = (I -
      \tfrac12 W)^{-1}(I + \tfrac12 W)X` with :math:`W = P U X^T - X U^T P`,
      :math:`P = I - \tfrac12 XX^T`; evaluated in :math:`O(np^2)` by the Woodbury identity as
      :math:`X + A(I - \tfrac12 B^TA)^{-1}B^TX`, :math:`A = [PU, X]`, :math:`B = [X, -PU]`
      (Wen & Yin 2013).
    - ``"exp"``: the geodesic of the embedded metric, :math:`[X\ U]\exp\!\begin{pmatrix}X^TU &
      -U^TU\\ I & X^TU\end{pmatrix} I_{2p,p} \exp(-X^TU)` (Zimmermann & Hüper 2021).
    """

    retractions = {"qr": 1, "polar": 2, "cayley": 1, "exp": INF}
    default_retraction = "qr"
    orthonormal_columns = True
    broadcasts_over_copies = True

    def __init__(self, n: int, p: int, *, k: int = 1, retraction: str | None = None):
        if n < p or p < 1:
            raise ValueError(f"Stiefel: need n >= p >= 1, got n={n}, p={p}")
        if k < 1:
            raise ValueError(f"Stiefel: need k >= 1, got k={k}")
        self._n, self._p, self._k = n, p, k
        name = f"Stiefel manifold St({n},{p})" + (f"^{k}" if k > 1 else "")
        shape = (n, p) if k == 1 else (k, n, p)
        super().__init__(name, k * (n * p - p * (p + 1) // 2), shape, retraction)

    @property
    def typical_dist(self) -> float:
        return math.sqrt(self._p * self._k)

    def projection(self, point: Array, vector: Array) -> Array:
        return vector - point @ sym(transpose(point) @ vector)

    def weingarten(self, point: Array, tangent_vector: Array, normal_vector: Array) -> Array:
        return -tangent_vector @ (transpose(point) @ normal_vector) - point @ sym(
            transpose(tangent_vector) @ normal_vector
        )

    def _retraction_qr(self, point: Array, tangent_vector: Array) -> Array:
        return qr_unique(point + tangent_vector)

    def _retraction_polar(self, point: Array, tangent_vector: Array) -> Array:
        return polar_factor(point + tangent_vector)

    def _retraction_cayley(self, point: Array, tangent_vector: Array) -> Array:
        xp = namespace(point, tangent_vector)
        pu = tangent_vector - 0.5 * point @ (transpose(point) @ tangent_vector)
        a = xp.concat([pu, point], axis=-1)
        b = xp.concat([point, -pu], axis=-1)
        small = eye_like(point, 2 * self._p) - 0.5 * transpose(b) @ a
        return point + a @ xp.linalg.solve(small, transpose(b) @ point)

    def exp(self, point: Array, tangent_vector: Array) -> Array:
        xp = namespace(point, tangent_vector)
        xtu = transpose(point) @ tangent_vector
        identity = xp.broadcast_to(eye_like(point, self._p), xtu.shape)
        block = xp.concat(
            [
                xp.concat([xtu, -transpose(tangent_vector) @ tangent_vector], axis=-1),
                xp.concat([identity, xtu], axis=-1),
            ],
            axis=-2,
        )
        frame = xp.concat([point, tangent_vector], axis=-1)
        # re-orthonormalise against rounding (float32 drifts ~1e-3 in 10,000 chained calls
        # otherwise); the change is at rounding level, as in Grassmann.exp
        return qr_unique(frame @ (expm(block)[..., : self._p] @ expm(-xtu)))

    def _to_manifold(self, ambient: Array) -> Array:
        return qr_unique(ambient)

    def constraint_violation(self, point: Array) -> float:
        r""":math:`\max|X^TX - I|`."""
        return orthonormality_error(point, self._p)
