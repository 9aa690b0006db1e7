"""What determines a run's numbers, without torch: the protocol's constants
(:class:`Protocol`, the named :data:`PROTOCOLS`, :func:`quick_protocol`) and one run's whole
configuration (:class:`RunConfig`, whose hash names its record).

The training procedure that reads them is :mod:`.protocol`; the CLI takes its defaults from
here, so no default is typed twice. :func:`~.runs.run_configs` builds every
:class:`RunConfig` of a command.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .methods import METHODS

__all__ = [
    "Protocol",
    "HALF_DECADES",
    "PROTOCOLS",
    "quick_protocol",
    "RunConfig",
    "ARCH_NAMES",
    "STUDY_ARCHS",
]

#: The architectures a run can train (:data:`.training.ARCHS` maps them to the models).
ARCH_NAMES = ("mlp", "conv")

#: The architectures of the study (``archs`` of :func:`.study.study_plan`): the two above on
#: MNIST and SegNet-Basic on digit scenes.
STUDY_ARCHS = ("mlp", "conv", "segnet")


@dataclass(frozen=True)
class Protocol:
    """The protocol's constants (defaults: the paper's, batch size 100)."""

    lr_candidates: tuple[float, ...] = (1e-2, 1e-3, 1e-4, 1e-5)
    selection_train: int = 1000
    selection_val: int = 500
    selection_epochs: int = 50
    validation: int | None = None  # None: 10,000, or a sixth of the images if fewer
    min_epochs: int = 25
    max_epochs: int = 60
    batch_size: int = 100
    # the minibatch loss, "sum" or "mean" of per-image losses: the paper does not say; with
    # "sum" and batch 100 its learning-rate grid reproduces its numbers (docs/table2.md)
    loss_reduction: str = "sum"
    increase: float = 1.05
    decrease: float = 0.5
    patience: int = 5
    min_train_error: float = 1e-5
    min_val_change: float = 1e-5
    # extend the rate grid (factor lr_extend_factor, at most lr_extend steps each way) while
    # a run's chosen rate is on its edge; 0: the fixed grid (the paper)
    lr_extend: int = 0
    lr_extend_factor: float = 10**0.5
    # weight-decay grid of methods with weight decay, selected jointly with the rate
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2)
    # stopping rules see accepted epochs only (an undone epoch is no new measurement)
    stop_on_accepted: bool = False
    # images of the full training (None: all not held out for validation)
    train_images: int | None = None
    # before every evaluation, re-estimate BatchNorm's statistics on this many of the run's
    # training images (PreciseBN; restored afterwards, so training is unchanged); 0: the
    # running averages of training (the paper)
    bn_estimate: int = 0

    def __post_init__(self):
        if not self.lr_candidates or any(not lr > 0 for lr in self.lr_candidates):
            raise ValueError(f"lr_candidates must be positive rates, got {self.lr_candidates}")
        if not 1 <= self.min_epochs <= self.max_epochs:
            raise ValueError(
                f"need 1 <= min_epochs <= max_epochs, got {self.min_epochs}, {self.max_epochs}"
            )
        if self.loss_reduction not in ("mean", "sum"):
            raise ValueError(
                f"loss_reduction must be 'mean' or 'sum', got {self.loss_reduction!r}"
            )
        for name in ("selection_train", "selection_val", "selection_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (isinstance(self.lr_extend, int) and self.lr_extend >= 0):
            raise ValueError(f"lr_extend must be an int >= 0, got {self.lr_extend!r}")
        if not self.lr_extend_factor > 1:
            raise ValueError(f"lr_extend_factor must be > 1, got {self.lr_extend_factor!r}")
        if not self.weight_decays or any(not w > 0 for w in self.weight_decays):
            raise ValueError(f"weight_decays must be positive, got {self.weight_decays}")
        if not (isinstance(self.bn_estimate, int) and self.bn_estimate >= 0):
            raise ValueError(f"bn_estimate must be an int >= 0, got {self.bn_estimate!r}")
        if self.train_images is not None and self.train_images < 1:
            raise ValueError(f"train_images must be None or >= 1, got {self.train_images}")

    def validation_size(self, num_images: int) -> int:
        size = self.validation if self.validation is not None else min(10_000, num_images // 6)
        if not 0 < size < num_images:
            raise ValueError(f"validation size {size} does not fit {num_images} training images")
        return size

    def training_sets(self, num_images: int) -> dict[str, int]:
        """The number of images each stage of a run trains on, of ``num_images`` training
        images: ``{"selection_train": ..., "train": ...}`` (the sizes of the subsets
        :mod:`.runs` draws; the rest are held out for validation)."""
        train = num_images - self.validation_size(num_images)
        if self.train_images is not None:
            if self.train_images > train:
                raise ValueError(
                    f"train_images={self.train_images} exceeds the {train} training images "
                    "left after validation"
                )
            train = self.train_images
        selection = max(0, min(self.selection_train, num_images - self.selection_val))
        return {"selection_train": selection, "train": train}


#: The half-decade rate grid of the study's protocol (mean loss): 10^0 ... 10^-2.
HALF_DECADES = tuple(10 ** (-k / 2) for k in range(5))

#: Named protocols: the paper's (its grid with the summed minibatch loss, which reproduces
#: its Table 2; the default of ``reproduce table2``) and the study's (the mean loss, a
#: half-decade grid extended until each run's chosen rate is interior, stopping rules on
#: accepted epochs only, BN statistics re-estimated on 1,000 training images before every
#: evaluation). See docs/table2.md and docs/study.md.
PROTOCOLS = {
    "paper-sum": Protocol(),
    "study": Protocol(
        lr_candidates=HALF_DECADES,
        loss_reduction="mean",
        lr_extend=2,
        stop_on_accepted=True,
        bn_estimate=1000,
    ),
}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's numbers (its JSON record repeats it).

    Besides the protocol, the seed and the method: the data (``data``, where it was read
    from, and ``data_checksum``, :attr:`riemann_dnn.data.MNIST.checksum` of its four files),
    the float ``dtype``, the ``device`` and the torch intra-op ``threads`` of the training
    process (a different thread count can change the last bits of every sum). Their hash,
    :attr:`run_hash`, names the record's file (:func:`run_path`), so runs that differ in any of
    them never share or overwrite a record. ``world_size`` and ``rank`` describe the process
    layout: ``world_size`` is the number of processes that trained this one run (DDP under
    ``torchrun ... train archbn``; 1 for every run of a sweep, whatever the sweep's own world
    size, since each run is trained by one process), ``rank`` the process that trained it;
    the rank does not enter the hash. ``amp`` (``"off"`` or ``"bf16"``, autocast of the
    forward pass) enters the hash when it is not ``"off"`` (records from before the option
    keep their hash). Every run is trained by :func:`~.protocol.train_runs`, as a member of
    an ensemble, data-parallel over ``world_size`` processes when it is > 1 (at world size
    1 nothing distinguishes the two; the ``data_parallel`` field of records from before one
    engine trained both is gone, so no new run shares their hash).

    Build them with :func:`~.runs.run_configs`.
    """

    depth: int
    method: str
    seed: int
    protocol: Protocol = field(default_factory=Protocol)
    constraint: str = "oblique"
    retraction: str | None = None
    width: int = 64
    data: str = ""
    data_checksum: str = ""
    dtype: str = "float32"
    device: str = "cpu"
    threads: int = 1
    world_size: int = 1
    rank: int = 0
    arch: str = "mlp"  # a key of ARCHS; width is the conv's channels for "conv"
    amp: str = "off"

    @property
    def name(self) -> str:
        tag = (
            ""
            if self.constraint == "oblique" and self.retraction is None
            else (f"-{self.constraint}" + (f"-{self.retraction}" if self.retraction else ""))
        )
        arch = "" if self.arch == "mlp" else f"{self.arch}-"
        return (
            f"{arch}depth{self.depth}-{self.method}"
            f"{tag if METHODS[self.method].constrained else ''}-seed{self.seed}"
        )

    @property
    def run_hash(self) -> str:
        """sha256 (hex) of every field that determines the run's numbers (all but ``rank``)."""
        values = self._values()
        values.pop("rank")
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()

    def _values(self) -> dict[str, Any]:
        values = json.loads(json.dumps(asdict(self)))
        if values["amp"] == "off":
            values.pop("amp")
        if not values["protocol"]["bn_estimate"]:  # records from before the option
            values["protocol"].pop("bn_estimate")
        training = _method_training(self.method)
        if training:  # the optimizer a method trains with (the study's arms) enters the hash
            values["method_training"] = training
        return values

    def to_json(self) -> dict[str, Any]:
        """The configuration as plain JSON values (tuples become lists), with its
        :attr:`run_hash` (``amp`` only when set)."""
        return {**self._values(), "run_hash": self.run_hash}


def _method_training(name: str) -> dict[str, Any]:
    """The settings of method ``name`` that set how it trains and are not the defaults of
    :class:`~.methods.Method` (optimizer, momentum, rate scale, weight-decay grid), so that
    a record is not reused for a method whose definition changed; empty for the methods of
    records from before these settings, whose hashes stay as they were."""
    method = METHODS[name]
    defaults = {"optimizer": "sgd", "momentum": 0.0, "lr_scale": 1.0, "weight_decays": None}
    values = {key: getattr(method, key) for key in defaults}
    changed = {k: v for k, v in values.items() if v != defaults[k]}
    return json.loads(json.dumps(changed))


def quick_protocol(**overrides) -> Protocol:
    """A few-minute version of the protocol (the README's main command, smoke tests):
    10 selection epochs, 10 to 15 training epochs."""
    base = Protocol(selection_epochs=10, min_epochs=10, max_epochs=15)
    return replace(base, **overrides)
