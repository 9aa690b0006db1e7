"""The pymanopt door (ModuleProblem + StochasticGradient) against the torch door
(RiemannianSGD): same model, seed, batches and step sizes give the same weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from riemann_dnn.manifolds import Euclidean, Oblique
from riemann_dnn.models import ArchBN
from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.params import param_groups
from riemann_dnn.problems import ModuleProblem
from riemann_dnn.solvers import StochasticGradient


def _archbn_pair(depth=2):
    models = []
    for _ in range(2):
        model = ArchBN(depth, generator=torch.Generator().manual_seed(0)).double()
        RiemannianSGD(param_groups(model), lr=0.0)  # puts the filters exactly on the manifold
        models.append(model)
    return models


def _data(n=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.rand(n, 784, generator=gen, dtype=torch.float64),
        torch.randint(0, 10, (n,), generator=gen),
    )


def _max_difference(a: nn.Module, b: nn.Module) -> float:
    return max(
        (x.double() - y.double()).abs().max().item()
        for x, y in zip(a.state_dict().values(), b.state_dict().values())
    )


def test_product_manifold_follows_the_param_groups():
    model = ArchBN(2)
    problem = ModuleProblem(model, F.cross_entropy, _data(50))
    factors = problem.manifold.manifolds
    assert problem.names[:2] == ArchBN.scale_invariant_names(2)
    assert isinstance(factors[0], Oblique) and factors[0].unit == "rows"
    assert factors[0].point_shape == (64, 784) and factors[1].point_shape == (64, 32)
    assert all(isinstance(f, Euclidean) for f in factors[2:])


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_both_doors_give_the_same_weights(momentum):
    torch_model, pymanopt_model = _archbn_pair()
    x, y = _data()
    lr, batch, epochs, seed = 0.05, 50, 2, 7

    optimizer = RiemannianSGD(param_groups(torch_model), lr=lr, momentum=momentum)
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(y)))
        for start in range(0, len(y), batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            F.cross_entropy(torch_model(x[index]), y[index]).backward()
            optimizer.step()

    problem = ModuleProblem(pymanopt_model, F.cross_entropy, (x, y))
    solver = StochasticGradient(
        batch_size=batch,
        max_epochs=epochs,
        max_iterations=10**6,
        step_size="fixed",
        initial_step_size=lr,
        momentum=momentum,
        check_samples=None,
        seed=seed,
        verbosity=0,
    )
    result = solver.run(problem, initial_point=problem.point_from_model())
    problem.load_point(result.point)

    difference = _max_difference(torch_model, pymanopt_model)
    assert difference < 1e-10, f"weights/buffers differ by {difference:.3g}"
    assert result.iterations == epochs * len(y) // batch


def test_cost_evaluations_leave_running_statistics_alone():
    model = ArchBN(2).double()
    problem = ModuleProblem(model, F.cross_entropy, _data(60))
    before = model.norms[0].running_mean.clone()
    problem.cost_on(problem.point_from_model())
    assert torch.equal(model.norms[0].running_mean, before)
    problem.euclidean_gradient_on(problem.point_from_model(), [0, 1, 2, 3])
    assert not torch.equal(model.norms[0].running_mean, before)


def test_conv_weights_are_viewed_as_filter_matrices():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
    )
    x = torch.rand(20, 1, 8, 8)
    y = torch.randint(0, 3, (20,))
    problem = ModuleProblem(model, F.cross_entropy, (x, y))
    assert problem.manifold.manifolds[0].point_shape == (4, 9)
    point = problem.point_from_model()
    grads = problem.euclidean_gradient_on(point, [0, 1, 2, 3, 4])
    assert grads[0].shape == (4, 9)
    problem.load_point([p * 1 for p in point])
    assert torch.allclose(model[0].weight.view(4, 9), point[0])


def test_bad_data_raises():
    with pytest.raises(ValueError, match="pair"):
        ModuleProblem(ArchBN(2), F.cross_entropy, torch.rand(3, 784))
