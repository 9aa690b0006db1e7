"""The one way experiments write results: strict JSON written atomically, text files written
atomically, and matplotlib figures saved headless.

Every record, report and plot of ``riemann_dnn.experiments`` goes through these helpers, so a
reader never sees half a file (a kill mid-write leaves the old file or none) and every JSON
file is strict (RFC 8259: no ``NaN``/``Infinity`` tokens; non-finite floats are written as the
strings ``"nan"``, ``"inf"``, ``"-inf"``, which :func:`read_json` and ``float()`` read back).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["write_json", "read_json", "write_text", "figure", "strict"]

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


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (a temporary file in the same folder, then
    ``os.replace``); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
