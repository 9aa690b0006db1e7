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

from pymanopt.autodiff import backend_decorator_factory

from .autodiff import TorchBackend

__all__ = ["torch"]

torch = backend_decorator_factory(TorchBackend)
