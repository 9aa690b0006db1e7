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


class _GroupNormNet(nn.Module):
    """A per-filter (BatchNorm) and a per-group (GroupNorm) symmetry, and a tied weight."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.gn = nn.GroupNorm(2, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv1(x)))
        x = torch.relu(self.gn(self.conv2(x)))
        return self.head(x.mean((2, 3)))


def test_param_groups_as_parameters_puts_each_manifold_on_its_weight_in_place():
    from riemann_dnn.params import param_groups

    torch.manual_seed(0)
    model = _GroupNormNet()
    reference = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = param_groups(model, as_parameters=True, retraction="exp")
    carried = {n: p for n, p in model.named_parameters() if isinstance(p, ManifoldParameter)}
    assert {n: p.manifold for n, p in carried.items()} == {
        "conv1.weight": "oblique",
        "conv2.weight": "oblique:groups=2",
    }
    assert all(p.retraction == "exp" for p in carried.values())
    for name, param in model.named_parameters():  # same values, and the groups hold them
        assert torch.equal(param.detach(), before[name])
    grouped = {id(p) for g in groups for p in g["params"]}
    assert {id(p) for p in model.parameters()} == grouped
    # the model alone now trains as the named groups train an unconverted copy
    opt = RiemannianSGD(model.parameters(), lr=0.05, momentum=0.9)
    opt_ref = RiemannianSGD(param_groups(reference, retraction="exp"), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(4, 3, 9, 9, generator=gen)
        for net, optimizer in ((model, opt), (reference, opt_ref)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7, msg=name)
    rows = model.conv2.weight.detach().view(2, -1).norm(dim=1)
    torch.testing.assert_close(rows, torch.ones(2))


def test_param_groups_as_parameters_replaces_a_tied_weight_everywhere():
    from riemann_dnn.params import param_groups

    torch.manual_seed(0)
    first = nn.Linear(5, 4, bias=False)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(first, nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 4))
            self.tied = nn.Linear(5, 4, bias=False)
            self.tied.weight = first.weight  # held by two modules, used by one

        def forward(self, x):
            return self.net(x)

    model = Tied()
    param_groups(model, as_parameters=True)
    assert isinstance(model.net[0].weight, ManifoldParameter)
    assert model.tied.weight is model.net[0].weight
