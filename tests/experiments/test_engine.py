"""One protocol engine: every method trains what it names through ``train_runs`` on every
path (the command line's one-run path, autocast), and the loop of ``experiments.epoch``."""

from __future__ import annotations

import pytest
import torch

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.config import quick_protocol
from riemann_dnn.experiments.methods import METHODS
from riemann_dnn.experiments.protocol import train_runs
from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.runs import MNISTTensors, run_configs

TIMINGS = {"seconds", "selection_seconds", "epoch_seconds"}
TINY = quick_protocol(
    lr_candidates=(1e-2, 1e-3), selection_epochs=1, min_epochs=2, max_epochs=2, train_images=600
)
TINY_CLI = [
    "--source",
    "embedded",
    "--quick",
    "--selection-epochs",
    "1",
    "--min-epochs",
    "1",
    "--max-epochs",
    "1",
    "--lr-candidates",
    "1e-2",
    "1e-3",
]


@pytest.fixture(scope="module")
def embedded():
    return MNISTTensors.load(source="embedded")


def _numbers(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMINGS}


def _train(data, out, method, **options) -> dict:
    configs = run_configs(
        data, depths=[2], methods=[method], runs=1, seed=0, protocol=TINY, **options
    )
    torch.manual_seed(0)
    (record,) = train_runs(configs, data, out)
    return record


@pytest.mark.parametrize("method", sorted(METHODS))
def test_train_archbn_gives_the_record_of_train_runs_for_every_method(method, embedded, tmp_path):
    """The command's one-run path (which also runs under torchrun, at any world size) is
    ``train_runs``: the same record, weight decay, split rates and filter norms included."""
    protocol = quick_protocol(
        lr_candidates=(1e-2, 1e-3), selection_epochs=1, min_epochs=1, max_epochs=1
    )
    configs = run_configs(
        embedded, depths=[2], methods=[method], runs=1, seed=0, protocol=protocol
    )
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # the command's default --threads
        train_runs(configs, embedded, tmp_path / "direct")
        out = tmp_path / "cli"
        assert main(["train", "archbn", "--method", method, *TINY_CLI, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(previous)
    command = read_json(out / "run.json")
    command = {k: v for k, v in command.items() if k not in ("summary", "identity")}
    (direct,) = (tmp_path / "direct" / "runs").glob("*.json")
    assert _numbers(command) == _numbers(read_json(direct))
    assert {"chosen", "filter_norms"} <= set(command) and "interior" in command["selection"]
    spec = METHODS[method]
    chosen = set(command["chosen"])
    assert ("weight_decay" in chosen) == spec.weight_decay
    assert ("other_lr" in chosen) == spec.split_rates


def test_bf16_autocast_trains_bsgd_wd_with_its_weight_decay(embedded, tmp_path):
    """``--amp bf16`` is the same engine under autocast: ``bsgd-wd`` still selects and
    trains with weight decay, and the numbers are not those of float32."""
    amp = _train(embedded, tmp_path / "bf16", "bsgd-wd", amp="bf16")
    plain = _train(embedded, tmp_path / "fp32", "bsgd-wd")
    assert amp["config"]["amp"] == "bf16" and "amp" not in plain["config"]
    assert amp["chosen"]["weight_decay"] in TINY.weight_decays
    grid = {(c["lr"], c["weight_decay"]) for c in amp["selection"]["candidates"]}
    assert grid == {(r, w) for r in TINY.lr_candidates for w in TINY.weight_decays}
    assert amp["curves"]["train_loss"] != plain["curves"]["train_loss"], "autocast had no effect"
    assert abs(amp["test_error"] - plain["test_error"]) < 0.1
    assert amp["test_error"] < 0.5


def test_train_runs_refuses_runs_for_another_world_size(embedded, tmp_path):
    configs = run_configs(
        embedded, depths=[2], methods=["un"], runs=1, seed=0, protocol=TINY, world_size=2
    )
    with pytest.raises(ValueError, match="torchrun --nproc-per-node=2"):
        train_runs(configs, embedded, tmp_path)
