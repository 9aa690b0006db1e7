"""The IDX file format (riemann_dnn.data.idx): write, read back, reproducible gzip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from riemann_dnn.data import read_idx, write_idx


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_write_read_round_trip(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(write_idx(tmp_path / name, array))
        assert out.dtype == np.dtype(dtype) and out.dtype.isnative and out.flags.writeable
        np.testing.assert_array_equal(out, array)


def test_gzipped_idx_bytes_are_reproducible(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    first = write_idx(tmp_path / "a-idx2-ubyte.gz", array).read_bytes()
    second = write_idx(tmp_path / "b-idx2-ubyte.gz", array).read_bytes()
    assert first == second


def test_write_idx_refuses_dtypes_without_an_idx_code(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="no IDX type code"):
        write_idx(tmp_path / "a.idx", np.zeros(3, np.uint16))
    assert not (tmp_path / "a.idx").exists()
