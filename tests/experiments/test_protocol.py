"""The paper's protocol: stopping rules, bold driver, records, resume, real-data accuracy."""

import json
from dataclasses import replace

import pytest
import torch

from riemann_dnn.experiments.config import Protocol, RunConfig, quick_protocol
from riemann_dnn.experiments.protocol import stop_reason, train_runs
from riemann_dnn.experiments.runs import MNISTTensors, load_finished, run_path

P = Protocol()


@pytest.mark.parametrize(
    "epoch, train_error, val, expected",
    [
        (10, 0.1, [0.1] * 10, None),  # before min_epochs: never stop
        (60, 0.1, [0.1, 0.09], "max_epochs"),
        (30, 0.0, [0.05, 0.04], "training_error_below_threshold"),
        (30, 0.1, [0.05, 0.04, 0.04, 0.04, 0.04, 0.06], "validation_error_rose"),
        (30, 0.1, [0.05, 0.04, 0.03, 0.02, 0.01, 0.01], "validation_error_flat"),
        (30, 0.1, [0.05, 0.04, 0.03, 0.02, 0.015, 0.012], None),
    ],
)
def test_stopping_rules(epoch, train_error, val, expected):
    assert stop_reason(P, epoch, train_error, val) == expected


def test_protocol_validates_its_constants():
    with pytest.raises(ValueError, match="min_epochs"):
        Protocol(min_epochs=30, max_epochs=20)
    with pytest.raises(ValueError, match="lr_candidates"):
        Protocol(lr_candidates=())
    assert Protocol().validation_size(60_000) == 10_000
    assert Protocol().validation_size(5_000) == 833


@pytest.fixture(scope="module")
def embedded():
    return MNISTTensors.load(source="embedded")


@pytest.fixture(scope="module")
def quick_records(embedded, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    protocol = quick_protocol(lr_candidates=(1e-1, 1e-2, 1e3), selection_epochs=3)
    configs = [
        RunConfig(depth=2, method="un", seed=s, protocol=protocol, data=embedded.source)
        for s in range(2)
    ]
    torch.manual_seed(0)
    return out, configs, train_runs(configs, embedded, out)


def test_runs_are_written_as_json_when_they_end(quick_records):
    out, configs, records = quick_records
    for config, record in zip(configs, records):
        on_disk = json.loads(run_path(out, config).read_text())
        assert on_disk["test_error"] == record["test_error"]
        assert load_finished(out, config) is not None
        curves = record["curves"]
        assert len(curves["val_error"]) == record["epochs"] == len(curves["lr"])
        assert record["stop_reason"] in (
            "max_epochs",
            "validation_error_flat",
            "validation_error_rose",
            "training_error_below_threshold",
        )


def test_selection_picks_the_best_non_diverged_candidate(quick_records):
    _, _, records = quick_records
    for record in records:
        candidates = record["selection"]["candidates"]
        huge = next(c for c in candidates if c["lr"] == 1e3)
        assert huge["diverged"]
        usable = [c for c in candidates if not c["diverged"]]
        assert usable, candidates
        best = min(usable, key=lambda c: c["val_error"])
        assert record["chosen_lr"] == best["lr"], candidates


def test_bold_driver_rates_follow_the_accept_reject_history(quick_records):
    _, _, records = quick_records
    for record in records:
        rate = record["chosen_lr"]
        for accepted, logged in zip(record["curves"]["accepted"], record["curves"]["lr"]):
            rate *= 1.05 if accepted else 0.5
            assert logged == pytest.approx(rate)


def test_training_on_real_digits_beats_chance_widely(quick_records):
    _, _, records = quick_records
    for record in records:
        assert record["test_error"] < 0.3, record["test_error"]  # chance: 0.9


def test_finished_runs_are_not_rerun(quick_records, embedded):
    out, configs, _ = quick_records
    mtime = run_path(out, configs[0]).stat().st_mtime_ns
    from riemann_dnn.experiments.table2 import reproduce_table2

    reproduce_table2(
        out,
        depths=[2],
        methods=["un"],
        runs=2,
        protocol=configs[0].protocol,
        source="embedded",
        jobs=1,
        progress=False,
    )
    assert run_path(out, configs[0]).stat().st_mtime_ns == mtime
    assert (out / "table2.md").exists() and (out / "table2.png").exists()


def test_configs_must_share_everything_but_the_seed(embedded, tmp_path):
    configs = [RunConfig(depth=2, method="un", seed=0), RunConfig(depth=4, method="un", seed=1)]
    with pytest.raises(ValueError, match="seeds"):
        train_runs(configs, embedded, tmp_path)


def test_end_to_end_run_on_the_full_mnist_files(full_mnist_dir, tmp_path):
    """One run of a short protocol on the real 60k/10k files: far below chance (0.9)."""
    data = MNISTTensors.load(full_mnist_dir, source="full")
    protocol = Protocol(lr_candidates=(1e-2, 1e-3), selection_epochs=2, min_epochs=2, max_epochs=2)
    (record,) = train_runs(
        [RunConfig(depth=2, method="un", seed=0, protocol=protocol, data=data.source)],
        data,
        tmp_path,
    )
    assert data.train_x.shape == (60000, 784) and data.test_x.shape == (10000, 784)
    assert record["epochs"] == 2 and record["stop_reason"] == "max_epochs"
    assert record["test_error"] < 0.15, record["test_error"]  # measured 0.086


def test_bn_estimate_changes_evaluation_only(embedded, tmp_path):
    """Re-estimated BN statistics (PreciseBN) change the validation and test errors the
    protocol sees, never the training trajectory; bn_estimate=0 keeps the old run hash."""
    protocol = quick_protocol(lr_candidates=(1e-1,), selection_epochs=2, min_epochs=3)
    protocol = replace(protocol, loss_reduction="mean", max_epochs=3)
    records = {}
    for size in (0, 300):
        config = RunConfig(
            depth=2,
            method="un",
            seed=0,
            protocol=replace(protocol, bn_estimate=size),
            arch="conv",
            width=4,
            data=embedded.source,
        )
        (records[size],) = train_runs([config], embedded, tmp_path / str(size))
    plain, estimated = records[0], records[300]
    assert plain["curves"]["train_loss"] == estimated["curves"]["train_loss"]
    assert plain["curves"]["val_error"] != estimated["curves"]["val_error"]
    assert "bn_estimate" not in plain["config"]["protocol"]
    assert estimated["config"]["protocol"]["bn_estimate"] == 300
    with pytest.raises(ValueError, match="bn_estimate"):
        Protocol(bn_estimate=-1)
