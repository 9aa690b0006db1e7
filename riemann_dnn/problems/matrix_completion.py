r"""Low-rank matrix completion on the Grassmann manifold, as a finite sum over the samples
(Boumal & Absil's RTRMC formulation; the stochastic benchmark of Kasai, Sato & Mishra 2018).

The rows :math:`x_i \in \mathbb{R}^d` of a rank-:math:`r` matrix are seen on the entries
:math:`\Omega_i` only. A subspace :math:`U \in \mathrm{Gr}(d, r)` explains row :math:`i` by
its best fit on those entries:

.. math::

    f(U) = \frac1N\sum_{i=1}^N \min_{w\in\mathbb{R}^r} \|P_{\Omega_i}(Uw - x_i)\|^2,
    \qquad w_i(U) = (U^T D_i U)^{-1} U^T D_i x_i,\quad D_i = \operatorname{diag}(1_{\Omega_i}),

and by the envelope theorem :math:`\nabla f_B(U) = \frac{2}{|B|}\sum_{i\in B}
P_{\Omega_i}(Uw_i - x_i)\, w_i^T`. Without noise the true row space reaches the known
optimum :math:`f^\star = 0`. The test error is the RMSE of :math:`Uw_i` on held-out entries.

Example::

    data = matrix_completion_data(5000, 100, 5, seed=0)   # MatrixCompletionData
    problem = matrix_completion_problem(data)             # FiniteSumProblem on Gr(100, 5)
    matrix_completion_rmse(U, data)                       # test RMSE of the subspace U
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..manifolds import Grassmann
from .finite_sum import FiniteSumProblem

__all__ = [
    "MatrixCompletionData",
    "matrix_completion_data",
    "matrix_completion_problem",
    "matrix_completion_rmse",
]


@dataclass(frozen=True)
class MatrixCompletionData:
    """Observed entries of an ``(N, d)`` rank-``r`` matrix, one row per sample.

    Attributes:
        values, mask: the training entries (``values`` is 0 where ``mask`` is 0).
        test_values, test_mask: held-out entries, disjoint from the training ones.
        subspace: an orthonormal basis ``(d, r)`` of the true row space.
        noise: the standard deviation of the Gaussian noise added to every entry.
    """

    values: torch.Tensor
    mask: torch.Tensor
    test_values: torch.Tensor
    test_mask: torch.Tensor
    subspace: torch.Tensor
    noise: float

    @property
    def rank(self) -> int:
        return int(self.subspace.shape[1])


def matrix_completion_data(
    num_samples: int,
    dim: int,
    rank: int,
    *,
    oversampling: float = 4.0,
    test_entries: int = 10,
    condition_number: float = 1.0,
    noise: float = 0.0,
    seed: int = 0,
    device: Any = None,
    dtype: torch.dtype = torch.float64,
) -> MatrixCompletionData:
    r"""A random rank-``rank`` matrix :math:`X = GS H^T` (:math:`G` Gaussian ``(N, r)``,
    :math:`H` a random orthonormal ``(d, r)``, singular scales :math:`S` spaced
    geometrically from 1 to ``1/condition_number``), of which each row shows
    :math:`k = \max(r + 1, \lceil \mathrm{OS}\cdot r(d + N - r)/N\rceil)` random entries
    for training (``oversampling`` OS: observed entries per degree of freedom of a rank-r
    matrix, as in Kasai et al.) and ``test_entries`` others for testing; ``noise`` adds
    :math:`\mathcal{N}(0, \sigma^2)` to every entry. Seeded, deterministic."""
    for name, value, low in (("num_samples", num_samples, 1), ("dim", dim, 2), ("rank", rank, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"matrix_completion_data: {name} must be an int >= {low}")
    if not oversampling > 0 or not condition_number >= 1 or not noise >= 0:
        raise ValueError(
            "matrix_completion_data: need oversampling > 0, condition_number >= 1, noise >= 0; "
            f"got {oversampling!r}, {condition_number!r}, {noise!r}"
        )
    observed = max(
        rank + 1, int(np.ceil(oversampling * rank * (dim + num_samples - rank) / num_samples))
    )
    if observed + test_entries > dim:
        raise ValueError(
            f"matrix_completion_data: {observed} training + {test_entries} test entries per row "
            f"exceed dim={dim}; lower oversampling or test_entries, or raise dim"
        )
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)))
    scales = np.geomspace(1.0, 1.0 / condition_number, rank)
    full = (rng.standard_normal((num_samples, rank)) * scales) @ basis.T
    full = full + noise * rng.standard_normal(full.shape)
    order = np.argsort(rng.random((num_samples, dim)), axis=1)
    mask = np.zeros((num_samples, dim))
    test_mask = np.zeros((num_samples, dim))
    rows = np.arange(num_samples)[:, None]
    mask[rows, order[:, :observed]] = 1.0
    test_mask[rows, order[:, observed : observed + test_entries]] = 1.0

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=device).to(dtype)

    return MatrixCompletionData(
        tensor(full * mask),
        tensor(mask),
        tensor(full * test_mask),
        tensor(test_mask),
        tensor(basis),
        float(noise),
    )


def _fit(U: torch.Tensor, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""The least-squares weights :math:`w_i = (U^TD_iU)^{-1}U^TD_ix_i`, one row per sample."""
    gram = torch.einsum("dr,bd,ds->brs", U, mask, U)
    return torch.linalg.solve(gram, (mask * values) @ U)


def _residual(U: torch.Tensor, batch: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    values, mask = batch
    weights = _fit(U, values, mask)
    return mask * (weights @ U.T - values), weights


def _completion_cost(U: torch.Tensor, batch: tuple) -> torch.Tensor:
    residual, _ = _residual(U, batch)
    return residual.square().sum() / residual.shape[0]


def _completion_gradient(U: torch.Tensor, batch: tuple) -> torch.Tensor:
    residual, weights = _residual(U, batch)
    return (2.0 / residual.shape[0]) * (residual.T @ weights)


def matrix_completion_problem(
    data: MatrixCompletionData, *, eval_batch_size: int | None = None
) -> FiniteSumProblem:
    """The completion problem of ``data`` as a :class:`FiniteSumProblem` on
    ``Grassmann(d, r)`` (samples: the rows' training entries), with the envelope gradient and
    ``optimal_cost`` 0 when ``data.noise == 0`` (else unknown, ``None``)."""
    if not isinstance(data, MatrixCompletionData):
        raise TypeError(
            f"matrix_completion_problem: data must be a MatrixCompletionData (from "
            f"matrix_completion_data), got {type(data).__name__}"
        )
    return FiniteSumProblem(
        Grassmann(int(data.values.shape[1]), data.rank),
        _completion_cost,
        (data.values, data.mask),
        euclidean_gradient=_completion_gradient,
        eval_batch_size=eval_batch_size,
        optimal_cost=0.0 if data.noise == 0 else None,
    )


def matrix_completion_rmse(
    point: Any, data: MatrixCompletionData, *, split: str = "test"
) -> float:
    r"""The root mean squared error of :math:`Uw_i(U)` (weights fitted on the training
    entries) on the ``"test"`` (default) or ``"train"`` entries of ``data``."""
    if split not in ("test", "train"):
        raise ValueError(f"matrix_completion_rmse: split must be 'test' or 'train', got {split!r}")
    U = torch.as_tensor(point, device=data.values.device, dtype=data.values.dtype)
    weights = _fit(U, data.values, data.mask)
    values, mask = (
        (data.test_values, data.test_mask) if split == "test" else (data.values, data.mask)
    )
    error = mask * (weights @ U.T - values)
    return float(torch.sqrt(error.square().sum() / mask.sum()))
