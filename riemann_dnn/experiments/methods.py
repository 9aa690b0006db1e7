"""The one registry of training methods: every experiment, CLI choice, report label and plot
colour reads :data:`METHODS`.

A method says how the BN-fed filters are treated (on the oblique manifold or Euclidean, with
a per-filter rate, weight decay or a rate of their own), how the network is initialised, and
which optimizer steps it (:data:`OPTIMIZERS`; the ensemble constructs it,
:class:`~.ensemble.Ensemble`). Each method belongs to one arm of the study (:data:`ARMS`,
``reproduce study --optimizers``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Method",
    "METHODS",
    "OPTIMIZERS",
    "ARMS",
    "ADAPTIVE_WEIGHT_DECAYS",
    "TABLE2_METHODS",
    "SEGMENTATION_METHOD_NAMES",
    "method_colour",
]


#: What steps a method, constructed by :class:`~.ensemble.Ensemble`: ``"sgd"``
#: (:class:`~riemann_dnn.optim.RiemannianSGD`, with the method's momentum), ``"adam"``
#: (:class:`~riemann_dnn.optim.RiemannianAdam`), and, per copy through
#: :class:`~.per_copy.PerCopy`, ``"adamw"`` (``torch.optim.AdamW``), ``"sgdp"`` and
#: ``"adamp"`` (Heo et al., ICLR 2021: the ``adamp`` package, the ``study`` extra).
OPTIMIZERS = ("sgd", "adam", "adamw", "sgdp", "adamp")

#: The decoupled weight decays ω the AdamW-type methods select jointly with the rate (the
#: step shrinks the filters by a factor 1 - λω; with Adam's rates λ ≈ 1e-3 and a few
#: thousand steps, ω = 0.01 barely acts and ω = 1 halves the norms within a few hundred).
ADAPTIVE_WEIGHT_DECAYS = (1e-2, 1e-1, 1.0)


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
    optimizer: str = "sgd"  # a name of OPTIMIZERS
    momentum: float = 0.0  # of "sgd" and "sgdp"
    # the rate grid is the protocol's times lr_scale (Adam's rates are ~100x smaller than
    # SGD's, momentum 0.9 multiplies the effective rate by 10)
    lr_scale: float = 1.0
    # the weight-decay grid (None: the protocol's); weight decay is the L2 penalty with
    # "sgd" and the optimizer's decoupled decay with "adamw" and "adamp"
    weight_decays: tuple[float, ...] | None = None
    arm: str = "sgd"  # the study's arm (ARMS)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Method {self.name}: optimizer must be one of {OPTIMIZERS}")


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
    # the momentum arm: momentum 0.9 everywhere
    "un-mom": Method(
        "un-mom",
        "UN, momentum 0.9",
        "unit",
        True,
        colour="C6",
        momentum=0.9,
        lr_scale=0.1,
        arm="momentum",
    ),
    "bsgd-mom": Method(
        "bsgd-mom",
        "B-SGD, momentum 0.9",
        "unit",
        False,
        colour="C8",
        momentum=0.9,
        lr_scale=0.1,
        arm="momentum",
    ),
    "sgdp": Method(
        "sgdp",
        "SGDP, momentum 0.9",
        "unit",
        False,
        colour="C9",
        optimizer="sgdp",
        momentum=0.9,
        lr_scale=0.1,
        arm="momentum",
    ),
    # the adaptive arm
    "radam": Method(
        "radam",
        "UN, Riemannian Adam",
        "unit",
        True,
        colour="tab:brown",
        optimizer="adam",
        # 10x Adam's: on the protocol's grid x 0.01, extended twice, 7 of 10 MLP depth-4 runs
        # chose the top rate 10^-1 on selection-validation error (docs/study.md)
        lr_scale=0.1,
        arm="adam",
    ),
    "adam": Method(
        "adam",
        "Adam",
        "unit",
        False,
        colour="tab:olive",
        optimizer="adam",
        lr_scale=0.01,
        arm="adam",
    ),
    "adamw": Method(
        "adamw",
        "AdamW",
        "unit",
        False,
        colour="navy",
        optimizer="adamw",
        lr_scale=0.01,
        weight_decay=True,
        weight_decays=ADAPTIVE_WEIGHT_DECAYS,
        arm="adam",
    ),
    "adamp": Method(
        "adamp",
        "AdamP",
        "unit",
        False,
        colour="maroon",
        optimizer="adamp",
        lr_scale=0.01,
        weight_decay=True,
        weight_decays=ADAPTIVE_WEIGHT_DECAYS,
        arm="adam",
    ),
}

#: The study's arms (``--optimizers``): each arm's methods, the first the one every other
#: method of the arm is compared with.
ARMS = {
    "sgd": ("un", "bsgd", "bsgd-elr", "bsgd-wd", "un-split", "sgd"),
    "momentum": ("un-mom", "bsgd-mom", "sgdp"),
    "adam": ("radam", "adam", "adamw", "adamp"),
}

#: The methods of the paper's Table 2 (the other ones are the study's controls).
TABLE2_METHODS = ("un", "bsgd", "sgd")

#: The methods segmentation trains (SegNet's filters on the oblique manifold, or not; with
#: SGD or SGDP at the run's own momentum, or an Adam).
SEGMENTATION_METHOD_NAMES = (
    "un",
    "bsgd",
    "un-mom",
    "bsgd-mom",
    "sgdp",
    "radam",
    "adam",
    "adamw",
    "adamp",
)


def _known(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name]


def method_colour(name: str) -> str:
    """The plot colour of method ``name``."""
    return _known(name).colour
