"""The runs of the protocol, their data and their records: MNIST as tensors, every
:class:`~.config.RunConfig` of a sweep (:func:`run_configs`, the one place they are built),
each run's record (strict JSON, written atomically, named by its hash) and its random splits
of the training images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Protocol, RunConfig
from .records import read_json, write_json

__all__ = [
    "MNISTTensors",
    "run_configs",
    "run_path",
    "load_finished",
    "write_record",
    "splits_of",
]


@dataclass
class MNISTTensors:
    """Training and test images as flat float tensors in [0, 1] on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    checksum: str = ""  # riemann_dnn.data.MNIST.checksum of the files

    @classmethod
    def load(cls, data_dir=None, *, source: str = "auto", device="cpu") -> MNISTTensors:
        from ..data import as_tensors, load_mnist

        mnist = load_mnist(data_dir, source=source)
        train_x, train_y = as_tensors(mnist.train_images, mnist.train_labels, device=device)
        test_x, test_y = as_tensors(mnist.test_images, mnist.test_labels, device=device)
        return cls(train_x, train_y, test_x, test_y, str(mnist.source), mnist.checksum)


def run_configs(
    data: MNISTTensors,
    *,
    depths: Sequence[int],
    methods: Sequence[str],
    runs: int,
    seed: int,
    protocol: Protocol,
    constraint: str = "oblique",
    retraction: str | None = None,
    device: str = "cpu",
    threads: int = 1,
    arch: str = "mlp",
    width: int | None = None,
    amp: str = "off",
    world_size: int = 1,
    rank: int = 0,
) -> list[RunConfig]:
    """The :class:`RunConfig` of every (depth, method, seed) of a sweep, seeds ``seed``,
    ``seed + 1``, ...: what names and finds their records (their identity includes the
    data's checksum, the default dtype, the device and the threads). ``world_size`` > 1:
    runs trained data-parallel by that many processes (``rank``: this one)."""
    return [
        RunConfig(
            depth=d,
            method=m,
            seed=seed + r,
            protocol=protocol,
            constraint=constraint,
            retraction=retraction,
            data=data.source,
            data_checksum=data.checksum,
            dtype=str(torch.get_default_dtype()).replace("torch.", ""),
            device=str(torch.device(device)),
            threads=threads,
            arch=arch,
            amp=amp,
            world_size=world_size,
            rank=rank,
            **({} if width is None else {"width": width}),
        )
        for d in depths
        for m in methods
        for r in range(runs)
    ]


def run_path(out_dir: Path, config: RunConfig) -> Path:
    """``out_dir/runs/<name>-<first 12 hex digits of the run hash>.json``."""
    return Path(out_dir) / "runs" / f"{config.name}-{config.run_hash[:12]}.json"


def load_finished(out_dir: Path, config: RunConfig) -> dict | None:
    """The record of a finished run with exactly this configuration (same hash), if any."""
    path = run_path(out_dir, config)
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except ValueError:  # a truncated or foreign file: not a finished run
        return None
    return record if record.get("config", {}).get("run_hash") == config.run_hash else None


def write_record(out_dir: Path, config: RunConfig, record: dict) -> Path:
    """Write a finished run's record to :func:`run_path` (strict JSON, atomically)."""
    return write_json(run_path(out_dir, config), record)


def splits_of(config: RunConfig, num_images: int) -> dict[str, torch.Tensor]:
    """The run's random subsets of training-image indices (disjoint where they must be)."""
    protocol = config.protocol
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(num_images, generator=gen)
    sel_val = order[: protocol.selection_val]
    sel_train = order[protocol.selection_val : protocol.selection_val + protocol.selection_train]
    order = torch.randperm(num_images, generator=gen)
    validation = protocol.validation_size(num_images)
    train = order[validation:]
    if protocol.train_images is not None:
        if protocol.train_images > train.shape[0]:
            raise ValueError(
                f"train_images={protocol.train_images} exceeds the "
                f"{train.shape[0]} training images left after validation"
            )
        train = train[: protocol.train_images]
    return {
        "selection_val": sel_val,
        "selection_train": sel_train,
        "validation": order[:validation],
        "train": train,
    }
