"""Backend decorators for pymanopt cost functions.

``@riemann_dnn.function.torch(manifold)`` is used exactly like
``@pymanopt.function.pytorch(manifold)``, but tensors stay on their device (GPU included).
Give the device (and dtype) and the decorator owns them: pymanopt's own random initial
point, and so every point of the run, is a tensor there::

    manifold = Sphere(n)

    @riemann_dnn.function.torch(manifold, device="cuda", dtype=torch.float64)
    def cost(x):
        return -x @ A @ x

    problem = pymanopt.Problem(manifold, cost)
    result = pymanopt.optimizers.TrustRegions().run(problem)  # result.point: a cuda tensor
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from pymanopt.autodiff import Function, backend_decorator_factory
from pymanopt.manifolds.manifold import Manifold

from .autodiff import NumpyFallbackWarning, TorchBackend

__all__ = ["torch", "NumpyFallbackWarning"]


def _takes_tensors(manifold: Manifold) -> bool:
    """Whether every method of ``manifold`` takes torch tensors (riemann_dnn's manifolds)."""
    from .manifolds import EmbeddedManifold, Product

    if isinstance(manifold, Product):
        return all(_takes_tensors(factor) for factor in manifold.manifolds)
    return isinstance(manifold, EmbeddedManifold)


def _bind(manifold: Manifold, device: Any, dtype: Any) -> None:
    """Make ``manifold.random_point()`` return tensors on ``device`` and ``dtype`` (explicit
    arguments still win): what pymanopt's optimizers call without an ``initial_point``."""
    if not _takes_tensors(manifold):
        raise ValueError(
            f"riemann_dnn.function.torch: device= and dtype= need riemann_dnn's manifolds, "
            f"whose methods take torch tensors; {manifold} is {type(manifold).__module__}."
            f"{type(manifold).__name__} (numpy only): import it from riemann_dnn.manifolds"
        )
    method = type(manifold).random_point
    manifold.random_point = functools.partial(method, manifold, device=device, dtype=dtype)


def torch(
    manifold: Manifold, device: Any = None, dtype: Any = None
) -> Callable[[Callable], Function]:
    r"""Decorate a torch cost function of the points of ``manifold`` for pymanopt.

    The cost takes one tensor per factor of ``manifold`` (one for a single manifold) and
    returns a scalar tensor. pymanopt then gets the cost as a ``float``, the Euclidean
    gradient :math:`\nabla f(x)` from ``torch.autograd.grad`` and the Hessian-vector product
    :math:`\nabla^2 f(x)[v] = \nabla_x \mathrm{Re}\langle \nabla f(x), v\rangle` from double
    backward, all on the points' device and dtype (see
    :class:`riemann_dnn.autodiff.TorchBackend`).

    With ``device`` (or ``dtype``) the run lives there: ``manifold.random_point()`` -- the
    initial point pymanopt's ``SteepestDescent``, ``ConjugateGradient`` and ``TrustRegions``
    draw without ``initial_point`` -- returns tensors on ``device`` with ``dtype`` (torch's
    default dtype when ``None``; pymanopt's tolerances assume float64), so every iterate and
    ``result.point`` are such tensors. This binds the ``manifold`` object itself (its
    ``random_point`` defaults), which must be one of riemann_dnn's. A point on another device,
    of another dtype or in numpy is refused in one line (``ValueError``) at the first
    evaluation. Without ``device`` and ``dtype`` nothing is bound: numpy points (pymanopt's
    random initial point) run the whole solve through numpy on the CPU, with one
    :class:`NumpyFallbackWarning` per decorated cost.

    Args:
        manifold: the pymanopt manifold (riemann_dnn's or pymanopt's) the points lie on.
        device: the torch device of every point (``"cuda"``, ``"cpu"``, ...), or ``None``.
        dtype: the torch dtype of every point (e.g. ``torch.float64``), or ``None``.

    Returns:
        A decorator turning ``cost(*points)`` into a pymanopt ``Function`` for
        ``pymanopt.Problem(manifold, cost)``.
    """
    import torch as _torch

    if device is not None:
        try:
            device = _torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(
                f"riemann_dnn.function.torch: device must be a torch device such as 'cpu' or "
                f"'cuda', got {device!r}"
            ) from None
    if dtype is not None and not (isinstance(dtype, _torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"riemann_dnn.function.torch: dtype must be a floating torch dtype such as "
            f"torch.float64, got {dtype!r}"
        )
    owned = device is not None or dtype is not None
    if owned:
        _bind(manifold, device, dtype)
    backend = functools.partial(TorchBackend, device=device, dtype=dtype, owned=owned)
    return backend_decorator_factory(backend)(manifold)
