"""Learning-rate selection (the protocol's stage (a)): every run's candidates (a rate, a pair
of rates, or a rate and a weight decay) are copies of one ensemble, trained on the run's
selection images and scored on its selection-validation images; the grid is extended while
a run's chosen rate is on its edge (``Protocol.lr_extend``)."""

from __future__ import annotations

import math

import torch

from .config import Protocol, RunConfig
from .distributed import Launch
from .methods import METHODS
from .training import (
    Checkpoint,
    build_ensemble,
    ensemble_epoch,
    ensemble_state,
    errors_on,
    estimated_bn,
    rate_tensor,
    restore_ensemble,
)

__all__ = ["candidate_grid", "select_rates", "best_candidate", "grid_extensions", "at_edge"]


def candidate_grid(
    method: str, protocol: Protocol, rates: tuple[float, ...] | None = None
) -> list[dict[str, float]]:
    """The learning-rate candidates of ``method``: ``{"lr": r}`` for each rate (``rates``, or
    the protocol's times the method's ``lr_scale``); with split rates ``{"lr",
    "other_lr"}`` over rates x rates; with weight decay ``{"lr", "weight_decay"}`` over
    rates x the method's ``weight_decays`` (default ``protocol.weight_decays``)."""
    spec = METHODS[method]
    if rates is None:  # the protocol's grid at the method's scale (Adam's rates are smaller)
        rates = tuple(r * spec.lr_scale for r in protocol.lr_candidates)
    rates = tuple(rates)
    if spec.split_rates:
        return [{"lr": r, "other_lr": q} for r in rates for q in rates]
    if spec.weight_decay:
        decays = spec.weight_decays or protocol.weight_decays
        return [{"lr": r, "weight_decay": w} for r in rates for w in decays]
    return [{"lr": r} for r in rates]


def _score_candidates(
    configs,
    candidates,
    data,
    splits,
    device,
    progress,
    checkpoint: Checkpoint | None = None,
    stage: str = "select0",
    launch: Launch | None = None,
) -> list[list[dict]]:
    """Train every run's candidates (``candidates[r]``: dicts of :func:`candidate_grid`, the
    same number per run; ``None`` pads) as copies of one ensemble on its selection images and
    score them on its selection validation images (resuming from ``checkpoint``)."""
    checkpoint = checkpoint or Checkpoint(None, configs)
    done = checkpoint.get(stage)
    if done is not None and "scored" in done:
        progress(configs[0].protocol.selection_epochs)
        return done["scored"]
    protocol, amp = configs[0].protocol, configs[0].amp
    copies = len(candidates[0])
    flat = [c or {"lr": 0.0} for cands in candidates for c in cands]
    ens = build_ensemble(configs, copies, data.train_x.shape[1], device, launch=launch)
    split = any("other_lr" in c for c in flat)
    ens.set_lr(
        rate_tensor([c["lr"] for c in flat]),
        rate_tensor([c.get("other_lr", c["lr"]) for c in flat]) if split else None,
    )
    if any("weight_decay" in c for c in flat):
        ens.set_weight_decay(torch.tensor([c.get("weight_decay", 0.0) for c in flat]))
    generators = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    pools = torch.stack([s["selection_train"] for s in splits]).to(device)
    val = torch.stack([s["selection_val"] for s in splits]).to(device)
    first_loss, last_loss = None, None
    finite = torch.ones(ens.size, dtype=torch.bool)
    start = 0
    if done is not None:  # an interrupted round: its state (rates included) after an epoch
        restore_ensemble(ens, generators, done)
        start, first_loss, last_loss, finite = (
            done["epoch"],
            done["first_loss"],
            done["last_loss"],
            done["finite"],
        )
        progress(start)
    for epoch in range(start, protocol.selection_epochs):
        loss, _ = ensemble_epoch(
            ens, data, pools, generators, copies, protocol, amp=amp, launch=launch
        )
        loss_t = torch.tensor(loss)
        finite &= torch.isfinite(loss_t)
        ens.freeze(~finite)  # stop moving diverged members
        first_loss = loss_t if first_loss is None else first_loss
        last_loss = loss_t
        checkpoint.put(
            stage,
            ensemble_state(
                ens,
                generators,
                epoch=epoch + 1,
                first_loss=first_loss,
                last_loss=last_loss,
                finite=finite,
            ),
        )
        progress(1)
    with estimated_bn(ens, data, pools, copies, protocol, launch=launch):
        val_error = errors_on(ens, data, val, copies, launch=launch)
    scored = []
    for r, cands in enumerate(candidates):
        row = []
        for c, cand in enumerate(cands):
            if cand is None:
                continue
            m = r * copies + c
            diverged = not bool(finite[m]) or not float(last_loss[m]) < float(first_loss[m])
            row.append(
                {
                    **cand,
                    "val_error": val_error[m],
                    "diverged": diverged,
                    "first_loss": float(first_loss[m]),
                    "last_loss": float(last_loss[m]),
                }
            )
        scored.append(row)
    checkpoint.put(stage, {"scored": scored})
    return scored


def best_candidate(candidates: list[dict], score: str, *, maximize: bool = False) -> dict | None:
    """The one rule every experiment selects by: among the candidates that did not diverge
    and have a finite ``score``, the one with the lowest (``maximize``: highest) ``score``;
    ``None`` if there is none."""
    usable = [c for c in candidates if not c["diverged"] and math.isfinite(float(c[score]))]
    if not usable:
        return None
    return (max if maximize else min)(usable, key=lambda c: c[score])


def _best(candidates: list[dict]) -> dict:
    """The run's choice: the best by selection-validation error, or (every candidate
    diverged) the lowest error of all."""
    return best_candidate(candidates, "val_error") or min(candidates, key=lambda c: c["val_error"])


def _extensions(config: RunConfig, candidates: list[dict], steps: dict) -> list[dict]:
    """:func:`grid_extensions` with the run's protocol (``lr_extend_factor``, ``lr_extend``)."""
    protocol = config.protocol
    return grid_extensions(
        candidates, steps, factor=protocol.lr_extend_factor, limit=protocol.lr_extend
    )


def grid_extensions(
    candidates: list[dict], steps: dict, *, factor: float, limit: int
) -> list[dict]:
    """The rule that extends a rate grid: when the chosen candidate's rate (either rate,
    with split rates ``"other_lr"``) is the smallest or largest tried, one new rate
    ``factor`` beyond it (at most ``limit`` steps each way; ``steps[(key, "low" | "high")]``
    counts them and is updated), paired with every tried value of the other keys.

    ``candidates`` are dicts with ``"lr"`` (and ``"other_lr"``, ``"weight_decay"``),
    ``"val_error"`` and ``"diverged"``; the choice is :func:`best_candidate`'s (every
    candidate diverged: the lowest error)."""
    best = _best(candidates)
    new = []
    for key in ("lr", "other_lr"):
        if key not in best:
            continue
        tried = sorted({c[key] for c in candidates})
        for side, edge, step in (("low", tried[0], 1 / factor), ("high", tried[-1], factor)):
            if best[key] != edge or len(tried) < 2 or steps.get((key, side), 0) >= limit:
                continue
            steps[(key, side)] = steps.get((key, side), 0) + 1
            value = edge * step
            seen = set()
            for c in candidates:  # the new value with every tried value of the other keys
                cand = {
                    **{k: v for k, v in c.items() if k in ("lr", "other_lr", "weight_decay")},
                    key: value,
                }
                marker = tuple(sorted(cand.items()))
                if marker not in seen:
                    seen.add(marker)
                    new.append(cand)
    return new


def select_rates(
    configs,
    data,
    splits,
    device,
    progress,
    checkpoint: Checkpoint | None = None,
    *,
    launch: Launch | None = None,
) -> list[dict]:
    """Stage (a) for ``configs`` (runs that differ only in their seeds): every run's
    candidates trained and scored, the grid extended while a run's choice is on its edge;
    one selection per run (its scored ``candidates``, ``chosen_lr``, ``chosen``,
    ``all_diverged``, ``interior``)."""
    protocol = configs[0].protocol
    grid = candidate_grid(configs[0].method, protocol)
    scored = _score_candidates(
        configs,
        [list(grid) for _ in configs],
        data,
        splits,
        device,
        progress,
        checkpoint,
        "select0",
        launch,
    )
    rounds = 0
    steps = [
        dict.fromkeys([(k, s) for k in ("lr", "other_lr") for s in ("low", "high")], 0)
        for _ in configs
    ]
    while protocol.lr_extend:
        new = [_extensions(c, scored[r], steps[r]) for r, c in enumerate(configs)]
        todo = [r for r, n in enumerate(new) if n]
        if not todo:
            break
        width = max(len(new[r]) for r in todo)
        padded = [new[r] + [None] * (width - len(new[r])) for r in todo]
        rounds += 1
        more = _score_candidates(
            [configs[r] for r in todo],
            padded,
            data,
            [splits[r] for r in todo],
            device,
            progress,
            checkpoint,
            f"select{rounds}",
            launch,
        )
        for r, row in zip(todo, more):
            scored[r] += row
    selections = []
    for candidates in scored:
        best = _best(candidates)
        chosen = {k: best[k] for k in ("lr", "other_lr", "weight_decay") if k in best}
        selections.append(
            {
                "candidates": candidates,
                "chosen_lr": best["lr"],
                "chosen": chosen,
                "all_diverged": not any(not c["diverged"] for c in candidates),
                "interior": not at_edge(candidates, best),
            }
        )
    return selections


def at_edge(candidates: list[dict], best: dict) -> bool:
    """Whether the chosen rate (either rate) is the smallest or largest tried."""
    for key in ("lr", "other_lr"):
        if key in best:
            tried = [c[key] for c in candidates]
            if best[key] in (min(tried), max(tried)):
                return True
    return False
