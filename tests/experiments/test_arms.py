"""The study's momentum and adaptive arms train what they name: every copy of a method's
ensemble steps exactly as the named optimizer steps a single model given the same gradients
(bit for bit, float32), and the whole ensemble (forward included) follows a single model
trained with that optimizer."""

import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.experiments.config import RunConfig
from riemann_dnn.experiments.methods import ARMS, METHODS
from riemann_dnn.experiments.training import build_ensemble
from riemann_dnn.models import ArchBN
from riemann_dnn.optim import RiemannianAdam, RiemannianSGD

adamp = pytest.importorskip("adamp")

DEPTH = 2
FILTERS = ArchBN.scale_invariant_names(DEPTH)
RATES = {"sgd": (2.0**-4, 2.0**-6), "adam": (2.0**-9, 2.0**-11)}  # exact in float32
DECAYS = (0.5, 0.125)


def _reference(method: str, filters: list, others: list, lr: float, decay: float, retraction):
    """The optimizer ``method`` names, on one model's ``filters`` and ``others``."""
    if method == "un-mom":
        groups = [
            {"params": filters, "manifold": "oblique", "retraction": retraction},
            {"params": others},
        ]
        return RiemannianSGD(groups, lr=lr, momentum=0.9)
    if method == "radam":
        groups = [
            {"params": filters, "manifold": "oblique", "retraction": retraction},
            {"params": others},
        ]
        return RiemannianAdam(groups, lr=lr)
    both = filters + others
    if method == "bsgd-mom":
        return torch.optim.SGD(both, lr=lr, momentum=0.9)
    if method == "sgdp":
        return adamp.SGDP(both, lr=lr, momentum=0.9)
    if method == "adam":
        return torch.optim.Adam(both, lr=lr)
    decayed = [{"params": filters, "weight_decay": decay}, {"params": others}]
    if method == "adamw":
        return torch.optim.AdamW(decayed, lr=lr, weight_decay=0.0)
    if method == "adamp":
        return adamp.AdamP(decayed, lr=lr, weight_decay=0.0)
    raise AssertionError(method)


def _ensemble(method: str):
    configs = [RunConfig(depth=DEPTH, method=method, seed=s) for s in (0, 1)]
    ens = build_ensemble(configs, 1, 784, "cpu")
    rates = RATES["sgd" if METHODS[method].optimizer in ("sgd", "sgdp") else "adam"]
    ens.set_lr(torch.tensor(rates, dtype=torch.float64))
    if METHODS[method].weight_decay:
        ens.set_weight_decay(torch.tensor(DECAYS))
    return ens, rates


def _batches(steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(2, 32, 784, generator=gen), torch.randint(0, 10, (2, 32), generator=gen))
        for _ in range(steps)
    ]


@pytest.mark.parametrize("method", ARMS["momentum"] + ARMS["adam"])
def test_each_copy_steps_as_the_named_optimizer_on_one_model_bit_for_bit(method):
    ens, rates = _ensemble(method)
    names = list(ens.params)
    start = {n: ens.params[n].detach().clone() for n in names}
    grads = []
    step = ens.optimizer.step

    def recording_step(*args, **kwargs):
        grads.append({n: ens.params[n].grad.detach().clone() for n in names})
        return step(*args, **kwargs)

    ens.optimizer.step = recording_step
    for x, y in _batches(6):
        ens.train_step(x, y)
    retraction = ens.optimizer.param_groups[0].get("retraction")
    for c in range(2):
        single = {n: start[n][c].clone().requires_grad_(True) for n in names}
        filters = [single[n] for n in names if n in FILTERS]
        others = [single[n] for n in names if n not in FILTERS]
        reference = _reference(method, filters, others, rates[c], DECAYS[c], retraction)
        for step_grads in grads:
            for n in names:
                single[n].grad = step_grads[n][c].clone()
            reference.step()
        for n in names:
            ours, theirs = ens.params[n].detach()[c], single[n].detach()
            assert torch.equal(ours, theirs), (
                f"{method} copy {c} {n}: max |diff| {(ours - theirs).abs().max().item():.3g}"
            )
    if METHODS[method].constrained:  # the filters stayed on the oblique manifold
        for n in FILTERS:
            norms = ens.params[n].detach().flatten(2).norm(dim=2)
            torch.testing.assert_close(norms, torch.ones_like(norms))


@pytest.mark.parametrize("method", ["un-mom", "sgdp", "radam", "adamp"])
def test_the_ensemble_trains_as_a_single_model_with_the_named_optimizer(method):
    """Forward and backward included (the batched forward rounds differently from a single
    model's, so to float32's rounding after a few steps)."""
    ens, rates = _ensemble(method)
    batches = _batches(4, seed=1)
    models = [ArchBN(DEPTH, generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    for c, model in enumerate(models):
        params = dict(model.named_parameters())
        filters = [params[n] for n in params if n in FILTERS]
        others = [params[n] for n in params if n not in FILTERS]
        reference = _reference(method, filters, others, rates[c], DECAYS[c], None)
        for x, y in batches:
            reference.zero_grad()
            F.cross_entropy(model(x[c]), y[c]).backward()
            reference.step()
    for x, y in batches:
        ens.train_step(x, y)
    for c, model in enumerate(models):
        for name, param in model.named_parameters():
            torch.testing.assert_close(
                ens.params[name][c].detach(), param.detach(), rtol=1e-4, atol=1e-5
            )
