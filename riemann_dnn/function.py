"""Backend decorators for pymanopt cost functions.

``@riemann_dnn.function.torch(manifold)`` is used exactly like
``@pymanopt.function.pytorch(manifold)``, but tensors stay on their device (GPU included)::

    manifold = Sphere(n)

    @riemann_dnn.function.torch(manifold)
    def cost(x):
        return -x @ A @ x

    problem = pymanopt.Problem(manifold, cost)
    result = pymanopt.optimizers.TrustRegions().run(problem, initial_point=x0_on_gpu)
"""

from __future__ import annotations

from collections.abc import Callable

from pymanopt.autodiff import Function, backend_decorator_factory
from pymanopt.manifolds.manifold import Manifold

from .autodiff import TorchBackend

__all__ = ["torch"]

_torch_decorator = backend_decorator_factory(TorchBackend)


def torch(manifold: Manifold) -> Callable[[Callable], Function]:
    r"""Decorate a torch cost function of the points of ``manifold`` for pymanopt.

    The cost takes one tensor per factor of ``manifold`` (one for a single manifold) and
    returns a scalar tensor. pymanopt then gets the cost as a ``float``, the Euclidean
    gradient :math:`\nabla f(x)` from ``torch.autograd.grad`` and the Hessian-vector product
    :math:`\nabla^2 f(x)[v] = \nabla_x \mathrm{Re}\langle \nabla f(x), v\rangle` from double
    backward, all on the points' device and dtype (see
    :class:`riemann_dnn.autodiff.TorchBackend`).

    Args:
        manifold: the pymanopt manifold (riemann_dnn's or pymanopt's) the points lie on.

    Returns:
        A decorator turning ``cost(*points)`` into a pymanopt ``Function`` for
        ``pymanopt.Problem(manifold, cost)``.
    """
    return _torch_decorator(manifold)
