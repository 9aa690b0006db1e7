"""The protocol's shared machinery: gathers, copies leaving an ensemble, the checkpoint's
background writes."""

from __future__ import annotations

import pytest
import torch

from riemann_dnn.experiments.config import RunConfig
from riemann_dnn.experiments.training import (
    Checkpoint,
    build_ensemble,
    rate_tensor,
    rows,
    take_copies,
)


def test_rows_is_advanced_indexing():
    x = torch.randn(50, 3, 4)
    index = torch.randint(0, 50, (5, 7))
    assert torch.equal(rows(x, index), x[index])
    labels = torch.randint(0, 10, (50,))
    assert torch.equal(rows(labels, index[0]), labels[index[0]])


def test_rate_tensor_rounds_through_float32_once():
    rates = rate_tensor([0.1, 1e-3])
    assert rates.dtype == torch.float64
    assert rates.tolist() == [float(torch.tensor(0.1)), float(torch.tensor(1e-3))]
    assert rates[0].item() != 0.1  # the float32 rounding the records were written with


def _ensemble(seeds):
    configs = [RunConfig(depth=2, method="un-split", seed=s) for s in seeds]
    ens = build_ensemble(configs, 1, 784, "cpu")
    ens.set_lr(rate_tensor([0.1 * (s + 1) for s in seeds]), rate_tensor([0.05] * len(seeds)))
    return ens


def _step(ens, seeds, step):
    gens = [torch.Generator().manual_seed(100 * s + step) for s in seeds]
    x = torch.stack([torch.rand(16, 784, generator=g) for g in gens])
    y = torch.stack([torch.randint(0, 10, (16,), generator=g) for g in gens])
    ens.train_step(x, y, reduction="sum")


def test_copies_that_leave_an_ensemble_leave_the_others_unchanged():
    """take_copies of the stack and optimizer states gives a smaller ensemble whose copies
    step exactly as they would have in the larger one (split rates included)."""
    seeds = [0, 1, 2]
    big = _ensemble(seeds)
    for step in range(2):
        _step(big, seeds, step)
    keep = [0, 2]
    state = take_copies(
        {"stack": big.stack.state_dict(), "optimizer": big.optimizer.state_dict()}, keep, 3
    )
    assert all(g["copies"] == 2 for g in state["optimizer"]["param_groups"])
    small = _ensemble([seeds[i] for i in keep])
    small.stack.load_state_dict(state["stack"])
    small.optimizer.load_state_dict(state["optimizer"])
    for step in range(2, 4):
        _step(big, seeds, step)
        _step(small, [seeds[i] for i in keep], step)
    for name, value in small.stack.state_dict().items():
        assert torch.equal(value, big.stack.state_dict()[name][keep]), name


def test_take_copies_indexes_only_the_copies_axis():
    state = {"a": torch.arange(6).view(3, 2), "b": torch.tensor(5), "c": [torch.ones(4)]}
    out = take_copies({**state, "copies": 3}, [1], 3)
    assert out["a"].tolist() == [[2, 3]] and out["b"].item() == 5
    assert out["c"][0].shape == (4,) and out["copies"] == 1


def test_checkpoint_writes_in_the_background_and_reads_back(tmp_path):
    configs = [RunConfig(depth=2, method="un", seed=0)]
    checkpoint = Checkpoint(tmp_path, configs)
    for epoch in range(3):
        checkpoint.put("train", {"epoch": epoch, "w": torch.full((3,), float(epoch))})
    checkpoint.flush()
    again = Checkpoint(tmp_path, configs)
    assert again.get("train")["epoch"] == 2 and again.get("train")["w"].tolist() == [2.0] * 3
    checkpoint.remove()
    assert not checkpoint.path.exists() and not list(checkpoint.path.parent.iterdir())


def test_a_failed_background_write_is_raised_not_lost(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the folder should be")
    checkpoint = Checkpoint(tmp_path, [RunConfig(depth=2, method="un", seed=0)])
    checkpoint.put("train", {"epoch": 1})
    with pytest.raises(OSError):
        checkpoint.flush()
    checkpoint.put("train", {"epoch": 2})
    with pytest.raises(OSError):
        checkpoint.remove()
