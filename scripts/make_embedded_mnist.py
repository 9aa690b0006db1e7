#!/usr/bin/env python
"""Build ``riemann_dnn/data/embedded/``: the real-MNIST subset packaged with riemann_dnn.

From the full, canonical MNIST files it draws, with a fixed seed, a stratified random subset
(per-class counts proportional to the full split's, largest-remainder rounding) of 5,000
training and 1,000 test images, and writes

- the four IDX files (``train-images-idx3-ubyte.gz`` ...), reproducibly gzipped, so the same
  reader loads them; pixels and labels are copied unchanged;
- ``train-indices.npy`` and ``t10k-indices.npy``: the (sorted) index of each subset image in
  the full training / test file;
- ``README.md``: MNIST's CC BY-SA 3.0 attribution, how the subset was made, checksums.

The output is byte-for-byte reproducible for given inputs, sizes and seed.

Usage::

    python scripts/make_embedded_mnist.py [MNIST_DIR] [--out DIR] [--train 5000] [--test 1000]
                                          [--seed 0]

``MNIST_DIR`` defaults to the usual lookup ($RIEMANN_DNN_DATA/mnist, the user cache), then to
``../shared/data/mnist`` beside the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # use this checkout's riemann_dnn, installed or not

from riemann_dnn.data.idx import MNISTNotFoundError, write_idx  # noqa: E402
from riemann_dnn.data.mnist import (  # noqa: E402
    EMBEDDED_DIR,
    MNIST_FILES,
    find_mnist_dir,
    load_mnist,
    verify_mnist,
)

DEFAULT_SEED = 0
DEFAULT_TRAIN = 5000
DEFAULT_TEST = 1000
SIZE_LIMIT = 2 * 1024 * 1024  # bytes, all files together


def stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` items drawn without replacement, per class in proportion to
    the class frequencies of ``labels`` (largest-remainder rounding, ties to the lower class)."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * size / counts.sum()
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: size - int(take.sum())]] += 1
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def _default_source() -> Path:
    try:
        return find_mnist_dir()
    except MNISTNotFoundError:
        return find_mnist_dir(REPO.parent / "shared" / "data")


def _readme(
    args: argparse.Namespace,
    sizes: dict[str, int],
    counts: dict[str, list[int]],
    sha256: dict[str, str],
) -> str:
    files = "\n".join(
        f"| `{name}` | {sizes[name]:,} | `{sha256[name]}` |" for name in sorted(sizes)
    )
    return f"""# Embedded MNIST subset

A subset of the real MNIST database packaged with riemann_dnn, so that the demo and the quick
start run offline on a fresh machine: **{args.train:,} training and {args.test:,} test images**
(28 x 28 pixels, uint8) with their labels, in MNIST's own IDX format and file names.
`riemann_dnn.data.load_mnist(source="embedded")` loads it; `load_mnist()` uses it (with a
warning) when the full files are not found. It is not full MNIST: numbers measured on it are
not comparable with published MNIST results.

## Attribution and license

The MNIST database of handwritten digits, by **Yann LeCun, Corinna Cortes and Christopher J. C.
Burges**, <http://yann.lecun.com/exdb/mnist/>, is licensed under the Creative Commons
Attribution-ShareAlike 3.0 license (CC BY-SA 3.0,
<https://creativecommons.org/licenses/by-sa/3.0/>).

The files in this directory are an adaptation of it (a selection of images; no pixel or label
was changed) and are distributed under the same CC BY-SA 3.0 license, not under riemann_dnn's
MIT license, which covers the code.

## How it was made

`scripts/make_embedded_mnist.py` (run from the repository root):

```
python scripts/make_embedded_mnist.py MNIST_DIR --train {args.train} --test {args.test} --seed {args.seed}
```

It checks that `MNIST_DIR` holds the canonical MNIST files (sha256 of their uncompressed
content), then draws from each split, with `numpy.random.default_rng({args.seed})`, a stratified
random subset: per-class counts proportional to the split's class frequencies (largest-remainder
rounding), images chosen uniformly without replacement within each class, kept in their original
order. The gzip streams carry no timestamp, so the output is byte-for-byte reproducible.

Images per class 0-9:

- training: {" ".join(map(str, counts["train"]))} (total {args.train:,})
- test: {" ".join(map(str, counts["test"]))} (total {args.test:,})

## Files

`train-indices.npy` and `t10k-indices.npy` (int32, sorted) give, for each subset image, its
index in the full `train-images-idx3-ubyte` / `t10k-images-idx3-ubyte`: subset image `i` is
full image `indices[i]`, byte for byte.

| file | bytes | sha256 of the uncompressed content |
|---|---:|---|
{files}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "mnist_dir",
        nargs="?",
        type=Path,
        help="directory holding the four full MNIST files (default: lookup)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=EMBEDDED_DIR,
        help=f"output directory (default: {EMBEDDED_DIR})",
    )
    parser.add_argument("--train", type=int, default=DEFAULT_TRAIN)
    parser.add_argument("--test", type=int, default=DEFAULT_TEST)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    source_dir = find_mnist_dir(args.mnist_dir) if args.mnist_dir else _default_source()
    report = verify_mnist(source_dir)
    if not report.is_canonical:
        parser.error(f"{source_dir} does not hold the canonical MNIST files (sha256 mismatch).")
    full = load_mnist(source_dir, source="full")
    rng = np.random.default_rng(args.seed)
    index = {
        "train": stratified_indices(full.train_labels, args.train, rng),
        "test": stratified_indices(full.test_labels, args.test, rng),
    }
    arrays = {
        MNIST_FILES[0]: full.train_images[index["train"]],
        MNIST_FILES[1]: full.train_labels[index["train"]].astype(np.uint8),
        MNIST_FILES[2]: full.test_images[index["test"]],
        MNIST_FILES[3]: full.test_labels[index["test"]].astype(np.uint8),
    }

    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, array in arrays.items():
        written.append(write_idx(args.out / f"{name}.gz", array))
    for split, stem in (("train", "train"), ("test", "t10k")):
        path = args.out / f"{stem}-indices.npy"
        np.save(path, index[split].astype(np.int32), allow_pickle=False)
        written.append(path)

    subset = verify_mnist(args.out)  # re-read what was written, through the public reader
    sizes = {p.name: p.stat().st_size for p in written}
    sha256 = {f"{name}.gz": subset.sha256[name] for name in MNIST_FILES}
    sha256.update(
        {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in written if p.suffix == ".npy"}
    )
    counts = {"train": list(subset.train_label_counts), "test": list(subset.test_label_counts)}
    readme = args.out / "README.md"
    readme.write_text(_readme(args, sizes, counts, sha256))

    total = sum(sizes.values()) + readme.stat().st_size
    for path in [*written, readme]:
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    print(f"total {total:,} bytes from {source_dir}")
    if total > SIZE_LIMIT:
        print(f"error: {total:,} bytes exceed the {SIZE_LIMIT:,}-byte budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
