"""RiemannianSGD and RiemannianAdam under random sequences of missing gradients, dtype
changes, state changes, new param groups and state-dict round trips: their default paths (the
native kernels where every group qualifies) against the kernel-free reference
(``foreach=False``: the shared step per tensor, torch's single-tensor loop for Euclidean
groups), with sentinels around every parameter and gradient so that a write outside a tensor
is caught."""

import io

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riemann_dnn.optim import RiemannianAdam, RiemannianSGD

PAD = 64  # sentinel entries on each side of every parameter and gradient
SENTINEL = 1234.5
SHAPES = {"W1": (6, 5), "W2": (4, 3, 2), "b": (5,), "theta": (3, 4), "V": (5, 7), "c": (2, 3)}
OBLIQUE = ("W1", "W2", "V")
LATER = ("V", "c")  # added by "add_group"


class Padded:
    """A tensor in the middle of a larger one whose ends hold a sentinel value."""

    def __init__(self, values: torch.Tensor):
        n = values.numel()
        self.store = torch.full((PAD + n + PAD,), SENTINEL, dtype=values.dtype)
        self.view = self.store[PAD : PAD + n].view(values.shape)
        self.view.copy_(values)

    def intact(self) -> bool:
        return bool((self.store[:PAD] == SENTINEL).all() and (self.store[-PAD:] == SENTINEL).all())


class Twin:
    """The optimizer under test and the reference, on equal parameters. ``cls`` steps them;
    ``buffer`` names the state tensor "replace" overwrites and the check compares; Euclidean
    weights are compared bit for bit when ``exact`` (torch.optim.SGD's arithmetic on every
    path), else to rounding (Adam's fused and single-tensor kernels round differently)."""

    def __init__(
        self,
        hyper: dict,
        lr_tensor: bool,
        cls=RiemannianSGD,
        buffer: str = "momentum_buffer",
        exact: bool = True,
    ):
        self.cls, self.buffer, self.exact = cls, buffer, exact
        gen = torch.Generator().manual_seed(0)
        self.values = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
        self.hyper, self.lr_tensor = hyper, lr_tensor
        self.sides = []
        self.pads: list[Padded] = []
        for foreach in (None, False):
            params = {k: self._param(v) for k, v in self.values.items() if k not in LATER}
            groups = [
                {"params": [params["W1"], params["W2"]], "manifold": "oblique"},
                {"params": [params["b"], params["theta"]]},
            ]
            opt = cls(groups, lr=self._lr(0.1), foreach=foreach, **hyper)
            self.sides.append((params, opt))

    def _param(self, value: torch.Tensor) -> torch.nn.Parameter:
        padded = Padded(value)
        self.pads.append(padded)
        return torch.nn.Parameter(padded.view)

    def _lr(self, value: float):
        return torch.tensor(value, dtype=torch.float64) if self.lr_tensor else value

    def step(self, missing: set[str], seed: int, poison: bool = False) -> None:
        # not the initial values' seed: gradients parallel to the weights would have a
        # Riemannian part of pure rounding noise, which Adam scales up to a full step
        gen = torch.Generator().manual_seed(1000 + seed)
        names = [k for k in SHAPES if k in self.sides[0][0]]
        grads = {k: torch.randn(SHAPES[k], generator=gen) for k in names}
        if poison:  # nonfinite="unchecked": a NaN in a filter row, an inf in a bias
            grads["W1"][2, 1] = float("nan")
            grads["b"][1] = float("inf")
        for params, opt in self.sides:
            for name in names:
                p = params[name]
                if name in missing:
                    p.grad = None
                    continue
                padded = Padded(grads[name].to(p.dtype))
                self.pads.append(padded)
                p.grad = padded.view
            opt.step()

    def set_dtype(self, name: str, dtype: torch.dtype) -> None:
        for params, _ in self.sides:
            if name in params:
                padded = Padded(params[name].detach().to(dtype))
                self.pads.append(padded)
                params[name].data = padded.view
                params[name].grad = None

    def clear(self) -> None:
        for _, opt in self.sides:
            opt.state.clear()

    def replace_buffer(self, name: str, seed: int) -> None:
        if name not in self.sides[0][0]:
            return
        new = torch.randn(SHAPES[name], generator=torch.Generator().manual_seed(seed))
        for params, opt in self.sides:
            p = params[name]
            if p in opt.state and self.buffer in opt.state[p]:
                buf = opt.state[p][self.buffer]
                opt.state[p][self.buffer] = new.to(buf.dtype, copy=True)  # one per side

    def add_group(self, name: str) -> None:
        for params, opt in self.sides:
            if name in params:
                return
            params[name] = self._param(self.values[name])
            group = {"params": [params[name]]}
            if name in OBLIQUE:
                group["manifold"] = "oblique"
            opt.add_param_group(group)

    def reload(self) -> None:
        """Each optimizer is rebuilt and loads its own state dict through torch.save and
        torch.load(weights_only=True)."""
        rebuilt = []
        for params, opt in self.sides:
            buffer = io.BytesIO()
            torch.save(opt.state_dict(), buffer)
            buffer.seek(0)
            groups = [
                {**{k: v for k, v in g.items() if k != "params"}, "params": list(g["params"])}
                for g in opt.param_groups
            ]
            fresh = self.cls(groups, lr=self._lr(0.1), **self.hyper)
            fresh.load_state_dict(torch.load(buffer, weights_only=True))
            rebuilt.append((params, fresh))
        self.sides = rebuilt

    def set_lr(self, value: float) -> None:
        for _, opt in self.sides:
            for group in opt.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(value)
                else:
                    group["lr"] = value

    def check(self) -> None:
        assert all(p.intact() for p in self.pads), "a write outside a tensor"
        (ours, opt), (reference, ref_opt) = self.sides
        for name, p in ours.items():
            q = reference[name]
            assert p.dtype == q.dtype
            # float32 rounding: the kernel and the reference round differently, and a
            # float64 weight may carry a float32 past
            tol = 1e-4
            if name in OBLIQUE or not self.exact:
                torch.testing.assert_close(
                    p.detach(), q.detach(), rtol=0, atol=tol, equal_nan=True
                )
            else:  # Euclidean: torch.optim.SGD's arithmetic on every path
                torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=0, equal_nan=True)
            if name in OBLIQUE:  # rows with a non-finite gradient kept their (unit) value
                assert bool(p.isfinite().all()), name
            buf = opt.state.get(p, {}).get(self.buffer)
            ref_buf = ref_opt.state.get(q, {}).get(self.buffer)
            assert (buf is None) == (ref_buf is None), name
            if buf is not None:
                assert buf.dtype == ref_buf.dtype and buf.shape == p.shape, name
                torch.testing.assert_close(buf, ref_buf, rtol=0, atol=tol, equal_nan=True)


operations = st.one_of(
    st.tuples(st.just("step"), st.sets(st.sampled_from(sorted(SHAPES))), st.integers(0, 99)),
    st.tuples(st.just("dtype"), st.sampled_from(sorted(SHAPES)), st.sampled_from(["f32", "f64"])),
    st.tuples(st.just("clear")),
    st.tuples(st.just("replace"), st.sampled_from(sorted(SHAPES)), st.integers(0, 99)),
    st.tuples(st.just("add_group"), st.sampled_from(LATER)),
    st.tuples(st.just("reload")),
    st.tuples(st.just("lr"), st.sampled_from([0.0, 0.05, 0.2])),
)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    momentum=st.sampled_from([0.0, 0.9]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    nesterov=st.booleans(),
    lr_tensor=st.booleans(),
    ops=st.lists(operations, min_size=1, max_size=14),
)
def test_random_sequences_match_the_kernel_free_reference(
    momentum, weight_decay, nesterov, lr_tensor, ops
):
    hyper = dict(momentum=momentum, weight_decay=weight_decay, nesterov=nesterov and momentum > 0)
    _drive(Twin(hyper, lr_tensor), ops)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    amsgrad=st.booleans(),
    weight_decay=st.sampled_from([0.0, 0.01]),
    decoupled=st.booleans(),
    maximize=st.booleans(),
    lr_tensor=st.booleans(),
    ops=st.lists(operations, min_size=1, max_size=14),
)
def test_adam_random_sequences_match_the_kernel_free_reference(
    amsgrad, weight_decay, decoupled, maximize, lr_tensor, ops
):
    hyper = dict(
        amsgrad=amsgrad,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled,
        maximize=maximize,
    )
    _drive(Twin(hyper, lr_tensor, RiemannianAdam, "exp_avg", exact=False), ops)


poisoned_operations = st.one_of(operations, st.tuples(st.just("poison"), st.integers(0, 99)))


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    adam=st.booleans(),
    momentum=st.sampled_from([0.0, 0.9]),
    lr_tensor=st.booleans(),
    ops=st.lists(poisoned_operations, min_size=1, max_size=14),
)
def test_unchecked_random_sequences_with_nonfinite_gradients_match_the_reference(
    adam, momentum, lr_tensor, ops
):
    """``nonfinite="unchecked"``: steps with a NaN in a filter row and an inf in a bias,
    among the other operations; the native kernels keep the row as the eager guard does,
    and the bias takes the same non-finite values on both sides."""
    if adam:
        twin = Twin(dict(nonfinite="unchecked"), lr_tensor, RiemannianAdam, "exp_avg", False)
    else:
        twin = Twin(dict(momentum=momentum, nonfinite="unchecked"), lr_tensor)
    # a step first (state to keep) and a poisoned step last, whatever the draw
    _drive(twin, [("step", set(), 0), *ops, ("poison", 7)])


def _drive(twin: Twin, ops) -> None:
    """Apply ``ops`` to both sides of ``twin``, checking them after each."""
    dtypes = {"f32": torch.float32, "f64": torch.float64}
    for op in ops:
        kind = op[0]
        if kind == "step":
            twin.step(op[1], op[2])
        elif kind == "poison":
            twin.step(set(), op[1], poison=True)
        elif kind == "dtype":
            twin.set_dtype(op[1], dtypes[op[2]])
        elif kind == "clear":
            twin.clear()
        elif kind == "replace":
            twin.replace_buffer(op[1], op[2])
        elif kind == "add_group":
            twin.add_group(op[1])
        elif kind == "reload":
            twin.reload()
        else:
            twin.set_lr(op[1])
        twin.check()
    twin.step(set(), 100)  # and a final step with every gradient
    twin.check()


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_fuzz_sees_a_step_that_moves(momentum):
    """The reference comparison is not vacuous: steps move the weights."""
    twin = Twin(dict(momentum=momentum), lr_tensor=False)
    before = {k: p.detach().clone() for k, p in twin.sides[0][0].items()}
    twin.step(set(), 0)
    twin.check()
    for name, p in twin.sides[0][0].items():
        assert not torch.equal(p.detach(), before[name]), name
