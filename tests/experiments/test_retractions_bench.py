"""The retraction bench: its order estimator on known cases, its timing/drift helpers, and the
``riemann-dnn bench retractions`` command's files (tiny sizes and steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.config import quick_protocol
from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.retractions import (
    RETRACTIONS,
    agreement_order,
    build_manifold,
    chained_drift,
    exp_gaps,
    parse_size,
    run_retraction_bench,
    time_call,
)
from riemann_dnn.manifolds import Oblique, Stiefel

TS = np.logspace(0, -8, 33)


# -- the order estimator on known cases ------------------------------------------------------------


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0, 4.5])
def test_order_of_an_exact_power_law_is_its_exponent_minus_one(power):
    fit = agreement_order(TS, 0.7 * TS**power)
    assert fit.slope == pytest.approx(power, abs=1e-9), f"slope {fit.slope} for t^{power}"
    assert fit.order == pytest.approx(power - 1, abs=1e-9)
    assert fit.t_max == pytest.approx(0.1, rel=1e-9) and fit.t_min == pytest.approx(1e-8)


def test_rounding_plateau_below_the_floor_is_left_out():
    """e(t) = t^3 + 1e-15 (a rounding floor): fitting every point gives a slope far below 3;
    with the floor the slope is 3."""
    errors = TS**3 + 1e-15
    naive = agreement_order(TS, errors, floor=0.0).slope
    fit = agreement_order(TS, errors, floor=1e-12)
    assert naive < 2.0, f"test needs a visible plateau, naive slope {naive:.3f}"
    assert abs(fit.slope - 3) < 1e-3, f"slope with floor {fit.slope:.4f}, want 3"
    assert fit.t_min >= 1e-4 - 1e-12, f"fit used t down to {fit.t_min:.1e}, below the floor"


def test_points_beyond_t_max_are_left_out():
    """Only the asymptotic regime t <= t_max counts: garbage at large t changes nothing."""
    errors = np.where(TS <= 0.1, 2 * TS**2, 1e-3)
    assert agreement_order(TS, errors).slope == pytest.approx(2.0, abs=1e-9)
    assert agreement_order(TS, errors, t_max=1.0).slope < 1.9


def test_higher_order_term_only_biases_the_slope_slightly():
    """e = t^2 (1 + 5t): the leading power wins as t -> 0 (slope within 0.05 of 2)."""
    fit = agreement_order(TS, TS**2 * (1 + 5 * TS))
    assert abs(fit.slope - 2) < 0.05, f"slope {fit.slope:.4f}"


def test_exact_agreement_and_too_few_points():
    assert math.isinf(agreement_order(TS, np.zeros_like(TS)).slope)
    few = agreement_order(TS, TS**3, floor=1e-9)  # t^3 > 1e-9: t = 1e-1 ... 1.8e-3
    assert few.points == 8 and few.slope == pytest.approx(3.0)
    none = agreement_order(TS, TS**3, floor=1.0)
    assert math.isnan(none.slope) and none.points == 0
    with pytest.raises(ValueError, match="ts and errors"):
        agreement_order(TS, TS[:-1])


def test_known_retractions_measured_through_the_bench():
    """Closed-form cases: on St(n, 1), qr is (x + u)/|x + u| (second order, slope 3),
    St(n, p)'s qr is first order for a generic tangent (slope 2), and the oblique manifold's
    normalize (row-wise (x + u)/|x + u|) is second order (slope 3)."""
    for family, manifold, want in (
        ("stiefel", Stiefel(9, 1, retraction="qr"), 3.0),
        ("stiefel", Stiefel(9, 3, retraction="qr"), 2.0),
        ("oblique", Oblique(3, 9, unit="rows", retraction="normalize"), 3.0),
    ):
        x = manifold.random_point(dtype=torch.float64, generator=0)
        v = manifold.random_tangent_vector(x, generator=1)
        errors = exp_gaps(family, manifold, x, v, ts=TS)
        fit = agreement_order(TS, errors, floor=1e-13)
        assert abs(fit.slope - want) < 0.1, f"{manifold!r}: slope {fit.slope:.3f}, want {want}"


# -- helpers -------------------------------------------------------------------------------------


def test_parse_size_and_build_manifold():
    assert parse_size("64x784") == (64, 784) and parse_size("3×5") == (3, 5)
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        parse_size("64-784")
    assert build_manifold("stiefel", "qr", 4, 9).point_shape == (9, 4)  # W^T in St(9, 4)
    assert build_manifold("stiefel", "qr", 9, 4).point_shape == (9, 4)  # W in St(9, 4)
    assert build_manifold("oblique", "exp", 4, 9).point_shape == (4, 9)
    assert build_manifold("grassmann", "qr", 6, 6) is None  # Gr(6, 6) is a single point
    with pytest.raises(ValueError, match="unknown manifold family 'hyperbolic'"):
        build_manifold("hyperbolic", "exp", 3, 4)


def test_time_call_repeats():
    calls = []
    median, repeats, result = time_call(
        lambda: calls.append(1) or len(calls), budget_s=60.0, max_repeats=5
    )
    assert (repeats, len(calls), result) == (5, 6, 6), "one warm-up call, then max_repeats"
    assert 0 < median < 0.01, f"median {median} s of a list append"

    def slow():
        calls.append(1)
        import time

        time.sleep(0.02)

    calls.clear()
    slow_median, repeats, _ = time_call(slow, budget_s=0.01)
    assert (repeats, len(calls)) == (2, 3), "a call slower than the budget is repeated twice"
    assert slow_median >= 0.019, f"median {slow_median} s of a 0.02 s sleep"


def test_chained_drift_of_a_renormalising_retraction_stays_at_rounding():
    manifold = Oblique(5, 40, unit="rows", retraction="normalize")
    x = manifold.random_point(dtype=torch.float32, generator=0)
    record = chained_drift(manifold, x, 300, seed=1, checkpoints=[10, 100, 1000])
    assert sorted(record["curve"]) == [10, 100, 300]
    assert record["violation"] < 1e-6, f"violation {record['violation']:.2e} after 300 steps"


# -- the command ---------------------------------------------------------------------------------


def test_bench_command_writes_json_markdown_and_plots(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(
        [
            "bench",
            "retractions",
            "--sizes",
            "4x9",
            "6x6",
            "--steps",
            "30",
            "--no-archbn",
            "--budget",
            "0.002",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and str(out / "retractions.json") in printed
    results = read_json(out / "retractions.json")
    per_size = {
        "4x9": sum(map(len, RETRACTIONS.values())),
        "6x6": sum(map(len, RETRACTIONS.values())) - len(RETRACTIONS["grassmann"]),
    }
    for size, count in per_size.items():
        rows = [r for r in results["timing"] if r["size"] == size]
        assert len(rows) == 2 * count, f"{size}: {len(rows)} timing rows, want {2 * count}"
    groups = {}
    for row in results["timing"]:
        groups.setdefault((row["family"], row["size"], row["dtype"]), []).append(row)
        assert row["seconds"] > 0 and row["repeats"] >= 2
        limit = 1e-4 if row["dtype"] == "float32" else 1e-12
        assert row["violation_one_call"] < limit, row
    for key, rows in groups.items():
        assert min(r["ratio_to_cheapest"] for r in rows) == 1.0, key
    every_retraction = {(f, r) for f, names in RETRACTIONS.items() for r in names}
    assert {(r["family"], r["retraction"]) for r in results["orders"]} == every_retraction
    for row in results["orders"]:  # measured order matches the theory (slope = order + 1)
        theory, slope = row["theory_order"], row["slope"]  # inf for exp
        if math.isinf(theory):
            assert math.isinf(slope), row
            continue
        assert abs(slope - (theory + 1)) < 0.3, row
    assert {(r["family"], r["retraction"]) for r in results["drift"]} == every_retraction
    assert all(r["steps"] == 30 for r in results["drift"])
    assert results["archbn"] is None
    markdown = (out / "retractions.md").read_text()
    for heading in ("Time per call", "Agreement with exp", "Drift from the manifold"):
        assert heading in markdown
    assert "| stiefel | cayley |" in markdown
    for name in ("retractions_time.png", "retractions_order.png", "retractions_drift.png"):
        assert (out / name).stat().st_size > 5_000, name


def test_bench_archbn_part_reports_test_error_and_epoch_time(tmp_path):
    protocol = quick_protocol(
        lr_candidates=(1e-2,),
        selection_epochs=1,
        selection_train=200,
        selection_val=100,
        min_epochs=1,
        max_epochs=1,
    )
    results = run_retraction_bench(
        sizes=["3x5"],
        dtypes=["float64"],
        steps=0,
        families=["stiefel"],
        budget_s=0.0,
        archbn=True,
        archbn_runs=1,
        archbn_variants=[("un", "stiefel", "cayley")],
        archbn_protocol=protocol,
        source="embedded",
        out_dir=tmp_path,
        progress=False,
    )
    (row,) = results["archbn"]["rows"]
    assert (row["constraint"], row["retraction"], row["runs"]) == ("stiefel", "cayley", 1)
    assert 0 < row["mean"] < 0.5, f"test error {row['mean']} (chance is 0.9)"
    assert row["epoch_seconds"] > 0
    assert list((tmp_path / "archbn" / "runs").glob("*.json")), "run records written"


def test_bench_rejects_bad_arguments(tmp_path, capsys):
    assert (
        main(["bench", "retractions", "--sizes", "big", "--no-archbn", "--out", str(tmp_path)])
        == 2
    )
    err = capsys.readouterr().err
    assert "--sizes big" in err and "ROWSxCOLS" in err and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match="unknown manifold families"):
        run_retraction_bench(sizes=["3x4"], families=["hyperbolic"], archbn=False)
