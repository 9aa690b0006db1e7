"""Epoch time of SegNet(-Basic) training with UN vs B-SGD updates, measured in one process.

Both methods train the same model (same initialisation) on the same digit scenes; their epochs
alternate (UN, B-SGD, UN, ...) so that both see the same machine load. Prints the median epoch
time of each, the ratio UN / B-SGD, and the share of the optimizer step in an epoch.

    python benchmarks/segnet_epoch.py                      # SegNet-Basic width 16, CPU
    python benchmarks/segnet_epoch.py --device cuda --width 64 --scenes 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from riemann_dnn.data import load_digit_scenes
from riemann_dnn.experiments.segmentation import SegmentationConfig, build_model, build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["segnet-basic", "segnet"], default="segnet-basic")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--scenes", type=int, default=480, help="training scenes per epoch")
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="epochs per method")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, _ = load_digit_scenes(train_scenes=args.scenes, test_scenes=1, canvas=args.canvas)
    images, labels = train.images.to(device), train.labels.to(device)
    runs = {}
    for method in ("un", "bsgd"):
        config = SegmentationConfig(
            model=args.model, method=method, width=args.width, batch_size=args.batch_size, lr=0.05
        )
        model = build_model(config, 1, train.num_classes).to(device)
        optimizer, _ = build_optimizer(model, config)
        runs[method] = (model, optimizer)
    loss_fn = torch.nn.CrossEntropyLoss()
    epoch_times = {m: [] for m in runs}
    step_times = {m: [] for m in runs}
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for method, (model, optimizer) in runs.items():
            stepping = 0.0
            _sync(device)
            start = time.perf_counter()
            for b in range(0, len(train), args.batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(
                    model(images[b : b + args.batch_size]), labels[b : b + args.batch_size]
                )
                loss.backward()
                _sync(device)
                t = time.perf_counter()
                optimizer.step()
                _sync(device)
                stepping += time.perf_counter() - t
            _sync(device)
            if repeat > 0:
                epoch_times[method].append(time.perf_counter() - start)
                step_times[method].append(stepping)
    print(
        f"{args.model} width {args.width}, {args.scenes} scenes of {args.canvas}x{args.canvas}, "
        f"batch {args.batch_size}, device {device}, threads {torch.get_num_threads()}"
    )
    for method in runs:
        e, s = statistics.median(epoch_times[method]), statistics.median(step_times[method])
        print(
            f"  {method:5s} epoch {e:7.3f} s (median of {args.repeats}), optimizer step "
            f"{s:6.3f} s ({100 * s / e:4.1f}% of the epoch)"
        )
    ratio = statistics.median(epoch_times["un"]) / statistics.median(epoch_times["bsgd"])
    print(f"  epoch time UN / B-SGD: {ratio:.3f}")


if __name__ == "__main__":
    main()
