"""Learning-rate schedules for torch optimizers, built on the shared rules of
:mod:`riemann_dnn.step.step_size`."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from ..step import BoldDriverRule, StepSizeRule

__all__ = ["BoldDriver", "StepSizeScheduler"]


class StepSizeScheduler:
    """Sets every group's ``lr`` to ``rule(k)`` at iteration ``k`` (call :meth:`step` after
    each ``optimizer.step()``), for the per-iteration rules ``fixed``/``decay``/``hybrid``.
    Groups keep their ratio to the first group's initial rate."""

    def __init__(self, optimizer: Optimizer, rule: StepSizeRule):
        self.optimizer, self.rule, self.iteration = optimizer, rule, 0
        self._ratios = [g["lr"] / optimizer.param_groups[0]["lr"] if optimizer.param_groups[0]["lr"]
                        else 1.0 for g in optimizer.param_groups]
        self._apply()

    def _apply(self) -> None:
        lr = self.rule(self.iteration)
        for group, ratio in zip(self.optimizer.param_groups, self._ratios):
            group["lr"] = lr * ratio

    def step(self) -> None:
        self.iteration += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "ratios": self._ratios}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.iteration, self._ratios = state["iteration"], list(state["ratios"])
        self._apply()


class BoldDriver:
    """The bold driver as a torch LR scheduler: call ``step(loss)`` after each epoch.

    If the epoch's loss did not rise, the learning rate of every group is multiplied by
    ``increase`` (1.05) and the model and optimizer are snapshotted. If it rose (or is not
    finite), the rate is multiplied by ``decrease`` (0.5) and the model and optimizer are
    restored to the last snapshot -- the epoch is undone. ``step`` returns whether the
    epoch was accepted.

    Example::

        driver = BoldDriver(optimizer, model)
        for epoch in range(epochs):
            train_one_epoch(model, optimizer)
            accepted = driver.step(training_loss(model))
    """

    def __init__(self, optimizer: Optimizer, model: nn.Module, *, increase: float = 1.05,
                 decrease: float = 0.5, initial_loss: float | None = None):
        self.optimizer, self.model = optimizer, model
        base = optimizer.param_groups[0]["lr"]
        self.rule = BoldDriverRule(base, increase, decrease)
        if initial_loss is not None:
            self.rule.best_loss = float(initial_loss)
        self._ratios = [g["lr"] / base for g in optimizer.param_groups]
        self._snapshot()

    def _snapshot(self) -> None:
        self._model_state = copy.deepcopy(self.model.state_dict())
        self._optimizer_state = copy.deepcopy(self.optimizer.state_dict())

    def step(self, loss: float | torch.Tensor) -> bool:
        accepted = self.rule.after_epoch(float(loss))
        if not accepted:
            self.model.load_state_dict(self._model_state)  # copies into the parameters
            # load_state_dict keeps the given tensors (no copy when dtype and device match)
            # and the next steps update momentum buffers in place: hand it a copy, so the
            # snapshot survives for a second rejection in a row
            self.optimizer.load_state_dict(copy.deepcopy(self._optimizer_state))
        for group, ratio in zip(self.optimizer.param_groups, self._ratios):
            group["lr"] = self.rule.lr * ratio
        if accepted:
            self._snapshot()
        return accepted

    @property
    def lr(self) -> float:
        return self.rule.lr

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"rule": self.rule.state_dict(), "ratios": self._ratios,
                "model": self._model_state, "optimizer": self._optimizer_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rule.load_state_dict(state["rule"])
        self._ratios = list(state["ratios"])
        self._model_state, self._optimizer_state = state["model"], state["optimizer"]
