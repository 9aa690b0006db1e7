"""Detection against the numerical ground truth on the model zoo (tests/params/model_zoo.py):
every claim is invariant (precision 1.0) and at least 98 % of the invariant weights of each
family are found with their exact kind (recall), on the torch.fx path and the hooked path,
in float32 and float64."""

from __future__ import annotations

import functools

import pytest
import torch
from ground_truth import Outputs, ground_truth, invariant
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_zoo import BLOCKS, FAMILIES, Composed, randomize

from riemann_dnn.params import find_symmetries, verify_scale_invariance

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@functools.cache
def _case(family: str, dtype: str):
    factory, shape = FAMILIES[family]
    torch.manual_seed(0)
    model = randomize(factory()).to(DTYPES[dtype])
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=DTYPES[dtype])
    return model, x, ground_truth(model, x)


@pytest.mark.parametrize("trace", ["fx", "hooks"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_detection_matches_the_ground_truth(family, dtype, trace):
    model, x, truth = _case(family, dtype)
    found = find_symmetries(model, x, trace=trace)
    assert set(found) == set(truth)
    params = dict(model.named_parameters())
    outputs, gen = Outputs(model, x), torch.Generator().manual_seed(2)
    claims = [n for n, s in found.items() if s.invariant]
    false = [
        (n, found[n].kind, found[n].groups, truth[n])
        for n in claims
        if not invariant(outputs, n, params[n], found[n].axis, found[n].groups, gen)
    ]
    assert not false, f"{family}: claims that are not invariant: {false}"
    relevant = [n for n, (kind, _) in truth.items() if kind != "none"]
    missed = [
        (n, truth[n], found[n].kind, found[n].groups, found[n].reason)
        for n in relevant
        if (found[n].kind, found[n].groups) != truth[n]
    ]
    recall = 1 - len(missed) / max(1, len(relevant))
    assert recall >= 0.98, f"{family}: recall {recall:.2f}, missed {missed}"


def test_the_zoo_has_every_kind_of_symmetry():
    kinds = {k for f in FAMILIES for k, _ in _case(f, "float64")[2].values()}
    assert kinds == {"filter", "group", "tensor", "none"}


@settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    names=st.lists(st.sampled_from(sorted(BLOCKS)), min_size=1, max_size=4),
    trace=st.sampled_from(["fx", "hooks"]),
    seed=st.integers(0, 2**16),
)
def test_every_claim_on_random_compositions_is_invariant(names, trace, seed):
    torch.manual_seed(seed)
    model = randomize(Composed(names), seed).double()
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    found = find_symmetries(model, x, trace=trace)
    claims = {n: s for n, s in found.items() if s.invariant}
    changes = verify_scale_invariance(model, x, symmetries=claims)
    worst = {n: c for n, c in changes.items() if c > 1e-6}
    assert not worst, f"{names}: claims change the output: {worst}"
