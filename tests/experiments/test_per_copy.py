"""``PerCopy``: a per-parameter optimizer (AdamP, SGDP, AdamW) on stacked copies equals the
same optimizer on separate single models, bit for bit; its state dicts carry the copies
axis, so the bold driver undoes single copies and ``take_copies`` selects them."""

import pytest
import torch

from riemann_dnn.experiments.per_copy import PerCopy
from riemann_dnn.experiments.training import take_copies
from riemann_dnn.optim import BoldDriver

adamp = pytest.importorskip("adamp")

SHAPES = [(6, 5), (6,), (4, 3, 3, 3), (3, 6)]
COPIES = 3


def _optimizers():
    return [
        (adamp.AdamP, {}, {"weight_decay": [1e-2, 0.5, 0.0]}),
        (adamp.AdamP, {"nesterov": True, "betas": (0.8, 0.99)}, {"weight_decay": 0.1}),
        (adamp.SGDP, {"momentum": 0.9}, {}),
        (adamp.SGDP, {"momentum": 0.9, "nesterov": True}, {"weight_decay": [0.0, 1e-3, 1e-1]}),
        (torch.optim.AdamW, {}, {"weight_decay": [1e-2, 1.0, 0.0]}),
    ]


def _stacked_and_singles(seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    stacked = [torch.randn(COPIES, *s, generator=gen, dtype=dtype) for s in SHAPES]
    singles = [[t[c].clone().requires_grad_(True) for t in stacked] for c in range(COPIES)]
    return [t.requires_grad_(True) for t in stacked], singles


def _grads(step, dtype=torch.float32):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(COPIES, *s, generator=gen, dtype=dtype) for s in SHAPES]


def _per_copy_option(value, c):
    return value[c] if isinstance(value, list) else value


@pytest.mark.parametrize("case", range(len(_optimizers())))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_per_copy_equals_separate_optimizers_bit_for_bit(case, dtype):
    cls, options, group_options = _optimizers()[case]
    stacked, singles = _stacked_and_singles(dtype=dtype)
    rates = [0.1, 0.03, 0.01] if cls is adamp.SGDP else [1e-2, 3e-3, 1e-3]
    # two groups: the first with per-copy options, the second plain
    groups = [{"params": stacked[:2]}, {"params": stacked[2:]}]
    for key, value in group_options.items():
        groups[0][key] = (
            torch.tensor(value, dtype=torch.float64) if isinstance(value, list) else value
        )
    for group in groups:
        group["lr"] = torch.tensor(rates, dtype=torch.float64)
    wrapped = PerCopy(groups, cls, COPIES, **options)
    separate = []
    for c in range(COPIES):
        first = {
            "params": singles[c][:2],
            **{k: _per_copy_option(v, c) for k, v in group_options.items()},
        }
        separate.append(cls([first, {"params": singles[c][2:]}], lr=rates[c], **options))
    for step in range(12):
        grads = _grads(step, dtype)
        if step % 3 == 0:  # a gradient orthogonal to the filters: AdamP/SGDP project
            for t, g in zip(stacked, grads):
                if t.ndim > 2:  # per copy a matrix or more
                    w = t.detach().flatten(2)
                    w = w / w.norm(dim=2, keepdim=True)
                    flat = g.flatten(2)
                    flat -= (flat * w).sum(2, keepdim=True) * w
        for t, g in zip(stacked, grads):
            t.grad = g.clone()
        for c in range(COPIES):
            for t, g in zip(singles[c], grads):
                t.grad = g[c].clone()
            separate[c].step()
        wrapped.step()
        for c in range(COPIES):
            for t, single in zip(stacked, singles[c]):
                assert torch.equal(t.detach()[c], single.detach()), (cls, step, c)


def _sgdp(copies=COPIES, rates=(0.1, 0.05, 0.02)):
    gen = torch.Generator().manual_seed(1)
    weight = torch.randn(copies, 4, 3, generator=gen).requires_grad_(True)
    groups = [{"params": [weight], "lr": torch.tensor(rates[:copies], dtype=torch.float64)}]
    return weight, PerCopy(groups, adamp.AdamP, copies)


def _step(weight, opt, seed):
    weight.grad = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
    opt.step()


def test_state_dict_carries_the_copies_axis_and_round_trips():
    weight, opt = _sgdp()
    for s in range(3):
        _step(weight, opt, s)
    state = opt.state_dict()
    entry = state["state"][0]
    assert entry["exp_avg"].shape == (COPIES, 4, 3) and entry["step"] == 3
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    # a fresh optimizer loaded from the state steps as the original does
    weight2, opt2 = _sgdp()
    with torch.no_grad():
        weight2.copy_(weight)
    opt2.load_state_dict(loaded)
    _step(weight, opt, 10)
    _step(weight2, opt2, 10)
    assert torch.equal(weight, weight2)
    # take_copies keeps copies 0 and 2, and the smaller optimizer continues them exactly
    part = take_copies(opt.state_dict(), [0, 2], COPIES)
    assert part["param_groups"][0]["lr"].tolist() == pytest.approx([0.1, 0.02])
    weight3, opt3 = _sgdp(2, (0.1, 0.02))
    with torch.no_grad():
        weight3.copy_(weight[[0, 2]])
    opt3.load_state_dict(part)
    _step(weight, opt, 11)
    weight3.grad = weight.grad[[0, 2]].clone()
    opt3.step()
    assert torch.equal(weight3, weight.detach()[[0, 2]])


def test_bold_driver_undoes_a_single_copy():
    weight, opt = _sgdp()

    class Holder:
        def state_dict(self):
            return {"w": weight.detach()}

        def load_state_dict(self, state):
            with torch.no_grad():
                weight.copy_(state["w"])

    driver = BoldDriver(opt, Holder(), lr=torch.tensor([0.1, 0.05, 0.02]), copies=COPIES)
    _step(weight, opt, 0)
    driver.step(torch.tensor([1.0, 1.0, 1.0]))
    kept = weight.detach().clone()
    moments = opt.state_dict()["state"][0]["exp_avg"].clone()
    _step(weight, opt, 1)
    accepted = driver.step(torch.tensor([0.5, 2.0, 0.5]))  # copy 1's epoch is undone
    assert accepted.tolist() == [True, False, True]
    assert torch.equal(weight.detach()[1], kept[1]) and not torch.equal(weight[0], kept[0])
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"][1], moments[1])
    assert opt.param_groups[0]["lr"].tolist() == pytest.approx(
        [0.1 * 1.05**2, 0.05 * 1.05 * 0.5, 0.02 * 1.05**2]
    )


def test_a_copy_with_a_non_finite_gradient_is_left_untouched():
    weight, opt = _sgdp()
    _step(weight, opt, 0)
    before = weight.detach().clone()
    weight.grad = torch.randn(weight.shape)
    weight.grad[1, 0, 0] = float("nan")
    opt.step()
    assert torch.equal(weight.detach()[1], before[1])
    assert not torch.equal(weight.detach()[0], before[0])
    assert opt.skipped_copies.tolist() == [0, 1, 0]
    assert torch.isfinite(opt.state_dict()["state"][0]["exp_avg"]).all()


def test_refuses_manifold_groups_and_unstacked_tensors():
    w = torch.zeros(COPIES, 4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="manifold 'oblique'"):
        PerCopy([{"params": [w], "manifold": "oblique"}], adamp.AdamP, COPIES)
    with pytest.raises(ValueError, match="no leading axis of 3 copies"):
        PerCopy([{"params": [torch.zeros(2, 3, requires_grad=True)]}], adamp.AdamP, COPIES)
