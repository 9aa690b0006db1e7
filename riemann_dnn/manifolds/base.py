"""The shared base of riemann_dnn's manifolds: embedded submanifolds of a Euclidean space."""

from __future__ import annotations

import copy
import functools
import math
from typing import Any, ClassVar

from pymanopt.manifolds.manifold import RiemannianSubmanifold

from ._array import (
    Array,
    Generator,
    check_device,
    namespace,
    random_normal,
    random_normal_like,
    to_float,
)

__all__ = ["EmbeddedManifold", "TRANSPORTS"]

#: The vector transports a manifold can be built with (``transport=...``): ``"projection"``
#: (:math:`P_y(v)`, the default), ``"parallel"`` (parallel transport along the geodesic
#: from ``x`` to ``y``) or ``"differentiated"`` (the differentiated retraction
#: :math:`\mathrm{D}R_x(\eta)[v]` with :math:`R_x(\eta) = y`, for the retractions whose
#: inverse is explicit); each manifold's :attr:`~EmbeddedManifold.transports` says which of
#: them it has (with its current retraction).
TRANSPORTS = ("projection", "parallel", "differentiated")


def check_transport(owner: str, transport: str) -> str:
    """``transport`` if it names one of :data:`TRANSPORTS`, else a ``ValueError``."""
    if transport not in TRANSPORTS:
        raise ValueError(
            f"{owner}: unknown transport {transport!r}; choose one of {list(TRANSPORTS)} "
            f"('parallel' = parallel transport along the geodesic, 'differentiated' = the "
            f"differentiated retraction)"
        )
    return transport


# Methods whose array arguments must be of one kind (numpy or torch), for torch on one
# device, and of the manifold's point shape (leading stack axes allowed). Checked once at the
# public entry (a few microseconds per call) so that a mistake gives one clear error instead
# of a silent broadcast, conversion or an operator error deep inside.
_SAME_KIND_METHODS = (
    "inner_product",
    "norm",
    "projection",
    "to_tangent_space",
    "euclidean_to_riemannian_gradient",
    "euclidean_to_riemannian_hessian",
    "weingarten",
    "retraction",
    "exp",
    "log",
    "dist",
    "transport",
    "parallel_transport",
    "pair_mean",
)


def _same_kind(method):
    """Wrap ``method`` to raise a clear error when its array arguments mix numpy and torch
    or torch devices (see :func:`riemann_dnn.manifolds._array.namespace`)."""
    if getattr(method, "_checks_kind", False):
        return method

    @functools.wraps(method)
    def checked(self, *arrays, **kwargs):
        try:
            namespace(*arrays, *kwargs.values())
        except (TypeError, ValueError) as err:
            raise type(err)(f"{type(self).__name__}.{method.__name__}: {err}") from None
        shape = self._shape
        for array in (*arrays, *kwargs.values()):
            got = tuple(array.shape)
            if got[len(got) - len(shape) :] != shape or len(got) < len(shape):
                raise ValueError(
                    f"{type(self).__name__}.{method.__name__}: expected arrays of shape "
                    f"{shape} (or stacks of them, with leading axes) for {self}, got shape "
                    f"{got}"
                )
        return method(self, *arrays, **kwargs)

    checked._checks_kind = True
    return checked


class EmbeddedManifold(RiemannianSubmanifold):
    r"""A Riemannian submanifold of :math:`\mathbb{R}^{\text{shape}}` with the trace metric
    :math:`\langle U, V\rangle = \sum_{ij} U_{ij} V_{ij}`.

    Subclasses give ``projection``, the retractions (methods ``_retraction_<name>``) and a
    ``_to_manifold`` map used by ``random_point``. Every method accepts numpy arrays or torch
    tensors and returns the same kind on the same device; scalar-valued methods
    (``inner_product``, ``norm``, ``dist``) return Python floats, as pymanopt's optimizers
    expect.

    Each manifold also declares the facts that the optimizers read instead of testing its
    class (:attr:`unit_norm_axis`, :attr:`broadcasts_over_copies`, :attr:`transports`,
    :attr:`transport_name`); ``tests/manifolds/test_declared_facts.py`` checks each claim.
    A subclass that changes the formulas a fact describes must change the fact too.

    Attributes:
        retractions: the available retractions, each mapped to its order of agreement with
            the exponential map: ``d(R_x(tv), exp_x(tv)) = O(t^(order + 1))``.
        broadcasts_over_copies: whether the point-valued formulas (projection, retractions,
            ``exp``, transport, gradient conversion) applied to a stack of points -- arrays
            with a leading axis of copies, shape ``(n, *point_shape)`` -- give the stack of
            the per-copy results, so that one call steps many copies (the optimizer's
            stacked paths). ``False`` where a formula reduces over the whole array (e.g. the
            norm of :class:`~riemann_dnn.manifolds.Sphere`).
        is_flat: the manifold is the whole space (:class:`~riemann_dnn.manifolds.Euclidean`):
            projection is the identity and a step is the plain SGD step.
        orthonormal_columns: points are matrices with orthonormal columns
            (:class:`~riemann_dnn.manifolds.Stiefel`, :class:`~riemann_dnn.manifolds.Grassmann`),
            so a weight whose filters (rows) are to be orthonormal is the point's transpose.
    """

    retractions: ClassVar[dict[str, float]] = {}
    default_retraction: ClassVar[str] = ""
    broadcasts_over_copies: ClassVar[bool] = False
    is_flat: ClassVar[bool] = False
    orthonormal_columns: ClassVar[bool] = False
    _transport: str = "projection"

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        for name in _SAME_KIND_METHODS:
            if name in cls.__dict__:
                setattr(cls, name, _same_kind(cls.__dict__[name]))

    def __init__(
        self,
        name: str,
        dimension: int,
        shape: tuple[int, ...],
        retraction: str | None = None,
    ):
        super().__init__(name, int(dimension))
        self._shape = tuple(int(s) for s in shape)
        retraction = self.default_retraction if retraction is None else retraction
        self._retraction_name = self._checked_retraction(retraction)

    def _checked_retraction(self, retraction: str) -> str:
        if retraction not in self.retractions:
            raise ValueError(
                f"{type(self).__name__}: unknown retraction {retraction!r}; "
                f"choose one of {sorted(self.retractions)}"
            )
        return retraction

    # -- description ----------------------------------------------------------------------
    @property
    def point_shape(self) -> tuple[int, ...]:
        """Shape of the arrays that represent points and tangent vectors."""
        return self._shape

    @property
    def retraction_name(self) -> str:
        """The retraction that :meth:`retraction` applies."""
        return self._retraction_name

    @property
    def retraction_order(self) -> float:
        """Order of agreement of the chosen retraction with ``exp`` (``inf`` for ``exp``)."""
        return self.retractions[self._retraction_name]

    @property
    def unit_norm_axis(self) -> int | tuple[int, ...] | None:
        r"""The axis (or axes) along which every point has unit norm, the manifold being the
        product of those unit spheres with the sphere's formulas along it (projection
        :math:`v - \langle x, v\rangle x`, retraction ``"normalize"``
        :math:`(x + u)/\|x + u\|`): what the fused sphere step
        (:func:`riemann_dnn.step.sphere_sgd_step_`) relies on. ``None``: no such claim."""
        return None

    @property
    def transports(self) -> tuple[str, ...]:
        """The vector transports this manifold can be built with (see :data:`TRANSPORTS`);
        ``("projection",)`` unless it has a parallel transport."""
        return ("projection",)

    @property
    def transport_name(self) -> str:
        """The vector transport :meth:`transport` applies: one of :attr:`transports`."""
        return self._transport

    def with_transport(self, transport: str) -> EmbeddedManifold:
        """A copy of this manifold whose :meth:`transport` is ``transport`` (one of
        :attr:`transports`), e.g. ``Oblique(64, 784, unit="rows",
        retraction="exp").with_transport("parallel")``."""
        clone = copy.copy(self)
        clone._transport = self._checked_transport(transport)
        return clone

    def with_retraction(self, retraction: str) -> EmbeddedManifold:
        """A copy of this manifold whose :meth:`retraction` is ``retraction`` (one of
        :attr:`retractions`), with the same transport, e.g.
        ``Grassmann(20, 5).with_retraction("qr")``. A transport the new retraction does not
        have (``"differentiated"``) is refused: pick the transport again with
        :meth:`with_transport` (``m.with_transport("projection").with_retraction(...)``)."""
        clone = copy.copy(self)
        clone._retraction_name = self._checked_retraction(retraction)
        if clone._transport not in clone.transports:
            raise ValueError(
                f"{type(self).__name__}: retraction {retraction!r} has no transport "
                f"{clone._transport!r} on {self}; choose a transport of "
                f"{list(clone.transports)} first, e.g. "
                f"with_transport('projection').with_retraction({retraction!r})"
            )
        return clone

    def _checked_transport(self, transport: str) -> str:
        check_transport(type(self).__name__, transport)
        if transport not in self.transports:
            raise ValueError(
                f"{type(self).__name__}: transport {transport!r} is not available on {self}; "
                f"choose one of {list(self.transports)}"
            )
        return transport

    # -- metric ---------------------------------------------------------------------------
    def inner_product(self, point: Array, tangent_vector_a: Array, tangent_vector_b: Array):
        r""":math:`\langle U, V\rangle_X = \operatorname{tr}(U^T V)` (summed over all axes)."""
        xp = namespace(tangent_vector_a, tangent_vector_b)
        return to_float(xp.sum(tangent_vector_a * tangent_vector_b))

    def norm(self, point: Array, tangent_vector: Array) -> float:
        r""":math:`\|U\|_X = \|U\|_F`."""
        return to_float(namespace(tangent_vector).linalg.vector_norm(tangent_vector))

    # -- tangent spaces -------------------------------------------------------------------
    def to_tangent_space(self, point: Array, vector: Array) -> Array:
        return self.projection(point, vector)

    def transport(self, point_a: Array, point_b: Array, tangent_vector_a: Array) -> Array:
        r"""Vector transport by projection: :math:`\mathcal{T}_{X\to Y}(U) = P_Y(U)`."""
        return self.projection(point_b, tangent_vector_a)

    def zero_vector(self, point: Array) -> Array:
        return namespace(point).zeros_like(point)

    # -- moving -------------------------------------------------------------------------
    def retraction(self, point: Array, tangent_vector: Array) -> Array:
        """Apply the retraction chosen at construction (see :attr:`retraction_name`)."""
        if self._retraction_name == "exp":
            return self.exp(point, tangent_vector)
        return getattr(self, f"_retraction_{self._retraction_name}")(point, tangent_vector)

    # -- sampling -------------------------------------------------------------------------
    def _to_manifold(self, ambient: Array) -> Array:
        """Map a generic ambient array (e.g. Gaussian samples) onto the manifold."""
        raise NotImplementedError

    def project_point(self, ambient: Array) -> Array:
        """Map an ambient array onto the manifold (e.g. row normalisation for unit-norm
        rows, the Q factor for Stiefel and Grassmann); used to put initial weights on it."""
        return self._to_manifold(ambient)

    def random_point(
        self,
        *,
        device: Any = None,
        dtype: Any = None,
        generator: Generator = None,
    ) -> Array:
        """A random point: numpy float64 by default (like pymanopt), or a torch tensor when
        ``device``, a torch ``dtype`` or a :class:`torch.Generator` is given.

        ``generator`` may also be an int seed (numpy, or torch when ``device``/``dtype``
        ask for torch).
        """
        check_device(device, f"{type(self).__name__}.random_point")
        ambient = random_normal(self._shape, device=device, dtype=dtype, generator=generator)
        return self._to_manifold(ambient)

    def random_tangent_vector(self, point: Array, *, generator: Generator = None) -> Array:
        """A random unit-norm tangent vector at ``point`` (same kind, dtype, device)."""
        vector = self.projection(point, random_normal_like(point, generator))
        return vector / namespace(vector).linalg.vector_norm(vector)

    # -- validation -----------------------------------------------------------------------
    def constraint_violation(self, point: Array) -> float:
        """How far ``point`` is from satisfying the manifold's constraint (0 on it)."""
        return 0.0

    def check_point(self, point: Array, *, atol: float | None = None) -> None:
        """Raise ``ValueError`` if ``point`` has the wrong shape or is off the manifold.

        ``atol`` defaults to ``1e-5`` for float32 (or lower) data and ``1e-10`` for float64.
        """
        shape = tuple(point.shape)
        if shape != self._shape:
            raise ValueError(f"{self}: expected a point of shape {self._shape}, got shape {shape}")
        if atol is None:
            atol = 1e-10 if "float64" in str(point.dtype) else 1e-5
        violation = self.constraint_violation(point)
        if not violation <= atol:  # also catches NaN
            raise ValueError(
                f"{self}: point is off the manifold (constraint violation {violation:.3g} > "
                f"atol {atol:.1g}); project it first, e.g. with "
                f"{type(self).__name__}.retraction or random_point()"
            )

    def __repr__(self) -> str:
        transport = "" if self._transport == "projection" else f", transport={self._transport!r}"
        return f"{type(self).__name__}<{self}, retraction={self._retraction_name!r}{transport}>"


for _name in _SAME_KIND_METHODS:  # the base's own methods and those it inherits from pymanopt
    if hasattr(EmbeddedManifold, _name):
        setattr(EmbeddedManifold, _name, _same_kind(getattr(EmbeddedManifold, _name)))

INF = math.inf
