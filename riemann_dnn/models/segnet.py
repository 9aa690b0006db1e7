r"""SegNet and SegNet-Basic: convolutional encoder-decoders for pixel-wise labelling (§5).

Both follow Badrinarayanan, Handa & Cipolla (2015): every encoder stage ends in a 2x2 max-pool
that keeps the *indices* of its maxima, and the mirrored decoder stage starts with max-unpooling
that puts each value back at the position those indices name (zeros elsewhere):

.. math::

    (y, i) = \operatorname{maxpool}_{2\times2}(x), \qquad
    u = \operatorname{unpool}(y', i): \; u_{i_k} = y'_k, \text{ 0 elsewhere.}

Every convolution whose output goes straight into a BatchNorm is built **without a bias** (BN's
shift makes it redundant) and is therefore invariant to rescaling each of its filters by a
positive number; :func:`riemann_dnn.params.param_groups` puts exactly those weights on the
oblique manifold (one unit-norm row per output channel, ``Oblique(out, in*k*k, unit="rows")``).
Only the final classifier (a convolution with a bias, not followed by BN) stays Euclidean.

Both models trace with ``torch.fx`` (pooling and unpooling are leaf functions), so
``param_groups(model)`` works without an example input.

Example::

    model = SegNetBasic(num_classes=11, in_channels=1, width=16)
    logits = model(images)                       # (N, 1, H, W) -> (N, 11, H, W)
    groups = riemann_dnn.params.param_groups(model)  # 8 BN-fed convs -> oblique
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .archbn import unit_normal_

__all__ = ["SegNet", "SegNetBasic", "VGG16_STAGES", "max_pool_with_indices", "max_unpool"]

VGG16_STAGES: tuple[int, ...] = (2, 2, 3, 3, 3)
"""Convolutions per encoder stage of VGG16 (13 in all), the encoder of SegNet."""

_VGG16_MULTIPLIERS = (1, 2, 4, 8, 8)  # channels of stage s = width * multiplier (64 ... 512)


def max_pool_with_indices(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """2x2 max-pool, stride 2: ``(pooled, indices)``; indices are flat positions in each
    ``(H, W)`` plane of ``x`` (as :func:`torch.nn.functional.max_pool2d` returns them)."""
    return F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)


def max_unpool(x: torch.Tensor, indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Max-unpooling: a zero tensor shaped like the pre-pool tensor ``like`` (same N, H, W; the
    channels of ``x``), with ``x``'s values written at ``indices`` (odd sizes are restored)."""
    return F.max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=like.shape[-2:])


# Leaf functions for torch.fx, so that symbolic tracing records them as single calls.
torch.fx.wrap("max_pool_with_indices")
torch.fx.wrap("max_unpool")


def _conv_bn(c_in: int, c_out: int, kernel: int, relu: bool) -> nn.Sequential:
    """Bias-free ``kernel x kernel`` convolution (same padding) -> BatchNorm2d [-> ReLU]."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


def _check_positive_int(owner: str, name: str, value: object, hint: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be an int >= 1; got {value!r} ({hint})")
    return value


def _initialise(model: nn.Module, init: str, generator: torch.Generator | None) -> None:
    if init == "unit":
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                unit_normal_(module.weight, generator)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    elif init != "pytorch":
        raise ValueError(
            f"{type(model).__name__}: init must be 'unit' (unit-normalised Gaussian filters, "
            f"the paper's) or 'pytorch' (PyTorch's default); got {init!r}"
        )


def _encode_decode(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The SegNet pattern: encoder stages each followed by a 2x2 max-pool that keeps its
    indices; decoder stages each preceded by max-unpooling with the mirrored encoder's
    indices; then the classifier."""
    skips = []
    for stage in model.encoder:
        x = stage(x)
        pooled = max_pool_with_indices(x)
        skips.append((pooled[1], x))
        x = pooled[0]
    for stage, (indices, like) in zip(model.decoder, reversed(skips)):
        x = stage(max_unpool(x, indices, like))
    return model.classifier(x)


class SegNet(nn.Module):
    """SegNet: a VGG16-BN encoder (13 conv 3x3 + BN + ReLU in 5 stages of 2, 2, 3, 3, 3) with
    2x2 max-pooling that keeps indices, and the mirrored decoder.

    Encoder stage ``s`` (``s = 1..depth``) has ``stage_convs[s-1]`` convolutions with
    ``width * (1, 2, 4, 8, 8)[s-1]`` output channels (64, 128, 256, 512, 512 for ``width=64``)
    followed by a pool. Decoder stage ``s`` (deepest first) unpools with the indices of encoder
    stage ``s`` and applies as many conv + BN + ReLU, the last of which maps to the channels
    of stage ``s-1`` (stage 1 keeps ``width``). A ``classifier_kernel`` convolution with a bias
    maps ``width`` channels to ``num_classes`` logits. With the defaults there are 26 BN-fed
    convolutions (13 + 13) and the classifier.

    Args:
        num_classes: K, the number of output channels (logits).
        in_channels: image channels (3 for RGB, 1 for digit scenes).
        width: channels of the first stage (64 in SegNet).
        depth: number of stages, 1-5 (the first ``depth`` stages of VGG16).
        kernel: convolution size of the encoder and decoder (3).
        classifier_kernel: 1 or 3.
        init: ``"unit"``: every conv filter a unit-normalised standard Gaussian (the paper's
            initialisation, for both UN and B-SGD), biases zero; ``"pytorch"``: PyTorch's default.
        generator: for a reproducible ``"unit"`` initialisation.
        stage_convs: convolutions per stage (default VGG16's (2, 2, 3, 3, 3)).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        depth: int = 5,
        *,
        kernel: int = 3,
        classifier_kernel: Literal[1, 3] = 3,
        init: Literal["unit", "pytorch"] = "unit",
        generator: torch.Generator | None = None,
        stage_convs: Sequence[int] = VGG16_STAGES,
    ):
        super().__init__()
        owner = "SegNet"
        _check_positive_int(owner, "num_classes", num_classes, "the number of classes")
        _check_positive_int(owner, "in_channels", in_channels, "3 for RGB images")
        _check_positive_int(owner, "width", width, "64 in SegNet; 8-16 trains on a CPU")
        stage_convs = tuple(stage_convs)
        if not stage_convs or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in stage_convs
        ):
            raise ValueError(
                f"SegNet: stage_convs must be positive ints, one per stage; got {stage_convs!r}"
            )
        max_depth = min(len(stage_convs), len(_VGG16_MULTIPLIERS))
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= max_depth:
            raise ValueError(
                f"SegNet: depth must be an int in [1, {max_depth}] (stages of VGG16); "
                f"got {depth!r}"
            )
        if kernel not in (1, 3, 5, 7) or classifier_kernel not in (1, 3):
            raise ValueError(
                f"SegNet: kernel must be odd in 1-7 and classifier_kernel 1 or 3; got "
                f"kernel={kernel!r}, classifier_kernel={classifier_kernel!r}"
            )
        self.num_classes, self.depth, self.width = num_classes, depth, width
        counts = stage_convs[:depth]
        channels = [width * m for m in _VGG16_MULTIPLIERS[:depth]]

        encoder = []
        c_in = in_channels
        for n, c in zip(counts, channels):
            encoder.append(
                nn.Sequential(
                    *(_conv_bn(c_in if j == 0 else c, c, kernel, relu=True) for j in range(n))
                )
            )
            c_in = c
        decoder = []
        for s in reversed(range(depth)):
            c, c_next = channels[s], channels[s - 1] if s > 0 else channels[0]
            n = counts[s]
            decoder.append(
                nn.Sequential(
                    *(_conv_bn(c, c if j < n - 1 else c_next, kernel, relu=True) for j in range(n))
                )
            )
        self.encoder = nn.ModuleList(encoder)
        self.decoder = nn.ModuleList(decoder)
        self.classifier = nn.Conv2d(
            channels[0], num_classes, classifier_kernel, padding=classifier_kernel // 2
        )
        _initialise(self, init, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W); any H, W >= 2**depth."""
        return _encode_decode(self, x)


class SegNetBasic(nn.Module):
    """SegNet-Basic: local response normalisation of the input, ``stages`` encoder stages of
    conv ``kernel x kernel`` + BN + ReLU + 2x2 max-pool (keeping indices), ``stages`` decoder
    stages of unpool + conv + BN (no ReLU), and a 1x1 classifier (with a bias).

    All convolutions have ``width`` filters (64 in SegNet-Basic) and, except the classifier,
    no bias: the ``2 * stages`` of them that feed a BatchNorm are scale-invariant.

    Args:
        num_classes: K, the number of output channels (logits).
        in_channels: image channels (3 for RGB, 1 for digit scenes).
        width: filters per convolution.
        stages: encoder (and decoder) stages; input sides should be >= 2**stages.
        kernel: odd convolution size (7).
        lrn: local response normalisation of the input across channels (size 5,
            alpha 1e-4, beta 0.75, k 1, as in SegNet-Basic); ``False`` to leave it out.
        init, generator: as in :class:`SegNet`.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        stages: int = 4,
        kernel: int = 7,
        *,
        lrn: bool = True,
        init: Literal["unit", "pytorch"] = "unit",
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        owner = "SegNetBasic"
        _check_positive_int(owner, "num_classes", num_classes, "the number of classes")
        _check_positive_int(owner, "in_channels", in_channels, "3 for RGB images")
        _check_positive_int(owner, "width", width, "64 in SegNet-Basic; 16 trains on a CPU")
        _check_positive_int(owner, "stages", stages, "4 in SegNet-Basic")
        if (
            isinstance(kernel, bool)
            or not isinstance(kernel, int)
            or kernel < 1
            or kernel % 2 == 0
        ):
            raise ValueError(f"SegNetBasic: kernel must be an odd int >= 1 (7); got {kernel!r}")
        self.num_classes, self.stages, self.width = num_classes, stages, width
        self.norm = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0) if lrn else nn.Identity()
        self.encoder = nn.ModuleList(
            _conv_bn(in_channels if s == 0 else width, width, kernel, relu=True)
            for s in range(stages)
        )
        self.decoder = nn.ModuleList(
            _conv_bn(width, width, kernel, relu=False) for _ in range(stages)
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)
        _initialise(self, init, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, K, H, W) for images (N, C, H, W)."""
        x = self.norm(x)
        return _encode_decode(self, x)
