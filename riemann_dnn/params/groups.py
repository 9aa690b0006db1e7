"""Param groups for a model: each weight whose scale the model's normalizations remove goes
on the manifold of its symmetry, checked numerically; everything else stays Euclidean.

=========================================================  ============================
symmetry (what removes the scale)                          manifold
=========================================================  ============================
per filter (BatchNorm, InstanceNorm, weight                ``"oblique"``: one unit row
standardization, weight_norm's direction with ``dim=0``)   per filter
per group of filters (GroupNorm)                           ``"oblique:groups=G"``: one
                                                           unit row per group
whole tensor (LayerNorm over the channels a layer          ``"oblique:groups=1"``: the
produces, weight_norm's direction with ``dim=None``)       sphere, as one unit row
=========================================================  ============================

Detection is :func:`~riemann_dnn.params.find_symmetries` (the scale of each filter followed
through one forward pass); every claim is then checked by rescaling and measuring the
output (``riemann_dnn.params.verification``), and a weight that fails stays Euclidean,
with a warning naming it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .geometry import split_manifold_name
from .propagation import Symmetry, analyze
from .verification import example_batch, measure_changes, per_filter

__all__ = [
    "scale_invariant_weights",
    "param_groups",
    "verify_scale_invariance",
    "explain",
    "Explanation",
]

#: A claim whose rescaling changes the output by more than this (relative) is refused.
RTOL = 1e-3


def _inputs(model: nn.Module, example_input: Any) -> tuple:
    if example_input is None:
        return example_batch(model)
    return example_input if isinstance(example_input, tuple) else (example_input,)


def scale_invariant_weights(
    model: nn.Module, example_input: Any = None, *, trace: str = "auto"
) -> list[str]:
    """Names of the weights whose scale (per filter, per group of filters or as a whole)
    the model's normalizations remove, found on ``example_input`` (else a batch built from
    the first layer, :func:`~riemann_dnn.params.example_batch`); not checked numerically.

    ``trace``: ``"auto"`` (torch.fx, else one hooked forward pass, with a warning), ``"fx"``
    or ``"hooks"`` (see :func:`~riemann_dnn.params.find_symmetries`).
    """
    found, _ = analyze(model, _inputs(model, example_input), trace=trace)
    return [name for name, sym in found.items() if sym.invariant]


def _group_spec(manifold: Any, symmetry: Symmetry) -> Any:
    """The manifold of a constrained weight: a named manifold on its symmetry's unit rows."""
    if not isinstance(manifold, str):
        return manifold
    base, rows = split_manifold_name(manifold.lower())
    if rows is not None or base in ("euclidean", "sphere"):
        return manifold
    return symmetry.manifold.replace("oblique", base, 1)


def _refuse(symmetries: dict, changes: Mapping[str, float], rtol: float) -> dict:
    refused = {n: c for n, c in changes.items() if not c <= rtol}
    if refused:
        detail = ", ".join(f"{n} ({c:.2g})" for n, c in refused.items())
        warnings.warn(
            f"param_groups: rescaling the filters of {detail} changed the output by more "
            f"than rtol={rtol:g}; these weights stay Euclidean",
            stacklevel=3,
        )
    return {
        n: (
            s
            if n not in refused
            else Symmetry(
                s.name,
                s.shape,
                "none",
                0,
                s.axis,
                reason=f"refused: output changed by {refused[n]:.2g}",
            )
        )
        for n, s in symmetries.items()
    }


def param_groups(
    model: nn.Module,
    *,
    manifold: Any = "oblique",
    retraction: str | None = None,
    example_input: Any = None,
    verify: Any = True,
    trace: str = "auto",
    rtol: float = RTOL,
    **hyperparameters: Any,
) -> list[dict[str, Any]]:
    """Param groups for :class:`~riemann_dnn.optim.RiemannianSGD`: every scale-invariant
    weight on the manifold of its symmetry, the rest in a last Euclidean group.

    ``manifold`` names the manifold family (``"oblique"``: unit rows; ``"stiefel"``,
    ``"grassmann"``, ...: those manifolds on the same rows), applied to each symmetry's
    rows: ``"oblique"`` for a per-filter weight, ``"oblique:groups=G"`` for one per group of
    filters, ``"oblique:groups=1"`` for a whole-tensor one (see
    ``riemann_dnn.params.geometry``). A manifold object, ``"sphere"`` or a name with
    ``:groups=`` is given to every constrained weight as is. ``hyperparameters`` (e.g.
    ``lr``) go into the constrained groups; each group carries ``"names"``.

    Args:
        example_input: a batch the model runs on (a tensor or a tuple of arguments); by
            default one is built from the first layer
            (:func:`~riemann_dnn.params.example_batch`).
        verify: ``True`` (default): every claim is checked numerically in training mode on
            that batch, and a weight whose rescaling changes the output by more than
            ``rtol`` is refused with a warning naming it and stays Euclidean; a batch: check
            on that batch; ``False``: no check.
        trace: ``"auto"``, ``"fx"`` or ``"hooks"`` (see
            :func:`~riemann_dnn.params.find_symmetries`).
    """
    if isinstance(verify, (torch.Tensor, tuple)):
        batch = _inputs(model, example_input if example_input is not None else verify)
        check = verify if isinstance(verify, tuple) else (verify,)
    else:
        batch = _inputs(model, example_input)
        check = batch if verify else None
    symmetries, _ = analyze(model, batch, trace=trace)
    if check is not None:
        claimed = {n: s for n, s in symmetries.items() if s.invariant}
        changes = measure_changes(model, check, claimed, rtol=rtol)
        symmetries = _refuse(symmetries, changes, rtol)
    by_spec: dict[Any, tuple[Any, list]] = {}
    free = []
    for name, param in model.named_parameters():
        symmetry = symmetries.get(name)
        if symmetry is None or not symmetry.invariant:
            free.append((name, param))
            continue
        spec = _group_spec(manifold, symmetry)
        key = spec if isinstance(spec, str) else id(spec)
        by_spec.setdefault(key, (spec, []))[1].append((name, param))
    groups = [
        {
            "params": [p for _, p in members],
            "names": [n for n, _ in members],
            "manifold": spec,
            "retraction": retraction,
            **hyperparameters,
        }
        for spec, members in by_spec.values()
    ]
    if free:
        groups.append(
            {
                "params": [p for _, p in free],
                "names": [n for n, _ in free],
                "manifold": "euclidean",
            }
        )
    return groups


def verify_scale_invariance(
    model: nn.Module,
    inputs: Any,
    *,
    names: Sequence[str] | None = None,
    symmetries: Mapping[str, Symmetry] | None = None,
    rtol: float = RTOL,
    generator: torch.Generator | None = None,
    raise_on_failure: bool = False,
) -> dict[str, float]:
    """Rescale weights and report the relative change of the model's output, in training
    mode (BatchNorm on batch statistics; running statistics, modes and the RNG untouched).

    ``names``: rescale each filter (along the layer's filter axis) of these weights by its
    own factor; ``symmetries``: rescale as each :class:`~riemann_dnn.params.Symmetry` says (per filter, per
    group, as a whole); neither: the claims :func:`~riemann_dnn.params.find_symmetries` makes on ``inputs``.

    Returns ``{name: max |f(scaled) - f| / max |f|}``; with ``raise_on_failure`` a change
    above ``rtol`` raises ``ValueError`` naming the weight. Factors are between 1/2 and 2
    (``riemann_dnn.params.verification.scale_factors``).
    """
    params = dict(model.named_parameters())
    if symmetries is None:
        if names is None:
            found, _ = analyze(model, inputs)
            symmetries = {n: s for n, s in found.items() if s.invariant}
        else:
            unknown = [n for n in names if n not in params]
            if unknown:
                raise ValueError(f"verify_scale_invariance: no parameters named {unknown}")
            symmetries = per_filter(model, names)
    report = measure_changes(model, inputs, symmetries, generator=generator)
    failed = {n: v for n, v in report.items() if not v <= rtol}
    if raise_on_failure and failed:
        raise ValueError(
            f"the output is not invariant to rescaling the filters of {sorted(failed)} "
            f"(relative changes {failed}, rtol {rtol}); keep these weights Euclidean"
        )
    return report


@dataclass(frozen=True)
class Explanation:
    """What :func:`~riemann_dnn.params.explain` found: a row per weight.

    Attributes:
        symmetries: ``{name: Symmetry}``, in ``named_parameters()`` order (refused claims
            as ``"none"`` with the measured change in their reason).
        changes: ``{name: relative output change}`` when the weight is rescaled as its
            claim says (per filter for the weights with no claim); empty without ``verify``.
        trace: the path the analysis took, ``"fx"`` or ``"hooks"``.
        input_shapes: the shapes of the batch it ran on.
    """

    symmetries: dict[str, Symmetry]
    changes: dict[str, float]
    trace: str
    input_shapes: tuple[tuple[int, ...], ...]
    rtol: float = RTOL

    def rows(self) -> list[dict[str, Any]]:
        """One dict per weight: name, shape, kind, groups, axis, manifold, norms, path,
        reason, change."""
        return [
            {
                "name": s.name,
                "shape": list(s.shape),
                "kind": s.kind,
                "groups": s.groups,
                "axis": s.axis,
                "manifold": s.manifold,
                "norms": list(s.norms),
                "path": s.path,
                "reason": s.reason,
                "change": self.changes.get(s.name),
            }
            for s in self.symmetries.values()
        ]

    def summary(self) -> dict[str, int]:
        """Weights per kind."""
        counts = {"weights": len(self.symmetries)}
        for s in self.symmetries.values():
            counts[s.kind] = counts.get(s.kind, 0) + 1
        return counts

    def markdown(self) -> str:
        """The rows as a Markdown table."""
        lines = [
            "| weight | shape | kind | manifold | normalization reached, path / reason | change |",
            "|---|---|---|---|---|---:|",
        ]
        for row in self.rows():
            change = row["change"]
            text = "-" if change is None else (f"{change:.1e}" if math.isfinite(change) else "inf")
            why = row["path"] if row["kind"] != "none" else row["reason"]
            shape = "x".join(map(str, row["shape"]))
            kind = row["kind"] + (f" ({row['groups']})" if row["kind"] == "group" else "")
            lines.append(
                f"| {row['name']} | {shape} | {kind} | {row['manifold']} | "
                f"{why.replace('|', '/')} | {text} |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        counts = self.summary()
        kinds = ", ".join(
            f"{counts[k]} {k}" for k in ("filter", "group", "tensor", "none") if k in counts
        )
        return (
            f"{counts['weights']} weights ({kinds}); traced by {self.trace} on inputs "
            f"{list(map(list, self.input_shapes))}\n\n{self.markdown()}"
        )


def explain(
    model: nn.Module,
    example_input: Any = None,
    *,
    trace: str = "auto",
    verify: bool = True,
    rtol: float = RTOL,
) -> Explanation:
    """Why each weight of ``model`` is or is not constrained: its symmetry (kind, manifold),
    the normalization that removes its scale and the path there (or the op that keeps it),
    and the measured output change when it is rescaled as claimed (``verify``; weights
    with no claim are rescaled per filter, to show that they matter). A claim whose change
    exceeds ``rtol`` is shown refused, as :func:`~riemann_dnn.params.param_groups` would refuse it.

    ``print(explain(model, x))`` prints the table; ``.rows()`` gives it as dicts.
    """
    batch = _inputs(model, example_input)
    symmetries, used = analyze(model, batch, trace=trace)
    changes: dict[str, float] = {}
    if verify:
        plan = dict(symmetries)
        changes = measure_changes(model, batch, plan)
        claimed = {n: c for n, c in changes.items() if symmetries[n].invariant}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            symmetries = _refuse(symmetries, claimed, rtol)
    shapes = tuple(tuple(x.shape) for x in batch if isinstance(x, torch.Tensor))
    return Explanation(symmetries, changes, used, shapes, rtol)
