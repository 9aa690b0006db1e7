"""ManifoldParameter: a parameter that carries its manifold, read by the optimizers."""

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import riemann_dnn
from riemann_dnn.manifolds import Oblique
from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.params import ManifoldParameter


def _model(seed=0, carried=True, manifold="oblique"):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(10, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)
    )
    if carried:
        model[0].weight = ManifoldParameter(model[0].weight.detach(), manifold)
    return model


def _train(model, opt, steps=4):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 10, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_top_level_name_is_the_class():
    assert riemann_dnn.ManifoldParameter is ManifoldParameter


@pytest.mark.parametrize("foreach", [None, False])
@pytest.mark.parametrize(
    "manifold", ["oblique", Oblique(6, 10, unit="rows")], ids=["name", "object"]
)
def test_optimizer_reads_the_carried_manifold_like_a_named_group(foreach, manifold):
    carried = _model(carried=True, manifold=manifold)
    named = _model(carried=False)
    opts = [
        RiemannianSGD(carried.parameters(), lr=0.1, momentum=0.9, foreach=foreach),
        RiemannianSGD(
            [
                {"params": [named[0].weight], "manifold": "oblique"},
                {"params": list(named.parameters())[1:]},
            ],
            lr=0.1,
            momentum=0.9,
            foreach=foreach,
        ),
    ]
    torch.testing.assert_close(carried[0].weight.detach().norm(dim=1), torch.ones(6))
    for model, opt in zip((carried, named), opts):
        _train(model, opt)
    for a, b in zip(carried.parameters(), named.parameters()):
        assert torch.equal(a.detach(), b.detach())
    torch.testing.assert_close(carried[0].weight.detach().norm(dim=1), torch.ones(6))


def test_a_group_naming_a_manifold_wins_over_the_carried_one():
    model = _model()
    opt = RiemannianSGD([{"params": [model[0].weight], "manifold": "euclidean"}], lr=0.1)
    assert opt.geometry(model[0].weight, opt.param_groups[0]).is_euclidean


def test_carried_retraction_is_used():
    w = ManifoldParameter(torch.randn(4, 5), "oblique", retraction="exp")
    opt = RiemannianSGD([w], lr=0.1)
    assert opt.geometry(w, opt.param_groups[0]).manifold.retraction_name == "exp"


def test_manifold_survives_deepcopy_to_state_dict_and_a_pickled_module():
    model = _model()
    clone = copy.deepcopy(model)
    assert isinstance(clone[0].weight, ManifoldParameter)
    assert clone[0].weight.manifold == "oblique"
    assert clone[0].weight.data_ptr() != model[0].weight.data_ptr()
    model.to(torch.float64)
    assert isinstance(model[0].weight, ManifoldParameter)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # values only: loads with weights_only=True
    buffer.seek(0)
    other = _model(seed=5)
    other.to(torch.float64).load_state_dict(torch.load(buffer, weights_only=True))
    assert isinstance(other[0].weight, ManifoldParameter)
    assert torch.equal(other[0].weight, model[0].weight)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert isinstance(loaded[0].weight, ManifoldParameter)
    assert loaded[0].weight.manifold == "oblique"
    buffer.seek(0)
    with pytest.raises(pickle.UnpicklingError):  # torch refuses any pickled module
        torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    "manifold, shape, error, pattern",
    [
        ("obliqe", (4, 5), ValueError, "unknown manifold 'obliqe'"),
        ("oblique", (5,), ValueError, r"shape \(5,\)"),
        (Oblique(3, 3), (4, 5), ValueError, r"shape \(4, 5\)"),
        (3, (4, 5), TypeError, "got int"),
    ],
)
def test_bad_manifold_is_refused_naming_it(manifold, shape, error, pattern):
    with pytest.raises(error, match=pattern):
        ManifoldParameter(torch.randn(shape), manifold)
