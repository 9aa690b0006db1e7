"""Shared cases and helpers for the manifold tests (imported by the test modules).

A :class:`Case` builds one manifold (optionally with a named retraction) and knows an
independent numpy formula for its tangent-space condition; a :class:`Backend` turns numpy
data into numpy float64, torch float64 or torch float32 and carries that dtype's tolerance.
Points and tangent vectors of a ``Product`` are lists; every helper here accepts both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np
import torch

from riemann_dnn.manifolds import Euclidean, Grassmann, Oblique, Product, Sphere, Stiefel

# -- array helpers (lists = product points) ---------------------------------------------------


def is_list(a: Any) -> bool:
    return isinstance(a, (list, tuple))


def to_numpy(a: Any) -> Any:
    """float64 numpy copy of an array, a tensor or a list of them."""
    if is_list(a):
        return [to_numpy(p) for p in a]
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def flat(a: Any) -> np.ndarray:
    """All entries as one float64 numpy vector."""
    if is_list(a):
        return np.concatenate([flat(p) for p in a]) if a else np.zeros(0)
    return to_numpy(a).reshape(-1)


def fro(a: Any) -> float:
    """Frobenius norm (over all factors)."""
    return float(np.linalg.norm(flat(a)))


def gap(a: Any, b: Any) -> float:
    """Largest absolute entrywise difference."""
    d = flat(a) - flat(b)
    return float(np.max(np.abs(d))) if d.size else 0.0


def add(a: Any, b: Any) -> Any:
    if is_list(a):
        return [add(p, q) for p, q in zip(a, b)]
    return a + b


def scale(s: float, a: Any) -> Any:
    if is_list(a):
        return [scale(s, p) for p in a]
    return s * a


def sub(a: Any, b: Any) -> Any:
    return add(a, scale(-1.0, b))


def assert_like(out: Any, ref: Any, what: str) -> None:
    """``out`` has the kind (numpy/torch), dtype, device and shape of ``ref``."""
    if is_list(ref):
        assert is_list(out) and len(out) == len(ref), f"{what}: expected {len(ref)} factors"
        for index, (o, r) in enumerate(zip(out, ref)):
            assert_like(o, r, f"{what}[factor {index}]")
        return
    assert type(out) is type(ref) or (
        isinstance(out, np.ndarray) and isinstance(ref, np.ndarray)
    ), f"{what}: returned {type(out).__name__}, input was {type(ref).__name__}"
    assert out.dtype == ref.dtype, f"{what}: dtype {out.dtype}, input dtype {ref.dtype}"
    assert tuple(out.shape) == tuple(ref.shape), (
        f"{what}: shape {tuple(out.shape)} != {tuple(ref.shape)}"
    )
    if isinstance(ref, torch.Tensor):
        assert out.device == ref.device, f"{what}: device {out.device} != {ref.device}"


def loglog_slope(ts: np.ndarray, errors: np.ndarray) -> float:
    """Least-squares slope of log(error) against log(t)."""
    return float(np.polyfit(np.log(ts), np.log(errors), 1)[0])


# -- backends ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """numpy float64, torch float64 or torch float32, with a tolerance for that dtype."""

    name: str
    kind: str  # "numpy" | "torch"
    dtype: Any
    tol: float  # absolute tolerance for O(1) entries after a few operations

    def __str__(self) -> str:
        return self.name

    @property
    def is_float64(self) -> bool:
        return self.dtype in (np.float64, torch.float64)

    def convert(self, a: Any) -> Any:
        """numpy data (or a list of it) in this backend."""
        if is_list(a):
            return [self.convert(p) for p in a]
        if self.kind == "numpy":
            return np.asarray(a, dtype=self.dtype)
        return torch.as_tensor(np.asarray(a, dtype=np.float64)).to(self.dtype)

    def random_point(self, manifold: Any, seed: int) -> Any:
        if self.kind == "numpy":
            return manifold.random_point(generator=seed)
        return manifold.random_point(dtype=self.dtype, generator=seed)

    def gaussian_like(self, point: Any, seed: int) -> Any:
        """Gaussian ambient data shaped like ``point`` (numpy-seeded, then converted)."""
        rng = np.random.default_rng(seed)
        if is_list(point):
            return self.convert([rng.standard_normal(tuple(p.shape)) for p in point])
        return self.convert(rng.standard_normal(tuple(point.shape)))


BACKENDS = [
    Backend("numpy-f64", "numpy", np.float64, 1e-10),
    Backend("torch-f64", "torch", torch.float64, 1e-10),
    Backend("torch-f32", "torch", torch.float32, 2e-5),
]
FLOAT64_BACKENDS = [b for b in BACKENDS if b.is_float64]

# -- tangent-space conditions, written independently of the package (numpy float64) ----------


def _mT(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _residual_euclidean(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.zeros(1)


def _residual_sphere(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.array([np.sum(x * v)])  # <x, v> = 0


def _residual_columns(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sum(x * v, axis=0)  # diag(X^T V) = 0


def _residual_rows(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sum(x * v, axis=1)  # diag(X V^T) = 0


def _residual_stiefel(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (_mT(x) @ v + _mT(v) @ x).reshape(-1)  # X^T V + V^T X = 0


def _residual_grassmann(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (_mT(x) @ v).reshape(-1)  # X^T V = 0 (horizontal)


def _residual_product(x: list, v: list) -> np.ndarray:
    return np.concatenate([_residual_rows(x[0], v[0]), _residual_euclidean(x[1], v[1])])


# -- manifold cases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One manifold under test and what the tests need to know about it."""

    name: str
    build: Callable[..., Any]  # build(retraction=None) -> manifold
    retractions: dict[str, float]
    residual: Callable[[Any, Any], np.ndarray]
    family: str  # euclidean | sphere | oblique | stiefel | grassmann | product
    has_log: bool = True
    has_parallel_transport: bool = False
    has_pair_mean: bool = False
    has_weingarten: bool = True
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name

    def tangent_error(self, x: Any, v: Any) -> float:
        """Largest violation of the tangent-space condition at ``x`` (0 if tangent)."""
        r = self.residual(to_numpy(x), to_numpy(v))
        return float(np.max(np.abs(r))) if r.size else 0.0

    def distance(self, manifold: Any, a: Any, b: Any) -> float:
        """Grassmann: geodesic distance between the spanned subspaces; else Frobenius."""
        if self.family == "grassmann":
            return float(manifold.dist(a, b))
        return fro(sub(to_numpy(a), to_numpy(b)))


def _product(retraction: str | None = None) -> Product:
    return Product([Oblique(3, 4, unit="rows", retraction=retraction), Euclidean(2)])


CASES = [
    Case(
        "euclidean(4,3)",
        lambda retraction=None: Euclidean(4, 3, retraction=retraction),
        Euclidean.retractions,
        _residual_euclidean,
        "euclidean",
        has_pair_mean=True,
    ),
    Case(
        "sphere(5)",
        lambda retraction=None: Sphere(5, retraction=retraction),
        Sphere.retractions,
        _residual_sphere,
        "sphere",
        has_parallel_transport=True,
        has_pair_mean=True,
    ),
    Case(
        "sphere(4,3)",
        lambda retraction=None: Sphere(4, 3, retraction=retraction),
        Sphere.retractions,
        _residual_sphere,
        "sphere",
        has_parallel_transport=True,
        has_pair_mean=True,
    ),
    Case(
        "oblique-columns(4,3)",
        lambda retraction=None: Oblique(4, 3, retraction=retraction),
        Oblique.retractions,
        _residual_columns,
        "oblique",
        has_parallel_transport=True,
        has_pair_mean=True,
    ),
    Case(
        "oblique-rows(3,5)",
        lambda retraction=None: Oblique(3, 5, unit="rows", retraction=retraction),
        Oblique.retractions,
        _residual_rows,
        "oblique",
        has_parallel_transport=True,
        has_pair_mean=True,
    ),
    Case(
        "stiefel(5,3)",
        lambda retraction=None: Stiefel(5, 3, retraction=retraction),
        Stiefel.retractions,
        _residual_stiefel,
        "stiefel",
        has_log=False,
    ),
    Case(
        "stiefel(5,3,k=2)",
        lambda retraction=None: Stiefel(5, 3, k=2, retraction=retraction),
        Stiefel.retractions,
        _residual_stiefel,
        "stiefel",
        has_log=False,
    ),
    Case(
        "grassmann(5,2)",
        lambda retraction=None: Grassmann(5, 2, retraction=retraction),
        Grassmann.retractions,
        _residual_grassmann,
        "grassmann",
        has_weingarten=False,
    ),
    Case(
        "grassmann(5,2,k=2)",
        lambda retraction=None: Grassmann(5, 2, k=2, retraction=retraction),
        Grassmann.retractions,
        _residual_grassmann,
        "grassmann",
        has_weingarten=False,
    ),
    Case(
        "product(oblique-rows(3,4),euclidean(2))",
        _product,
        Oblique.retractions,
        _residual_product,
        "product",
        has_weingarten=False,
    ),
]

RETRACTION_CASES = [(case, name) for case in CASES for name in case.retractions]

# -- a test cost: f(x) = 1/2 vec(x)^T A vec(x) + b^T vec(x) on every manifold -----------------


def _flatten(a: Any) -> tuple[Any, Any]:
    parts = list(a) if is_list(a) else [a]
    xp = array_api_compat.array_namespace(*parts)
    return xp.concat([xp.reshape(p, (-1,)) for p in parts]), xp


def _unflatten(vector: Any, like: Any, xp: Any) -> Any:
    parts = list(like) if is_list(like) else [like]
    out, start = [], 0
    for p in parts:
        size = math.prod(p.shape)
        out.append(xp.reshape(vector[start : start + size], tuple(p.shape)))
        start += size
    return out if is_list(like) else out[0]


class Quadratic:
    r""":math:`f(x) = \tfrac12 \mathrm{vec}(x)^T A\, \mathrm{vec}(x) + b^T\mathrm{vec}(x)`
    (``A`` symmetric), with the Euclidean gradient and Hessian written by hand."""

    def __init__(self, size: int, seed: int):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((size, size))
        self.a = (a + a.T) / 2
        self.b = rng.standard_normal(size)

    def _constants(self, like: Any) -> tuple[Any, Any]:
        if isinstance(like, torch.Tensor):
            return (
                torch.as_tensor(self.a, dtype=like.dtype, device=like.device),
                torch.as_tensor(self.b, dtype=like.dtype, device=like.device),
            )
        return self.a.astype(like.dtype), self.b.astype(like.dtype)

    def cost(self, x: Any) -> float:
        vec = flat(x)
        return float(0.5 * vec @ self.a @ vec + self.b @ vec)

    def egrad(self, x: Any) -> Any:
        vec, xp = _flatten(x)
        a, b = self._constants(vec)
        return _unflatten(a @ vec + b, x, xp)

    def ehess(self, x: Any, v: Any) -> Any:
        vec, xp = _flatten(v)
        a, _ = self._constants(vec)
        return _unflatten(a @ vec, v, xp)


def size_of(point: Any) -> int:
    return flat(point).size
