"""Check a built site documents every public name: ``python docs/check_api_reference.py``.

Reads ``docs/_build/html/objects.inv`` (or the folder given) and fails, naming them, when a
name in the ``__all__`` of a public subpackage has no entry in the API reference.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from sphinx.util.inventory import InventoryFile

PACKAGES = [
    "manifolds",
    "function",
    "step",
    "params",
    "optim",
    "problems",
    "solvers",
    "models",
    "data",
]


def missing_names(html_dir: Path) -> list[str]:
    """Public names of ``riemann_dnn.<package>`` with no entry in the site's inventory."""
    with open(html_dir / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    documented = {name for entries in inventory.values() for name in entries}
    missing = []
    for package in PACKAGES:
        module = importlib.import_module(f"riemann_dnn.{package}")
        missing += [
            f"riemann_dnn.{package}.{name}"
            for name in module.__all__
            if f"riemann_dnn.{package}.{name}" not in documented
        ]
    return missing


if __name__ == "__main__":
    html = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "_build" / "html"
    missing = missing_names(html)
    if missing:
        sys.exit(f"API reference in {html} lacks {len(missing)} public names: {missing}")
    print(f"API reference in {html}: every public name of {', '.join(PACKAGES)} is documented")
