"""An ensemble of copies trains exactly like the copies trained one by one."""

import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.experiments.ensemble import Ensemble
from riemann_dnn.models import ArchBN
from riemann_dnn.optim import BoldDriver, RiemannianSGD
from riemann_dnn.params import param_groups


def _models(count, depth=2):
    return [
        ArchBN(depth, generator=torch.Generator().manual_seed(s)).double() for s in range(count)
    ]


@pytest.mark.parametrize("constrained", [True, False])
def test_ensemble_steps_equal_separate_riemannian_sgd(constrained):
    copies = 3
    singles = _models(copies)
    names = ArchBN.scale_invariant_names(2) if constrained else []
    ensemble = Ensemble(_models(copies), dict.fromkeys(names, "oblique"))
    optimizers = [
        RiemannianSGD(param_groups(m) if constrained else m.parameters(), lr=lr)
        for m, lr in zip(singles, [0.1, 0.05, 0.01])
    ]
    lr = torch.tensor([0.1, 0.05, 0.01], dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x = torch.rand(copies, 32, 784, generator=gen, dtype=torch.float64)
        y = torch.randint(0, 10, (copies, 32), generator=gen)
        ensemble.set_lr(lr)
        losses, wrong = ensemble.train_step(x, y)
        for i, (model, optimizer) in enumerate(zip(singles, optimizers)):
            optimizer.zero_grad()
            logits = model(x[i])
            loss = F.cross_entropy(logits, y[i])
            loss.backward()
            optimizer.step()
            assert abs(loss.item() - losses[i].item()) < 1e-10
            assert (logits.argmax(1) != y[i]).sum().item() == wrong[i].item()
    for i, model in enumerate(singles):
        for name, tensor in model.state_dict().items():
            stacked = ensemble.member(i)[name]
            assert torch.allclose(tensor.double(), stacked.double(), atol=1e-10), name


def test_bold_driver_undoes_only_the_rejected_copies():
    ensemble = Ensemble(_models(3), dict.fromkeys(ArchBN.scale_invariant_names(2), "oblique"))
    lr = torch.full((3,), 0.1, dtype=torch.float64)
    ensemble.set_lr(lr)
    driver = BoldDriver(ensemble.optimizer, ensemble.stack, copies=3)
    snapshot = {k: v.clone() for k, v in ensemble.stack.state_dict().items()}
    x = torch.rand(3, 16, 784, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 16))
    ensemble.train_step(x, y)
    accepted = driver.step(torch.tensor([2.0, 1.0, float("nan")]))
    assert accepted.tolist() == [True, True, False]
    driver.step(torch.tensor([3.0, 0.5, 1.0]))  # copy 0 rose: undone; copy 2 now accepted
    weight = ensemble.params["linears.0.weight"]
    assert torch.equal(weight[0], snapshot["linears.0.weight"][0]) is False  # epoch 1 kept
    assert torch.equal(weight[2], snapshot["linears.0.weight"][2])
    assert torch.equal(
        ensemble.buffers["norms.0.running_mean"][2], snapshot["norms.0.running_mean"][2]
    )
    assert not torch.equal(weight[1], snapshot["linears.0.weight"][1])
    rates = ensemble.optimizer.param_groups[0]["lr"]
    assert torch.allclose(
        rates, torch.tensor([0.1 * 1.05 * 0.5, 0.1 * 1.05**2, 0.1 * 0.5 * 1.05], dtype=rates.dtype)
    )


def test_nonfinite_gradient_of_one_copy_leaves_it_untouched_and_steps_the_others():
    ensemble = Ensemble(_models(2), dict.fromkeys(ArchBN.scale_invariant_names(2), "oblique"))
    ensemble.set_lr(torch.tensor([0.1, 0.1], dtype=torch.float64))
    before = {k: v.clone() for k, v in ensemble.stack.state_dict().items()}
    x = torch.rand(2, 16, 784, dtype=torch.float64)
    x[1, 0, 0] = float("nan")
    ensemble.train_step(x, torch.randint(0, 10, (2, 16)))
    for name, param in ensemble.params.items():
        assert torch.equal(param[1], before[name][1]), name
    assert not torch.equal(ensemble.params["linears.0.weight"][0], before["linears.0.weight"][0])
    assert ensemble.optimizer.skipped_copies.tolist() == [0, 1]


def test_zero_rate_freezes_a_member_and_filters_stay_unit_norm():
    ensemble = Ensemble(_models(2), dict.fromkeys(ArchBN.scale_invariant_names(2), "oblique"))
    before = ensemble.params["linears.0.weight"][1].clone()
    for _ in range(5):
        ensemble.set_lr(torch.tensor([0.5, 0.0], dtype=torch.float64))
        ensemble.train_step(
            torch.rand(2, 16, 784, dtype=torch.float64), torch.randint(0, 10, (2, 16))
        )
    assert torch.allclose(ensemble.params["linears.0.weight"][1], before, rtol=0, atol=1e-15)
    norms = ensemble.params["linears.0.weight"][0].norm(dim=-1)
    assert (norms - 1).abs().max() < 1e-12


def test_unknown_parameter_name_raises():
    with pytest.raises(ValueError, match="no parameters named"):
        Ensemble(_models(1), {"linears.9.weight": "oblique"})


def test_sum_reduction_equals_mean_with_the_rate_times_the_batch_size():
    ensembles = [
        Ensemble(_models(2), dict.fromkeys(ArchBN.scale_invariant_names(2), "oblique"))
        for _ in range(2)
    ]
    x = torch.rand(2, 16, 784, dtype=torch.float64)
    y = torch.randint(0, 10, (2, 16))
    lr = torch.tensor([1e-3, 1e-2], dtype=torch.float64)
    ensembles[0].set_lr(lr)
    ensembles[0].train_step(x, y, reduction="sum")
    ensembles[1].set_lr(lr * 16)
    ensembles[1].train_step(x, y, reduction="mean")
    for name, tensor in ensembles[0].params.items():
        assert torch.allclose(tensor, ensembles[1].params[name], atol=1e-12), name
    with pytest.raises(ValueError, match="reduction"):
        ensembles[0].train_step(x, y, reduction="median")
