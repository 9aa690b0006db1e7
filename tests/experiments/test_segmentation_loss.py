"""Segmentation's loss comes from its data set: CamVid weights its classes by median frequency
and ignores void, digit scenes are unweighted; the experiment only asks, and a held-out split
keeps the set's loss."""

from __future__ import annotations

import pytest
import torch

from riemann_dnn.data import (
    CAMVID_CLASSES,
    DIGIT_SCENE_CLASSES,
    VOID_LABEL,
    SegmentationSet,
    make_digit_scenes,
    median_frequency_weights,
)
from riemann_dnn.experiments.segmentation import (
    SegmentationConfig,
    class_weights_for,
    split_holdout,
)
from riemann_dnn.experiments.segmentation.build import loss_for


def _camvid_like(n: int = 6) -> SegmentationSet:
    """A small set shaped like load_camvid's (11 classes, void 11, median-frequency loss)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, len(CAMVID_CLASSES), (n, 8, 8), generator=g)
    labels[:, :2] = VOID_LABEL
    return SegmentationSet(
        torch.rand(n, 3, 8, 8, generator=g),
        labels,
        len(CAMVID_CLASSES),
        VOID_LABEL,
        CAMVID_CLASSES,
        "camvid-train",
        class_weighting="median_frequency",
    )


def _scenes(n: int = 6) -> SegmentationSet:
    g = torch.Generator().manual_seed(1)
    digits = torch.randint(0, 256, (20, 28, 28), generator=g).to(torch.uint8)
    return make_digit_scenes(digits, torch.arange(20) % 10, n, canvas=32, seed=0)


def test_each_data_set_defines_its_own_loss():
    camvid, scenes = _camvid_like(), _scenes()
    assert scenes.class_weighting is None and scenes.class_names == DIGIT_SCENE_CLASSES
    own = camvid.cross_entropy_loss("auto")
    assert own.ignore_index == VOID_LABEL
    assert torch.equal(own.weight, median_frequency_weights(camvid.labels, 11, VOID_LABEL))
    assert scenes.cross_entropy_loss("auto").weight is None
    assert scenes.cross_entropy_loss("auto").ignore_index == -100  # nothing to ignore
    assert camvid.cross_entropy_loss().weight is None  # no argument: unweighted, as before
    with pytest.raises(ValueError, match="class_weighting='median' is not a known rule"):
        SegmentationSet(
            camvid.images, camvid.labels, 11, VOID_LABEL, CAMVID_CLASSES, "x", "median"
        )


@pytest.mark.parametrize(
    ("rule", "camvid_weighted", "scenes_weighted"),
    [("auto", True, False), ("median", True, True), ("none", False, False)],
)
def test_the_experiment_asks_the_data_for_its_loss(rule, camvid_weighted, scenes_weighted):
    for data, weighted in ((_camvid_like(), camvid_weighted), (_scenes(), scenes_weighted)):
        config = SegmentationConfig(class_weights=rule)
        loss = loss_for(config, data)
        expected = data.cross_entropy_loss("median_frequency" if weighted else None)
        assert loss.ignore_index == expected.ignore_index
        assert (loss.weight is None) == (not weighted)
        if weighted:
            assert torch.equal(loss.weight, expected.weight)
            assert torch.equal(class_weights_for(config, data), expected.weight)
        else:
            assert class_weights_for(config, data) is None


def test_a_held_out_split_keeps_the_data_sets_loss():
    fit, held = split_holdout(_camvid_like(), 2, seed=0)
    assert (len(fit), len(held)) == (4, 2)
    for part in (fit, held):
        assert part.class_weighting == "median_frequency" and part.ignore_index == VOID_LABEL
        assert torch.equal(
            part.cross_entropy_loss("auto").weight,
            median_frequency_weights(part.labels, 11, VOID_LABEL),
        )
