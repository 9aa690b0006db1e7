"""riemann_dnn: symmetry-invariant Riemannian optimization for deep networks.

Subpackages, from the bottom layer up (imports point down only):

- :mod:`riemann_dnn.manifolds` -- Euclidean, Sphere, Oblique, Stiefel, Grassmann, Product;
  pymanopt-compatible, on numpy arrays or torch tensors (any device).
- :mod:`riemann_dnn.function` -- ``@riemann_dnn.function.torch(manifold)``, a pymanopt
  autodiff backend that keeps tensors on their device.
- :mod:`riemann_dnn.step` -- the one Riemannian SGD step and the step-size rules.
- :mod:`riemann_dnn.optim` -- ``RiemannianSGD``, a ``torch.optim.Optimizer``.
- :mod:`riemann_dnn.solvers` -- ``StochasticGradient``, a pymanopt optimizer for finite sums.
- :mod:`riemann_dnn.problems` -- ArchBN, SegNet and classic problems.
- :mod:`riemann_dnn.data` -- MNIST, digit scenes, CamVid.
- :mod:`riemann_dnn.experiments` and :mod:`riemann_dnn.cli` -- reproductions and the CLI.
"""

__version__ = "0.1.0"
