"""The IDX file format (LeCun et al.), in which MNIST is published: read and write it.

An IDX file is a magic number ``0x0000TTDD`` (data-type code ``TT``, ``DD`` dimensions), one
big-endian uint32 per dimension, then the payload; raw or gzipped (recognised by content).
Errors are :class:`MNISTError` (and :class:`MNISTNotFoundError` for a missing file), naming the
file, what is wrong and how to fix it. Writes are atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import gzip
import math
import os
import secrets
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = [
    "MNISTError",
    "MNISTNotFoundError",
    "read_idx",
    "write_idx",
    "read_bytes",
    "parse_idx",
    "make_temp",
    "unlink_quietly",
]

PathLike = str | os.PathLike

_IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES: Mapping[np.dtype, int] = {dt.newbyteorder("="): c for c, dt in _IDX_DTYPES.items()}

_HOW_TO_REPAIR = (
    "Replace it with an intact copy, e.g. re-download MNIST with "
    "riemann_dnn.data.download_mnist(force=True)."
)


class MNISTError(ValueError):
    """MNIST-format data that is missing, corrupt, truncated or inconsistent.

    The message names the file, what is wrong and how to fix it.
    """


class MNISTNotFoundError(MNISTError, FileNotFoundError):
    """No directory holding the four MNIST files; the message lists every place looked in."""


def read_idx(path: PathLike) -> np.ndarray:
    """Read an IDX file, gzipped or raw (recognised by its content, not its name).

    The header (magic number ``0x0000TTDD``: data-type code ``TT``, ``DD`` dimensions, then one
    big-endian uint32 per dimension) is validated, and the payload must be exactly as long as the
    header says.

    Returns:
        A writable array of the header's shape, in native byte order (uint8 for MNIST).

    Raises:
        MNISTNotFoundError: ``path`` does not exist.
        MNISTError: the file is unreadable, not IDX, corrupt or truncated (the message says which).

    Example:
        >>> read_idx("mnist/train-labels-idx1-ubyte.gz")[:5]  # doctest: +SKIP
        array([5, 0, 4, 1, 9], dtype=uint8)
    """
    path = Path(path)
    array = parse_idx(read_bytes(path), path)
    return array if array.flags.writeable else array.copy()


def write_idx(path: PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file; gzipped when ``compress`` (default: ``path`` ends in .gz).

    The gzip stream is reproducible (no timestamp or file name in its header), so the same
    array always gives the same bytes. Supported dtypes: uint8, int8, int16, int32, float32,
    float64. The write is atomic (temporary file, then rename).

    Example:
        >>> write_idx(tmp / "labels-idx1-ubyte.gz", np.array([3, 1, 4], np.uint8))  # doctest: +SKIP
    """
    path = Path(path)
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(
            f"write_idx: array dtype {array.dtype} has no IDX type code; "
            "expected uint8, int8, int16, int32, float32 or float64."
        )
    if array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: array.ndim={array.ndim}; IDX holds 1 to 255 dimensions.")
    if any(n >= 2**32 for n in array.shape):
        raise ValueError(f"write_idx: shape {array.shape} has a dimension >= 2**32.")
    header = bytes((0, 0, code, array.ndim)) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    payload = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    if compress:
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    _atomic_write_bytes(path, payload)
    return path


def read_bytes(path: Path) -> bytes:
    """The (decompressed) content of ``path``, with errors that name the file."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise MNISTNotFoundError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise MNISTError(f"{path}: is a directory, expected an IDX file.") from None
    except OSError as err:
        raise MNISTError(
            f"{path}: cannot be read ({err.strerror or err}); check its permissions."
        ) from None
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as err:
        raise MNISTError(
            f"{path}: corrupt or truncated gzip data ({err or type(err).__name__}). "
            + _HOW_TO_REPAIR
        ) from None


def parse_idx(data: bytes, path: Path) -> np.ndarray:
    """Validate the IDX header of ``data`` and return a (read-only) view of its payload."""
    if len(data) < 4:
        raise MNISTError(
            f"{path}: {len(data)} bytes, too short for an IDX header (truncated or empty file). "
            + _HOW_TO_REPAIR
        )
    magic = int.from_bytes(data[:4], "big")
    code, ndim = data[2], data[3]
    if data[0] or data[1] or code not in _IDX_DTYPES or ndim == 0:
        raise MNISTError(
            f"{path}: not an IDX file: magic number 0x{magic:08X}, expected 0x0000TTDD with a "
            "data-type code TT in 08, 09, 0B, 0C, 0D, 0E and DD >= 1 dimensions (MNIST images "
            "0x00000803, labels 0x00000801). " + _HOW_TO_REPAIR
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise MNISTError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} header bytes, "
            f"the file has {len(data)}. " + _HOW_TO_REPAIR
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise MNISTError(
            f"{path}: {what}: the header promises shape {shape} of {dtype.name} = {expected} "
            f"payload bytes, the file holds {actual}. " + _HOW_TO_REPAIR
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
        array.flags.writeable = False
    return array


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(path)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def make_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temporary file beside ``path`` (mode 0o666 less the umask, like any
    new file, unlike ``tempfile.mkstemp``'s 0o600); return its descriptor and path."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_BINARY, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


_O_BINARY = getattr(os, "O_BINARY", 0)


def unlink_quietly(path: PathLike) -> None:
    """Remove ``path`` if it exists."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
