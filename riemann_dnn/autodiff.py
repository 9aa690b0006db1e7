r"""A pymanopt autodiff backend on PyTorch that keeps tensors on their device.

pymanopt's own PyTorch backend converts every point to numpy and back, so it cannot run on
a GPU. :class:`TorchBackend` passes torch tensors through untouched: gradients come from
``torch.autograd.grad`` and Hessian-vector products from double backward, on the points'
device and dtype. Numpy points (e.g. from ``manifold.random_point()``) are wrapped without a
copy and the results handed back as numpy, so the same problem also runs on numpy points.

A backend built with a ``device`` and/or ``dtype`` (``riemann_dnn.function.torch(manifold,
device=..., dtype=...)``) owns them: a point on another device, of another dtype or in numpy
is refused with a one-line ``ValueError``. One built without them warns once
(:class:`NumpyFallbackWarning`) when numpy points make the run go through numpy.

The cost is returned as a Python ``float``: pymanopt's optimizers branch on it, log it and
test it with numpy functions that cannot read a CUDA tensor. That is one device
synchronisation per cost evaluation (see ``benchmarks/pymanopt_torch_backend.py``).

Complex points (pymanopt's ``ComplexGrassmann``, ``ComplexCircle``, ...) follow pymanopt's
convention: for a real cost :math:`f` torch's gradient is
:math:`g = \partial f/\partial\,\mathrm{Re}\,z + i\,\partial f/\partial\,\mathrm{Im}\,z`
and the Hessian-vector product is the gradient of the real inner product
:math:`\mathrm{Re}\langle g, v\rangle = \mathrm{Re}\sum_i \bar g_i v_i`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from pymanopt.autodiff.backends._backend import Backend
from pymanopt.tools import bisect_sequence, unpack_singleton_sequence_return_value

__all__ = ["TorchBackend", "NumpyFallbackWarning"]


class NumpyFallbackWarning(UserWarning):
    """A cost decorated by ``riemann_dnn.function.torch(manifold)`` without a device got
    numpy points (pymanopt's random initial point, or a numpy ``initial_point``): the run
    goes through numpy on the CPU. Give ``device=`` (and ``dtype=``) to the decorator, or a
    torch ``initial_point``."""


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(
        f"riemann_dnn.function.torch: expected torch tensors or numpy arrays as arguments, "
        f"got {type(value).__name__}"
    )


def _like_inputs(results: Sequence[torch.Tensor], inputs: Sequence) -> list:
    """Hand results back as numpy where the caller passed numpy."""
    return [
        result.detach().numpy() if isinstance(source, np.ndarray) else result.detach()
        for result, source in zip(results, inputs)
    ]


def _leaves(args: Sequence) -> list[torch.Tensor]:
    """Fresh autograd leaves for ``args`` (never mutates the caller's tensors)."""
    return [_as_tensor(arg).detach().requires_grad_(True) for arg in args]


def _scalar_output(value, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        raise ValueError(
            f"riemann_dnn.function.torch: the cost {name!r} must return a scalar torch tensor, "
            f"got {type(value).__name__}"
            + (f" of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else "")
        )
    return value.reshape(())


def _gradients(value: torch.Tensor, leaves: list[torch.Tensor], create_graph: bool = False):
    if not value.requires_grad:
        raise ValueError(
            "riemann_dnn.function.torch: the cost's value does not depend on its arguments "
            "through autograd (it has no grad_fn): the cost detached them, converted them "
            "(.item(), .numpy(), torch.tensor(...)) or ran under torch.no_grad(); compute it "
            "with torch operations on the arguments as given"
        )
    grads = torch.autograd.grad(value, leaves, create_graph=create_graph, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]


def _real_inner(gradient: torch.Tensor, vector) -> torch.Tensor:
    r"""The real inner product :math:`\mathrm{Re}\langle g, v\rangle = \mathrm{Re}\sum_i
    \bar g_i v_i` (the plain sum for real tensors); its gradient is the Hessian-vector product."""
    vector = _as_tensor(vector).to(device=gradient.device, dtype=gradient.dtype)
    if gradient.is_complex():
        return torch.sum(gradient.conj() * vector).real
    return torch.sum(gradient * vector)


def _where(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor on {value.device} with {value.dtype}"
    return f"a {type(value).__module__.split('.')[0]} {type(value).__name__}"


class TorchBackend(Backend):
    """pymanopt backend: torch cost functions, autograd derivatives, device-native tensors.

    Args:
        device, dtype: the device and dtype every point must have (``None``: any).
        owned: refuse points that are not tensors there (set by
            ``riemann_dnn.function.torch`` when a device or dtype is given); otherwise warn
            once (:class:`NumpyFallbackWarning`) when numpy points come in.
    """

    def __init__(self, device: Any = None, dtype: Any = None, owned: bool = False):
        super().__init__("riemann_dnn.torch")
        self.device = None if device is None else torch.device(device)
        self.dtype, self.owned = dtype, owned
        self._warned = False

    @staticmethod
    def is_available() -> bool:
        return True

    def _wanted(self) -> str:
        parts = [f"device={str(self.device)!r}"] if self.device is not None else []
        parts += [f"dtype={self.dtype}"] if self.dtype is not None else []
        return ", ".join(parts)

    def _on_device(self, value: Any) -> bool:
        if not isinstance(value, torch.Tensor):
            return False
        if self.dtype is not None and value.dtype != self.dtype:
            return False
        if self.device is None:
            return True
        if value.device.type != self.device.type:
            return False
        return self.device.index is None or value.device.index == self.device.index

    def check_points(self, args: Sequence, name: str) -> None:
        """Refuse points off the owned device/dtype; warn once on numpy points otherwise."""
        if self.owned:
            for index, arg in enumerate(args):
                if not self._on_device(arg):
                    raise ValueError(
                        f"riemann_dnn.function.torch: argument {index} of {name!r} is "
                        f"{_where(arg)}, but the cost was decorated with {self._wanted()}; "
                        f"pass initial_point as a tensor there (x.to(device, dtype)) or none"
                    )
        elif not self._warned and any(isinstance(arg, np.ndarray) for arg in args):
            self._warned = True
            warnings.warn(
                f"riemann_dnn.function.torch: {name!r} got numpy arrays (pymanopt's random "
                f"initial point, or a numpy initial_point), so this run goes through numpy "
                f"on the CPU; decorate with riemann_dnn.function.torch(manifold, device=..., "
                f"dtype=...) or pass a torch initial_point",
                NumpyFallbackWarning,
                stacklevel=3,
            )

    def prepare_function(self, function: Callable) -> Callable:
        @functools.wraps(function)
        def cost(*args):
            self.check_points(args, function.__name__)
            with torch.no_grad():
                value = _scalar_output(function(*map(_as_tensor, args)), function.__name__)
            return float(value)

        return cost

    def generate_gradient_operator(self, function: Callable, num_arguments: int) -> Callable:
        def gradient(*args):
            self.check_points(args, function.__name__)
            leaves = _leaves(args)
            value = _scalar_output(function(*leaves), function.__name__)
            return _like_inputs(_gradients(value, leaves), args)

        if num_arguments == 1:
            return unpack_singleton_sequence_return_value(gradient)
        return gradient

    def generate_hessian_operator(self, function: Callable, num_arguments: int) -> Callable:
        def hessian_vector_product(*args):
            points, vectors = bisect_sequence(list(args))
            self.check_points(points, function.__name__)
            leaves = _leaves(points)
            value = _scalar_output(function(*leaves), function.__name__)
            grads = _gradients(value, leaves, create_graph=True)
            directional = sum(_real_inner(g, v) for g, v in zip(grads, vectors))
            if not directional.requires_grad:  # cost is affine: the Hessian vanishes
                return _like_inputs([torch.zeros_like(x) for x in leaves], points)
            return _like_inputs(_gradients(directional, leaves), points)

        if num_arguments == 1:
            return unpack_singleton_sequence_return_value(hessian_vector_product)
        return hessian_vector_product
