"""Old import paths that keep working for one release: a module ``__getattr__`` (PEP 562)
that fetches each name from where it moved, with a ``DeprecationWarning`` naming that path.

The warning is raised when a name is looked up (``from old import name``, ``old.name``), so
it points at the line of the caller's code that uses the old path.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["moved_names", "moved_module"]


def moved_names(old: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """The ``__getattr__`` of the deprecated module ``old``: ``name`` comes from the module
    ``homes[name]``."""

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        obj = getattr(importlib.import_module(home), name)
        if sys._getframe(1).f_code.co_name == "_handle_fromlist":
            # ``from package import name`` first probes the package with hasattr (from
            # importlib), then looks the name up from the caller's code: warn once, there.
            return obj
        warnings.warn(
            f"{old}.{name} has moved to {home}.{name}; import it from {home} "
            f"(the old path {old} will be removed in the next release).",
            DeprecationWarning,
            stacklevel=2,
        )
        return obj

    return __getattr__


def moved_module(old: str, new: str) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for the deprecated module ``old``, now ``new``: every name
    of ``new`` (public or not, dunders aside) is forwarded."""
    module = importlib.import_module(new)
    names = [name for name in vars(module) if not name.startswith("__")]
    return moved_names(old, dict.fromkeys(names, new)), list(getattr(module, "__all__", []))
