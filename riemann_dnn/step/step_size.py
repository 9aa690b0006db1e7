r"""Learning-rate rules shared by the torch optimizer and the pymanopt solver.

Per-iteration rules (Manopt's ``stochasticgradient`` names), :math:`k = 0, 1, \dots`:

- ``fixed``: :math:`\lambda_k = \lambda_0`
- ``decay``: :math:`\lambda_k = \lambda_0 / (1 + \lambda_0 \gamma k)`
- ``hybrid``: ``decay`` for the first :math:`K` iterations, then constant
  :math:`\lambda_0 / (1 + \lambda_0 \gamma K)`

Per-epoch rule, the **bold driver** (Hinton's lecture notes): after an epoch whose loss fell,
:math:`\lambda \leftarrow 1.05\,\lambda`; after one whose loss rose,
:math:`\lambda \leftarrow 0.5\,\lambda` and that epoch's weights are undone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "StepSizeRule",
    "FixedStepSize",
    "DecayStepSize",
    "HybridStepSize",
    "make_step_size",
]


def _check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = is_number and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


@dataclass(frozen=True)
class StepSizeRule:
    """Base of the per-iteration rules: ``rule(k)`` is the step size at iteration ``k``."""

    initial: float

    def __post_init__(self):
        _check_positive("initial step size", self.initial)

    def __call__(self, iteration: int) -> float:
        return self.initial


@dataclass(frozen=True)
class FixedStepSize(StepSizeRule):
    r""":math:`\lambda_k = \lambda_0`."""


@dataclass(frozen=True)
class DecayStepSize(StepSizeRule):
    r""":math:`\lambda_k = \lambda_0 / (1 + \lambda_0 \gamma k)` with ``decay`` :math:`=\gamma`."""

    decay: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        _check_positive("decay", self.decay, allow_zero=True)

    def __call__(self, iteration: int) -> float:
        return self.initial / (1 + self.initial * self.decay * iteration)


@dataclass(frozen=True)
class HybridStepSize(DecayStepSize):
    r"""``decay`` for ``decay_steps`` iterations, then constant
    :math:`\lambda_0 / (1 + \lambda_0 \gamma K)`."""

    decay_steps: int = 1000

    def __post_init__(self):
        super().__post_init__()
        if not (isinstance(self.decay_steps, int) and self.decay_steps >= 0):
            raise ValueError(f"decay_steps must be an int >= 0, got {self.decay_steps!r}")

    def __call__(self, iteration: int) -> float:
        return super().__call__(min(iteration, self.decay_steps))


def make_step_size(
    kind: Literal["fixed", "decay", "hybrid"] | StepSizeRule,
    initial: float,
    *,
    decay: float = 0.1,
    decay_steps: int = 1000,
) -> StepSizeRule:
    """A per-iteration rule by name (``"fixed"``, ``"decay"``, ``"hybrid"``)."""
    if isinstance(kind, StepSizeRule):
        return kind
    if kind == "fixed":
        return FixedStepSize(initial)
    if kind == "decay":
        return DecayStepSize(initial, decay)
    if kind == "hybrid":
        return HybridStepSize(initial, decay, decay_steps)
    raise ValueError(
        f"unknown step-size rule {kind!r}; choose 'fixed', 'decay', 'hybrid' or 'bold_driver'"
    )
