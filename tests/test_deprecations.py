"""Old import paths keep working for one release: they warn, naming the new path, and give
the very same objects; the re-exports of riemann_dnn.optim stay silent."""

from __future__ import annotations

import importlib
import re
import warnings

import pytest

import riemann_dnn.models
import riemann_dnn.params
import riemann_dnn.solvers

PACKAGE_MOVES = {
    "ArchBN": "riemann_dnn.models",
    "ConvArchBN": "riemann_dnn.models",
    "SegNet": "riemann_dnn.models",
    "SegNetBasic": "riemann_dnn.models",
    "ModuleProblem": "riemann_dnn.solvers",
    "dominant_eigenvector": "riemann_dnn.solvers",
    "dominant_eigenvector_solution": "riemann_dnn.solvers",
    "dominant_subspace": "riemann_dnn.solvers",
    "dominant_subspace_solution": "riemann_dnn.solvers",
    "closest_unit_rows": "riemann_dnn.solvers",
    "closest_unit_rows_solution": "riemann_dnn.solvers",
}

MODULE_MOVES = {
    "riemann_dnn.problems.archbn": "riemann_dnn.models.archbn",
    "riemann_dnn.problems.segnet": "riemann_dnn.models.segnet",
    "riemann_dnn.problems.module_problem": "riemann_dnn.solvers.module_problem",
    "riemann_dnn.problems.classic": "riemann_dnn.solvers.classic",
    "riemann_dnn.optim.geometry": "riemann_dnn.params.geometry",
    "riemann_dnn.optim.groups": "riemann_dnn.params.groups",
}

OPTIM_REEXPORTS = [
    "param_groups",
    "scale_invariant_weights",
    "verify_scale_invariance",
    "Geometry",
    "MANIFOLD_NAMES",
    "resolve_geometry",
]


@pytest.mark.parametrize("name", sorted(PACKAGE_MOVES))
def test_problems_names_warn_and_are_the_moved_objects(name):
    import riemann_dnn.problems

    home = PACKAGE_MOVES[name]
    with pytest.warns(DeprecationWarning, match=re.escape(f"{home}.{name}")) as record:
        obj = getattr(riemann_dnn.problems, name)
    assert obj is getattr(importlib.import_module(home), name)
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_from_problems_import_warns_per_name():
    with pytest.warns(DeprecationWarning, match=r"riemann_dnn\.(models|solvers)") as record:
        from riemann_dnn.problems import ArchBN, ModuleProblem
    assert ArchBN is riemann_dnn.models.ArchBN
    assert ModuleProblem is riemann_dnn.solvers.ModuleProblem
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert len(messages) == 2, messages
    assert "riemann_dnn.models.ArchBN" in messages[0], messages
    assert "riemann_dnn.solvers.ModuleProblem" in messages[1], messages


def test_star_import_from_problems_gives_every_old_name():
    namespace: dict = {}
    with pytest.warns(DeprecationWarning, match=r"riemann_dnn\.(models|solvers)"):
        exec("from riemann_dnn.problems import *", namespace)
    for name, home in PACKAGE_MOVES.items():
        assert namespace[name] is getattr(importlib.import_module(home), name)


@pytest.mark.parametrize("old", sorted(MODULE_MOVES))
def test_old_submodules_warn_naming_the_new_module_and_forward_every_name(old):
    new = importlib.import_module(MODULE_MOVES[old])
    shim = importlib.import_module(old)
    assert shim.__all__ == new.__all__
    for name in new.__all__:
        with pytest.warns(DeprecationWarning, match=re.escape(new.__name__)):
            obj = getattr(shim, name)
        assert obj is getattr(new, name), name


def test_from_old_submodule_import_warns():
    with pytest.warns(DeprecationWarning, match=r"riemann_dnn\.models\.archbn"):
        from riemann_dnn.problems.archbn import ArchBN, unit_normal_
    assert ArchBN is riemann_dnn.models.ArchBN and unit_normal_ is riemann_dnn.models.unit_normal_
    with pytest.warns(DeprecationWarning, match=r"riemann_dnn\.params\.geometry"):
        from riemann_dnn.optim.geometry import parameter_from_point
    assert (
        parameter_from_point
        is importlib.import_module("riemann_dnn.params.geometry").parameter_from_point
    )


def test_unknown_names_are_still_attribute_errors():
    import riemann_dnn.problems
    import riemann_dnn.problems.segnet

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        riemann_dnn.problems.Nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        riemann_dnn.problems.segnet.Nope  # noqa: B018
    with pytest.raises(ImportError):
        from riemann_dnn.problems import Nope  # noqa: F401


def test_optim_reexports_of_params_do_not_warn():
    import riemann_dnn.optim

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in OPTIM_REEXPORTS:
            assert getattr(riemann_dnn.optim, name) is getattr(riemann_dnn.params, name)
        from riemann_dnn.optim import BoldDriver, RiemannianSGD, param_groups  # noqa: F401
    assert param_groups is riemann_dnn.params.param_groups
