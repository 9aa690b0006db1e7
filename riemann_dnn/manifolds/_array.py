"""One array vocabulary for numpy arrays and torch tensors (any device, any float dtype).

Every manifold formula is written once against the Array API namespace that
:func:`namespace` returns (``array_api_compat`` wraps numpy and torch); the few operations
the standard lacks (matrix exponential, sign-fixed QR, random normals from a generator)
live here. Nothing in this module moves data between devices or to the host, except
:func:`to_float`, which turns a 0-d result into the Python number pymanopt expects.
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np
import torch

Array = Any  # numpy.ndarray | torch.Tensor; public as riemann_dnn.manifolds.Array
Generator = Any  # numpy.random.Generator | torch.Generator | int | None

__all__ = [
    "Array",
    "working_dtype",
    "namespace",
    "is_torch",
    "to_float",
    "normalize",
    "sym",
    "skew",
    "transpose",
    "eye_like",
    "qr_unique",
    "polar_factor",
    "expm",
    "resolve_generator",
    "random_normal",
    "random_normal_like",
]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def working_dtype(dtype: Any) -> Any:
    """The dtype in which arrays of ``dtype`` are computed: float32 for float16 and
    bfloat16 (norms, orthonormalisations and accumulated momentum lose too many digits in
    half precision), ``dtype`` itself otherwise.

    The one low-precision rule: the manifolds' normalisations, the shared SGD step of
    :class:`~riemann_dnn.optim.RiemannianSGD` (points stepped, momentum kept in this dtype)
    and its fused kernels all follow it; results are stored back in ``dtype``.
    """
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def namespace(*arrays: Array):
    """The Array API namespace (numpy- or torch-flavoured) of ``arrays``.

    Raises ``TypeError`` when numpy arrays and torch tensors are mixed (or an input is
    neither) and ``ValueError`` when torch tensors sit on different devices, naming what
    was received -- the manifolds never move data between kinds or devices themselves.
    """
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as err:
        kinds = ", ".join(sorted({f"{type(a).__module__}.{type(a).__name__}" for a in arrays}))
        if "Multiple namespaces" in str(err):
            raise TypeError(
                f"numpy arrays and torch tensors mixed in one call (got {kinds}); pass points "
                f"and vectors of one kind, e.g. torch.as_tensor(array, device=point.device)"
            ) from None
        raise TypeError(f"expected numpy arrays or torch tensors, got {kinds}: {err}") from None
    devices = {a.device for a in arrays if isinstance(a, torch.Tensor)}
    if len(devices) > 1:
        raise ValueError(
            f"torch tensors on different devices in one call ({', '.join(sorted(map(str, devices)))}); "
            f"move them to one device first, e.g. vector.to(point.device)"
        )
    return xp


def is_torch(array: Array) -> bool:
    return isinstance(array, torch.Tensor)


def to_float(value: Array) -> float:
    """A 0-d array as a Python ``float`` (pymanopt's optimizers branch on these).

    For a CUDA tensor this is one device synchronisation; it is the only host transfer
    the manifolds make, and only in the scalar-valued methods (``inner_product``,
    ``norm``, ``dist``).
    """
    return float(value)


def _working(array: Array) -> Array:
    """``array`` in at least float32, so norms of half-precision data stay accurate."""
    if is_torch(array) and array.dtype in _LOW_PRECISION:
        return array.to(working_dtype(array.dtype))
    return array


def normalize(array: Array, axis: int | tuple[int, ...] | None) -> Array:
    r"""``array / ||array||`` along ``axis`` (``None``: the whole array).

    The norm is computed in at least float32 and the result cast back to the input dtype.
    """
    xp = namespace(array)
    work = _working(array)
    if axis is None:
        norm = xp.linalg.vector_norm(work)
    else:
        norm = xp.linalg.vector_norm(work, axis=axis, keepdims=True)
    out = work / norm
    return out.to(array.dtype) if out.dtype != array.dtype else out


def transpose(array: Array) -> Array:
    """Transpose of the last two axes (stacked matrices stay stacked)."""
    return namespace(array).matrix_transpose(array)


def sym(array: Array) -> Array:
    r"""Symmetric part :math:`(A + A^T)/2` of (stacked) square matrices."""
    return 0.5 * (array + transpose(array))


def skew(array: Array) -> Array:
    r"""Skew-symmetric part :math:`(A - A^T)/2` of (stacked) square matrices."""
    return 0.5 * (array - transpose(array))


def eye_like(array: Array, n: int) -> Array:
    """The ``n x n`` identity with ``array``'s kind, dtype and device."""
    xp = namespace(array)
    if is_torch(array):
        return xp.eye(n, dtype=array.dtype, device=array.device)
    return xp.eye(n, dtype=array.dtype)


def qr_unique(array: Array) -> Array:
    r"""The Q factor of the thin QR decomposition with :math:`\operatorname{diag}(R) > 0`.

    Fixing the signs makes Q a smooth function of ``array`` (the QR retraction needs it).
    """
    xp = namespace(array)
    q, r = xp.linalg.qr(array)
    diag = xp.linalg.diagonal(r)
    signs = xp.where(diag < 0, -xp.ones_like(diag), xp.ones_like(diag))
    return q * signs[..., None, :]


def polar_factor(array: Array) -> Array:
    r"""The orthonormal polar factor :math:`AB^T` of (stacked) matrices, from the thin SVD
    :math:`A\Sigma B^T`.

    On CUDA, torch's default SVD driver (cuSOLVER's Jacobi ``gesvdj``) returned factors
    orthonormal only to 1e-5 ... 6e-4 in float32 (H100; 784x64 to 1024x1024); the QR-based
    ``"gesvd"`` driver keeps them at rounding level (~1e-6), so it is used there.
    """
    if is_torch(array) and array.is_cuda:
        u, _, vt = torch.linalg.svd(array, full_matrices=False, driver="gesvd")
    else:
        u, _, vt = namespace(array).linalg.svd(array, full_matrices=False)
    return u @ vt


def expm(array: Array) -> Array:
    """Matrix exponential of (stacked) square matrices."""
    if is_torch(array):
        return torch.linalg.matrix_exp(array)
    import scipy.linalg

    return scipy.linalg.expm(array)


def check_device(device: Any, owner: str) -> None:
    """Raise ``ValueError`` naming ``owner`` when torch cannot allocate on ``device`` here
    (torch's own error for a CUDA device on a CPU build is an ``AssertionError`` about how
    torch was compiled)."""
    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{owner}: device={device!r} is not a torch device ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"{owner}: device={device!r}, but torch {torch.__version__} sees no CUDA device "
            f"here (CUDA build: {torch.version.cuda or 'none'}); use device='cpu'"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(
            f"{owner}: device={device!r}, but there are only "
            f"{torch.cuda.device_count()} CUDA devices"
        )


def _torch_generator(generator: Generator, device: torch.device) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)):
        return torch.Generator(device=device).manual_seed(int(generator))
    raise TypeError(
        f"generator must be a torch.Generator, an int seed or None for torch output, "
        f"got {type(generator).__name__}"
    )


def resolve_generator(
    generator: Generator, *, device: Any = None, dtype: Any = None
) -> np.random.Generator | torch.Generator | None:
    """Turn an int seed into a generator of the kind :func:`random_normal` will draw from,
    so several draws from one seed are independent; generators and ``None`` pass through."""
    if not isinstance(generator, (int, np.integer)):
        return generator
    if device is not None or isinstance(dtype, torch.dtype):
        return torch.Generator(device=torch.device(device or "cpu")).manual_seed(int(generator))
    return np.random.default_rng(int(generator))


def random_normal(
    shape: tuple[int, ...],
    *,
    device: str | torch.device | None = None,
    dtype: Any = None,
    generator: Generator = None,
) -> Array:
    """Standard normal samples of ``shape``, as numpy or torch.

    The result is a torch tensor when ``device`` is given, ``dtype`` is a torch dtype or
    ``generator`` is a :class:`torch.Generator`; otherwise a float64 numpy array (from
    ``generator``, an int seed, or numpy's global state as pymanopt does).
    """
    wants_torch = (
        device is not None
        or isinstance(dtype, torch.dtype)
        or isinstance(generator, torch.Generator)
    )
    if wants_torch:
        if dtype is None:
            dtype = torch.get_default_dtype()
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype for torch output, got {dtype!r}")
        if isinstance(generator, torch.Generator) and device is None:
            device = generator.device
        device = torch.device(device if device is not None else "cpu")
        gen = _torch_generator(generator, device)
        return torch.randn(shape, generator=gen, device=device, dtype=dtype)
    if generator is None:
        sample = np.random.normal(size=shape)
    elif isinstance(generator, (int, np.integer, np.random.Generator)):
        sample = np.random.default_rng(generator).standard_normal(shape)
    else:
        raise TypeError(
            "generator must be a numpy.random.Generator, a torch.Generator, an int seed or "
            f"None, got {type(generator).__name__}"
        )
    return sample.astype(dtype if dtype is not None else np.float64, copy=False)


def random_normal_like(array: Array, generator: Generator = None) -> Array:
    """Standard normal samples with ``array``'s shape, kind, dtype and device."""
    if is_torch(array):
        gen = _torch_generator(generator, array.device)
        return torch.randn(array.shape, generator=gen, device=array.device, dtype=array.dtype)
    return random_normal(array.shape, generator=generator, dtype=array.dtype)
