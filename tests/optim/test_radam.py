"""RiemannianAdam (and RiemannianAdamW): Euclidean groups equal torch.optim.Adam/AdamW bit for
bit beside constrained groups, on every path; products of oblique, sphere, Stiefel and
Euclidean groups; state dicts; stacked copies; geoopt parity; non-finite gradients."""

import io

import geoopt
import pytest
import torch

from riemann_dnn.optim import NonFiniteGradientError, RiemannianAdam, RiemannianAdamW
from riemann_dnn.step.native import adam_native_available

HYPER = [
    dict(),
    dict(betas=(0.8, 0.99), eps=1e-6),
    dict(weight_decay=0.1, amsgrad=True),
    dict(weight_decay=0.05, maximize=True),
]
FLAGS = [dict(), dict(foreach=False), dict(foreach=True), dict(fused=True), dict(fused=False)]


def _ids(d):
    return "-".join(f"{k}{v}" for k, v in d.items()) or "default"


def _model(seed, dtype=torch.float32):
    """An oblique weight and a sphere beside Euclidean ones (the latter compared)."""
    gen = torch.Generator().manual_seed(seed)
    constrained = [
        torch.randn(8, 3, 3, 3, generator=gen, dtype=dtype),
        torch.randn(6, 5, generator=gen, dtype=dtype),
    ]
    euclidean = [torch.randn(s, generator=gen, dtype=dtype) for s in ((8,), (10, 6), (1,))]
    return constrained, euclidean


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("flags", FLAGS, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("hyper", HYPER, ids=_ids)
def test_euclidean_groups_equal_torch_adam_bit_for_bit(hyper, dtype, flags, cls, lr_kind):
    if lr_kind == "tensor" and flags.get("foreach"):
        pytest.skip("a tensor lr with foreach=True is refused, as torch refuses it")
    constrained, euclidean = _model(0, dtype)
    theirs = [p.clone().requires_grad_() for p in euclidean]
    ours_e = [p.clone().requires_grad_() for p in euclidean]
    ours_c = [p.clone().requires_grad_() for p in constrained]
    lr = 0.01 if lr_kind == "float" else torch.tensor(0.01)
    torch_cls, our_cls = (
        (torch.optim.Adam, RiemannianAdam)
        if cls == "Adam"
        else (torch.optim.AdamW, RiemannianAdamW)
    )
    reference = torch_cls(theirs, lr=lr, **hyper, **flags)
    opt = our_cls(
        [
            {"params": ours_c[:1], "manifold": "oblique"},
            {"params": ours_e},
            {"params": ours_c[1:], "manifold": "sphere"},
        ],
        lr=lr,
        **hyper,
        **flags,
    )
    gen = torch.Generator().manual_seed(1)
    for step in range(50):
        for p, q in zip(theirs, ours_e):
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            q.grad = p.grad.clone()
        for p in ours_c:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        reference.step()
        opt.step()
        for k, (a, b) in enumerate(zip(ours_e, theirs)):
            assert torch.equal(a, b), f"step {step}, tensor {k}: {(a - b).abs().max():.3g}"
    norms = ours_c[0].detach().reshape(8, -1).norm(dim=1)
    assert (norms - 1).abs().max() < 1e-5 if dtype == torch.float32 else 1e-12
    for p, q in zip(theirs, ours_e):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[q][key], reference.state[p][key]), key


def test_adamw_is_adam_with_decoupled_decay_and_its_default():
    p = torch.zeros(3, requires_grad=True)
    opt = RiemannianAdamW([p])
    assert opt.defaults["decoupled_weight_decay"] is True
    assert opt.defaults["weight_decay"] == torch.optim.AdamW([p]).defaults["weight_decay"]


def _product(seed=0, dtype=torch.float64):
    """A weight on each manifold and a Euclidean classifier, with a quadratic loss."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"oblique": (6, 2, 3, 3), "sphere": (4, 5), "stiefel": (9, 3), "euclidean": (5, 3)}
    params = {k: torch.randn(s, generator=gen, dtype=dtype, requires_grad=True) for k, s in shapes.items()}  # fmt: skip
    targets = {k: torch.randn(s, generator=gen, dtype=dtype) for k, s in shapes.items()}
    groups = [{"params": [p], "manifold": k} for k, p in params.items()]
    return params, targets, groups


def _loss(params, targets):
    return sum(((params[k] - targets[k]) ** 2).sum() for k in params)


@pytest.mark.parametrize("flags", FLAGS, ids=_ids)
def test_product_of_oblique_sphere_stiefel_euclidean_groups(flags):
    params, targets, groups = _product()
    opt = RiemannianAdam(groups, lr=0.05, amsgrad=True, **flags)
    first = float(_loss(params, targets).detach())
    for _ in range(60):
        opt.zero_grad()
        _loss(params, targets).backward()
        opt.step()
    assert float(_loss(params, targets).detach()) < 0.8 * first
    w = params["oblique"].detach().reshape(6, -1)
    assert (w.norm(dim=1) - 1).abs().max() < 1e-12
    assert abs(params["sphere"].detach().norm() - 1) < 1e-12
    s = params["stiefel"].detach()  # 9 filters of 3 > 3: orthonormal columns
    assert (s.T @ s - torch.eye(3, dtype=s.dtype)).abs().max() < 1e-12
    assert opt.state[params["oblique"]]["exp_avg_sq"].shape == (6, 1)
    assert opt.state[params["stiefel"]]["exp_avg_sq"].shape == (1, 1)


def test_product_paths_agree():
    results = []
    for flags in (dict(), dict(fused=False), dict(foreach=False)):
        params, targets, groups = _product(1)
        opt = RiemannianAdam(groups, lr=0.05, weight_decay=0.01, **flags)
        for _ in range(20):
            opt.zero_grad()
            _loss(params, targets).backward()
            opt.step()
        results.append(params)
    for other in results[1:]:
        for k in other:
            err = (other[k] - results[0][k]).abs().max().item()
            assert err <= 1e-12, f"{k}: paths differ by {err:.3g}"


@pytest.mark.parametrize("flags", [dict(), dict(fused=True), dict(foreach=False)], ids=_ids)
def test_state_dict_round_trip_with_weights_only(flags):
    def run(steps, resume_at=None):
        params, targets, groups = _product(2, torch.float32)
        opt = RiemannianAdam(groups, lr=0.03, amsgrad=True, **flags)
        for step in range(steps):
            if step == resume_at:
                buffer = io.BytesIO()
                torch.save(opt.state_dict(), buffer)
                buffer.seek(0)
                _, _, fresh_groups = _product(2, torch.float32)
                for g, live in zip(fresh_groups, groups):
                    g["params"][0].data.copy_(live["params"][0].detach())
                params = {k: g["params"][0] for k, g in zip(params, fresh_groups)}
                # the saved points as they are (a float32 Stiefel point is orthonormal to a
                # few eps, beyond the 2 eps below which placement keeps points bit for bit)
                opt = RiemannianAdam(
                    fresh_groups, lr=0.03, amsgrad=True, project_initial=False, **flags
                )
                opt.load_state_dict(torch.load(buffer, weights_only=True))
            opt.zero_grad()
            _loss(params, targets).backward()
            opt.step()
        return params

    straight, resumed = run(10), run(10, resume_at=5)
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k


@pytest.mark.parametrize("amsgrad", [False, True])
def test_stacked_copies_with_a_rate_per_copy_equal_separate_optimizers(amsgrad):
    gen = torch.Generator().manual_seed(3)
    copies, rates = 3, [0.02, 0.0, 0.1]
    w = torch.randn(copies, 6, 4, generator=gen)
    w = torch.nn.functional.normalize(w, dim=-1)
    b = torch.randn(copies, 6, generator=gen)
    stacked = [w.clone().requires_grad_(), b.clone().requires_grad_()]
    opt = RiemannianAdam(
        [{"params": stacked[:1], "manifold": "oblique"}, {"params": stacked[1:]}],
        lr=torch.tensor(rates, dtype=torch.float64),
        copies=copies,
        amsgrad=amsgrad,
        weight_decay=0.01,
    )
    separate = [[w[k].clone().requires_grad_(), b[k].clone().requires_grad_()] for k in range(3)]
    opts = [
        RiemannianAdam(
            [{"params": ps[:1], "manifold": "oblique"}, {"params": ps[1:]}],
            lr=rate,
            amsgrad=amsgrad,
            weight_decay=0.01,
        )
        for ps, rate in zip(separate, rates)
    ]
    for _ in range(10):
        grads = [torch.randn(p.shape, generator=gen) for p in stacked]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        opt.step()
        for k, (ps, o) in enumerate(zip(separate, opts)):
            for p, g in zip(ps, grads):
                p.grad = g[k].clone()
            o.step()
            for i, p in enumerate(ps):
                assert torch.equal(stacked[i][k], p), f"copy {k}, tensor {i}"


@pytest.mark.parametrize(
    "name, shape", [("sphere", (7,)), ("oblique", (5, 9)), ("stiefel", (8, 3))]
)
def test_matches_geoopt_riemannian_adam_at_the_optimizer_level(name, shape):
    theirs_manifold = geoopt.EuclideanStiefel() if name == "stiefel" else geoopt.Sphere()
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(shape, generator=gen, dtype=torch.float64)
    target = torch.randn(shape, generator=gen, dtype=torch.float64)
    ours = start.clone().requires_grad_()
    opt = RiemannianAdam(
        [{"params": [ours], "manifold": name if name != "stiefel" else "stiefel"}],
        lr=0.02,
        amsgrad=True,
        weight_decay=0.01,
    )
    # our "stiefel" on an (8, 3) weight is St(8, 3) (orthonormal columns), as geoopt's
    theirs = geoopt.ManifoldParameter(ours.detach().clone(), manifold=theirs_manifold)
    reference = geoopt.optim.RiemannianAdam([theirs], lr=0.02, amsgrad=True, weight_decay=0.01)
    for _ in range(100):
        noise = 0.1 * torch.randn(shape, generator=gen, dtype=torch.float64)
        ours.grad = (ours.detach() - target) + noise
        theirs.grad = (theirs.detach() - target) + noise
        opt.step()
        reference.step()
    rel = ((ours.detach() - theirs.detach()).norm() / theirs.detach().norm()).item()
    assert rel <= 1e-6, f"{name}: relative difference {rel:.3g} from geoopt"


@pytest.mark.parametrize("where", ["euclidean", "oblique"])
@pytest.mark.parametrize("kernel", [True, False], ids=["one-kernel", "with-stiefel"])
@pytest.mark.parametrize("flags", [dict(), dict(fused=True), dict(foreach=False)], ids=_ids)
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_a_nonfinite_gradient_moves_nothing(nonfinite, flags, kernel, where):
    params, targets, groups = _product(5, torch.float32)
    if kernel:  # without the Stiefel weight, the default CPU step is one prepared kernel
        del params["stiefel"], groups[2]
    opt = RiemannianAdam(groups, lr=0.05, nonfinite=nonfinite, **flags)
    _loss(params, targets).backward()
    opt.step()
    before = {k: p.detach().clone() for k, p in params.items()}
    state = {k: opt.state[p]["exp_avg"].clone() for k, p in params.items()}
    opt.zero_grad()
    _loss(params, targets).backward()
    params[where].grad.view(-1)[0] = float("nan")
    if nonfinite == "raise":
        with pytest.raises(NonFiniteGradientError):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    for k, p in params.items():
        assert torch.equal(p.detach(), before[k]), k
        assert torch.equal(opt.state[p]["exp_avg"], state[k]), k


@pytest.mark.parametrize("flags", [dict(), dict(fused=False), dict(foreach=False)], ids=_ids)
def test_a_zero_filter_keeps_its_value_and_state_while_the_rest_steps(flags):
    """A filter set to zero after the optimizer was built (with a zero gradient, as a
    scale-invariant loss gives it) has no direction: it keeps its value and state on every
    path, the rest steps, and a warning names it (issue 19, I)."""
    params, targets, groups = _product(9, torch.float32)
    del params["stiefel"], groups[2]
    opt = RiemannianAdam(groups, lr=0.05, **flags)
    with torch.no_grad():
        params["oblique"][2].zero_()  # before the first step: no momentum either
    _loss(params, targets).backward()
    params["oblique"].grad[2] = 0
    before = {k: p.detach().clone() for k, p in params.items()}
    with pytest.warns(RuntimeWarning, match="kept their value"):
        opt.step()
    w = params["oblique"].detach()
    assert torch.equal(w[2], before["oblique"][2]) and torch.isfinite(w).all()
    state = opt.state[params["oblique"]]
    assert not state["exp_avg"][2].any() and not state["exp_avg_sq"][2].any()
    assert not torch.equal(w[:2], before["oblique"][:2]), "the other filters did not step"
    assert not torch.equal(params["euclidean"], before["euclidean"])


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(betas=(1.0, 0.0)), ValueError, "Invalid beta parameter at index 0: 1.0"),
        (dict(weight_decay=-1), ValueError, "Invalid weight_decay value: -1"),
        (dict(eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
        (dict(lr=torch.tensor(0.001), foreach=True), ValueError, "lr as a Tensor is not supp"),
        (dict(betas=(0.9, torch.tensor(0.99))), ValueError, "betas must be either both floats"),
        (dict(foreach=True, fused=True), RuntimeError, "cannot be `True` together"),
        (dict(lr=-0.1), ValueError, "lr must be a finite number >= 0, got -0.1"),
    ],
)
def test_bad_arguments_raise_torchs_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        RiemannianAdam([torch.zeros(3, requires_grad=True)], **kwargs)


@pytest.mark.skipif(not adam_native_available(), reason="no C compiler")
def test_the_default_cpu_step_is_one_prepared_kernel_call():
    params, targets, groups = _product(6, torch.float32)
    del groups[2]  # Stiefel takes the reference step: no kernel for the whole step
    opt = RiemannianAdam(groups, lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        _loss({k: params[k] for k in ("oblique", "sphere", "euclidean")}, targets).backward()
        opt.step()
    assert len(opt._kernels) == 1
    opt.state.clear()  # a cleared state drops the kernel and restarts the moments
    opt.step()
    assert all(float(opt.state[p]["step"]) == 1 for g in groups for p in g["params"])


@pytest.mark.skipif(not adam_native_available(), reason="no C compiler")
@pytest.mark.parametrize("flags", [dict(), dict(fused=True)], ids=_ids)
def test_the_step_counts_are_views_of_one_tensor_and_stay_right(flags):
    """The prepared kernel keeps every parameter's step count in one tensor (each state's
    ``"step"`` a 0-d view), so that one op counts a step of all of them; the counts stay
    right through a weights-only save and load, a count set by hand and ``state.clear()``."""
    params, targets, groups = _product(6, torch.float32)
    del groups[2]  # Stiefel takes the reference step: no kernel for the whole step
    used = {k: params[k] for k in ("oblique", "sphere", "euclidean")}

    def step(opt):
        opt.zero_grad()
        _loss(used, targets).backward()
        opt.step()

    def counts(opt):
        return [opt.state[p]["step"] for g in opt.param_groups for p in g["params"]]

    opt = RiemannianAdam(groups, lr=0.05, **flags)
    for _ in range(3):
        step(opt)
    assert len({c.untyped_storage().data_ptr() for c in counts(opt)}) == 1
    assert [float(c) for c in counts(opt)] == [3.0] * len(counts(opt))
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = RiemannianAdam(groups, lr=0.05, project_initial=False, **flags)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    step(loaded)
    assert [float(c) for c in counts(loaded)] == [4.0] * len(counts(loaded))
    assert [float(c) for c in counts(opt)] == [3.0] * len(counts(opt)), "shared with the copy"
    first = groups[0]["params"][0]
    loaded.state[first]["step"] = torch.tensor(10.0)
    step(loaded)
    assert [float(c) for c in counts(loaded)] == [11.0] + [5.0] * (len(counts(loaded)) - 1)
    loaded.state.clear()
    step(loaded)
    assert [float(c) for c in counts(loaded)] == [1.0] * len(counts(loaded))


@pytest.mark.parametrize("flags", [dict(), dict(fused=True)], ids=_ids)
def test_a_compiled_step_after_eager_steps_follows_the_eager_optimizer(flags):
    """``torch.compile(opt.step)`` (dynamo, eager backend) once eager steps have packed the
    step counts into one tensor: the same weights as eager steps, and the counts go on."""
    params, targets, groups = _product(6, torch.float32)
    del groups[2]  # Stiefel takes the reference step
    used = {k: params[k] for k in ("oblique", "sphere", "euclidean")}
    _, _, twin_groups = _product(6, torch.float32)
    del twin_groups[2]
    twin = {k: g["params"][0] for k, g in zip(("oblique", "sphere", "euclidean"), twin_groups)}
    opt = RiemannianAdam(groups, lr=0.05, **flags)
    reference = RiemannianAdam(twin_groups, lr=0.05, **flags)
    compiled = torch.compile(opt.step, backend="eager")
    for k in range(5):
        for optimizer, weights in ((opt, used), (reference, twin)):
            optimizer.zero_grad()
            _loss(weights, targets).backward()
        (opt.step if k < 2 else compiled)()
        reference.step()
    for name in used:  # to float32 rounding: dynamo orders torch's Adam ops its own way
        torch.testing.assert_close(used[name], twin[name], rtol=1e-6, atol=1e-6, msg=name)
    assert {float(opt.state[p]["step"]) for g in groups for p in g["params"]} == {5.0}


@pytest.mark.parametrize("flags", [dict(), dict(fused=True), dict(foreach=False)], ids=_ids)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_euclidean_is_torch_and_constrained_state_float32(dtype, flags):
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(8, 12, generator=gen).to(dtype).requires_grad_()
    b = torch.randn(8, generator=gen).to(dtype).requires_grad_()
    theirs = b.detach().clone().requires_grad_()
    groups = [{"params": [w], "manifold": "oblique"}, {"params": [b]}]
    opt = RiemannianAdam(groups, lr=1e-2, amsgrad=True, **flags)
    reference = torch.optim.Adam([theirs], lr=1e-2, amsgrad=True, **flags)
    for _ in range(5):
        w.grad = torch.randn(8, 12, generator=gen).to(dtype)
        b.grad = torch.randn(8, generator=gen).to(dtype)
        theirs.grad = b.grad.clone()
        opt.step()
        reference.step()
    assert torch.equal(b, theirs)
    assert (w.detach().float().norm(dim=1) - 1).abs().max() < 1e-2  # rounded to half
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt.state[w]["exp_avg"].dtype == torch.float32  # the working precision
    assert opt.state[w]["exp_avg_sq"].shape == (8, 1)
    assert opt.state[b]["exp_avg"].dtype == dtype  # torch.optim.Adam's


@pytest.mark.parametrize("flags", [dict(), dict(foreach=False)], ids=_ids)
def test_manifold_parameters_carry_their_manifold_into_adam(flags):
    from riemann_dnn.params import ManifoldParameter

    gen = torch.Generator().manual_seed(10)
    w = ManifoldParameter(torch.randn(6, 2, 3, generator=gen), "oblique")
    s = ManifoldParameter(torch.randn(8, 3, generator=gen), "stiefel")
    b = torch.nn.Parameter(torch.randn(6, generator=gen))
    opt = RiemannianAdam([w, s, b], lr=0.05, **flags)  # one group naming no manifold
    for _ in range(5):
        for p in (w, s, b):
            p.grad = torch.randn(p.shape, generator=gen)
        opt.step()
    assert (w.detach().reshape(6, -1).norm(dim=1) - 1).abs().max() < 1e-6
    assert (s.detach().T @ s.detach() - torch.eye(3)).abs().max() < 1e-5
    assert opt.state[w]["exp_avg_sq"].shape == (6, 1)
    assert opt.state[b]["exp_avg_sq"].shape == (6,)


@pytest.mark.parametrize("foreach", [None, False])
def test_a_parameter_whose_dtype_changed_steps_with_its_state_converted(foreach):
    """As RiemannianSGD's buffers (``state_tensor``): the moments follow the parameter's new
    dtype at its next step, on the kernel path and the kernel-free one alike (the fuzz of
    tests/optim/test_rsgd_fuzz.py found both raising: torch's lerp of mixed dtypes, and the
    native op refusing float32 moments of a float64 point)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.nn.functional.normalize(torch.randn(6, 5, generator=gen), dim=1))
    b = torch.nn.Parameter(torch.randn(5, generator=gen))
    opt = RiemannianAdam(
        [{"params": [w], "manifold": "oblique"}, {"params": [b]}], lr=0.1, foreach=foreach
    )
    for step in range(3):
        if step == 1:
            w.data, b.data = w.data.double(), b.data.double()
        w.grad = torch.randn(w.shape, generator=gen, dtype=w.dtype)
        b.grad = torch.randn(b.shape, generator=gen, dtype=b.dtype)
        opt.step()
    for p in (w, b):
        assert {opt.state[p][k].dtype for k in ("exp_avg", "exp_avg_sq")} == {torch.float64}
    torch.testing.assert_close(w.detach().norm(dim=1), torch.ones(6, dtype=torch.float64))
