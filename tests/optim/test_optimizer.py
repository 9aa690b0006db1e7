"""RiemannianOptimizer, the base: a new optimizer is its hooks only (the subclass contract)."""

import io

import pytest
import torch

from riemann_dnn.optim import NonFiniteGradientError, RiemannianOptimizer, RiemannianSGD
from riemann_dnn.step import SGDHyperparameters, riemannian_sgd_step


class PlainRGD(RiemannianOptimizer):
    """Riemannian gradient descent in a few lines: the hooks a subclass implements."""

    name = "PlainRGD"

    def __init__(self, params, lr=0.1, **kwargs):
        super().__init__(params, dict(lr=lr), **kwargs)

    def _check_hyperparameters(self, group, where):
        pass

    def _step_group(self, group, found):
        for param in group["params"]:
            if param.grad is None:
                continue
            geometry = self.geometry(param, group)
            view = geometry.view
            new, _ = riemannian_sgd_step(
                geometry.manifold,
                view(param),
                view(param.grad),
                None,
                SGDHyperparameters(group["lr"]),
            )
            view(param).copy_(new)


def _weights(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=gen, requires_grad=True), torch.randn(
        4, generator=gen, requires_grad=True
    )


def test_a_subclass_of_hooks_only_places_steps_and_checks():
    w, b = _weights()
    opt = PlainRGD([{"params": [w], "manifold": "oblique"}, {"params": [b]}], lr=0.1)
    torch.testing.assert_close(w.detach().norm(dim=1), torch.ones(6))  # placed
    reference = RiemannianSGD(
        [{"params": [w.detach().clone().requires_grad_()], "manifold": "oblique"}],
        lr=0.1,
        foreach=False,
    )
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        g = torch.randn(6, 5, generator=gen)
        w.grad, b.grad = g.clone(), torch.ones(4)
        reference.param_groups[0]["params"][0].grad = g.clone()
        opt.step()
        reference.step()
    torch.testing.assert_close(w.detach(), reference.param_groups[0]["params"][0].detach())
    w.grad[0, 0] = torch.nan
    before = w.detach().clone()
    with pytest.raises(NonFiniteGradientError):
        opt.step()
    assert torch.equal(w.detach(), before)


def test_a_subclass_state_dict_loads_with_weights_only():
    w, _ = _weights()
    opt = PlainRGD([{"params": [w], "manifold": "oblique"}], lr=0.1)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt.param_groups[0]["manifold"] == "oblique"


@pytest.mark.parametrize(
    "name, key", [("sgd", "momentum_buffer"), ("adam", "exp_avg"), ("adam", "exp_avg_sq")]
)
def test_a_state_of_the_wrong_shape_is_refused_before_any_weight_moves(name, key):
    """A later group's bad state (a parameter reshaped since) used to raise after the earlier
    groups had stepped; now every state is checked first, on every path."""
    from riemann_dnn.optim import RiemannianAdam

    cls = {"sgd": RiemannianSGD, "adam": RiemannianAdam}[name]
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(4, 3, generator=gen), dim=1))
    b = torch.nn.Parameter(torch.randn(5, generator=gen))
    options = {"momentum": 0.9} if name == "sgd" else {}
    opt = cls([{"params": [w], "manifold": "oblique"}, {"params": [b]}], lr=0.1, **options)
    w.grad, b.grad = torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)
    opt.step()
    opt.state[b][key] = torch.zeros(7)
    before = [p.detach().clone() for p in (w, b)]
    with pytest.raises(ValueError, match=rf"state '{key}' has shape \(7,\) but its parameter"):
        opt.step()
    assert all(torch.equal(p.detach(), q) for p, q in zip((w, b), before)), "a weight moved"


@pytest.mark.parametrize("nonfinite", ["raise", "unchecked"])
@pytest.mark.parametrize("where", [0, 1, 2])
@pytest.mark.parametrize("make", ["sgd", "adam"])
def test_an_empty_group_keeps_the_prepared_kernel_and_changes_nothing(make, where, nonfinite):
    """A hand-written empty group (e.g. the Euclidean rest of a model with none) is
    skipped: the other groups still take one prepared native call (an empty group had sent
    every group down the eager paths, 7x slower with nonfinite='unchecked' on a 14.7M-entry
    conv), and the weights equal those of the same optimizer without it, bit for bit."""
    from riemann_dnn.optim import RiemannianAdam
    from riemann_dnn.step.native import native_available

    if not native_available():
        pytest.skip("no C compiler: no prepared kernel")
    cls = RiemannianSGD if make == "sgd" else RiemannianAdam
    runs = []
    for empty in (False, True):
        gen = torch.Generator().manual_seed(3)
        conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen))
        bias = torch.nn.Parameter(torch.randn(8, generator=gen))
        groups = [{"params": [conv], "manifold": "oblique"}, {"params": [bias]}]
        if empty:
            groups.insert(
                where, {"params": [], "momentum": 0.5} if make == "sgd" else {"params": []}
            )
        kwargs = {"momentum": 0.9} if make == "sgd" else {}
        opt = cls(groups, lr=0.01, nonfinite=nonfinite, **kwargs)
        for step in range(3):
            conv.grad = torch.randn(conv.shape, generator=gen)
            bias.grad = torch.randn(bias.shape, generator=gen)
            opt.step()
        assert opt._kernels, "the step left the prepared kernel"
        runs.append((conv.detach().clone(), bias.detach().clone()))
    for before, after in zip(*runs):
        assert torch.equal(before, after)


@pytest.mark.parametrize("nonfinite", ["raise", "unchecked"])
@pytest.mark.parametrize("make", ["sgd", "adam"])
def test_a_parameter_without_a_gradient_is_left_out_and_the_rest_keep_the_kernel(make, nonfinite):
    """A frozen or unused parameter (``grad`` None) is skipped, state and all, as by
    torch.optim; the others still take one prepared native call (one missing gradient had
    sent the whole step down the eager paths: 0.55 against 0.08 ms on ArchBN-4's set), and
    every weight and state tensor equals the kernel-free reference's (``foreach=False``)
    over steps that drop different parameters."""
    from riemann_dnn.optim import RiemannianAdam
    from riemann_dnn.step.native import native_available

    if not native_available():
        pytest.skip("no C compiler: no prepared kernel")
    cls = RiemannianSGD if make == "sgd" else RiemannianAdam
    kwargs = {"momentum": 0.9} if make == "sgd" else {}
    missing_per_step = [{"frozen"}, {"frozen", "conv"}, {"frozen", "bias"}, {"frozen"}]
    sides = []
    for foreach in (None, False):
        gen = torch.Generator().manual_seed(5)
        params = {
            "conv": torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen)),
            "other": torch.nn.Parameter(torch.randn(6, 5, generator=gen)),
            "bias": torch.nn.Parameter(torch.randn(8, generator=gen)),
            "frozen": torch.nn.Parameter(torch.randn(3, 3, generator=gen)),
        }
        groups = [
            {"params": [params["conv"], params["other"]], "manifold": "oblique"},
            {"params": [params["bias"], params["frozen"]]},
        ]
        opt = cls(groups, lr=0.01, nonfinite=nonfinite, foreach=foreach, **kwargs)
        for missing in missing_per_step:
            for name, p in params.items():
                p.grad = None if name in missing else torch.randn(p.shape, generator=gen)
            opt.step()
            if foreach is None:
                assert opt._kernels, f"a step without {sorted(missing)} left the kernel"
        sides.append((params, opt))
    (params, opt), (ref_params, ref) = sides
    assert params["frozen"] not in opt.state, "a parameter without a gradient got state"
    for name, p in params.items():
        torch.testing.assert_close(p, ref_params[name], rtol=1e-6, atol=1e-6, msg=name)
        for key, value in opt.state.get(p, {}).items():
            torch.testing.assert_close(
                value, ref.state[ref_params[name]][key], rtol=1e-6, atol=1e-6, msg=key
            )


@pytest.mark.parametrize("make", ["sgd", "adam"])
def test_a_frozen_parameter_costs_one_layout_not_one_per_step(make):
    """With the same parameter frozen on every step, the kernel over the others is laid out
    once and reused (it had been laid out twice a step: the full set first, then the
    subset, each evicting the other from the set's one cache slot)."""
    from riemann_dnn.optim import RiemannianAdam
    from riemann_dnn.step.native import native_available

    if not native_available():
        pytest.skip("no C compiler: no prepared kernel")
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen))
    frozen = torch.nn.Parameter(torch.randn(5, generator=gen))
    bias = torch.nn.Parameter(torch.randn(8, generator=gen))
    groups = [{"params": [conv], "manifold": "oblique"}, {"params": [frozen, bias]}]
    kwargs = {"momentum": 0.9} if make == "sgd" else {}
    opt = (RiemannianSGD if make == "sgd" else RiemannianAdam)(groups, lr=0.01, **kwargs)
    layouts = []
    prepare = opt._prepare_kernel
    opt._prepare_kernel = lambda g: layouts.append(len(g)) or prepare(g)
    for _ in range(6):
        conv.grad, bias.grad = torch.randn(conv.shape), torch.randn(bias.shape)
        opt.step()
    assert opt._kernels and len(layouts) <= 2, f"{len(layouts)} layouts in 6 steps"
    # it joins: the first step takes the eager paths (some state exists, its does not),
    # then one layout over all three, reused
    frozen.grad = torch.randn(frozen.shape)
    conv.grad, bias.grad = torch.randn(conv.shape), torch.randn(bias.shape)
    for _ in range(4):
        opt.step()
    assert opt._kernels and len(layouts) <= 4 and frozen in opt.state
