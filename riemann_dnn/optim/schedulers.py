"""Learning-rate schedules for torch optimizers, built on the shared rules of
:mod:`riemann_dnn.step.step_size`."""

from __future__ import annotations

import copy
import math
from typing import Any, Protocol

import torch
from torch.optim import Optimizer

from ..step import StepSizeRule

__all__ = ["BoldDriver", "StepSizeScheduler", "Stateful"]


class StepSizeScheduler:
    """Sets every group's ``lr`` to ``rule(k)`` at iteration ``k`` (call :meth:`step` after
    each ``optimizer.step()``), for the per-iteration rules ``fixed``/``decay``/``hybrid``.
    Groups keep their ratio to the first group's initial rate."""

    def __init__(self, optimizer: Optimizer, rule: StepSizeRule):
        self.optimizer, self.rule, self.iteration = optimizer, rule, 0
        self._ratios = [
            g["lr"] / optimizer.param_groups[0]["lr"] if optimizer.param_groups[0]["lr"] else 1.0
            for g in optimizer.param_groups
        ]
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


class Stateful(Protocol):
    """What the bold driver snapshots and restores: ``state_dict``/``load_state_dict``
    (an ``nn.Module``, an optimizer, or any holder of tensors)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


class BoldDriver:
    r"""The bold driver as a torch LR scheduler: call ``step(loss)`` after each epoch.

    If the epoch's loss did not rise (:math:`L \le L_{best}`), the learning rate of every
    group is multiplied by ``increase`` (1.05) and the model and optimizer are snapshotted.
    If it rose (or is not finite), the rate is multiplied by ``decrease`` (0.5) and the
    model (parameters and buffers, e.g. BatchNorm statistics) and the optimizer (momentum)
    are restored to the last snapshot -- the epoch is undone. ``step`` returns whether the
    epoch was accepted.

    With ``copies`` (stacked copies, e.g. a :class:`~riemann_dnn.optim.RiemannianSGD`
    group with ``"copies"``, whose ``lr`` is then a tensor of one rate per copy), ``loss``
    holds one loss per copy and every copy is driven on its own: ``step`` returns a bool
    tensor, and only the rejected copies (the leading index of every stacked tensor) are
    restored. Without an optimizer (``optimizer=None``, e.g. pymanopt's side), give ``lr``
    and read the rate from :attr:`lr`.

    Example::

        driver = BoldDriver(optimizer, model)
        for epoch in range(epochs):
            train_one_epoch(model, optimizer)
            accepted = driver.step(training_loss(model))
    """

    def __init__(
        self,
        optimizer: Optimizer | None,
        model: Stateful | None = None,
        *,
        lr: float | torch.Tensor | None = None,
        increase: float = 1.05,
        decrease: float = 0.5,
        initial_loss: float | torch.Tensor | None = None,
        copies: int | None = None,
    ):
        _check_factor("increase", increase, high=math.inf)
        _check_factor("decrease", decrease, high=1.0)
        self.optimizer, self.increase, self.decrease, self.copies = (
            optimizer,
            increase,
            decrease,
            copies,
        )
        self._states: list[Stateful] = [s for s in (model, optimizer) if s is not None]
        if lr is None:
            if optimizer is None:
                raise ValueError("BoldDriver: give an optimizer or an initial lr")
            lr = optimizer.param_groups[0]["lr"]
        shape = () if copies is None else (copies,)
        self.rates = _float64(lr).expand(shape).clone()
        if not bool((self.rates > 0).all()):
            raise ValueError(f"BoldDriver: lr must be > 0, got {lr!r}")
        self._ratios = [] if optimizer is None else _ratios(optimizer, shape)
        self.best_loss = torch.full(shape, math.inf, dtype=torch.float64)
        if initial_loss is not None:
            self.best_loss = _float64(initial_loss).expand(shape).clone()
        self._snapshot()

    def _snapshot(self) -> None:
        self._saved = [copy.deepcopy(state.state_dict()) for state in self._states]

    def step(self, loss: float | torch.Tensor) -> bool | torch.Tensor:
        """Update the rates after an epoch with (training) ``loss``: accepted epochs are
        kept and snapshotted, rejected ones undone."""
        loss = _float64(loss).expand(self.best_loss.shape)
        accepted = torch.isfinite(loss) & (loss <= self.best_loss)
        self.best_loss = torch.where(accepted, loss, self.best_loss)
        factors = torch.tensor([self.decrease, self.increase], dtype=torch.float64)
        self.rates = self.rates * factors[accepted.long()]
        if not bool(accepted.all()):
            self._restore(~accepted)
        self._apply_rates()
        if bool(accepted.any()):
            self._snapshot_copies(accepted)
        return bool(accepted) if self.copies is None else accepted

    def freeze(self, copies: torch.Tensor) -> None:
        """Set the rate of the copies in the mask ``copies`` to 0 (e.g. finished runs)."""
        self.rates = self.rates.masked_fill(copies.cpu(), 0.0)
        self._apply_rates()

    def _restore(self, rejected: torch.Tensor) -> None:
        for state, saved in zip(self._states, self._saved):
            if self.copies is None:
                # load_state_dict may keep the given tensors (no copy when dtype and device
                # match) and later steps update them in place: hand it a copy, so that the
                # snapshot survives a second rejection in a row
                state.load_state_dict(copy.deepcopy(saved))
            else:
                state.load_state_dict(_merge(state.state_dict(), saved, rejected))

    def _snapshot_copies(self, accepted: torch.Tensor) -> None:
        if self.copies is None or bool(accepted.all()):
            self._snapshot()
            return
        self._saved = [
            _merge(saved, state.state_dict(), accepted)
            for state, saved in zip(self._states, self._saved)
        ]

    def _apply_rates(self) -> None:
        if self.optimizer is None:
            return
        for group, ratio in zip(self.optimizer.param_groups, self._ratios):
            rate = self.rates * ratio
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].copy_(rate.reshape(group["lr"].shape))
            else:
                group["lr"] = float(rate)

    @property
    def lr(self) -> float | torch.Tensor:
        """The rate of the next epoch (of the first group; one per copy with copies)."""
        return float(self.rates) if self.copies is None else self.rates.clone()

    def get_last_lr(self) -> list[float | torch.Tensor]:
        return [g["lr"] for g in self.optimizer.param_groups] if self.optimizer else [self.lr]

    def state_dict(self) -> dict[str, Any]:
        return {
            "rates": self.rates,
            "best_loss": self.best_loss,
            "ratios": self._ratios,
            "saved": self._saved,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rates, self.best_loss = state["rates"].clone(), state["best_loss"].clone()
        self._ratios, self._saved = list(state["ratios"]), state["saved"]


def _ratios(optimizer: Optimizer, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """Each group's rate over the first group's (1 where the first is 0)."""
    first = _float64(optimizer.param_groups[0]["lr"]).expand(shape)
    ratios = []
    for group in optimizer.param_groups:
        lr = _float64(group["lr"]).expand(shape)
        ratios.append(torch.where(first == 0, 1.0, lr / first.masked_fill(first == 0, 1.0)))
    return ratios


def _check_factor(name: str, value: float, *, high: float) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < high):
        bound = "> 0" if high == math.inf else f"in (0, {high:g})"
        raise ValueError(f"BoldDriver: {name} must be {bound}, got {value!r}")


def _float64(value: float | torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    return torch.tensor(float(value), dtype=torch.float64)


def _merge(live: Any, saved: Any, take: torch.Tensor) -> Any:
    """``live`` with the copies ``take`` (a bool mask over the leading axis of stacked
    tensors) taken from ``saved``; a stacked tensor absent from ``saved`` (e.g. momentum
    created after the snapshot) gets zeros there. Other entries are kept from ``live``."""
    if isinstance(live, dict):
        saved = saved if isinstance(saved, dict) else {}
        return {k: _merge(v, saved.get(k), take) for k, v in live.items()}
    if isinstance(live, (list, tuple)) and not isinstance(live, str):
        saved = saved if isinstance(saved, (list, tuple)) else [None] * len(live)
        return type(live)(_merge(v, s, take) for v, s in zip(live, saved))
    if isinstance(live, torch.Tensor) and live.ndim >= 1 and live.shape[0] == take.shape[0]:
        mask = take.to(live.device).view(-1, *([1] * (live.ndim - 1)))
        other = saved if isinstance(saved, torch.Tensor) else torch.zeros_like(live)
        return torch.where(mask, other.to(live.dtype), live)
    return copy.deepcopy(live)
