"""Progress bars that tell the truth and stay readable.

:func:`progress_bar` is a :class:`tqdm.tqdm` that, while it is open, prints warnings (Python's
``warnings`` and ``logging``) above the bar instead of into its line, and is closed before an
error propagates (so the error is printed below a finished bar, not inside it).
:func:`settle` shrinks a bar's total when a piece of work turns out smaller than its upper
bound (a run that stops early), so a finished job ends at 100 %.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["progress_bar", "settle", "write_above"]


def write_above(bar: Any, text: str) -> None:
    """Print ``text`` on stderr above ``bar`` (plainly when there is no visible bar)."""
    if bar is not None and not getattr(bar, "disable", True):
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


@contextlib.contextmanager
def progress_bar(
    *, total: int, desc: str, unit: str, enabled: bool = True, **options: Any
) -> Iterator[Any]:
    """An open tqdm bar for a ``with`` block; warnings and log records go above it."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, **options)
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        write_above(
            bar, warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        )

    warnings.showwarning = show
    try:
        with logging_redirect_tqdm():
            yield bar
    finally:
        warnings.showwarning = shown
        bar.close()


def settle(bar: Any, planned: int, done: int) -> None:
    """A piece of work planned as ``planned`` ticks ended after ``done``: take the
    difference off the bar's total (the bar then reaches 100 % when everything ended)."""
    if bar is None or planned == done:
        return
    bar.total = max(bar.n, bar.total - (planned - done))
    bar.refresh()
