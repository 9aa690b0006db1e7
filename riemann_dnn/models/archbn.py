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

__all__ = ["ArchBN", "ConvArchBN", "unit_normal_"]


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


class ConvArchBN(nn.Module):
    r"""A convolutional ArchBN: ``blocks`` x [bias-free 3x3 conv (padding 1) -> BatchNorm2d ->
    ReLU -> 2x2 max-pool], then a bias-free linear softmax classifier on the flattened maps.

    As in :class:`ArchBN`, every conv output is batch-normalised, so the loss is invariant to
    rescaling each filter (row of the weight viewed as ``(out, -1)``) by a positive number;
    :meth:`scale_invariant_names` lists those weights (UN puts them on the oblique manifold).
    On 28x28 MNIST the maps shrink 28 -> 14 -> 7 (2 blocks) -> 3 -> 1 (4 blocks).

    Args:
        blocks: number of conv blocks (the study uses 2 and 4).
        channels: filters per conv (16).
        image_size: side of the square input images (28); inputs may be flat ``(B, side**2)``.
        in_channels, num_classes, init, generator: as in :class:`ArchBN`.

    Example::

        model = ConvArchBN(blocks=2)
        logits = model(images)               # images: (B, 784) or (B, 1, 28, 28)
    """

    def __init__(
        self,
        blocks: int = 2,
        channels: int = 16,
        *,
        image_size: int = 28,
        in_channels: int = 1,
        num_classes: int = 10,
        init: Literal["unit", "pytorch"] = "unit",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if not (isinstance(blocks, int) and blocks >= 1 and image_size >> blocks >= 1):
            raise ValueError(
                f"ConvArchBN: blocks must be an int >= 1 that leaves at least a "
                f"1x1 map of the {image_size}x{image_size} input, got {blocks!r}"
            )
        if init not in ("unit", "pytorch"):
            raise ValueError(f"ConvArchBN: init must be 'unit' or 'pytorch', got {init!r}")
        self.depth, self.channels, self.image_size = blocks, channels, image_size
        self.in_channels = in_channels
        inputs = [in_channels] + [channels] * (blocks - 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(n, channels, 3, padding=1, bias=False) for n in inputs
        )
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels) for _ in inputs)
        side = image_size
        for _ in range(blocks):
            side //= 2
        self.classifier = nn.Linear(channels * side * side, num_classes, bias=False)
        if init == "unit":
            for conv in self.convs:
                unit_normal_(conv.weight, generator)
            unit_normal_(self.classifier.weight, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.in_channels, self.image_size, self.image_size)
        for conv, norm in zip(self.convs, self.norms):
            x = F.max_pool2d(F.relu(norm(conv(x))), 2)
        return self.classifier(x.flatten(1))

    @staticmethod
    def scale_invariant_names(depth: int) -> list[str]:
        """Names of the BN-fed conv weights of a ``depth``-block net."""
        return [f"convs.{k}.weight" for k in range(depth)]
