"""The Riemannian optimizers against torch's own optimizer test inputs
(``torch.testing._internal.common_optimizers``, shipped with torch): its optim inputs, error
inputs and scheduler inputs, run on our optimizers the way torch's generic tests
(``test/test_optim.py``) run them on torch's -- with our own test code.

- Euclidean groups equal torch's optimizer of the same rule (its single-tensor reference
  path) bit for bit, step by step, on every input (float32 and float64, with each
  implementation flag torch lists for the CPU set on ours).
- Oblique groups follow the rule (a kernel-free reference written from the shared step),
  rows unit norm.
- The error inputs raise the same error type (our messages are ours: :data:`TABLE` maps
  them), and the scheduler inputs drive both optimizers alike.

A new optimizer joins with one :class:`Entry` in :data:`TABLE`.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's optimizer test inputs need the expecttest package (pip install expecttest)",
)

from riemann_dnn.manifolds import Oblique  # noqa: E402
from riemann_dnn.optim import RiemannianAdam, RiemannianAdamW, RiemannianSGD  # noqa: E402
from riemann_dnn.step import (  # noqa: E402
    AdamHyperparameters,
    SGDHyperparameters,
    riemannian_adam_step,
    riemannian_sgd_step,
)

DTYPES = [torch.float32, torch.float64]
STEPS = 5


def sgd_rule(manifold, point, grad, state: dict, hyper: dict, lr: float):
    """The kernel-free RiemannianSGD rule on one oblique point: the shared step
    (:func:`riemann_dnn.step.riemannian_sgd_step`), ``-grad`` when maximizing."""
    hp = SGDHyperparameters(
        lr,
        hyper.get("momentum", 0.0),
        hyper.get("dampening", 0.0),
        hyper.get("nesterov", False),
        hyper.get("weight_decay", 0.0),
    )
    grad = -grad if hyper.get("maximize", False) else grad
    new, state["buf"] = riemannian_sgd_step(manifold, point, grad, state.get("buf"), hp)
    return new


def adam_rule(manifold, point, grad, state: dict, hyper: dict, lr: float):
    """The kernel-free RiemannianAdam rule on one oblique point: the shared step
    (:func:`riemann_dnn.step.riemannian_adam_step`)."""
    hp = AdamHyperparameters(
        lr,
        tuple(float(b) for b in hyper.get("betas", (0.9, 0.999))),
        hyper.get("eps", 1e-8),
        hyper.get("weight_decay", 0.0),
        hyper.get("amsgrad", False),
        hyper.get("decoupled_weight_decay", False),
    )
    state["step"] = state.get("step", 0) + 1
    new, state["adam"] = riemannian_adam_step(
        manifold, point, grad, state.get("adam"), state["step"], hp, maximize=hyper.get("maximize")
    )
    return new


@dataclass(frozen=True)
class Entry:
    """One of our optimizers against one of torch's.

    ``errors``: torch's error-input description -> a regex of our message (where it
    differs from torch's). ``unsupported``: implementation flags ours lacks (inputs setting
    them are skipped). ``rule``: the kernel-free rule for an oblique point, as
    :func:`sgd_rule`. ``defaults``: torch's defaults of the hyper-parameters the rule reads.
    ``follows_flags``: our Euclidean groups run torch's own kernels, so they equal torch's
    optimizer built with the same implementation flags (else: its single-tensor
    reference). ``scheduler_hyper``: the hyper-parameters of the scheduler test.
    """

    name: str
    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    rule: Callable
    errors: dict[str, str] = field(default_factory=dict)
    unsupported: tuple[str, ...] = ("differentiable",)
    defaults: dict = field(default_factory=dict)
    follows_flags: bool = False
    scheduler_hyper: dict = field(default_factory=lambda: {"lr": 0.05, "momentum": 0.5})

    @property
    def info(self):
        return next(i for i in common_optimizers.optim_db if i.optim_cls is self.theirs)


TABLE = [
    Entry(
        "sgd",
        RiemannianSGD,
        torch.optim.SGD,
        sgd_rule,
        errors={
            "Tensor lr must be 1-element": "tensor lr must be a floating tensor of one element",
            "momentum should be between 0 and 1": "momentum must be a finite number >= 0, "
            "got -0.5",
        },
        defaults={"lr": 1e-3},
    ),
    Entry(
        "adam",
        RiemannianAdam,
        torch.optim.Adam,
        adam_rule,
        errors={
            "Tensor lr must be 1-element": "tensor lr must be a floating tensor of one element"
        },
        defaults={"lr": 1e-3},
        follows_flags=True,
        scheduler_hyper={"lr": 0.2},  # Adam moves a filter by about lr per step
    ),
    Entry(
        "adamw",
        RiemannianAdamW,
        torch.optim.AdamW,
        adam_rule,
        errors={
            "Tensor lr must be 1-element": "tensor lr must be a floating tensor of one element"
        },
        defaults={"lr": 1e-3, "weight_decay": 1e-2, "decoupled_weight_decay": True},
        follows_flags=True,
        scheduler_hyper={"lr": 0.2},  # Adam moves a filter by about lr per step
    ),
]


def _inputs(entry: Entry, dtype):
    """torch's optim inputs for the CPU with each implementation flag, ours lacking none."""
    inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs(
        "cpu", dtype, entry.info
    )
    return [
        i
        for i in inputs
        if not any(i.kwargs.get(flag) for flag in entry.unsupported)
        and "capturable" not in i.kwargs
    ]


def _cases():
    return [
        pytest.param(entry, dtype, optim_input, id=f"{entry.name}-{dtype}-{optim_input.desc}")
        for entry in TABLE
        for dtype in DTYPES
        for optim_input in _inputs(entry, dtype)
    ]


def _ours_kwargs(entry: Entry, kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in entry.unsupported}


def _copy_kwargs(kwargs: dict) -> dict:
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}


def _tensors(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(5, 4), (3, 2, 2, 2), (5,), ()]
    return [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("nonfinite", ["raise", "unchecked"])
@pytest.mark.parametrize("entry, dtype, optim_input", _cases())
def test_euclidean_groups_equal_torch_bit_for_bit(entry, dtype, optim_input, nonfinite):
    """With ``nonfinite="unchecked"`` a gradient entry is inf at the second step and NaN at
    the third, and the weights (NaN and inf included) still equal torch's."""
    poison = nonfinite == "unchecked"
    values = _tensors(dtype)
    ours = [v.clone().requires_grad_() for v in values]
    theirs = [v.clone().requires_grad_() for v in values]

    def groups(params):  # two groups, the second with its own rate
        return [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}]

    opt = entry.ours(
        groups(ours), nonfinite=nonfinite, **_ours_kwargs(entry, _copy_kwargs(optim_input.kwargs))
    )
    # torch's reference path (single tensor): torch's fused CPU kernel rounds some entries
    # differently from it (1 ulp, seen with torch 2.13); ours follows the reference
    reference = {k: v for k, v in optim_input.kwargs.items() if k not in ("fused", "foreach")}
    if entry.follows_flags:  # ours runs torch's kernels: the same flags, the same numbers
        reference = _ours_kwargs(entry, optim_input.kwargs)
    else:
        reference["foreach"] = False
    ref = entry.theirs(groups(theirs), **_copy_kwargs(reference))
    gen = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        for a, b in zip(ours, theirs):
            g = torch.randn(a.shape, generator=gen, dtype=dtype)
            if poison and step in (1, 2) and g.dim() == 2:
                g[0, step] = math.inf if step == 1 else math.nan
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert torch.equal(a.detach().nan_to_num(7, 8, 9), b.detach().nan_to_num(7, 8, 9)), (
                f"step {step}, tensor {k}: differs by {(a - b).abs().max().item():.3g}"
            )
    if poison:
        assert not bool(ours[0].isfinite().all()), "the inf/NaN never reached the weights"


@pytest.mark.parametrize("entry, dtype, optim_input", _cases())
def test_oblique_groups_follow_the_rule_with_unit_rows(entry, dtype, optim_input):
    values = _tensors(dtype)[:3]
    params = [v.clone().requires_grad_() for v in values]
    kwargs = _ours_kwargs(entry, _copy_kwargs(optim_input.kwargs))
    opt = entry.ours(
        [{"params": params[:2], "manifold": "oblique"}, {"params": params[2:]}], **kwargs
    )
    hyper = {**entry.defaults, **optim_input.kwargs}
    lr = float(hyper["lr"])
    manifolds = [Oblique.for_filters(p.shape) for p in params[:2]]
    points = [p.detach().reshape(p.shape[0], -1).clone() for p in params[:2]]
    states: list[dict] = [{} for _ in points]
    gen = torch.Generator().manual_seed(2)
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
        grads = [p.grad.reshape(p.shape[0], -1) for p in params[:2]]
        opt.step()
        points = [
            entry.rule(m, x, g, s, hyper, lr)
            for m, x, g, s in zip(manifolds, points, grads, states)
        ]
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for p, x in zip(params[:2], points):
        rows = p.detach().reshape(p.shape[0], -1)
        torch.testing.assert_close(rows, x, rtol=0, atol=tol)
        err = (rows.norm(dim=1) - 1).abs().max().item()
        assert err <= tol, f"rows off the unit sphere by {err:.3g}"


@pytest.mark.parametrize("entry", TABLE, ids=lambda e: e.name)
def test_state_dict_round_trip_with_weights_only_continues_identically(entry):
    for optim_input in _inputs(entry, torch.float32):
        kwargs = _ours_kwargs(entry, optim_input.kwargs)
        params = [v.requires_grad_() for v in _tensors(torch.float32)[:3]]

        def build(ps, kwargs=kwargs):
            return entry.ours(
                [{"params": ps[:2], "manifold": "oblique"}, {"params": ps[2:]}],
                **_copy_kwargs(kwargs),
            )

        opt = build(params)
        gen = torch.Generator().manual_seed(3)
        grads = [[torch.randn(p.shape, generator=gen) for p in params] for _ in range(4)]
        for step in range(2):
            for p, g in zip(params, grads[step]):
                p.grad = g.clone()
            opt.step()
        twins = [p.detach().clone().requires_grad_() for p in params]
        buffer = io.BytesIO()
        torch.save(copy.deepcopy(opt.state_dict()), buffer)
        buffer.seek(0)
        resumed = build(twins)
        resumed.load_state_dict(torch.load(buffer, weights_only=True))
        for step in range(2, 4):
            for ps, o in ((params, opt), (twins, resumed)):
                for p, g in zip(ps, grads[step]):
                    p.grad = g.clone()
                o.step()
        for a, b in zip(params, twins):
            assert torch.equal(a.detach(), b.detach()), optim_input.desc


def _error_cases():
    return [
        pytest.param(entry, error, id=f"{entry.name}-{error.optimizer_error_input.desc}")
        for entry in TABLE
        for error in entry.info.optim_error_inputs_func("cpu", torch.float32)
    ]


@pytest.mark.parametrize("entry, error", _error_cases())
def test_error_inputs_raise_the_same_error(entry, error):
    given = error.optimizer_error_input
    params = given.params
    if params is None:
        params = [torch.nn.Parameter(torch.randn(2, 2))]
    pattern = entry.errors.get(given.desc, error.error_regex)
    if issubclass(error.error_type, Warning):
        with pytest.warns(error.error_type, match=pattern):
            entry.ours(params, **given.kwargs)
        return
    with pytest.raises(error.error_type, match=pattern):
        optimizer = entry.ours(params, **given.kwargs)
        if error.error_on == common_optimizers.OptimizerErrorEnum.STEP_ERROR:
            optimizer.step()


def _scheduler_cases():
    return [
        pytest.param(entry, k, id=f"{entry.name}-schedulers{k}")
        for entry in TABLE
        for k in range(len(entry.info.scheduler_inputs))
    ]


def _run_with_schedulers(make_opt, schedulers, params, target, steps=12):
    opt = make_opt(params)
    made = [make(opt) for make in schedulers]

    def closure():
        opt.zero_grad()
        loss = sum(((p - t) ** 2).sum() for p, t in zip(params, target))
        loss.backward()
        return loss

    losses, rates = [], []
    for _ in range(steps):
        loss = opt.step(closure)
        losses.append(float(loss))
        for scheduler in made:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(loss)
            else:
                scheduler.step()
        rates.append([float(g["lr"]) for g in opt.param_groups])
    return losses, rates


@pytest.mark.parametrize("entry, k", _scheduler_cases())
def test_scheduler_inputs_drive_both_alike_and_oblique_goes_downhill(entry, k):
    schedulers = entry.info.scheduler_inputs[k]
    values = _tensors(torch.float64)[:3]
    target = [torch.zeros_like(v) for v in values]
    hyper = entry.scheduler_hyper
    ours = [v.clone().requires_grad_() for v in values]
    theirs = [v.clone().requires_grad_() for v in values]
    ours_run = _run_with_schedulers(lambda ps: entry.ours(ps, **hyper), schedulers, ours, target)
    theirs_run = _run_with_schedulers(
        lambda ps: entry.theirs(ps, **hyper), schedulers, theirs, target
    )
    assert ours_run == theirs_run
    for a, b in zip(ours, theirs):
        assert torch.equal(a.detach(), b.detach())
    # oblique: toward a target with unit rows, downhill, rows unit norm
    params = [v.clone().requires_grad_() for v in values[:2]]
    target = [torch.nn.functional.normalize(torch.ones_like(v).flatten(1), dim=1) for v in params]
    target = [t.reshape(p.shape) for t, p in zip(target, params)]
    losses, _ = _run_with_schedulers(
        lambda ps: entry.ours([{"params": ps, "manifold": "oblique"}], **hyper),
        schedulers,
        params,
        target,
    )
    assert losses[-1] < 0.8 * losses[0], losses
    for p in params:
        rows = p.detach().reshape(p.shape[0], -1)
        assert (rows.norm(dim=1) - 1).abs().max() < 1e-12
