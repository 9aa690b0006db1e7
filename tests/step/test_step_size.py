"""Learning-rate rules (riemann_dnn.step.step_size) against hand computation."""

from __future__ import annotations

import math

import pytest

from riemann_dnn.step import (
    DecayStepSize,
    FixedStepSize,
    HybridStepSize,
    StepSizeRule,
    make_step_size,
)


def test_fixed_rule_is_constant():
    rule = FixedStepSize(0.25)
    assert [rule(k) for k in (0, 1, 10, 10**6)] == [0.25] * 4


def test_decay_rule_matches_manopt_formula():
    rule = DecayStepSize(0.5, decay=0.2)
    # init / (1 + init * decay * k) = 0.5 / (1 + 0.1 k)
    expected = {0: 0.5, 1: 0.5 / 1.1, 10: 0.25, 90: 0.05}
    for k, value in expected.items():
        assert math.isclose(rule(k), value, rel_tol=1e-15), f"k={k}: {rule(k)} != {value}"


def test_hybrid_rule_decays_then_stays_constant():
    rule = HybridStepSize(0.5, decay=0.2, decay_steps=10)
    for k in range(11):
        assert math.isclose(rule(k), 0.5 / (1 + 0.1 * k), rel_tol=1e-15), k
    for k in (11, 50, 10**6):
        assert math.isclose(rule(k), 0.25, rel_tol=1e-15), f"k={k}: {rule(k)} != 0.25"


def test_make_step_size_by_name():
    assert make_step_size("fixed", 0.1)(7) == 0.1
    assert math.isclose(make_step_size("decay", 1.0, decay=1.0)(3), 0.25)
    hybrid = make_step_size("hybrid", 1.0, decay=1.0, decay_steps=1)
    assert math.isclose(hybrid(100), 0.5)
    rule = DecayStepSize(0.3)
    assert make_step_size(rule, 123.0) is rule
    assert isinstance(make_step_size("fixed", 1.0), StepSizeRule)


@pytest.mark.parametrize(
    "build,fragment",
    [
        (lambda: FixedStepSize(0.0), "initial step size"),
        (lambda: FixedStepSize(-1.0), "initial step size"),
        (lambda: FixedStepSize(math.nan), "initial step size"),
        (lambda: FixedStepSize(math.inf), "initial step size"),
        (lambda: FixedStepSize("0.1"), "initial step size"),
        (lambda: DecayStepSize(0.1, decay=-0.5), "decay"),
        (lambda: HybridStepSize(0.1, decay=0.1, decay_steps=-1), "decay_steps"),
        (lambda: HybridStepSize(0.1, decay=0.1, decay_steps=2.5), "decay_steps"),
        (lambda: make_step_size("cosine", 0.1), "cosine"),
    ],
)
def test_bad_values_raise_naming_the_argument(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()
