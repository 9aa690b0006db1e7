"""Digit scenes: determinism, label/pixel consistency, provenance, options and errors."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from riemann_dnn.data import scenes
from riemann_dnn.data.scenes import (
    BACKGROUND_LABEL,
    DIGIT_SCENE_CLASSES,
    load_digit_scenes,
    make_digit_scenes,
)

REPO = Path(__file__).resolve().parents[2]


def _mnist_dir() -> Path:
    env = os.environ.get("RIEMANN_DNN_DATA")
    base = Path(env) if env else REPO.parent / "shared" / "data"
    directory = base / "mnist"
    if (
        not (directory / "train-images-idx3-ubyte.gz").exists()
        and not (directory / "train-images-idx3-ubyte").exists()
    ):
        pytest.skip(f"real MNIST not found in {directory} (set RIEMANN_DNN_DATA)")
    return directory


def _blob_digits(intensities: list[int], classes: list[int], size: int = 28, blob: int = 6):
    """Fake 'digits': a blob x blob square of one constant intensity in a black size x size."""
    images = np.zeros((len(intensities), size, size), dtype=np.uint8)
    start = (size - blob) // 2
    images[:, start : start + blob, start : start + blob] = np.array(intensities)[:, None, None]
    return images, np.array(classes, dtype=np.int64)


def _bytes(data) -> np.ndarray:
    """Scene intensities back as uint8 0..255 (images are uint8 / 255 exactly)."""
    return (data.images[:, 0] * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def mnist():
    from riemann_dnn.data.mnist import load_mnist

    return load_mnist(_mnist_dir(), source="full")


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_scenes_and_different_seeds_differ(mnist):
    args = (mnist.test_images, mnist.test_labels, 50)
    a = make_digit_scenes(*args, seed=11)
    b = make_digit_scenes(*args, seed=11)
    c = make_digit_scenes(*args, seed=12)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.labels, c.labels)
    # a Generator is accepted and consumed like its seed
    d = make_digit_scenes(*args, seed=np.random.default_rng(11))
    assert torch.equal(a.images, d.images)


def test_test_scenes_do_not_depend_on_the_number_of_train_scenes():
    directory = _mnist_dir()
    train_a, test_a = load_digit_scenes(directory, train_scenes=20, test_scenes=10, seed=3)
    train_b, test_b = load_digit_scenes(directory, train_scenes=40, test_scenes=10, seed=3)
    assert torch.equal(test_a.images, test_b.images)
    _, test_c = load_digit_scenes(directory, train_scenes=20, test_scenes=10, seed=4)
    assert not torch.equal(test_a.images, test_c.images)


# --------------------------------------------------------------------------- content


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_background_label_exactly_where_the_canvas_is_dark(mnist, threshold):
    data = make_digit_scenes(
        mnist.train_images, mnist.train_labels, 100, seed=0, threshold=threshold
    )
    pixels = _bytes(data)
    dark = pixels <= threshold * 255
    background = (data.labels == BACKGROUND_LABEL).numpy()
    mismatch = int((dark != background).sum())
    assert mismatch == 0, f"{mismatch} pixels where label==background disagrees with dark"
    assert 0.02 < (~background).mean() < 0.5, f"digit pixel fraction {(~background).mean()}"


def test_each_digit_pixel_is_labelled_with_the_class_of_the_digit_shown():
    # class c <-> intensity 130 + 10 c: from any bright pixel we know which digit supplied it
    intensities = [130 + 10 * c for c in range(10)]
    images, classes = _blob_digits(intensities, list(range(10)))
    data = make_digit_scenes(images, classes, 200, canvas=40, digits_per_scene=(3, 5), seed=1)
    pixels, labels = _bytes(data), data.labels.numpy()
    bright = pixels > 0
    assert np.array_equal(labels[bright], (pixels[bright].astype(int) - 130) // 10)
    assert (labels[~bright] == BACKGROUND_LABEL).all()


def test_overlaps_show_the_brightest_digit():
    # canvas = digit size, so every digit lands at (0, 0) and two digits always overlap fully.
    # digit "4" is bright on the left, digit "7" on the right: a scene holding both must show
    # the bright half of each (whatever the paste order), labelled by its digit
    left, right = np.zeros((28, 28), np.uint8), np.zeros((28, 28), np.uint8)
    left[:, :14], left[:, 14:] = 250, 150
    right[:, :14], right[:, 14:] = 150, 250
    data = make_digit_scenes(
        np.stack([left, right]), np.array([4, 7]), 40, canvas=28, digits_per_scene=(2, 2)
    )
    outcomes = set()
    for pixels, labels in zip(_bytes(data), data.labels.numpy(), strict=True):
        if np.array_equal(pixels, left) or np.array_equal(pixels, right):  # one digit, twice
            digit = 4 if np.array_equal(pixels, left) else 7
            assert (labels == digit).all()
            outcomes.add(digit)
        else:
            assert (pixels == 250).all(), "overlap must show the brighter pixel"
            assert (labels[:, :14] == 4).all() and (labels[:, 14:] == 7).all()
            outcomes.add("both")
    assert outcomes == {4, 7, "both"}


def test_number_of_digits_per_scene_follows_the_range():
    # 200 fake digits of distinct intensities: distinct non-zero values count a scene's digits
    # (one less when the same digit is drawn twice, which happens: digits are drawn with
    # replacement; blobs are small on a large canvas, so they are never fully hidden)
    images, classes = _blob_digits(list(range(40, 240)), [i % 10 for i in range(200)], blob=4)
    for lo, hi in [(2, 4), (1, 1), (3, 3), (1, 6)]:
        data = make_digit_scenes(images, classes, 400, canvas=128, digits_per_scene=(lo, hi))
        per_scene = np.array([len(np.unique(p[p > 0])) for p in _bytes(data)])
        assert per_scene.max() <= hi and (per_scene >= lo).mean() > 0.95, (lo, hi)
        assert set(range(lo, hi + 1)) <= set(per_scene.tolist()), (lo, hi)
        assert abs(per_scene.mean() - (lo + hi) / 2) < 0.15, (lo, hi, per_scene.mean())


def test_all_eleven_classes_appear(mnist):
    data = make_digit_scenes(mnist.train_images, mnist.train_labels, 200, seed=0)
    counts = torch.bincount(data.labels.reshape(-1), minlength=11)
    assert (counts > 0).all(), f"class pixel counts {counts.tolist()}"
    assert counts[BACKGROUND_LABEL] == counts.max()


@pytest.mark.parametrize("canvas", [28, 64, 96])
def test_canvas_size_option(mnist, canvas):
    data = make_digit_scenes(mnist.train_images, mnist.train_labels, 7, canvas=canvas, seed=0)
    assert data.images.shape == (7, 1, canvas, canvas)
    assert data.labels.shape == (7, canvas, canvas)


def test_accepts_torch_tensors(mnist):
    from_numpy = make_digit_scenes(mnist.test_images, mnist.test_labels, 5, seed=2)
    from_torch = make_digit_scenes(
        torch.from_numpy(np.array(mnist.test_images)),
        torch.from_numpy(np.array(mnist.test_labels)),
        5,
        seed=2,
    )
    assert torch.equal(from_numpy.images, from_torch.images)


# --------------------------------------------------------------------------- load_digit_scenes


def test_load_digit_scenes_types_shapes_and_metadata():
    train, test = load_digit_scenes(
        _mnist_dir(), train_scenes=30, test_scenes=12, canvas=72, seed=0, source="full"
    )
    for data, n, name in [(train, 30, "mnist-scenes-train"), (test, 12, "mnist-scenes-test")]:
        assert data.images.shape == (n, 1, 72, 72) and data.images.dtype == torch.float32
        assert data.labels.shape == (n, 72, 72) and data.labels.dtype == torch.int64
        assert 0.0 <= data.images.min() and data.images.max() <= 1.0
        assert data.num_classes == 11 and data.ignore_index is None
        assert data.class_names == DIGIT_SCENE_CLASSES
        assert DIGIT_SCENE_CLASSES == tuple("0123456789") + ("background",)
        assert data.name == name and data.in_channels == 1
        assert data.labels.min() >= 0 and data.labels.max() <= BACKGROUND_LABEL


def test_train_scenes_use_only_training_digits_and_test_scenes_only_test_digits(monkeypatch):
    # fake MNIST: training digits are classes 0-4 with intensities 200-209,
    # test digits are classes 5-9 with intensities 140-149
    train_images, train_labels = _blob_digits(list(range(200, 210)), [i % 5 for i in range(10)])
    test_images, test_labels = _blob_digits(list(range(140, 150)), [5 + i % 5 for i in range(10)])
    fake = SimpleNamespace(
        train_images=train_images,
        train_labels=train_labels,
        test_images=test_images,
        test_labels=test_labels,
    )
    calls = []

    def fake_load_mnist(data_dir=None, *, source="auto", download=False):
        calls.append((data_dir, source, download))
        return fake

    monkeypatch.setattr(scenes, "load_mnist", fake_load_mnist)
    train, test = load_digit_scenes("somewhere", train_scenes=60, test_scenes=60, source="full")
    assert calls == [("somewhere", "full", False)]
    for data, values, digits in [
        (train, set(range(200, 210)), set(range(5))),
        (test, set(range(140, 150)), set(range(5, 10))),
    ]:
        seen = set(np.unique(_bytes(data)).tolist()) - {0}
        assert seen == values, f"{data.name}: intensities {sorted(seen)}"
        assert set(data.labels.unique().tolist()) == digits | {BACKGROUND_LABEL}


# --------------------------------------------------------------------------- errors


def test_canvas_smaller_than_a_digit_is_rejected(mnist):
    with pytest.raises(ValueError, match=r"canvas=27 is smaller than the digits \(28x28\)"):
        make_digit_scenes(mnist.test_images, mnist.test_labels, 3, canvas=27)


@pytest.mark.parametrize("bad", [(0, 2), (3, 2), (2,), (2, 3, 4), 3, (2.0, 4), "24"])
def test_invalid_digits_per_scene_is_rejected(mnist, bad):
    with pytest.raises(ValueError, match=r"digits_per_scene must be .*1 <= lo <= hi; got"):
        make_digit_scenes(mnist.test_images, mnist.test_labels, 3, digits_per_scene=bad)


def test_other_bad_arguments_are_rejected(mnist):
    images, labels = mnist.test_images[:10], mnist.test_labels[:10]
    with pytest.raises(TypeError, match="uint8"):
        make_digit_scenes(images.astype(np.float32) / 255, labels, 3)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(10,\)"):
        make_digit_scenes(images, labels[:5], 3)
    with pytest.raises(ValueError, match="digit classes 0-9"):
        make_digit_scenes(images, np.full(10, 10), 3)
    with pytest.raises(ValueError, match=r"threshold=1.0 .* \[0, 1\)"):
        make_digit_scenes(images, labels, 3, threshold=1.0)
    with pytest.raises(ValueError, match="num_scenes must be >= 0"):
        make_digit_scenes(images, labels, -1)
    with pytest.raises(ValueError, match=r"shape \(M, h, w\)"):
        make_digit_scenes(images.reshape(10, -1), labels, 3)
