"""The effect on training: ArchBN (depth 2) under the quick protocol per constraint and
retraction, test error and epoch time."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from ..records import strict


def train_archbn_variants(variants, protocol, runs, data_dir, source, device, out_dir, seed, bar):
    """Train ``runs`` seeds of ArchBN (depth 2) per ``(method, constraint, retraction)`` of
    ``variants`` under ``protocol`` (run records in ``out_dir/archbn``, or a temporary
    folder); one row per variant: test errors, mean ± std, chosen rates, epochs, epoch time."""
    import tempfile

    from ..methods import METHODS
    from ..progress import settle
    from ..protocol import train_runs
    from ..runs import MNISTTensors, run_configs

    data = MNISTTensors.load(data_dir, source=source, device=device)
    root = Path(out_dir) / "archbn" if out_dir is not None else Path(tempfile.mkdtemp())
    rows = []
    for method, constraint, retraction in variants:
        label = METHODS[method].label if method != "un" else f"{constraint} {retraction}"
        bar.set_postfix_str(f"ArchBN {label}")
        configs = run_configs(
            data,
            depths=[2],
            methods=[method],
            runs=runs,
            seed=seed,
            protocol=protocol,
            constraint=constraint,
            retraction=retraction,
            device=device,
            threads=torch.get_num_threads(),
        )
        records = train_runs(configs, data, root, device=device, progress=bar.update)
        settle(
            bar,
            protocol.selection_epochs + protocol.max_epochs,
            protocol.selection_epochs + max(r["epochs"] for r in records),
        )
        errors = [r["test_error"] for r in records]
        epoch = [statistics.fmean(r["epoch_seconds"]) for r in records]
        rows.append(
            {
                "method": method,
                "constraint": constraint if method == "un" else "euclidean",
                "retraction": retraction if method == "un" else None,
                "label": label,
                "runs": runs,
                "test_errors": errors,
                "mean": statistics.fmean(errors),
                "std": statistics.stdev(errors) if len(errors) > 1 else 0.0,
                "chosen_lrs": [r["chosen_lr"] for r in records],
                "epochs": [r["epochs"] for r in records],
                # runs are trained together: the ensemble's epoch time, and per run
                "epoch_seconds": statistics.fmean(epoch),
                "epoch_seconds_per_run": statistics.fmean(epoch) / len(records),
            }
        )
    return {
        "depth": 2,
        "protocol": _protocol_dict(protocol),
        "data": data.source,
        "runs_dir": str(root),
        "rows": rows,
    }


def _protocol_dict(protocol) -> dict[str, Any]:
    """The protocol's fields as JSON values (tuples as lists)."""
    return strict(asdict(protocol))
