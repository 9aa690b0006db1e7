"""riemann_dnn: symmetry-invariant Riemannian optimization for deep networks.

Subpackages, from the bottom layer up (imports point down only):

- :mod:`riemann_dnn.manifolds` -- Euclidean, Sphere, Oblique, Stiefel, Grassmann, Product;
  pymanopt-compatible, on numpy arrays or torch tensors (any device).
- :mod:`riemann_dnn.function` -- ``@riemann_dnn.function.torch(manifold)``, a pymanopt
  autodiff backend that keeps tensors on their device.
- :mod:`riemann_dnn.step` -- the one Riemannian SGD step and the step-size rules.
- :mod:`riemann_dnn.params` -- which parameter lives on which manifold: ``param_groups``
  (BatchNorm-fed weights on the oblique manifold), ``Geometry`` and ``ManifoldParameter``
  (a parameter that carries its manifold; also ``riemann_dnn.ManifoldParameter``).
- :mod:`riemann_dnn.optim` -- ``RiemannianSGD``, a ``torch.optim.Optimizer``; ``BoldDriver``.
- :mod:`riemann_dnn.problems` -- ``FiniteSumProblem``, ``ModuleProblem`` (any
  ``nn.Module``), PCA and matrix completion on the Grassmann manifold, classic problems.
- :mod:`riemann_dnn.solvers` -- pymanopt optimizers for finite sums: ``StochasticGradient``,
  ``RiemannianSVRG``, ``RiemannianSRG``.
- :mod:`riemann_dnn.models` -- ArchBN, ConvArchBN, SegNet, SegNet-Basic (plain ``torch.nn``).
- :mod:`riemann_dnn.data` -- MNIST (and its IDX format), digit scenes, CamVid.
- :mod:`riemann_dnn.experiments` and :mod:`riemann_dnn.cli` -- reproductions and the CLI.

As in pymanopt (``pymanopt.function`` after ``import pymanopt``), every subpackage is an
attribute of the package: ``import riemann_dnn`` then ``@riemann_dnn.function.torch(manifold)``.
They are imported on first access, so ``import riemann_dnn`` itself loads neither torch nor
pymanopt.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "manifolds",
    "function",
    "autodiff",
    "step",
    "params",
    "optim",
    "problems",
    "solvers",
    "models",
    "data",
    "experiments",
    "cli",
)


#: Names of subpackages offered at the top level (imported on first access too).
_NAMES = {"ManifoldParameter": "params"}


def __getattr__(name: str):
    """Import a subpackage on first access (PEP 562): ``riemann_dnn.function`` etc."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES, *_NAMES])
