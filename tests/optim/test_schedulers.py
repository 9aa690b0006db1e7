"""Learning-rate schedules for torch optimizers (riemann_dnn.optim.schedulers)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from riemann_dnn.optim import BoldDriver, RiemannianSGD, StepSizeScheduler
from riemann_dnn.step import DecayStepSize, HybridStepSize


def make(seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(5, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    groups = [
        {"params": [net[0].weight], "manifold": "oblique", "lr": 0.1},
        {"params": [p for p in list(net.parameters())[1:]], "lr": 0.02},
    ]
    return net, RiemannianSGD(groups, lr=0.1, momentum=0.9)


def epoch(net, opt, seed: int, steps: int = 3) -> float:
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        total += loss.item()
    return total / steps


def snapshot(net, opt):
    return (
        [p.detach().clone() for p in net.parameters()],
        [b.clone() for b in net.buffers()],
        [opt.state[p]["momentum_buffer"].clone() for p in net.parameters()],
    )


def assert_same(a, b, what):
    for kind, xs, ys in zip(("parameter", "buffer", "momentum buffer"), a, b):
        for i, (x, y) in enumerate(zip(xs, ys)):
            assert torch.equal(x, y), f"{what}: {kind} {i} differs"


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def test_bold_driver_grows_the_rate_after_a_decrease():
    net, opt = make()
    driver = BoldDriver(opt, net)
    epoch(net, opt, 0)
    assert driver.step(1.0) is True
    assert lrs(opt) == pytest.approx([0.1 * 1.05, 0.02 * 1.05], rel=1e-15)
    epoch(net, opt, 1)
    assert driver.step(torch.tensor(0.9)) is True  # a tensor loss works too
    assert lrs(opt) == pytest.approx([0.1 * 1.05**2, 0.02 * 1.05**2], rel=1e-15)
    assert driver.lr == pytest.approx(0.1 * 1.05**2) and driver.get_last_lr() == lrs(opt)


def test_bold_driver_restores_model_and_momentum_after_an_increase():
    net, opt = make()
    driver = BoldDriver(opt, net)
    epoch(net, opt, 0)
    driver.step(1.0)
    accepted = snapshot(net, opt)
    epoch(net, opt, 1)
    changed = snapshot(net, opt)
    assert not torch.equal(changed[0][0], accepted[0][0])
    assert driver.step(1.5) is False
    assert_same(snapshot(net, opt), accepted, "after the first rejection")
    assert lrs(opt) == pytest.approx([0.1 * 1.05 * 0.5, 0.02 * 1.05 * 0.5], rel=1e-15)
    # a second rejection in a row restores the same accepted state (the snapshot must not
    # have been modified in place by the steps in between)
    epoch(net, opt, 2)
    assert driver.step(1.2) is False
    assert_same(snapshot(net, opt), accepted, "after the second rejection")
    assert lrs(opt) == pytest.approx([0.1 * 1.05 * 0.25, 0.02 * 1.05 * 0.25], rel=1e-15)


def test_training_after_a_rejected_epoch_equals_training_without_it():
    net_a, opt_a = make()
    driver = BoldDriver(opt_a, net_a)
    epoch(net_a, opt_a, 0)
    driver.step(1.0)
    epoch(net_a, opt_a, 1)
    driver.step(2.0)  # rejected: undone, rate halved
    epoch(net_a, opt_a, 2)

    net_b, opt_b = make()
    epoch(net_b, opt_b, 0)
    for group in opt_b.param_groups:
        group["lr"] *= 1.05 * 0.5
    epoch(net_b, opt_b, 2)
    assert_same(snapshot(net_a, opt_a), snapshot(net_b, opt_b), "with vs without the undone epoch")


def test_bold_driver_initial_loss_and_constants():
    net, opt = make()
    before = [p.detach().clone() for p in net.parameters()]
    driver = BoldDriver(opt, net, increase=1.1, decrease=0.25, initial_loss=0.5)
    epoch(net, opt, 0)
    assert driver.step(0.6) is False  # worse than the initial loss: back to the start
    assert all(torch.equal(p.detach(), q) for p, q in zip(net.parameters(), before))
    assert all(not s for s in opt.state.values())  # no momentum before the first step
    assert lrs(opt) == pytest.approx([0.025, 0.005], rel=1e-15)
    epoch(net, opt, 1)
    assert driver.step(0.4) is True
    assert lrs(opt) == pytest.approx([0.025 * 1.1, 0.005 * 1.1], rel=1e-15)


def test_bold_driver_non_finite_loss_is_undone():
    net, opt = make()
    driver = BoldDriver(opt, net)
    epoch(net, opt, 0)
    driver.step(1.0)
    accepted = snapshot(net, opt)
    epoch(net, opt, 1)
    assert driver.step(math.nan) is False
    assert_same(snapshot(net, opt), accepted, "after a NaN loss")


def test_bold_driver_state_dict_round_trips():
    net, opt = make()
    driver = BoldDriver(opt, net)
    epoch(net, opt, 0)
    driver.step(1.0)
    state = driver.state_dict()
    other = BoldDriver(opt, net)
    other.load_state_dict(state)
    assert other.lr == driver.lr and float(other.best_loss) == 1.0
    epoch(net, opt, 1)
    assert other.step(3.0) is False


def test_step_size_scheduler_follows_the_decay_rule_per_iteration():
    net, opt = make()
    scheduler = StepSizeScheduler(opt, DecayStepSize(0.5, decay=0.2))
    assert lrs(opt) == pytest.approx([0.5, 0.1])  # groups keep their ratio 0.02 / 0.1
    for k in range(1, 6):
        epoch(net, opt, k, steps=1)
        scheduler.step()
        expected = 0.5 / (1 + 0.1 * k)
        assert lrs(opt) == pytest.approx([expected, expected / 5], rel=1e-15), k
    state = scheduler.state_dict()
    other = StepSizeScheduler(opt, DecayStepSize(0.5, decay=0.2))
    other.load_state_dict(state)
    assert other.iteration == 5 and other.get_last_lr() == pytest.approx(lrs(opt))


def test_step_size_scheduler_hybrid_rule_stops_decaying():
    _, opt = make()
    scheduler = StepSizeScheduler(opt, HybridStepSize(1.0, decay=1.0, decay_steps=3))
    for _ in range(10):
        scheduler.step()
    assert lrs(opt)[0] == pytest.approx(0.25, rel=1e-15)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: BoldDriver(None, lr=-0.1), "lr"),
        (lambda: BoldDriver(None, lr=0.1, increase=0.0), "increase"),
        (lambda: BoldDriver(None, lr=0.1, decrease=1.5), "decrease"),
        (lambda: BoldDriver(None, lr=0.1, decrease=0.0), "decrease"),
        (lambda: BoldDriver(None), "initial lr"),
    ],
)
def test_bold_driver_bad_values_raise_naming_the_argument(build, fragment):
    with pytest.raises(ValueError, match=fragment):
        build()


def test_bold_driver_grows_on_decrease_and_halves_on_increase_without_an_optimizer():
    driver = BoldDriver(None, lr=0.1)
    assert driver.step(2.0) is True  # the first epoch is always accepted
    assert math.isclose(driver.lr, 0.105, rel_tol=1e-15)
    assert driver.step(1.5) is True
    assert driver.step(1.7) is False  # rose: halve and undo
    assert math.isclose(driver.lr, 0.1 * 1.05**2 * 0.5, rel_tol=1e-15)
    assert float(driver.best_loss) == 1.5  # compared against the last accepted epoch
    assert driver.step(1.6) is False  # still above the accepted 1.5
    assert math.isclose(driver.lr, 0.1 * 1.05**2 * 0.25, rel_tol=1e-15)
    assert driver.step(math.nan) is False  # non-finite counts as a rise
    assert driver.step(1.0) is True


def test_bold_driver_per_copy_equals_one_driver_per_copy():
    losses = [[2.0, 1.0, 3.0], [1.5, 1.2, math.inf], [1.7, 0.9, 2.0], [1.0, 1.0, 2.5]]
    stacked = BoldDriver(None, lr=torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), copies=3)
    singles = [BoldDriver(None, lr=lr) for lr in (0.1, 0.2, 0.3)]
    for epoch_losses in losses:
        accepted = stacked.step(torch.tensor(epoch_losses))
        for k, single in enumerate(singles):
            assert single.step(epoch_losses[k]) == bool(accepted[k])
            assert single.lr == float(stacked.lr[k])


def test_bold_driver_restores_a_plain_state_holder():
    class Holder:
        def __init__(self):
            self.point = torch.zeros(3)

        def state_dict(self):
            return {"point": self.point}

        def load_state_dict(self, state):
            self.point = state["point"]

    holder = Holder()
    driver = BoldDriver(None, holder, lr=1.0)
    holder.point = torch.ones(3)
    driver.step(1.0)
    holder.point = torch.full((3,), 2.0)
    driver.step(5.0)
    assert torch.equal(holder.point, torch.ones(3))
