"""Epoch time of UN vs B-SGD for ArchBN, measured in one process, interleaved.

The paper claims the UN update costs about as much as plain SGD. This script trains
ensembles of ArchBN copies (as ``riemann-dnn reproduce table2`` does) with the UN update
(filters on the oblique manifold) and with B-SGD (all Euclidean), alternating the two
methods epoch by epoch so both see the same machine load, and prints the median epoch
times and their ratio. It also times single models stepped by ``RiemannianSGD`` (oblique
groups) vs the same optimizer with all groups Euclidean (what a torch user runs).

    python benchmarks/epoch_time.py [--depths 2 4] [--copies 10] [--epochs 3] [--images 10000]
                                    [--device cpu] [--threads 2] [--out results/benchmarks]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def ensemble_epoch(depth, method, copies, x, y, batch, device):
    from riemann_dnn.experiments.config import RunConfig
    from riemann_dnn.experiments.training import build_ensemble

    configs = [RunConfig(depth=depth, method=method, seed=s) for s in range(copies)]
    ensemble = build_ensemble(configs, 1, x.shape[1], device)
    ensemble.set_lr(torch.full((copies,), 0.01, device=device))
    n = x.shape[0]
    gen = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.stack([torch.randperm(n, generator=gen) for _ in range(copies)]).to(device)
        start = time.perf_counter()
        for s in range(0, n, batch):
            index = order[:, s : s + batch]
            ensemble.train_step(x[index], y[index])
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return epoch


def single_epoch(depth, constrained, x, y, batch, device):
    from riemann_dnn.models import ArchBN
    from riemann_dnn.optim import RiemannianSGD
    from riemann_dnn.params import param_groups

    model = ArchBN(depth, generator=torch.Generator().manual_seed(0)).to(device)
    groups = param_groups(model) if constrained else model.parameters()
    optimizer = RiemannianSGD(groups, lr=0.01)
    n = x.shape[0]

    def epoch():
        order = torch.randperm(n).to(device)
        start = time.perf_counter()
        for s in range(0, n, batch):
            index = order[s : s + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
        if device != "cpu":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return epoch


def interleaved(timers: dict, epochs: int) -> dict[str, float]:
    """Median time of each timer over ``epochs`` rounds, one epoch of each per round."""
    for timer in timers.values():  # warm-up
        timer()
    times = {name: [] for name in timers}
    for _ in range(epochs):
        for name, timer in timers.items():
            times[name].append(timer())
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default="results/benchmarks")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from riemann_dnn.data import as_tensors, load_mnist

    mnist = load_mnist()
    x, y = as_tensors(
        mnist.train_images[: args.images], mnist.train_labels[: args.images], device=args.device
    )
    rows = []
    for depth in args.depths:
        timers = {
            "ensemble UN": ensemble_epoch(depth, "un", args.copies, x, y, args.batch, args.device),
            "ensemble B-SGD": ensemble_epoch(
                depth, "bsgd", args.copies, x, y, args.batch, args.device
            ),
            "single UN": single_epoch(depth, True, x, y, args.batch, args.device),
            "single B-SGD": single_epoch(depth, False, x, y, args.batch, args.device),
        }
        medians = interleaved(timers, args.epochs)
        rows.append(
            {
                "depth": depth,
                **{f"{k} s": v for k, v in medians.items()},
                "ensemble ratio UN/B-SGD": medians["ensemble UN"] / medians["ensemble B-SGD"],
                "single ratio UN/B-SGD": medians["single UN"] / medians["single B-SGD"],
            }
        )
    header = (
        f"epoch of {args.images} images, batch {args.batch}, ensembles of {args.copies} "
        f"copies, device {args.device}, {torch.get_num_threads()} threads, median of "
        f"{args.epochs} interleaved epochs"
    )
    lines = [
        f"# UN vs B-SGD epoch time\n\n{header}\n",
        "| depth | ensemble UN s | ensemble B-SGD s | ratio | single UN s | single B-SGD s "
        "| ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['depth']} | {r['ensemble UN s']:.3f} | {r['ensemble B-SGD s']:.3f} | "
            f"{r['ensemble ratio UN/B-SGD']:.3f} | {r['single UN s']:.3f} | "
            f"{r['single B-SGD s']:.3f} | {r['single ratio UN/B-SGD']:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"epoch_time_{args.device}.json").write_text(
        json.dumps(
            {"config": vars(args), "threads": torch.get_num_threads(), "rows": rows}, indent=1
        )
    )
    (out / f"epoch_time_{args.device}.md").write_text(text + "\n")
    print(f"wrote {out / f'epoch_time_{args.device}.md'} and .json")


if __name__ == "__main__":
    main()
