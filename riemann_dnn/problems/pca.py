r"""Principal component analysis on the Grassmann manifold, as a finite sum with a closed-form
optimum (the benchmark of Zhang, Reddi & Sra 2016, Sato, Kasai & Mishra 2019 and Kasai, Sato
& Mishra 2018).

For samples :math:`x_1, \dots, x_N \in \mathbb{R}^d` and a rank :math:`r`,

.. math::

    \min_{U \in \mathrm{Gr}(d, r)} f(U) = -\frac1N \sum_{i=1}^N \|U^Tx_i\|^2
    = -\operatorname{tr}(U^T C U), \qquad C = \frac1N \sum_i x_i x_i^T,

with :math:`\nabla f_B(U) = -\frac{2}{|B|}\sum_{i\in B} x_i x_i^T U`. The minimum is
:math:`f^\star = -(\lambda_1 + \dots + \lambda_r)` (the top eigenvalues of :math:`C`), at the
span of the top :math:`r` eigenvectors; it is unique when :math:`\lambda_r > \lambda_{r+1}`,
and the relative eigengap :math:`\delta = 1 - \lambda_{r+1}/\lambda_r` sets how fast
first-order methods converge. :func:`pca_data` makes data with exactly the spectrum it is
asked for; any data matrix (e.g. MNIST images, ``images.reshape(N, -1) / 255``) works with
:func:`pca_problem`.

Example::

    X = pca_data(10_000, 20, 5, eigengap=0.5, seed=0)       # float64 tensor (N, d)
    problem = pca_problem(X, 5)                              # FiniteSumProblem on Gr(20, 5)
    problem.optimal_cost                                     # -(lambda_1 + ... + lambda_5)
    U = pca_solution(X, 5)                                   # the top-5 eigenvectors
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..manifolds import Grassmann
from .finite_sum import FiniteSumProblem

__all__ = ["pca_data", "pca_spectrum", "pca_problem", "pca_solution"]


def _check_sizes(owner: str, num_samples: Any, dim: Any, rank: Any) -> None:
    for name, value, low in (("num_samples", num_samples, 1), ("dim", dim, 2), ("rank", rank, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{owner}: {name} must be an int >= {low}, got {value!r}")
    if rank >= dim:
        raise ValueError(f"{owner}: rank must be < dim, got rank={rank}, dim={dim}")


def pca_spectrum(dim: int, rank: int, eigengap: float) -> np.ndarray:
    r"""The eigenvalues :func:`pca_data` gives the second-moment matrix: the top ``rank``
    evenly spaced from 1 down to 0.8, then :math:`\lambda_{r+1} = (1 - \delta)\lambda_r` with
    :math:`\delta` = ``eigengap``, and the rest evenly spaced down to
    :math:`\lambda_{r+1}/10` (decreasing, float64)."""
    if not (isinstance(eigengap, (int, float)) and 0 < eigengap < 1):
        raise ValueError(f"pca_spectrum: eigengap must lie in (0, 1), got {eigengap!r}")
    top = np.linspace(1.0, 0.8, rank) if rank > 1 else np.array([1.0])
    below = (1.0 - eigengap) * top[-1]
    tail = np.linspace(below, below / 10, dim - rank)
    return np.concatenate([top, tail])


def pca_data(
    num_samples: int,
    dim: int,
    rank: int,
    *,
    eigengap: float = 0.5,
    seed: int = 0,
    device: Any = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    r"""Samples :math:`X \in \mathbb{R}^{N\times d}` whose second-moment matrix
    :math:`\frac1N X^TX` is exactly :math:`V\operatorname{diag}(\lambda)V^T`, with
    :math:`\lambda` = :func:`pca_spectrum` and a random orthogonal :math:`V`:
    :math:`X = \sqrt N\, Q \operatorname{diag}(\sqrt\lambda) V^T` with :math:`Q` the
    orthonormal factor of an :math:`N\times d` Gaussian matrix (seeded). Needs
    ``num_samples >= dim``."""
    _check_sizes("pca_data", num_samples, dim, rank)
    if num_samples < dim:
        raise ValueError(
            f"pca_data: num_samples must be >= dim for an exact spectrum, got {num_samples} < "
            f"{dim}"
        )
    spectrum = pca_spectrum(dim, rank, eigengap)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((num_samples, dim)))
    v, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    x = np.sqrt(num_samples) * (q * np.sqrt(spectrum)) @ v.T
    return torch.as_tensor(x, device=device).to(dtype)


def _second_moment_eigh(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors of :math:`X^TX/N`, in float64."""
    x = data.to(torch.float64)
    values, vectors = torch.linalg.eigh(x.T @ x / x.shape[0])
    return values.flip(0), vectors.flip(1)


def _as_matrix(data: Any, owner: str) -> torch.Tensor:
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor) or data.ndim != 2 or not data.is_floating_point():
        raise ValueError(
            f"{owner}: data must be a floating (N, d) tensor or numpy array, got "
            f"{getattr(data, 'dtype', type(data).__name__)} of shape "
            f"{tuple(getattr(data, 'shape', ()))}"
        )
    return data


def _pca_cost(U: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return -(batch @ U).square().sum() / batch.shape[0]


def _pca_gradient(U: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    return (-2.0 / batch.shape[0]) * (batch.T @ (batch @ U))


def pca_problem(data: Any, rank: int, *, eval_batch_size: int | None = None) -> FiniteSumProblem:
    r"""The PCA problem :math:`\min_{U\in\mathrm{Gr}(d,r)} -\frac1N\sum_i\|U^Tx_i\|^2` on the
    rows of ``data`` (an ``(N, d)`` tensor on any device, or a numpy array), as a
    :class:`FiniteSumProblem` on ``Grassmann(d, rank)`` with the closed-form batch gradient and
    ``optimal_cost`` :math:`-\sum_{i\le r}\lambda_i` (computed in float64)."""
    data = _as_matrix(data, "pca_problem")
    _check_sizes("pca_problem", int(data.shape[0]), int(data.shape[1]), rank)
    values, _ = _second_moment_eigh(data)
    return FiniteSumProblem(
        Grassmann(int(data.shape[1]), rank),
        _pca_cost,
        data,
        euclidean_gradient=_pca_gradient,
        eval_batch_size=eval_batch_size,
        optimal_cost=-float(values[:rank].sum()),
    )


def pca_solution(data: Any, rank: int) -> torch.Tensor:
    """The top ``rank`` eigenvectors of :math:`X^TX/N` (a ``(d, rank)`` float64 tensor on the
    data's device): a minimiser of :func:`pca_problem`."""
    data = _as_matrix(data, "pca_solution")
    _check_sizes("pca_solution", int(data.shape[0]), int(data.shape[1]), rank)
    return _second_moment_eigh(data)[1][:, :rank]
