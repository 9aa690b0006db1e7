"""riemannian_adam, the functional form of RiemannianAdam: Euclidean tensors equal
torch.optim.Adam/AdamW bit for bit, flag for flag; a rate per copy equals separate runs;
constrained tensors take the row-fused kernel, the in-place sphere kernel or the reference
step, and all agree."""

import functools

import pytest
import torch

from riemann_dnn.manifolds import Oblique, Sphere, Stiefel
from riemann_dnn.optim.radam import riemannian_adam
from riemann_dnn.params import Geometry, resolve_geometry
from riemann_dnn.step.adam import AdamHyperparameters

HYPER = [
    dict(),
    dict(betas=(0.8, 0.99), eps=1e-6),
    dict(weight_decay=0.1),
    dict(weight_decay=0.1, amsgrad=True),
    dict(weight_decay=0.05, maximize=True),
    dict(amsgrad=True, maximize=True, betas=(0.5, 0.9)),
]
FLAGS = [dict(), dict(foreach=False), dict(foreach=True), dict(fused=True)]
SHAPES = [(8, 5), (8,), (3, 2, 3, 3), (1,)]


def _ids(d):
    return "-".join(f"{k}{v}" for k, v in d.items()) or "default"


def _state(params, amsgrad):
    return dict(
        exp_avgs=[torch.zeros_like(p) for p in params],
        exp_avg_sqs=[torch.zeros_like(p) for p in params],
        max_exp_avg_sqs=[torch.zeros_like(p) for p in params] if amsgrad else [],
        state_steps=[torch.tensor(0.0) for _ in params],
    )


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
@pytest.mark.parametrize("flags", FLAGS, ids=_ids)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("hyper", HYPER, ids=_ids)
def test_euclidean_tensors_equal_torch_adam_bit_for_bit(hyper, dtype, flags, decoupled, lr_kind):
    if lr_kind == "tensor" and flags.get("foreach"):
        pytest.skip("torch refuses a tensor lr with foreach=True (and so do we: see below)")
    gen = torch.Generator().manual_seed(0)
    theirs = [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]
    ours = [p.detach().clone() for p in theirs]
    lr = 0.01 if lr_kind == "float" else torch.tensor(0.01)
    maximize = hyper.get("maximize", False)
    opt = torch.optim.Adam(theirs, lr=lr, decoupled_weight_decay=decoupled, **{**hyper, **flags})
    hp = AdamHyperparameters(
        lr,
        hyper.get("betas", (0.9, 0.999)),
        hyper.get("eps", 1e-8),
        hyper.get("weight_decay", 0.0),
        hyper.get("amsgrad", False),
        decoupled,
    )
    state = _state(ours, hp.amsgrad)
    for step in range(50):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in ours]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        opt.step()
        riemannian_adam(ours, grads, **state, geometries=None, hp=hp, maximize=maximize, **flags)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert torch.equal(a, b.detach()), (
                f"step {step} tensor {k}: differs from torch.optim.Adam by "
                f"{(a - b.detach()).abs().max().item():.3g}"
            )
    for k, p in enumerate(theirs):
        torch_state = opt.state[p]
        assert torch.equal(state["exp_avg_sqs"][k], torch_state["exp_avg_sq"])
        assert float(state["state_steps"][k]) == float(torch_state["step"]) == 50


def test_tensor_lr_with_foreach_is_refused_as_torch_refuses_it():
    p = torch.zeros(3)
    with pytest.raises(RuntimeError, match="lr as a Tensor is not supported"):
        riemannian_adam(
            [p],
            [torch.ones(3)],
            **_state([p], False),
            geometries=None,
            hp=AdamHyperparameters(torch.tensor(0.1)),
            foreach=True,
        )


def _stacked(geometry: Geometry) -> Geometry:
    return Geometry(geometry.manifold, functools.partial(geometry.view, batch_dims=1))


@pytest.mark.parametrize("decoupled", [False, True], ids=["Adam", "AdamW"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_rate_per_copy_equals_separate_torch_adams_bit_for_bit(dtype, decoupled):
    gen = torch.Generator().manual_seed(1)
    rates = [0.01, 0.0, 0.3]
    copies = len(rates)
    stacked = [torch.randn(copies, *s, generator=gen, dtype=dtype) for s in SHAPES]
    separate = [[p[k].clone().requires_grad_() for p in stacked] for k in range(copies)]
    hyper = dict(weight_decay=0.1, amsgrad=True, betas=(0.8, 0.99))
    opts = [
        torch.optim.Adam(params, lr=rate, decoupled_weight_decay=decoupled, **hyper)
        for params, rate in zip(separate, rates)
    ]
    hp = AdamHyperparameters(
        torch.tensor(rates, dtype=torch.float64), (0.8, 0.99), 1e-8, 0.1, True, decoupled
    )
    geometries = [_stacked(resolve_geometry("euclidean", None, p[0])) for p in stacked]
    state = _state(stacked, True)
    for step in range(20):
        grads = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in stacked]
        riemannian_adam(stacked, grads, **state, geometries=geometries, hp=hp, maximize=True)
        for k, opt in enumerate(opts):
            for p, g in zip(separate[k], grads):
                p.grad = g[k].clone()
            opt.maximize = True
            for group in opt.param_groups:
                group["maximize"] = True
            opt.step()
            for i, p in enumerate(separate[k]):
                assert torch.equal(stacked[i][k], p.detach()), (step, k, i)


def _constrained_setup(seed, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    specs = [
        ("oblique", (6, 3, 3, 3)),
        ("oblique", (4, 10)),
        ("sphere", (5, 4)),
        ("stiefel", (7, 3)),
        ("euclidean", (6,)),
    ]
    params, geometries = [], []
    for name, shape in specs:
        p = torch.randn(shape, generator=gen, dtype=dtype)
        geometry = resolve_geometry(name, None, p)
        point = geometry.view(p)
        point.copy_(geometry.manifold.project_point(point))
        params.append(p)
        geometries.append(geometry)
    return params, geometries, gen


def _constrained_state(params, geometries, amsgrad):
    from riemann_dnn.step.adam import second_moment_axes

    sqs = []
    for p, geometry in zip(params, geometries):
        if geometry.is_euclidean:
            sqs.append(torch.zeros_like(p))
            continue
        point = geometry.view(p)
        axes = second_moment_axes(geometry.manifold)
        axes = (axes,) if isinstance(axes, int) else axes
        shape = [1 if (d - point.ndim) in axes else s for d, s in enumerate(point.shape)]
        sqs.append(torch.zeros(shape, dtype=p.dtype))
    return dict(
        exp_avgs=[torch.zeros_like(p) for p in params],
        exp_avg_sqs=sqs,
        max_exp_avg_sqs=[s.clone() for s in sqs] if amsgrad else [],
        state_steps=[torch.tensor(0.0) for _ in params],
    )


@pytest.mark.parametrize("hyper", HYPER, ids=_ids)
def test_constrained_paths_agree(hyper):
    """The default path (row-fused kernel for oblique and sphere on the CPU), fused=False
    (the in-place sphere kernel) and foreach=False (the reference step) agree."""
    results = {}
    for flags in (dict(), dict(fused=False), dict(foreach=False)):
        params, geometries, gen = _constrained_setup(2)
        hp = AdamHyperparameters(
            0.05,
            hyper.get("betas", (0.9, 0.999)),
            hyper.get("eps", 1e-8),
            hyper.get("weight_decay", 0.0),
            hyper.get("amsgrad", False),
        )
        state = _constrained_state(params, geometries, hp.amsgrad)
        for _ in range(10):
            grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
            riemannian_adam(
                params,
                grads,
                **state,
                geometries=geometries,
                hp=hp,
                maximize=hyper.get("maximize", False),
                **flags,
            )
        results[_ids(flags)] = params
        for p, geometry in zip(params, geometries):
            assert geometry.manifold.constraint_violation(geometry.view(p)) < 1e-12
    reference = results.pop("foreach" + "False")
    for name, params in results.items():
        for k, (a, b) in enumerate(zip(params, reference)):
            err = (a - b).abs().max().item()
            assert err <= 1e-12, f"{name}: tensor {k} differs from the reference by {err:.3g}"


def test_manifold_objects_take_the_fitting_path():
    """Sphere/Oblique objects (normalize retraction) and a Stiefel object step; an oblique
    with the exp retraction takes the reference step and still stays on its manifold."""
    gen = torch.Generator().manual_seed(3)
    cases = [Sphere(3, 4), Oblique(3, 4, unit="rows", retraction="exp"), Stiefel(5, 2)]
    for manifold in cases:
        p = manifold.random_point(generator=gen, dtype=torch.float32)
        geometry = resolve_geometry(manifold, None, p)
        state = _constrained_state([p], [geometry], False)
        for _ in range(5):
            riemannian_adam(
                [p], [torch.randn(p.shape, generator=gen)], **state,
                geometries=[geometry], hp=AdamHyperparameters(0.1),
            )  # fmt: skip
        assert manifold.constraint_violation(p) < 1e-5, manifold
