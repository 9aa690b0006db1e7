"""The one way experiments write files: every record, checkpoint, report and plot goes through
:func:`atomic_file`, in a few shapes (strict JSON, text, bytes, torch objects, matplotlib
figures saved headless).

- **Atomic**: a uniquely named temporary file beside the target (so concurrent writers never
  share one), flushed and ``fsync``-ed, then ``os.replace``-d over it: a reader never sees half
  a file, and a kill mid-write leaves the old file or none.
- **One error**: any failure to write (disk full, file too large, permissions) removes the
  temporary file, keeps the old file, and raises :class:`WriteError`, an :class:`OSError`
  whose message names the file and the reason, e.g. ``cannot write results/r.json: No space
  left on device``.
- **Strict JSON** (RFC 8259: no ``NaN``/``Infinity`` tokens): non-finite floats are written as
  the strings ``"nan"``, ``"inf"``, ``"-inf"``, which :func:`read_json` and ``float()`` read
  back.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "WriteError",
    "atomic_file",
    "write_bytes",
    "write_text",
    "write_json",
    "save_torch",
    "read_json",
    "figure",
    "strict",
    "remove_temporaries",
]

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``"nan"``, ``"inf"`` or ``"-inf"``
    (tuples become lists), so that ``json.dumps(..., allow_nan=False)`` accepts it."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _lenient(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lenient(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lenient(v) for v in value]
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    return value


class WriteError(OSError):
    """A file could not be written: ``str(err)`` is ``cannot write PATH: REASON`` (``errno``,
    ``strerror`` and ``filename`` as in the :class:`OSError` it replaces)."""

    def __str__(self) -> str:
        return f"cannot write {self.filename}: {self.strerror}"


#: Temporary files of :func:`atomic_file`: ``.<name>.<8 hex digits>.tmp`` beside the target.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def _temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside ``path`` with a unique name (mode 0o666 less the umask, like
    any new file, unlike ``tempfile.mkstemp``'s 0o600): its descriptor and path."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 1 in 4 billion
            continue


@contextmanager
def atomic_file(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_file(path) as f:`` writes ``f`` (opened with ``mode``, ``"wb"`` or
    ``"w"``) to a uniquely named temporary file beside ``path`` (parent folders are created),
    then flushes, ``fsync``-s and renames it over ``path``. On any error, or an exception in
    the block, the temporary file is removed and ``path`` keeps its old content; an
    :class:`OSError` is raised as :class:`WriteError` naming ``path``."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary(path)
        with open(fd, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
        tmp = None
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(err.errno, err.strerror or str(err), str(path)) from err
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as file:
        file.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_file`)."""
    return write_bytes(path, text.encode())


def save_torch(path: str | Path, value: Any) -> Path:
    """``torch.save(value)`` to ``path`` atomically (:func:`atomic_file`). The object is
    serialised in memory first: torch reports a failed write as a ``RuntimeError`` without the
    reason, a plain write gives the :class:`OSError` (e.g. no space left) that
    :class:`WriteError` names."""
    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return write_bytes(path, buffer.getbuffer())


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_file` left under ``folder`` (a writer killed
    mid-write leaves one); only safe while no other process writes there, e.g. under the
    lock of :mod:`.lock`. Returns the files removed."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if _TEMPORARY.match(tmp.name) and tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def write_json(path: str | Path, value: Any) -> Path:
    """Write ``value`` as strict, indented JSON to ``path``, atomically (see :func:`strict`)."""
    return write_text(path, json.dumps(strict(value), indent=1, allow_nan=False) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a file written by :func:`write_json`: the strings ``"nan"``, ``"inf"`` and
    ``"-inf"`` come back as floats."""
    return _lenient(json.loads(Path(path).read_text()))


@contextmanager
def figure(
    path: str | Path,
    *args: Any,
    dpi: int = 120,
    rect: tuple[float, float, float, float] | None = None,
    **subplots: Any,
) -> Iterator[tuple]:
    """``with figure(path, nrows, ncols, figsize=...) as (fig, axes):`` draws on a new
    ``plt.subplots`` figure (headless ``Agg`` backend), then lays it out, saves it to
    ``path`` (atomically) and closes it.

    ``rect`` (left, bottom, right, top in figure coordinates, default the whole figure) is
    where ``tight_layout`` fits the axes, e.g. to leave room for a figure legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(*args, **subplots)
    try:
        yield fig, axes
        fig.tight_layout(rect=rect)
        with atomic_file(path) as file:
            fig.savefig(file, dpi=dpi, format=path.suffix.lstrip(".") or None)
    finally:
        plt.close(fig)
