r"""ArchBN, the paper's batch-normalised MLP (Figure 1; SPEC §4).

Each of ``depth`` layers computes :math:`h = Wx` (no bias: BN's shift makes it redundant),
batch normalisation with trainable scale and shift, ReLU, and max-pooling of width ``pool``
and stride ``pool`` over the feature dimension (64 -> 32 features). A bias-free linear
classifier :math:`\theta \in \mathbb{R}^{K \times 32}` gives the logits of a K-way softmax.

Because each :math:`h` is batch-normalised, the loss is invariant to
:math:`W_k \to \operatorname{Diag}(\alpha) W_k` for any positive :math:`\alpha` (the paper's
eq. (1)); :meth:`ArchBN.scale_invariant_names` lists those weights, which the UN method puts
on ``Oblique(64, n, unit="rows")``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ArchBN", "unit_normal_"]


@torch.no_grad()
def unit_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``weight`` with standard Gaussian rows, each normalised to unit norm (in place)."""
    sample = torch.randn(weight.shape, generator=generator, dtype=torch.float64)
    sample = sample / sample.flatten(1).norm(dim=1).view(-1, *([1] * (weight.ndim - 1)))
    return weight.copy_(sample)


class ArchBN(nn.Module):
    """The paper's ArchBN: ``depth`` x [bias-free Linear -> BatchNorm1d -> ReLU -> max-pool over
    features], then a bias-free linear softmax classifier.

    Args:
        depth: number of layers (the paper uses 2 and 4).
        width: filters per layer (64); must be divisible by ``pool``.
        pool: max-pooling width and stride over features (2).
        in_features: input size (784 for MNIST; images are flattened).
        num_classes: K (10).
        init: ``"unit"`` (the paper: every filter and class vector a unit-normalised
            standard Gaussian) or ``"pytorch"`` (PyTorch's default initialisation).
        generator: for a reproducible ``"unit"`` initialisation.

    Example::

        model = ArchBN(depth=2)
        logits = model(images)               # images: (B, 784) or (B, 1, 28, 28)
    """

    def __init__(
        self,
        depth: int = 2,
        width: int = 64,
        pool: int = 2,
        *,
        in_features: int = 784,
        num_classes: int = 10,
        init: Literal["unit", "pytorch"] = "unit",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not (isinstance(depth, int) and depth >= 1):
            raise ValueError(f"ArchBN: depth must be an int >= 1, got {depth!r}")
        if not (isinstance(pool, int) and pool >= 1 and width % pool == 0):
            raise ValueError(f"ArchBN: width ({width}) must be divisible by pool ({pool})")
        if init not in ("unit", "pytorch"):
            raise ValueError(f"ArchBN: init must be 'unit' or 'pytorch', got {init!r}")
        self.depth, self.width, self.pool = depth, width, pool
        pooled = width // pool
        inputs = [in_features] + [pooled] * (depth - 1)
        self.linears = nn.ModuleList(nn.Linear(n, width, bias=False) for n in inputs)
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in inputs)
        self.classifier = nn.Linear(pooled, num_classes, bias=False)
        if init == "unit":
            for linear in self.linears:
                unit_normal_(linear.weight, generator)
            unit_normal_(self.classifier.weight, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for linear, norm in zip(self.linears, self.norms):
            x = F.relu(norm(linear(x)))
            x = x.view(x.shape[0], -1, self.pool).amax(dim=-1)
        return self.classifier(x)

    @staticmethod
    def scale_invariant_names(depth: int) -> list[str]:
        """Names of the filter weights :math:`W_1..W_{depth}` (those the loss is invariant to
        rescaling row-wise)."""
        return [f"linears.{k}.weight" for k in range(depth)]
