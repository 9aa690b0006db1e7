"""Stacked copies (``"copies": n``, a rate per copy, the native kernels in float32) against one
optimizer per copy, under random sequences of steps with non-finite copies
(``nonfinite="skip"``), per-copy rate changes, ``state.clear()`` and weights-only state-dict
round trips."""

import io

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riemann_dnn.optim import RiemannianAdam, RiemannianSGD

COPIES = 3
operations = st.lists(
    st.one_of(
        st.tuples(st.just("step"), st.integers(0, 99), st.sets(st.integers(0, COPIES - 1))),
        st.tuples(
            st.just("lr"),
            st.lists(st.sampled_from([0.0, 0.05, 0.1]), min_size=COPIES, max_size=COPIES),
        ),
        st.tuples(st.just("clear")),
        st.tuples(st.just("reload")),
    ),
    min_size=1,
    max_size=10,
)


def _reloaded(opt, build):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh = build()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(adam=st.booleans(), momentum=st.sampled_from([0.0, 0.9]), ops=operations)
def test_stacked_copies_follow_one_optimizer_per_copy(adam, momentum, ops):
    """Adam's bad copies are not drawn: its step count is one per parameter, shared by the
    copies, so a skipped copy's count advances (docs/adam.md); SGD's are."""
    cls, options = (RiemannianAdam, {}) if adam else (RiemannianSGD, {"momentum": momentum})
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(COPIES, 4, 5, generator=gen), dim=-1)
    b = torch.randn(COPIES, 5, generator=gen)
    rates = torch.tensor([0.1, 0.05, 0.2], dtype=torch.float64)
    stacked = [w.clone().requires_grad_(), b.clone().requires_grad_()]
    singles = [[w[k].clone().requires_grad_(), b[k].clone().requires_grad_()] for k in range(3)]

    def build_stacked():
        groups = [
            {"params": stacked[:1], "manifold": "oblique", "copies": COPIES},
            {"params": stacked[1:], "copies": COPIES},
        ]
        return cls(groups, lr=rates.clone(), nonfinite="skip", **options)

    def build_single(k):
        groups = [{"params": singles[k][:1], "manifold": "oblique"}, {"params": singles[k][1:]}]
        return cls(groups, lr=float(rates[k]), nonfinite="skip", **options)

    opt, opts = build_stacked(), [build_single(k) for k in range(COPIES)]
    for op in ops:
        if op[0] == "step":
            g = torch.Generator().manual_seed(1000 + op[1])
            grads = [torch.randn(p.shape, generator=g) for p in stacked]
            for k in () if adam else op[2]:
                grads[0][k, 0, 0] = float("nan")
            for p, grad in zip(stacked, grads):
                p.grad = grad.clone()
            opt.step()
            for k, o in enumerate(opts):
                for p, grad in zip(singles[k], grads):
                    p.grad = grad[k].clone()
                o.step()
        elif op[0] == "lr":
            rates = torch.tensor(op[1], dtype=torch.float64)
            for group in opt.param_groups:
                group["lr"].copy_(rates)
            for k, o in enumerate(opts):
                for group in o.param_groups:
                    group["lr"] = float(rates[k])
        elif op[0] == "clear":
            for o in (opt, *opts):
                o.state.clear()
        else:
            opt = _reloaded(opt, build_stacked)
            opts = [_reloaded(o, lambda k=k: build_single(k)) for k, o in enumerate(opts)]
        for k in range(COPIES):
            for p, q in zip(stacked, singles[k]):
                torch.testing.assert_close(p[k].detach(), q.detach(), rtol=0, atol=1e-5)
