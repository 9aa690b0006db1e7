"""Imports point down: what each bottom-layer folder of riemann_dnn may import (read from the
source with ast, so nothing is imported and lazy imports inside functions count too)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "riemann_dnn"

# folder -> the other riemann_dnn subpackages it may import (None: any but FORBIDDEN)
ALLOWED = {
    "models": set(),
    "params": {"manifolds"},
    "data": set(),
    "manifolds": None,
    "step": None,
}
FORBIDDEN = {"experiments", "cli"}


def _imports(path: Path) -> list[tuple[str, int]]:
    """``(absolute module, line)`` for every import in ``path``."""
    here = path.relative_to(PACKAGE.parent).parts[:-1]  # the package the file is in
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((module, node.lineno))
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folder_imports_point_down(folder):
    bad = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] != "riemann_dnn" or len(parts) < 2 or parts[1] == folder:
                continue
            allowed = ALLOWED[folder]
            if parts[1] in FORBIDDEN or (allowed is not None and parts[1] not in allowed):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not bad, f"riemann_dnn/{folder} imports upward: {bad}"


def test_models_import_only_torch_and_the_standard_library():
    bad = []
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in ("torch", "riemann_dnn", "__future__") or top in sys.stdlib_module_names:
                continue
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not bad, bad
