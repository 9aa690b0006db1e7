"""Tests of riemann_dnn.data's MNIST part: IDX reading, lookup, verification, download, loading.

Tests marked by the ``mnist_dir`` fixture use the real MNIST files: ``$RIEMANN_DNN_DATA`` (or its
``mnist/``) when it holds canonical MNIST, else ``<repo>/../shared/data/mnist``; they are skipped
only when neither exists. Everything else builds small MNIST-format datasets in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import riemann_dnn.data.download as download_module
import riemann_dnn.data.idx as idx_module
from riemann_dnn.data import (
    MNIST,
    MNISTError,
    MNISTNotFoundError,
    as_tensors,
    download_mnist,
    find_mnist_dir,
    load_mnist,
    read_idx,
    verify_mnist,
    write_idx,
)
from riemann_dnn.data.mnist import EMBEDDED_DIR, MNIST_FILES, MNIST_SHA256

REPO = Path(__file__).resolve().parents[2]
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_IMAGES_MD5 = "6bbc9ace898e44ae57da46a324031adb"  # uncompressed, as published


@pytest.fixture(scope="module")
def mnist_dir() -> Path:
    """The directory of the real, canonical MNIST files (skip only when there are none)."""
    candidates = (
        [Path(os.environ["RIEMANN_DNN_DATA"])] if os.environ.get("RIEMANN_DNN_DATA") else []
    )
    candidates.append(REPO.parent / "shared" / "data")
    for candidate in candidates:
        try:
            directory = find_mnist_dir(candidate)
        except MNISTNotFoundError:
            continue
        if verify_mnist(directory).is_canonical:
            return directory
    pytest.skip(f"no canonical MNIST files in {[str(c) for c in candidates]}")


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $RIEMANN_DNN_DATA and an empty per-user cache, so lookup sees only what a test adds."""
    monkeypatch.delenv("RIEMANN_DNN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return tmp_path / "xdg-cache" / "riemann_dnn" / "mnist"


def make_dataset(
    directory: Path,
    *,
    n_train: int = 10,
    n_test: int = 4,
    hw: tuple[int, int] = (5, 5),
    seed: int = 0,
    gz: bool = True,
) -> dict[str, np.ndarray]:
    """Write a made-up, consistent MNIST-format dataset; return its arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        MNIST_FILES[0]: rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        MNIST_FILES[1]: rng.integers(0, 3, n_train, dtype=np.uint8),
        MNIST_FILES[2]: rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        MNIST_FILES[3]: rng.integers(0, 3, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        write_idx(directory / (f"{name}.gz" if gz else name), array)
    return arrays


# ---------------------------------------------------------------- the real files


def test_full_mnist_shapes_dtypes_and_label_counts(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir, source="full")
    assert data.train_images.shape == (60000, 28, 28) and data.train_images.dtype == np.uint8
    assert data.test_images.shape == (10000, 28, 28) and data.test_images.dtype == np.uint8
    assert data.train_labels.dtype == np.int64 and data.test_labels.dtype == np.int64
    assert np.bincount(data.train_labels).tolist() == TRAIN_COUNTS
    assert np.bincount(data.test_labels).tolist() == TEST_COUNTS
    assert data.canonical is True and data.source == str(mnist_dir)
    assert not data.train_images.flags.writeable, "cached arrays must be read-only"


def test_verify_detects_canonical_mnist(mnist_dir: Path) -> None:
    report = verify_mnist(mnist_dir)
    assert report.is_canonical
    assert dict(report.sha256) == dict(MNIST_SHA256)
    assert list(report.train_label_counts) == TRAIN_COUNTS
    assert list(report.test_label_counts) == TEST_COUNTS
    assert (report.image_shape, report.num_classes) == ((28, 28), 10)
    # Independent of our hard-coded sums: the published md5 of the uncompressed train images.
    raw = idx_module.read_bytes(report.files[MNIST_FILES[0]])
    assert hashlib.md5(raw).hexdigest() == TRAIN_IMAGES_MD5


def test_raw_and_gzip_files_load_identically(mnist_dir: Path, tmp_path: Path) -> None:
    gz_files = verify_mnist(mnist_dir).files
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in MNIST_FILES[:2]:  # training files raw, test files gzipped
        (mixed / name).write_bytes(gzip.decompress(gz_files[name].read_bytes()))
    for name in MNIST_FILES[2:]:
        shutil.copy(gz_files[name], mixed / f"{name}.gz")
    a, b = load_mnist(mnist_dir, source="full"), load_mnist(mixed, source="full")
    assert b.canonical and b.source == str(mixed.resolve())
    for field in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
    np.testing.assert_array_equal(
        read_idx(mixed / MNIST_FILES[1]), read_idx(gz_files[MNIST_FILES[1]])
    )


def test_repeated_loads_are_served_from_the_cache(mnist_dir: Path) -> None:
    assert load_mnist(mnist_dir, source="full") is load_mnist(mnist_dir, source="full")


def test_embedded_images_are_byte_identical_to_full_mnist(mnist_dir: Path) -> None:
    full, sub = load_mnist(mnist_dir, source="full"), load_mnist(source="embedded")
    for split, stem in (("train", "train"), ("test", "t10k")):
        index = np.load(EMBEDDED_DIR / f"{stem}-indices.npy")
        assert len(np.unique(index)) == len(index), f"{stem}: repeated indices"
        np.testing.assert_array_equal(
            getattr(sub, f"{split}_images"), getattr(full, f"{split}_images")[index]
        )
        np.testing.assert_array_equal(
            getattr(sub, f"{split}_labels"), getattr(full, f"{split}_labels")[index]
        )


# ---------------------------------------------------------------- embedded subset


def test_embedded_subset_loads_with_all_classes() -> None:
    data = load_mnist(source="embedded")
    assert data.train_images.shape == (5000, 28, 28) and data.test_images.shape == (1000, 28, 28)
    assert data.train_images.dtype == np.uint8 and data.train_labels.dtype == np.int64
    assert np.bincount(data.train_labels).min() > 400, np.bincount(data.train_labels)
    assert np.bincount(data.test_labels).min() > 80, np.bincount(data.test_labels)
    assert data.num_classes == 10
    assert data.source == "embedded" and data.canonical is False
    sizes = sum(p.stat().st_size for p in EMBEDDED_DIR.iterdir())
    assert sizes <= 2 * 1024 * 1024, f"embedded subset is {sizes} bytes"


def test_auto_falls_back_to_embedded_with_one_warning(isolated_env: Path) -> None:
    with pytest.warns(UserWarning, match="embedded.*download_mnist") as record:
        data = load_mnist()
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert data.source == "embedded"
    with pytest.raises(MNISTNotFoundError):
        load_mnist(source="full")


def test_source_argument_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="source='everything'"):
        load_mnist(source="everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data_dir"):
        load_mnist(tmp_path, source="embedded")


# ---------------------------------------------------------------- lookup


def test_lookup_order_explicit_then_env_then_cache(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explicit, env_root = tmp_path / "explicit", tmp_path / "env"
    make_dataset(explicit, n_train=3)
    make_dataset(env_root / "mnist", n_train=4)
    make_dataset(isolated_env, n_train=5)
    monkeypatch.setenv("RIEMANN_DNN_DATA", str(env_root))

    assert find_mnist_dir(explicit) == explicit.resolve()
    assert len(load_mnist(explicit).train_labels) == 3
    assert find_mnist_dir() == (env_root / "mnist").resolve()
    assert len(load_mnist().train_labels) == 4
    monkeypatch.delenv("RIEMANN_DNN_DATA")
    assert find_mnist_dir() == isolated_env.resolve()
    assert len(load_mnist().train_labels) == 5


def test_lookup_accepts_parent_dirs_and_env_dir_itself(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "root" / "mnist")
    assert find_mnist_dir(tmp_path / "root") == (tmp_path / "root" / "mnist").resolve()
    make_dataset(tmp_path / "flat")
    monkeypatch.setenv("RIEMANN_DNN_DATA", str(tmp_path / "flat"))
    assert find_mnist_dir() == (tmp_path / "flat").resolve()


def test_explicit_dir_without_files_is_an_error_not_a_fallback(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_dataset(tmp_path / "env" / "mnist")
    monkeypatch.setenv("RIEMANN_DNN_DATA", str(tmp_path / "env"))
    with pytest.raises(MNISTNotFoundError, match="were not searched"):
        load_mnist(tmp_path / "typo")


def test_missing_files_error_lists_every_place_looked(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_root = tmp_path / "env"
    partial = env_root / "mnist"
    arrays = make_dataset(partial)
    for name in MNIST_FILES[2:]:
        (partial / f"{name}.gz").unlink()
    monkeypatch.setenv("RIEMANN_DNN_DATA", str(env_root))
    with pytest.raises(MNISTNotFoundError) as info:
        find_mnist_dir()
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, MNISTError)
    for place in (partial, env_root, isolated_env):
        assert str(place) in message, f"{place} not in:\n{message}"
    assert f"missing {MNIST_FILES[2]}, {MNIST_FILES[3]}" in message
    assert "holds none of the four files" in message and "does not exist" in message
    for hint in ("--data-dir", "RIEMANN_DNN_DATA=", "download_mnist()", "source='embedded'"):
        assert hint in message, f"{hint!r} not in:\n{message}"
    assert arrays  # the partial directory really held two files


# ---------------------------------------------------------------- corrupt and odd data


def test_truncated_files_raise_mnist_error_naming_the_file(
    mnist_dir: Path, tmp_path: Path
) -> None:
    labels_gz = verify_mnist(mnist_dir).files[MNIST_FILES[3]]
    cut_gz = tmp_path / "cut-idx1-ubyte.gz"
    cut_gz.write_bytes(labels_gz.read_bytes()[:-100])
    with pytest.raises(MNISTError, match=f"{cut_gz}.*truncated"):
        read_idx(cut_gz)

    directory = tmp_path / "ds"
    make_dataset(directory, gz=False)
    target = directory / MNIST_FILES[0]
    target.write_bytes(target.read_bytes()[:-7])
    with pytest.raises(MNISTError, match=f"{target}: truncated.*payload"):
        load_mnist(directory)
    target.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(MNISTError, match=f"{target}: truncated IDX header"):
        read_idx(target)


def test_wrong_magic_number_raises_mnist_error_naming_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "ds"
    make_dataset(directory)
    bad = directory / f"{MNIST_FILES[3]}.gz"
    bad.write_bytes(gzip.compress(b"\x89PNG\r\n\x1a\n" + bytes(100)))
    with pytest.raises(MNISTError, match=f"{bad}: not an IDX file: magic number 0x89504E47"):
        load_mnist(directory)
    with pytest.raises(MNISTNotFoundError, match="no such file"):
        read_idx(tmp_path / "absent-idx1-ubyte")


def test_inconsistent_datasets_are_rejected(tmp_path: Path) -> None:
    directory = tmp_path / "ds"
    make_dataset(directory, n_train=10)
    write_idx(directory / f"{MNIST_FILES[1]}.gz", np.zeros(9, np.uint8))
    with pytest.raises(MNISTError, match="10 images but .* 9 labels"):
        verify_mnist(directory)
    write_idx(directory / f"{MNIST_FILES[1]}.gz", np.zeros(10, np.int32))
    with pytest.raises(MNISTError, match="expected uint8 labels"):
        load_mnist(directory)


def test_non_canonical_consistent_dataset_loads(tmp_path: Path) -> None:
    arrays = make_dataset(tmp_path / "tiny", n_train=10, n_test=4, hw=(5, 5))
    data = load_mnist(tmp_path / "tiny", source="full")
    assert isinstance(data, MNIST) and data.canonical is False
    assert data.train_images.shape == (10, 5, 5) and data.image_shape == (5, 5)
    np.testing.assert_array_equal(data.test_images, arrays[MNIST_FILES[2]])
    np.testing.assert_array_equal(data.train_labels, arrays[MNIST_FILES[1]].astype(np.int64))
    assert verify_mnist(tmp_path / "tiny").is_canonical is False


def test_changed_files_are_reread(tmp_path: Path) -> None:
    make_dataset(tmp_path, seed=1)
    first = load_mnist(tmp_path)
    make_dataset(tmp_path, seed=2, n_train=6)
    os.utime(tmp_path / f"{MNIST_FILES[0]}.gz", ns=(0, 123))  # in case of coarse mtimes
    assert len(load_mnist(tmp_path).train_labels) == 6 != len(first.train_labels)


# ---------------------------------------------------------------- tensors


def test_as_tensors_scales_pixels_to_unit_interval() -> None:
    data = load_mnist(source="embedded")
    x, y = as_tensors(data.test_images, data.test_labels)
    assert x.shape == (1000, 784) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert y.shape == (1000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    expected = torch.from_numpy(data.test_images.reshape(1000, -1).astype(np.float32) / 255)
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(y.numpy(), data.test_labels)

    x64, _ = as_tensors(
        data.test_images[:3], data.test_labels[:3], dtype=torch.float64, flatten=False
    )
    assert x64.shape == (3, 28, 28) and x64.dtype == torch.float64


def test_as_tensors_rejects_bad_input() -> None:
    images, labels = np.zeros((4, 5, 5), np.uint8), np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="images: expected raw uint8"):
        as_tensors(images.astype(np.float32), labels)
    with pytest.raises(ValueError, match=r"labels: expected integers of shape \(4,\)"):
        as_tensors(images, labels[:3])
    with pytest.raises(TypeError, match="floating torch dtype"):
        as_tensors(images, labels, dtype=torch.int32)


# ---------------------------------------------------------------- download (no network)


def _mirror(tmp_path: Path) -> tuple[str, dict[str, str], dict[str, np.ndarray]]:
    """A file:// mirror of a made-up dataset and the md5 of its NAME.gz files."""
    arrays = make_dataset(tmp_path / "mirror", seed=3)
    md5 = {
        name: hashlib.md5((tmp_path / "mirror" / f"{name}.gz").read_bytes()).hexdigest()
        for name in MNIST_FILES
    }
    return (tmp_path / "mirror").as_uri() + "/", md5, arrays


def test_download_from_file_mirror_verifies_md5(tmp_path: Path) -> None:
    mirror, md5, arrays = _mirror(tmp_path)
    dead = (tmp_path / "no-such-mirror").as_uri()  # tried first, fails, next mirror is used
    cache = tmp_path / "cache"
    got = download_mnist(cache, mirrors=[dead, mirror], md5=md5, progress=False)
    assert got == cache.resolve()
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in MNIST_FILES)
    np.testing.assert_array_equal(load_mnist(cache).train_images, arrays[MNIST_FILES[0]])
    # Valid files already there are kept: a second call fetches nothing.
    download_mnist(cache, mirrors=[dead], md5=md5, progress=False)


def test_download_with_bad_md5_raises_and_leaves_no_file(tmp_path: Path) -> None:
    mirror, md5, _ = _mirror(tmp_path)
    md5[MNIST_FILES[0]] = "0" * 32
    cache = tmp_path / "cache"
    with pytest.raises(MNISTError, match=f"{MNIST_FILES[0]}.gz.*md5 .* does not match"):
        download_mnist(cache, mirrors=[mirror], md5=md5, progress=False)
    assert not (cache / f"{MNIST_FILES[0]}.gz").exists()
    assert not list(cache.glob("*.part")) and not list(cache.glob(".*.part"))


def test_download_network_failure_gives_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(download_module, "_fetch", offline)
    with pytest.raises(MNISTError, match="(?s)name resolution.*Check the network connection"):
        download_mnist(tmp_path / "cache", progress=False)


def test_load_with_download_fetches_into_the_cache(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, md5, arrays = _mirror(tmp_path)
    real_download = download_module.download_mnist

    def fake_download(cache_dir: Path | None = None) -> Path:
        return real_download(cache_dir, mirrors=[mirror], md5=md5, progress=False)

    monkeypatch.setattr(download_module, "download_mnist", fake_download)
    data = load_mnist(download=True)
    assert data.source == str(isolated_env.resolve())
    np.testing.assert_array_equal(data.test_labels, arrays[MNIST_FILES[3]])
