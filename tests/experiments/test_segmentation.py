"""Segmentation training: metrics, the `segment` command end to end, resume, CamVid, doors."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from riemann_dnn.cli.main import main
from riemann_dnn.data import VOID_LABEL, load_digit_scenes
from riemann_dnn.experiments.segmentation import (
    CheckpointMismatchError,
    SegmentationConfig,
    build_model,
    compare_methods,
    confusion_matrix,
    segmentation_metrics,
    train_segmentation,
)


@pytest.fixture(scope="module")
def scenes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_digit_scenes(train_scenes=320, test_scenes=96, seed=0, source="embedded")


TINY = dict(width=8, kernel=5, batch_size=16, lr=0.1, train_scenes=320, test_scenes=96)
MINI = dict(width=4, kernel=3, batch_size=16, lr=0.1, train_scenes=128, test_scenes=32)


@pytest.fixture(scope="module")
def mini(scenes):
    """128 training and 32 test scenes, for tests that check mechanics, not learning."""
    train, test = scenes
    return tuple(
        type(s)(s.images[:n], s.labels[:n], s.num_classes, s.ignore_index, s.class_names, s.name)
        for s, n in ((train, 128), (test, 32))
    )


# -- metrics ----------------------------------------------------------------------------------
def test_confusion_matrix_counts_pairs_and_ignores_void():
    target = torch.tensor([[0, 0, 1, 2], [2, 11, 11, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [0, 2, 0, 1]])
    got = confusion_matrix(pred, target, 3, ignore_index=11)
    expected = torch.tensor(
        [
            [1, 1, 0],  # true 0: predicted 0, 1
            [0, 2, 0],  # true 1: predicted 1, 1
            [1, 0, 1],
        ]
    )  # true 2: predicted 2, 0; the two void pixels dropped
    assert torch.equal(got, expected), got


def test_metrics_match_hand_computation():
    c = torch.tensor(
        [
            [5, 1, 0, 0],
            [2, 3, 0, 1],
            [0, 0, 0, 0],  # class 2 neither present nor predicted: left out
            [0, 0, 0, 0],
        ]
    )  # class 3 predicted once, never present: IoU 0
    m = segmentation_metrics(c)
    f = Fraction
    glob = f(8, 12)
    class_avg = (f(5, 6) + f(3, 6)) / 2
    iou = [f(5, 6 + 7 - 5), f(3, 6 + 4 - 3), None, f(0, 1)]
    miou = (iou[0] + iou[1] + iou[3]) / 3
    assert m["global_accuracy"] == pytest.approx(float(glob), abs=1e-12), m
    assert m["class_accuracy"] == pytest.approx(float(class_avg), abs=1e-12), m
    assert m["mean_iou"] == pytest.approx(float(miou), abs=1e-12), m
    assert m["per_class_iou"][2] is None and m["per_class_accuracy"][3] is None, m
    assert m["pixels"] == 12


def test_metrics_of_a_perfect_and_a_constant_prediction():
    target = torch.tensor([[0, 1, 1, 2, VOID_LABEL]])
    perfect = segmentation_metrics(confusion_matrix(target.clamp(max=2), target, 3, VOID_LABEL))
    assert perfect["global_accuracy"] == perfect["class_accuracy"] == perfect["mean_iou"] == 1
    constant = segmentation_metrics(
        confusion_matrix(torch.ones_like(target), target, 3, VOID_LABEL)
    )
    # class 1: IoU 2/4, classes 0 and 2: IoU 0 -> mIoU 1/6; accuracy 2/4, class-avg 1/3
    assert constant["mean_iou"] == pytest.approx(1 / 6) and constant["global_accuracy"] == 0.5
    assert constant["class_accuracy"] == pytest.approx(1 / 3)


# -- training ---------------------------------------------------------------------------------
def test_segment_command_beats_the_all_background_predictor(tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(
            [
                "segment",
                "--model",
                "segnet-basic",
                "--data",
                "mnist-scenes",
                "--method",
                "un",
                "--epochs",
                "4",
                "--width",
                "8",
                "--kernel",
                "5",
                "--lr",
                "0.1",
                "--train-scenes",
                "320",
                "--test-scenes",
                "96",
                "--out",
                str(out),
                "--quiet",
                "--seed",
                "0",
            ]
        )
    assert code == 0
    printed = capsys.readouterr().out
    assert str(out) in printed, printed
    for name in ("metrics.json", "metrics.md", "predictions.png", "checkpoint.pt"):
        assert (out / name).is_file(), f"{name} missing; {sorted(p.name for p in out.iterdir())}"
    record = json.loads((out / "metrics.json").read_text())
    final, base = record["final"], record["baseline_majority"]
    assert base["class_name"] == "background"
    assert final["mean_iou"] > base["mean_iou"] + 0.01, (
        f"mIoU {final['mean_iou']:.4f} vs all-background {base['mean_iou']:.4f}"
    )
    assert record["epochs_done"] == 4 and len(record["history"]) == 4
    assert len(record["parameters"]["oblique"]) == 8, record["parameters"]["oblique"]
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 4
    for name in record["parameters"]["oblique"]:  # UN keeps every BN-fed filter unit-norm
        norms = checkpoint["model"][name].flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (name, norms)
    png = Image.open(out / "predictions.png")
    assert png.size[0] > 300 and png.size[1] > 300, png.size


def test_resume_equals_an_uninterrupted_run(tmp_path, mini):
    method = "un"  # oblique filters, Euclidean rest, momentum buffers: all must be restored
    config = SegmentationConfig(method=method, epochs=2, **MINI)
    kwargs = dict(data=mini, progress=False, figure_images=0)
    straight = train_segmentation(config, tmp_path / "straight", **kwargs)
    first = train_segmentation(
        SegmentationConfig(method=method, epochs=1, **MINI), tmp_path / "resumed", **kwargs
    )
    assert first.record["epochs_done"] == 1
    resumed = train_segmentation(config, tmp_path / "resumed", resume=True, **kwargs)
    assert resumed.record["epochs_done"] == 2
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for name in a:
        assert torch.equal(a[name], b[name]), (
            f"{name} differs after resume by {(a[name].double() - b[name].double()).abs().max()}"
        )
    for h1, h2 in zip(straight.record["history"], resumed.record["history"]):
        assert h1["train_loss"] == h2["train_loss"] and h1["mean_iou"] == h2["mean_iou"], (h1, h2)


def test_existing_or_foreign_checkpoint_is_not_overwritten(tmp_path, mini):
    config = SegmentationConfig(epochs=1, **MINI)
    train_segmentation(config, tmp_path, data=mini, progress=False, figure_images=0)
    with pytest.raises(CheckpointMismatchError, match="resume"):
        train_segmentation(config, tmp_path, data=mini, progress=False)
    other = SegmentationConfig(epochs=2, **{**MINI, "lr": 0.05})
    with pytest.raises(CheckpointMismatchError, match="lr"):
        train_segmentation(other, tmp_path, data=mini, progress=False, resume=True)


def test_bsgd_keeps_everything_euclidean_from_the_same_unit_init(tmp_path, mini):
    un = train_segmentation(
        SegmentationConfig(method="un", epochs=1, **MINI),
        tmp_path / "un",
        data=mini,
        progress=False,
        figure_images=0,
    )
    bsgd = train_segmentation(
        SegmentationConfig(method="bsgd", epochs=1, **MINI),
        tmp_path / "b",
        data=mini,
        progress=False,
        figure_images=0,
    )
    start_un = build_model(SegmentationConfig(method="un", **MINI), 1, 11).state_dict()
    start_b = build_model(SegmentationConfig(method="bsgd", **MINI), 1, 11).state_dict()
    assert all(torch.equal(start_un[k], start_b[k]) for k in start_un), "different inits"
    assert bsgd.record["parameters"]["oblique"] == []
    norms = bsgd.model.encoder[1][0].weight.detach().flatten(1).norm(dim=1)
    # The Euclidean gradient of a scale-invariant filter is orthogonal to it, so plain SGD
    # can only grow its norm: |w - lr g|^2 = |w|^2 + lr^2 |g|^2 (up to momentum mixing).
    assert (norms > 1 + 1e-5).all(), f"B-SGD filters did not grow: {norms}"
    un_norms = un.model.encoder[1][0].weight.detach().flatten(1).norm(dim=1)
    assert (un_norms - 1).abs().max() < 2e-6, un_norms


@pytest.mark.parametrize("jobs, methods", [(1, ("un", "bsgd")), (2, ("bsgd", "un"))])
def test_comparison_writes_table_and_ratio(tmp_path, mini, jobs, methods):
    base = SegmentationConfig(epochs=1, **MINI)
    small = tuple(
        type(s)(s.images[:48], s.labels[:48], s.num_classes, s.ignore_index, s.class_names, s.name)
        for s in mini
    )
    summary = compare_methods(
        base,
        tmp_path,
        seeds=[0],
        lr_grid=[0.1, 0.01],
        holdout=16,
        selection_epochs=1,
        data=small,
        progress=False,
        log=None,
        methods=methods,
        jobs=jobs,
        threads=1,
    )
    assert [r["method"] for r in summary["rows"]] == list(methods)
    assert summary["epoch_time_ratio_un_over_bsgd"] > 0
    for method in ("un", "bsgd"):
        chosen = summary["selection"][method]
        assert chosen["chosen_lr"] in (0.1, 0.01) and len(chosen["candidates"]) == 2
        assert chosen["holdout_images"] == 16 and chosen["fit_images"] == 32
    for name in ("comparison.json", "comparison.md", "comparison.png"):
        assert (tmp_path / name).is_file(), name
    title = (tmp_path / "comparison.md").read_text().splitlines()[0]
    named = " vs ".join({"un": "UN", "bsgd": "B-SGD"}[m] for m in methods)
    assert title.startswith(f"# {named}: "), title


# -- CamVid -----------------------------------------------------------------------------------
def _write_camvid(root: Path, rng: np.random.Generator, size: int = 32) -> None:
    for split, count in (("train", 4), ("val", 1), ("test", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir(parents=True)
        for i in range(count):
            ids = rng.integers(0, 11, size=(size, size), dtype=np.uint8)
            ids[: size // 4] = VOID_LABEL  # a band of void
            rgb = (np.stack([ids * 20, 255 - ids * 20, ids * 7], axis=-1)).astype(np.uint8)
            Image.fromarray(rgb, mode="RGB").save(root / split / f"img{i}.png")
            Image.fromarray(ids, mode="L").save(root / f"{split}annot" / f"img{i}.png")


def test_camvid_directory_trains_one_epoch_with_void_ignored(tmp_path, capsys):
    root = tmp_path / "CamVid"
    _write_camvid(root, np.random.default_rng(0))
    out = tmp_path / "out"
    code = main(
        [
            "segment",
            "--model",
            "segnet",
            "--data",
            f"camvid:{root}",
            "--width",
            "4",
            "--depth",
            "3",
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--quiet",
            "--method",
            "bsgd",
        ]
    )
    assert code == 0, capsys.readouterr().out
    record = json.loads((out / "metrics.json").read_text())
    assert record["data"]["ignore_index"] == VOID_LABEL
    assert record["data"]["class_weights"] is not None  # median frequency by default
    assert record["final"]["pixels"] == 2 * 32 * 24, record["final"]["pixels"]  # void left out
    assert (out / "predictions.png").is_file()


def test_camvid_missing_directory_is_a_clear_error(tmp_path, capsys):
    code = main(
        [
            "segment",
            "--data",
            f"camvid:{tmp_path / 'nowhere'}",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    assert code == 2
    assert "nowhere" in capsys.readouterr().err  # errors go to stderr


# -- the pymanopt door ------------------------------------------------------------------------
def test_pymanopt_door_trains_and_keeps_filters_unit_norm(tmp_path, mini):
    pytest.importorskip("riemann_dnn.problems.module_problem")
    config = SegmentationConfig(method="un", epochs=1, door="pymanopt", **MINI)
    result = train_segmentation(config, tmp_path, data=mini, progress=False, figure_images=0)
    record = result.record
    assert record["door"] == "pymanopt" and record["epochs_done"] == 1
    start = dict(build_model(config, 1, 11).named_parameters())
    for name in record["parameters"]["oblique"]:
        weight = dict(result.model.named_parameters())[name].detach()
        norms = weight.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (name, norms)
        moved = (weight - start[name].detach()).abs().max()
        assert moved > 1e-4, f"{name} did not move from its initial value ({moved:.2e})"
    assert np.isfinite(record["final"]["mean_iou"]) and (tmp_path / "metrics.json").is_file()


# -- GPU --------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("door", ["torch", "pymanopt"])
def test_training_on_the_gpu_keeps_parameters_there_and_filters_unit_norm(tmp_path, mini, door):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    if door == "pymanopt":
        pytest.importorskip("riemann_dnn.problems.module_problem")
    config = SegmentationConfig(method="un", epochs=2, door=door, **MINI)
    result = train_segmentation(config, tmp_path, data=mini, device="cuda", progress=False)
    assert all(p.is_cuda for p in result.model.parameters())
    record = result.record
    assert record["device"].startswith("cuda") and record["epochs_done"] == 2
    for name in record["parameters"]["oblique"]:
        weight = dict(result.model.named_parameters())[name].detach()
        norms = weight.flatten(1).norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), (name, norms)
    assert np.isfinite(record["final"]["mean_iou"])
    if door == "torch":  # resume on the GPU continues from the checkpoint
        more = train_segmentation(
            replace(config, epochs=3),
            tmp_path,
            data=mini,
            device="cuda",
            resume=True,
            progress=False,
        )
        assert more.record["epochs_done"] == 3
