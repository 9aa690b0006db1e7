"""A per-parameter torch optimizer (``adamp.AdamP``, ``adamp.SGDP``, ``torch.optim.AdamW``)
on stacked copies, each copy stepped exactly as a model of its own.

Optimizers written for single models read a parameter's leading axis as its channels
(AdamP and SGDP project onto ``p.view(p.size(0), -1)`` and decide per tensor whether it is
scale-invariant), so a stacked tensor ``(copies, out, in)`` would be read wrongly. Here
every copy ``c`` of every stacked tensor ``P`` is an ``nn.Parameter`` of its own that shares
storage with ``P[c]``; before each step its ``.grad`` is set to the view ``P.grad[c]``,
and each (group, copy) is one param group of the wrapped optimizer, holding the copy's
rate (and weight decay, when the group gives one per copy). The steps are the wrapped
optimizer's own code, so each copy moves as that optimizer moves a single model, bit for
bit (``tests/experiments/test_per_copy.py``).

The outward interface is that of the package's optimizers with stacked copies
(:class:`~riemann_dnn.optim.RiemannianOptimizer`): groups with ``"copies"`` and a float64
``lr`` tensor of one rate per copy, state dicts whose tensors carry the copies axis (so
:class:`~riemann_dnn.optim.BoldDriver` undoes single copies and
:func:`~.training.take_copies` selects them), and copies with a non-finite gradient left
untouched (``nonfinite="skip"``). The step count that Adam-type optimizers keep is the
ensemble's, shared by the copies (as ``RiemannianAdam`` keeps it for stacked copies): an
epoch the bold driver undoes restores a copy's moments, not the count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["PerCopy"]


class PerCopy(Optimizer):
    """``optimizer_class`` on every copy of stacked Euclidean parameters.

    Args:
        params: param groups of stacked tensors (a leading axis of ``copies``), e.g.
            :meth:`~riemann_dnn.optim.StackedModules.param_groups` without manifolds. A
            group's ``lr`` is a tensor of one rate per copy; its ``weight_decay`` (if given; else
            the wrapped optimizer's default) a number or a tensor of one value per copy.
        optimizer_class: a ``torch.optim.Optimizer`` that steps each parameter on its own.
        copies: the number of copies.
        **options: the wrapped optimizer's other hyper-parameters (e.g. ``momentum``).
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        optimizer_class: Callable[..., Optimizer],
        copies: int,
        **options: Any,
    ):
        self.copies = copies
        super().__init__(list(params), {"lr": torch.zeros(copies, dtype=torch.float64)})
        inner = []
        for index, group in enumerate(self.param_groups):
            if group.get("manifold", "euclidean") != "euclidean":
                raise ValueError(
                    f"PerCopy: group {index} is on manifold {group['manifold']!r}; "
                    f"{getattr(optimizer_class, '__name__', optimizer_class)} steps "
                    "Euclidean parameters only"
                )
            for p in group["params"]:
                if p.ndim < 1 or p.shape[0] != copies:
                    raise ValueError(
                        f"PerCopy: a parameter of shape {tuple(p.shape)} in group {index} "
                        f"has no leading axis of {copies} copies"
                    )
            for c in range(copies):
                views = [nn.Parameter(p.detach()[c], requires_grad=False) for p in group["params"]]
                inner.append({"params": views, "lr": 0.0})
        self.inner = optimizer_class(inner, lr=0.0, **options)
        self.steps = 0
        self.skipped_copies = torch.zeros(copies, dtype=torch.long)

    def _pairs(self):
        """``(group, copy, inner group)`` for every group and copy."""
        for g, group in enumerate(self.param_groups):
            for c in range(self.copies):
                yield group, c, self.inner.param_groups[g * self.copies + c]

    def _bad_copies(self) -> torch.Tensor:
        """The copies whose gradient has a non-finite entry."""
        bad = torch.zeros(self.copies, dtype=torch.bool)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    bad |= ~torch.isfinite(p.grad.detach().flatten(1)).all(1).cpu()
        return bad

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step of every copy whose gradient is finite (the others are left untouched
        and counted in :attr:`skipped_copies`)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        bad = self._bad_copies()
        self.skipped_copies += bad.long()
        rates = {id(g): g["lr"].tolist() for g in self.param_groups}
        decays = {
            id(g): _per_copy(g["weight_decay"], self.copies)
            for g in self.param_groups
            if "weight_decay" in g
        }
        for group, c, inner in self._pairs():
            inner["lr"] = rates[id(group)][c]
            if id(group) in decays:  # else the wrapped optimizer's default
                inner["weight_decay"] = decays[id(group)][c]
            for p, q in zip(group["params"], inner["params"]):
                q.grad = None if p.grad is None or bad[c] else p.grad.detach()[c]
                state = self.inner.state.get(q)
                if state and "step" in state:  # the ensemble's count, shared by the copies
                    _set_step(state, self.steps)
        self.inner.step()
        for _, _, inner in self._pairs():
            for q in inner["params"]:
                q.grad = None
        self.steps += 1
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state, each tensor stacked over the copies (a count,
        shared by them, once), and the groups' hyper-parameters."""
        state: dict[int, dict[str, Any]] = {}
        index = 0
        groups = []
        for g, group in enumerate(self.param_groups):
            ids = []
            for k in range(len(group["params"])):
                per_copy = [
                    self.inner.state.get(self.inner.param_groups[g * self.copies + c]["params"][k])
                    for c in range(self.copies)
                ]
                if any(per_copy):
                    state[index] = _stack(per_copy)
                ids.append(index)
                index += 1
            groups.append(
                {
                    **{k: _clone(v) for k, v in group.items() if k != "params"},
                    "params": ids,
                }
            )
        return {"state": state, "param_groups": groups, "steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict`'s output (of as many copies) back."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"PerCopy: the state dict has {len(saved_groups)} groups, this optimizer "
                f"{len(self.param_groups)}"
            )
        for group, saved in zip(self.param_groups, saved_groups):
            for key, value in saved.items():
                if key == "params":
                    continue
                if isinstance(group.get(key), torch.Tensor) and isinstance(value, torch.Tensor):
                    group[key].copy_(value)
                else:
                    group[key] = _clone(value)
        self.steps = int(state_dict.get("steps", 0))
        for g, saved in enumerate(saved_groups):
            for k, i in enumerate(saved["params"]):
                entry = state_dict["state"].get(i)
                for c in range(self.copies):
                    q = self.inner.param_groups[g * self.copies + c]["params"][k]
                    if entry is None:
                        self.inner.state.pop(q, None)
                    else:
                        self.inner.state[q] = _unstack(entry, c)


def _per_copy(value: float | torch.Tensor, copies: int) -> list[float]:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return [float(value)] * copies


def _set_step(state: dict[str, Any], steps: int) -> None:
    if isinstance(state["step"], torch.Tensor):
        state["step"].fill_(steps)
    else:
        state["step"] = type(state["step"])(steps)


def _clone(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value


def _stack(per_copy: list[dict[str, Any] | None]) -> dict[str, Any]:
    """One copy-stacked state from the copies' states (a copy with none: zeros)."""
    first = next(s for s in per_copy if s)
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 1:
            out[key] = torch.stack([s[key] if s else torch.zeros_like(value) for s in per_copy])
        else:  # a count, the same for every copy
            out[key] = _clone(value)
    return out


def _unstack(entry: dict[str, Any], copy: int) -> dict[str, Any]:
    return {
        key: value[copy].clone()
        if isinstance(value, torch.Tensor) and value.ndim >= 1
        else _clone(value)
        for key, value in entry.items()
    }
