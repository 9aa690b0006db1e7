"""The one registry of training methods: every experiment, CLI choice, report label and plot
colour reads :data:`METHODS`.

A method says how the BN-fed filters are treated (on the oblique manifold or Euclidean, with
a per-filter rate, weight decay or a rate of their own) and how the network is initialised.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Method",
    "METHODS",
    "TABLE2_METHODS",
    "SEGMENTATION_METHOD_NAMES",
    "method_colour",
]


@dataclass(frozen=True)
class Method:
    """A training method of Table 2 or of the study (:mod:`.study`)."""

    name: str
    label: str
    init: str  # "unit" or "pytorch"
    constrained: bool  # filters on a manifold (UN) or Euclidean
    filter_rate: str | None = None  # RiemannianSGD's per-filter rate of Euclidean filters
    weight_decay: bool = False  # weight decay on the filters, selected from the grid
    split_rates: bool = False  # filters and other parameters with separately selected rates
    colour: str = "C7"  # matplotlib colour of the method in every plot


METHODS = {
    "un": Method("un", "UN", "unit", True, colour="C0"),
    "bsgd": Method("bsgd", "B-SGD", "unit", False, colour="C1"),
    "sgd": Method("sgd", "SGD (PyTorch init)", "pytorch", False, colour="C2"),
    "bsgd-elr": Method(
        "bsgd-elr", "B-SGD, filter rate λ‖w‖²", "unit", False, filter_rate="norm2", colour="C3"
    ),
    "bsgd-wd": Method(
        "bsgd-wd", "B-SGD + weight decay", "unit", False, weight_decay=True, colour="C4"
    ),
    "un-split": Method("un-split", "UN, split rates", "unit", True, split_rates=True, colour="C5"),
}

#: The methods of the paper's Table 2 (the other ones are the study's controls).
TABLE2_METHODS = ("un", "bsgd", "sgd")

#: The methods segmentation trains (SegNet's filters on the oblique manifold, or not).
SEGMENTATION_METHOD_NAMES = ("un", "bsgd")


def _known(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def method_colour(name: str) -> str:
    """The plot colour of method ``name``."""
    return _known(name).colour
