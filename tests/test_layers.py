"""Imports point down: every folder (and top-level module) of riemann_dnn has an explicit rule
naming the other parts of the package it may import, the rules of docs/architecture.md, read
from the source with ast (nothing is imported, and lazy imports inside functions count too);
and no private name crosses a module boundary."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "riemann_dnn"

_PYMANOPT_SIDE = {"manifolds", "function", "autodiff"}
_BELOW_EXPERIMENTS = {
    "manifolds",
    "function",
    "autodiff",
    "step",
    "params",
    "optim",
    "problems",
    "solvers",
    "models",
    "data",
}

# part of riemann_dnn (a folder, or a top-level module by its stem) -> the other parts it may
# import; the layering of SPEC.md section 2: manifolds <- step <- params, optim, problems <-
# solvers <- (models, data users) <- experiments <- cli; data and models use nothing above
# manifolds. The same table is in docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "__init__": set(),  # subpackages are attributes loaded on first access (importlib)
    "manifolds": set(),
    "autodiff": {"manifolds"},
    "function": {"autodiff", "manifolds"},
    "step": {"manifolds"},
    "params": {"manifolds", "step"},
    "optim": {"manifolds", "step", "params", "_deprecated"},
    "problems": {"manifolds", "step", "params", "function", "autodiff", "_deprecated"},
    "solvers": {"manifolds", "step", "params", "optim", "problems", "function", "autodiff"},
    "models": {"manifolds"},
    "data": {"manifolds"},
    "experiments": _BELOW_EXPERIMENTS,
    "cli": _BELOW_EXPERIMENTS | {"experiments", "__init__"},
    # the shims of the old paths (to be deleted with them): import what they point to
    "_deprecated": set(),
}

# private names imported across modules that other work in progress removes (each with its
# owner); empty this as they go. Nothing may be added here.
PENDING_PRIVATE = {
    "riemann_dnn/experiments/symmetry/invariance.py: riemann_dnn.experiments.symmetry.updates._one_step",  # noqa: E501
    "riemann_dnn/experiments/symmetry/trajectories.py: riemann_dnn.experiments.symmetry.updates._METHOD_LABELS",  # noqa: E501
    "riemann_dnn/experiments/symmetry/trajectories.py: riemann_dnn.experiments.symmetry.updates._optimizer",  # noqa: E501
    "riemann_dnn/manifolds/grassmann.py: riemann_dnn.manifolds.stiefel._orthonormality_error",
    "riemann_dnn/solvers/stochastic_gradient.py: riemann_dnn.solvers.problem._factors",
    # the compatibility shims, deleted with riemann_dnn/_deprecated.py
    "riemann_dnn/optim/geometry.py: riemann_dnn._deprecated",
    "riemann_dnn/optim/groups.py: riemann_dnn._deprecated",
    "riemann_dnn/problems/__init__.py: riemann_dnn._deprecated",
    "riemann_dnn/problems/archbn.py: riemann_dnn._deprecated",
    "riemann_dnn/problems/classic.py: riemann_dnn._deprecated",
    "riemann_dnn/problems/module_problem.py: riemann_dnn._deprecated",
    "riemann_dnn/problems/segnet.py: riemann_dnn._deprecated",
}


def _part(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """``(absolute module, imported names, line)`` for every import in ``path``."""
    here = path.relative_to(PACKAGE.parent).parts[:-1]  # the package the file is in
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((module, [alias.name for alias in node.names], node.lineno))
    return found


def _targets(module: str, names: list[str]) -> list[str]:
    """The parts of riemann_dnn an import reaches (``from riemann_dnn import x`` reaches x)."""
    parts = module.split(".")
    if parts[0] != "riemann_dnn":
        return []
    if len(parts) > 1:
        return [parts[1]]
    return [name if name != "__version__" else "__init__" for name in names]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_folder_and_module_has_a_rule():
    parts = {_part(path) for path in _sources()}
    missing = sorted(parts - set(ALLOWED))
    assert not missing, f"give {missing} a rule in ALLOWED (and in docs/architecture.md)"


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_imports_stay_inside_the_rule(part):
    bad = []
    for path in _sources():
        if _part(path) != part:
            continue
        for module, names, line in _imports(path):
            for target in _targets(module, names):
                if target != part and target not in ALLOWED[part]:
                    bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not bad, f"riemann_dnn/{part} imports outside its rule {sorted(ALLOWED[part])}: {bad}"


def test_the_rules_point_down():
    """No cycle between parts: the allowed imports form a layering."""
    seen: dict[str, int] = {}

    def depth(part: str, stack: tuple[str, ...] = ()) -> int:
        assert part not in stack, f"cycle in ALLOWED: {' -> '.join((*stack, part))}"
        if part not in seen:
            below = ALLOWED.get(part, set()) - {part}
            seen[part] = 1 + max((depth(p, (*stack, part)) for p in below), default=0)
        return seen[part]

    for part in ALLOWED:
        depth(part)


def test_no_private_name_crosses_a_module():
    """``from x import _name`` only within a module's own file; a private module
    (``_array.py``) only from its own package."""
    crossing = []
    for path in _sources():
        package = ".".join(path.relative_to(PACKAGE.parent).parts[:-1])
        for module, names, line in _imports(path):
            if not module.startswith("riemann_dnn"):
                continue
            for name in names if module != package else ():  # its own package's: fine
                if name.startswith("_") and not name.startswith("__"):
                    crossing.append(f"{path.relative_to(PACKAGE.parent)}: {module}.{name}")
            private = [p for p in module.split(".") if p.startswith("_") and p != "__init__"]
            if private and not module.startswith(package + ".") and module != package:
                crossing.append(f"{path.relative_to(PACKAGE.parent)}: {module}")
    new = sorted(set(crossing) - PENDING_PRIVATE)
    assert not new, f"private names imported across modules: {new}"


def test_the_data_layer_has_no_import_cycle():
    """Between the modules of riemann_dnn/data, imports form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / "data").glob("*.py")):
        graph[path.stem] = {
            module.split(".")[2]
            for module, _, _ in _imports(path)
            if module.startswith("riemann_dnn.data.") and len(module.split(".")) > 2
        } | {
            name
            for module, names, _ in _imports(path)
            if module == "riemann_dnn.data"
            for name in names
        }

    def visit(node: str, stack: tuple[str, ...]) -> None:
        assert node not in stack, f"import cycle: {' -> '.join((*stack, node))}"
        for child in graph.get(node, ()):
            visit(child, (*stack, node))

    for node in graph:
        if node != "__init__":
            visit(node, ())


def test_models_import_only_torch_and_the_standard_library():
    bad = []
    for path in sorted((PACKAGE / "models").rglob("*.py")):
        for module, _, line in _imports(path):
            top = module.split(".")[0]
            if top in ("torch", "riemann_dnn", "__future__") or top in sys.stdlib_module_names:
                continue
            bad.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module}")
    assert not bad, bad
