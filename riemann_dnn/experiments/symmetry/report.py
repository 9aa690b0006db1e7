"""The analysis' files: ``symmetry.json``, ``symmetry.md`` (tables) and ``symmetry.png``
(:mod:`.plots`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..records import write_json, write_text
from .plots import plot_symmetry
from .rescaling import EXACT_EPS

__all__ = ["write_report"]

_CHECK_ROWS = [
    ("(a) loss: relative change", "loss_rel_change"),
    ("Euclidean gradient: relative change (not invariant)", "euclidean_gradient_rel_change"),
    ("(b) max_i ‖α_i ∇w̃_i − ∇w_i‖ / ‖∇w_i‖", "gradient_scaling_max_rel_dev"),
    ("(c) UN gradient at unit filters: max abs diff", "riemannian_gradient_max_abs_diff"),
    ("(c) UN gradient: relative diff", "riemannian_gradient_rel_diff"),
    ("(c) one RiemannianSGD step: max abs diff", "un_step_max_abs_diff"),
    ("(c) Table 1 step from each gradient: max abs diff", "un_step_from_gradients_max_abs_diff"),
    ("size of the UN step (max abs change)", "un_step_size"),
    (
        "(d) one Euclidean SGD step, normalised filters: max abs diff",
        "euclidean_step_filter_max_abs_diff",
    ),
    ("size of the Euclidean step (max abs change)", "euclidean_step_size"),
]


def _markdown(result: dict[str, Any], png_name: str) -> str:
    cfg, checks, traj = result["config"], result["invariance"], result["trajectories"]
    first = next(iter(checks.values()))
    lines = [
        f"# Filter-rescaling symmetry of ArchBN (depth {cfg['depth']})",
        "",
        f"Data: {cfg['data']}. Seed {cfg['seed']}. Filters of {', '.join(first['names'])} "
        f"rescaled by log-uniform factors in [1/{cfg['alpha_spread']:g}, "
        f"{cfg['alpha_spread']:g}] (drawn: {first['alpha_min']:.3g} to {first['alpha_max']:.3g}); "
        f"batch of {first['batch']} training images, train-mode BatchNorm; steps with lr "
        f"{first['lr']:g}.",
        "",
        "## Invariance checks",
        "",
        "| check | " + " | ".join(checks) + " |",
        "|---|" + "---|" * len(checks),
    ]
    for label, key in _CHECK_ROWS:
        lines.append(f"| {label} | " + " | ".join(f"{c[key]:.2e}" for c in checks.values()) + " |")
    lines += [
        "",
        f"`eps` is BatchNorm's epsilon: with `eps={EXACT_EPS:g}` (PyTorch refuses 0 in training) "
        "the symmetry is exact and every (a)-(c) entry is rounding error; PyTorch's default "
        "`eps=1e-5` breaks it by about eps/(2 α² var(h)) (relative).",
        "",
        f"## Trajectories from {traj['copies']} rescaled copies",
        "",
        f"{traj['steps']} steps, minibatch {traj['batch_size']}, lr {traj['lr']:g}, "
        f"{traj['dtype']}, BatchNorm eps {cfg['bn_eps']:g}; the same minibatches for every copy.",
        "",
        "| method | "
        + " | ".join(
            f"final max_j ‖Ŵ{k + 1}^(j) − Ŵ{k + 1}^(0)‖_F" for k in range(len(traj["names"]))
        )
        + " | max loss spread (last step) | test error per copy |",
        "|---|" + "---|" * (len(traj["names"]) + 2),
    ]
    for rec in traj["methods"].values():
        dists = " | ".join(f"{rec['final_filter_distance'][n]:.2e}" for n in traj["names"])
        errors = ", ".join(f"{e:.4f}" for e in rec.get("test_error", []))
        lines.append(f"| {rec['label']} | {dists} | {rec['loss_spread'][-1]:.2e} | {errors} |")
    lines += ["", f"![symmetry]({png_name})", ""]
    return "\n".join(lines)


def write_report(
    result: dict[str, Any], out_dir: str | Path, stem: str = "symmetry"
) -> tuple[Path, Path, Path]:
    """Write ``<stem>.json`` (all numbers and the config; strict JSON, read back by
    :func:`~riemann_dnn.experiments.records.read_json`), ``<stem>.md`` (tables and the
    picture) and ``<stem>.png`` (:func:`plot_symmetry`) into ``out_dir``; return the paths."""
    out = Path(out_dir)
    json_path, md_path, png_path = (out / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    write_json(json_path, result)
    plot_symmetry(result, png_path)
    write_text(md_path, _markdown(result, png_path.name))
    return json_path, md_path, png_path
