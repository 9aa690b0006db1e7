"""The networks, in plain ``torch.nn``: the paper's ArchBN (MLP) and ConvArchBN, SegNet and
SegNet-Basic, and their initialisation (:func:`unit_normal_`). Nothing else from riemann_dnn."""

from .archbn import ArchBN, ConvArchBN, unit_normal_
from .segnet import SegNet, SegNetBasic

__all__ = ["ArchBN", "ConvArchBN", "SegNet", "SegNetBasic", "unit_normal_"]
