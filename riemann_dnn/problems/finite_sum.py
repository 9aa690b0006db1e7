r"""Finite-sum problems: a cost defined on batches of data, for stochastic solvers.

A finite-sum problem minimises the mean of per-sample losses over a data set
:math:`\{d_i\}_{i=1}^N` held in memory (torch tensors on their device, or numpy arrays):

.. math::

    f(x) = \frac1N \sum_{i=1}^N \ell(x; d_i), \qquad
    f_B(x) = \frac1{|B|} \sum_{i \in B} \ell(x; d_i) \quad (B \subseteq \{1..N\}).

The user writes :math:`f_B`: ``cost(*point_args, batch)`` returns the **mean** loss over
``batch`` as a scalar (a 0-d torch tensor for ``backend="torch"``, an ``autograd.numpy``
scalar for ``backend="numpy"``). ``point_args`` is the point (one array), or its factors
for a :class:`~riemann_dnn.manifolds.Product` (``cost(W, b, batch)``, like pymanopt's
Problem). ``batch`` has the structure of ``data``: one array, or a tuple of arrays sharing
the first (sample) axis, restricted to the batch's rows.

Euclidean gradients :math:`\nabla f_B(x)` come from ``torch.autograd`` (tensors stay on
their device; no host round-trips) or from the ``autograd`` package, unless the user gives
``euclidean_gradient(*point_args, batch)``.

Example::

    X = torch.randn(10_000, 20, dtype=torch.float64, device="cuda")

    def cost(U, batch):                      # stochastic PCA, mean over the batch
        return -(batch @ U).square().sum() / batch.shape[0]

    problem = FiniteSumProblem(Stiefel(20, 3), cost, X)
    problem.cost_on(U)                        # f(U) over all samples (a float)
    problem.euclidean_gradient_on(U, [0, 5])  # gradient of f_B, B = {0, 5} (a tensor)
    problem.full_problem()                    # a pymanopt.Problem for f (TrustRegions etc.)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pymanopt
import torch
from pymanopt.manifolds import Product as _PymanoptProduct
from pymanopt.manifolds.manifold import Manifold

from ..manifolds import Array, EmbeddedManifold, Product

__all__ = ["FiniteSumProblem"]

Backend = Literal["torch", "numpy"]
Indices = Any  # None | slice | Sequence[int] | numpy int array | torch long tensor


def _factors(manifold: Manifold) -> list[Manifold] | None:
    """The factors of a (one-level) product manifold, ``None`` for a simple manifold."""
    if isinstance(manifold, _PymanoptProduct):
        return list(manifold.manifolds)
    return None


def _flatten(manifold: Manifold, point: Any) -> list[Array]:
    """The point as the list of arrays the cost takes (``point_args``)."""
    factors = _factors(manifold)
    if factors is None:
        return [point]
    if not isinstance(point, (list, tuple)) or len(point) != len(factors):
        got = f"a {type(point).__name__}" + (
            f" of length {len(point)}" if isinstance(point, (list, tuple)) else ""
        )
        raise ValueError(
            f"FiniteSumProblem: a point on a Product of {len(factors)} manifolds must be a "
            f"list of {len(factors)} arrays, got {got}"
        )
    return list(point)


def _unflatten(manifold: Manifold, arrays: Sequence[Array]) -> Any:
    """Inverse of :func:`_flatten` for gradients: a list per product, else one array."""
    return list(arrays) if _factors(manifold) is not None else arrays[0]


class FiniteSumProblem:
    r"""A cost :math:`f(x) = \frac1N\sum_i \ell(x; d_i)` given on batches, over ``manifold``.

    Args:
        manifold: the manifold of the point (a riemann_dnn or pymanopt manifold; a
            ``Product`` of simple manifolds gives list points and ``cost(W, b, batch)``).
        cost: ``cost(*point_args, batch)`` -> the mean loss over ``batch`` (a scalar).
        data: an array, or a tuple of arrays sharing the first (sample) axis of length
            :math:`N \ge 1`: torch tensors (all on one device) for ``backend="torch"``
            (numpy arrays are converted, zero-copy, to CPU tensors), numpy arrays for
            ``backend="numpy"``.
        backend: ``"torch"`` (gradients by ``torch.autograd``, on the data's device) or
            ``"numpy"`` (gradients by the ``autograd`` package: write the cost with
            ``autograd.numpy``).
        euclidean_gradient: optional ``euclidean_gradient(*point_args, batch)`` returning
            :math:`\nabla f_B` (an array, or one array per factor); replaces autodiff.
        eval_batch_size: evaluate :meth:`cost_on` and :meth:`euclidean_gradient_on` on more
            than this many samples in chunks (weighted by chunk size, exact for a mean
            cost), to bound memory. ``None`` (default): one pass.
        optimal_cost: the minimum :math:`f^\star` of :math:`f` when it is known (closed
            forms: :func:`~riemann_dnn.problems.pca_problem`, noiseless
            :func:`~riemann_dnn.problems.matrix_completion_problem`); solvers then log the
            optimality gap :math:`f(x) - f^\star`. ``None`` (default): unknown.

    Attributes:
        manifold, backend, data, num_samples, optimal_cost.
    """

    def __init__(
        self,
        manifold: Manifold,
        cost: Callable[..., Any],
        data: Array | Sequence[Array],
        *,
        backend: Backend = "torch",
        euclidean_gradient: Callable[..., Any] | None = None,
        eval_batch_size: int | None = None,
        optimal_cost: float | None = None,
    ):
        if not isinstance(manifold, Manifold):
            raise TypeError(
                f"FiniteSumProblem: manifold must be a pymanopt Manifold, got "
                f"{type(manifold).__name__}"
            )
        if backend not in ("torch", "numpy"):
            raise ValueError(
                f"FiniteSumProblem: backend must be 'torch' or 'numpy', got {backend!r}"
            )
        if not callable(cost):
            raise TypeError(f"FiniteSumProblem: cost must be callable, got {cost!r}")
        if euclidean_gradient is not None and not callable(euclidean_gradient):
            raise TypeError(
                f"FiniteSumProblem: euclidean_gradient must be callable or None, got "
                f"{euclidean_gradient!r}"
            )
        if eval_batch_size is not None and not (
            isinstance(eval_batch_size, (int, np.integer)) and eval_batch_size >= 1
        ):
            raise ValueError(
                f"FiniteSumProblem: eval_batch_size must be an int >= 1 or None, got "
                f"{eval_batch_size!r}"
            )
        if optimal_cost is not None and not (
            isinstance(optimal_cost, (int, float, np.integer, np.floating))
            and not isinstance(optimal_cost, bool)
            and np.isfinite(optimal_cost)
        ):
            raise ValueError(
                f"FiniteSumProblem: optimal_cost must be a finite number or None, got "
                f"{optimal_cost!r}"
            )
        self.manifold = manifold
        self.optimal_cost: float | None = None if optimal_cost is None else float(optimal_cost)
        self.backend: Backend = backend
        self._cost = cost
        self._user_gradient = euclidean_gradient
        self.eval_batch_size = None if eval_batch_size is None else int(eval_batch_size)
        self._is_tuple = isinstance(data, (tuple, list))
        arrays = list(data) if self._is_tuple else [data]
        self._arrays = self._validate_data(arrays)
        self.num_samples: int = int(self._arrays[0].shape[0])

    # -- data -----------------------------------------------------------------------------
    def _validate_data(self, arrays: list) -> list:
        if not arrays:
            raise ValueError(
                "FiniteSumProblem: data is an empty tuple; give an array or a tuple of arrays "
                "sharing the first (sample) axis"
            )
        converted = []
        for index, array in enumerate(arrays):
            name = f"data[{index}]" if self._is_tuple else "data"
            if self.backend == "torch":
                if isinstance(array, np.ndarray):
                    array = torch.from_numpy(np.ascontiguousarray(array))
                if not isinstance(array, torch.Tensor):
                    raise TypeError(
                        f"FiniteSumProblem: {name} must be a torch tensor (or numpy array) for "
                        f"backend='torch', got {type(array).__name__}"
                    )
            else:
                if isinstance(array, torch.Tensor):
                    raise TypeError(
                        f"FiniteSumProblem: {name} is a torch tensor but backend='numpy'; "
                        "pass backend='torch' or convert it with .cpu().numpy()"
                    )
                array = np.asarray(array)
            if array.ndim == 0:
                raise ValueError(
                    f"FiniteSumProblem: {name} is a scalar; data needs a first (sample) axis"
                )
            converted.append(array)
        lengths = [int(a.shape[0]) for a in converted]
        if len(set(lengths)) != 1:
            raise ValueError(
                f"FiniteSumProblem: the arrays of data must share the first (sample) axis, got "
                f"lengths {lengths} (shapes {[tuple(a.shape) for a in converted]})"
            )
        if lengths[0] == 0:
            raise ValueError("FiniteSumProblem: data holds no samples (first axis of length 0)")
        if self.backend == "torch":
            devices = {a.device for a in converted}
            if len(devices) != 1:
                raise ValueError(
                    f"FiniteSumProblem: the tensors of data must be on one device, got "
                    f"{sorted(map(str, devices))}"
                )
        return converted

    @property
    def factors(self) -> list[Manifold] | None:
        """The factors of a (one-level) ``Product`` manifold, ``None`` for a simple one."""
        return _factors(self.manifold)

    @property
    def data(self) -> Array | tuple[Array, ...]:
        """The data, as given (a tuple when a tuple/list was given)."""
        return tuple(self._arrays) if self._is_tuple else self._arrays[0]

    @property
    def device(self) -> torch.device | None:
        """The data's torch device (``None`` for the numpy backend)."""
        return self._arrays[0].device if self.backend == "torch" else None

    @property
    def dtype(self) -> Any:
        """The dtype points should have (that of the first floating array in ``data``;
        torch default / float64 when there is none)."""
        for array in self._arrays:
            if self.backend == "torch" and array.is_floating_point():
                return array.dtype
            if self.backend == "numpy" and np.issubdtype(array.dtype, np.floating):
                return array.dtype
        return torch.get_default_dtype() if self.backend == "torch" else np.dtype(np.float64)

    def as_indices(self, indices: Indices) -> Any:
        """``indices`` in the form the data are indexed with: a long tensor on the data's
        device (torch) or an int numpy array. Host indices are bounds-checked here."""
        if isinstance(indices, slice):
            return indices
        if isinstance(indices, torch.Tensor):
            if self.backend == "numpy":
                indices = indices.cpu().numpy()
            else:
                return indices.to(device=self.device, dtype=torch.long)
        host = np.asarray(indices)
        if host.ndim != 1 or not (host.size == 0 or np.issubdtype(host.dtype, np.integer)):
            raise ValueError(
                f"FiniteSumProblem: indices must be a 1-d sequence of ints, got shape "
                f"{host.shape} and dtype {host.dtype}"
            )
        if host.size == 0:
            raise ValueError("FiniteSumProblem: indices select no samples (empty batch)")
        low, high = int(host.min()), int(host.max())
        if low < -self.num_samples or high >= self.num_samples:
            raise IndexError(
                f"FiniteSumProblem: indices must lie in [0, {self.num_samples}), got range "
                f"[{low}, {high}]"
            )
        host = host.astype(np.int64, copy=False)
        if self.backend == "torch":
            return torch.as_tensor(host, device=self.device)
        return host

    def _batch_size(self, indices: Any) -> int:
        if indices is None:
            return self.num_samples
        if isinstance(indices, slice):
            return len(range(*indices.indices(self.num_samples)))
        return int(indices.shape[0])

    def batch(self, indices: Indices = None) -> Array | tuple[Array, ...]:
        """The samples ``indices`` (all when ``None``), with the structure of :attr:`data`."""
        if indices is None:
            return self.data
        indices = self.as_indices(indices)
        arrays = tuple(array[indices] for array in self._arrays)
        return arrays if self._is_tuple else arrays[0]

    def _chunks(self, indices: Indices) -> list[tuple[Any, float]]:
        """Chunks of the selected samples with weights ``|chunk| / |selection|``."""
        if indices is not None:
            indices = self.as_indices(indices)
        total = self._batch_size(indices)
        size = self.eval_batch_size
        if size is None or total <= size:
            return [(indices, 1.0)]
        if indices is None:
            return [
                (slice(start, min(start + size, total)), min(size, total - start) / total)
                for start in range(0, total, size)
            ]
        if isinstance(indices, slice):
            indices = np.arange(self.num_samples)[indices]
            indices = self.as_indices(indices)
        return [
            (indices[start : start + size], min(size, total - start) / total)
            for start in range(0, total, size)
        ]

    # -- point conversion -----------------------------------------------------------------
    def _point_args(self, point: Any) -> tuple[list, bool]:
        """The point's arrays, as tensors for the torch backend; whether they were numpy."""
        args = _flatten(self.manifold, point)
        if self.backend == "numpy":
            for index, arg in enumerate(args):
                if isinstance(arg, torch.Tensor):
                    raise TypeError(
                        f"FiniteSumProblem: point argument {index} is a torch tensor but "
                        "backend='numpy'; use numpy points (or backend='torch')"
                    )
            return args, False
        was_numpy = any(isinstance(arg, np.ndarray) for arg in args)
        tensors = []
        for index, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                arg = torch.as_tensor(arg, device=self.device)
            if not isinstance(arg, torch.Tensor):
                raise TypeError(
                    f"FiniteSumProblem: point argument {index} must be a torch tensor or numpy "
                    f"array, got {type(arg).__name__}"
                )
            tensors.append(arg)
        return tensors, was_numpy

    def _scalar(self, value: Any) -> Any:
        """Check that the cost returned a scalar; returns it as a 0-d value."""
        shape = tuple(getattr(value, "shape", ()))
        if self.backend == "torch":
            if not isinstance(value, torch.Tensor) or value.numel() != 1:
                raise ValueError(
                    "FiniteSumProblem: cost must return a scalar torch tensor (the mean loss "
                    f"over the batch), got {type(value).__name__}"
                    + (f" of shape {shape}" if isinstance(value, torch.Tensor) else "")
                )
            return value.reshape(())
        if int(np.prod(shape)) != 1 or isinstance(value, (list, tuple)):
            raise ValueError(
                "FiniteSumProblem: cost must return a scalar (the mean loss over the batch), "
                f"got {type(value).__name__} of shape {shape}"
            )
        return value.reshape(()) if shape else value

    # -- evaluations ----------------------------------------------------------------------
    def _cost_chunk(self, args: list, indices: Any) -> float:
        batch = self.batch(indices) if indices is not None else self.data
        if self.backend == "torch":
            with torch.no_grad():
                return float(self._scalar(self._cost(*args, batch)))
        return float(self._scalar(self._cost(*args, batch)))

    def cost_on(self, point: Any, indices: Indices = None) -> float:
        r""":math:`f_B(x)` on the samples ``indices`` (:math:`f(x)`, all samples, when
        ``None``), as a Python float (one device synchronisation)."""
        args, _ = self._point_args(point)
        return float(
            sum(weight * self._cost_chunk(args, chunk) for chunk, weight in self._chunks(indices))
        )

    def _value_and_gradient_chunk(self, args: list, indices: Any) -> tuple[Any, list]:
        """:math:`f_B` (a 0-d array; no host sync) and its gradients, one per point array."""
        batch = self.batch(indices) if indices is not None else self.data
        if self._user_gradient is not None:
            grads = self._user_gradient(*args, batch)
            grads = list(grads) if isinstance(grads, (list, tuple)) else [grads]
            if len(grads) != len(args):
                raise ValueError(
                    f"FiniteSumProblem: euclidean_gradient returned {len(grads)} arrays for a "
                    f"point of {len(args)}"
                )
            return None, grads
        if self.backend == "torch":
            leaves = [arg.detach().requires_grad_(True) for arg in args]
            with torch.enable_grad():
                value = self._scalar(self._cost(*leaves, batch))
                grads = torch.autograd.grad(value, leaves, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]
            return value.detach(), grads
        import autograd

        def cost_of(point_args: tuple) -> Any:
            return self._scalar(self._cost(*point_args, batch))

        value, grads = autograd.value_and_grad(cost_of)(tuple(args))
        return value, list(grads)

    def _value_and_gradient(self, point: Any, indices: Indices) -> tuple[Any, Any, bool]:
        args, was_numpy = self._point_args(point)
        value, grads = None, None
        for chunk, weight in self._chunks(indices):
            chunk_value, chunk_grads = self._value_and_gradient_chunk(args, chunk)
            if weight != 1.0:
                chunk_grads = [weight * g for g in chunk_grads]
                chunk_value = None if chunk_value is None else weight * chunk_value
            if grads is None:
                value, grads = chunk_value, chunk_grads
            else:
                grads = [a + b for a, b in zip(grads, chunk_grads)]
                value = None if value is None or chunk_value is None else value + chunk_value
        for index, (grad, arg) in enumerate(zip(grads, args)):
            if tuple(grad.shape) != tuple(arg.shape):
                raise ValueError(
                    f"FiniteSumProblem: the gradient for point argument {index} has shape "
                    f"{tuple(grad.shape)}, expected {tuple(arg.shape)}"
                )
        if was_numpy:
            grads = [g.detach().cpu().numpy() if isinstance(g, torch.Tensor) else g for g in grads]
        return value, _unflatten(self.manifold, grads), was_numpy

    def euclidean_gradient_on(self, point: Any, indices: Indices = None) -> Any:
        r""":math:`\nabla f_B(x)` on the samples ``indices`` (all when ``None``): an array
        like the point (a list of arrays on a Product), on the data's device for torch."""
        return self._value_and_gradient(point, indices)[1]

    def cost_and_euclidean_gradient_on(
        self, point: Any, indices: Indices = None
    ) -> tuple[float, Any]:
        """``(cost_on(point, indices), euclidean_gradient_on(point, indices))`` with one
        autodiff pass (two when a user gradient is given)."""
        value, grads, _ = self._value_and_gradient(point, indices)
        cost = self.cost_on(point, indices) if value is None else float(value)
        return cost, grads

    def evaluating(self) -> contextlib.AbstractContextManager:
        """A context in which evaluations are measurements only: they must not change any
        state the cost carries (e.g. a model's BatchNorm running statistics). Solvers wrap
        their statistics (not their steps) in it. A no-op here; see ``ModuleProblem``."""
        return contextlib.nullcontext()

    def random_point(self, generator: Any = None) -> Any:
        """A random point of the manifold of the data's kind: a torch tensor on the data's
        device and float dtype, or a float64 numpy array. ``generator`` may be an int seed."""
        if self.backend == "torch":
            return self.manifold.random_point(
                device=self.device, dtype=self.dtype, generator=generator
            )
        if generator is None:
            return self.manifold.random_point()
        if isinstance(self.manifold, (EmbeddedManifold, Product)):
            return self.manifold.random_point(generator=generator)
        # a pymanopt manifold draws from numpy's global state: seed it for this draw only
        saved = np.random.get_state()
        try:
            np.random.seed(int(generator) % 2**32)
            return self.manifold.random_point()
        finally:
            np.random.set_state(saved)

    # -- the full sum as a pymanopt problem -----------------------------------------------
    def full_problem(self) -> pymanopt.Problem:
        r"""A :class:`pymanopt.Problem` for the full mean :math:`f` (all ``N`` samples), so
        deterministic solvers (SteepestDescent, ConjugateGradient, TrustRegions) solve it.

        torch backend: :func:`riemann_dnn.function.torch` on a copy of the manifold that
        owns the data's device and dtype (riemann_dnn's manifolds): the random initial point
        of pymanopt's solvers and every iterate are tensors there, and points elsewhere are
        refused (gradient and Hessian-vector products by autograd). numpy backend:
        :func:`pymanopt.function.autograd`, or :func:`pymanopt.function.numpy` with the
        user's ``euclidean_gradient`` (then no Hessian: use first-order solvers).
        """
        data = self.data
        user_gradient = self._user_gradient
        cost = self._cost
        manifold = self.manifold

        def full_cost(*args):
            return cost(*args, data)

        if self.backend == "torch":
            from .. import function

            try:
                manifold = copy.copy(manifold)
                decorator = function.torch(manifold, device=self.device, dtype=self.dtype)
            except ValueError:  # a pymanopt manifold: numpy methods, nothing to own
                manifold = self.manifold
                decorator = function.torch(manifold)
        elif user_gradient is None:
            decorator = pymanopt.function.autograd(manifold)
        else:
            decorator = pymanopt.function.numpy(manifold)
        gradient = None
        if user_gradient is not None:
            # pymanopt's numpy decorator calls the function as is; the conversion of numpy
            # points for the torch backend (and back) happens in _value_and_gradient.
            def full_gradient(*args):
                grads = self.euclidean_gradient_on(_unflatten(manifold, list(args)))
                return grads if _factors(manifold) is None else tuple(grads)

            gradient = pymanopt.function.numpy(manifold)(full_gradient)
        return pymanopt.Problem(manifold, decorator(full_cost), euclidean_gradient=gradient)
