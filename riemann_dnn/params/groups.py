"""Build param groups for a model by rule: weights that feed a BatchNorm are scale-invariant.

If a Linear or Conv layer's output goes straight into a BatchNorm (or InstanceNorm), the
loss is unchanged when any of its filters (rows of the weight viewed as ``(out, -1)``) is
multiplied by a positive number: the normalisation divides it out. Those weights go on
the oblique manifold (one unit-norm row per output channel); everything else (biases, BN
scale and shift, classifiers, layers not followed by a normalisation) stays Euclidean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = ["scale_invariant_weights", "param_groups", "verify_scale_invariance"]

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


class _OutsideUses(TorchFunctionMode):
    """Records which recorded layer outputs a torch function uses outside a normalisation
    module's forward (e.g. a residual ``bn(h) + h``): those layers are not invariant."""

    def __init__(self, produced: dict[int, tuple[str, torch.Tensor]]):
        super().__init__()
        self.produced, self.norm_depth, self.used = produced, 0, set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.norm_depth == 0:
            for value in pytree.tree_leaves((args, kwargs)):
                if (
                    isinstance(value, torch.Tensor)
                    and id(value) in self.produced
                    and self.produced[id(value)][1] is value
                ):
                    self.used.add(id(value))
        return func(*args, **kwargs)


def _feeding_layers_by_hooks(model: nn.Module, example_input: Any) -> set[str]:
    """Names of layers each of whose outputs is the input of a normalisation and used by
    nothing else, found by running ``model`` once on ``example_input`` (whatever the
    control flow)."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}  # keep tensors alive: ids stay unique
    normalised: set[int] = set()
    uses = _OutsideUses(produced)
    handles = []

    def record(name):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                produced[id(output)] = (name, output)

        return hook

    def enter_norm(module, args):
        uses.norm_depth += 1
        if args and id(args[0]) in produced and produced[id(args[0])][1] is args[0]:
            normalised.add(id(args[0]))

    def leave_norm(module, args, output):
        uses.norm_depth -= 1

    for name, module in model.named_modules():
        if isinstance(module, _LAYERS):
            handles.append(module.register_forward_hook(record(name)))
        elif isinstance(module, _NORMS):
            handles.append(module.register_forward_pre_hook(enter_norm))
            handles.append(module.register_forward_hook(leave_norm))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with torch.no_grad(), uses:
            args = example_input if isinstance(example_input, tuple) else (example_input,)
            model(*args)
    finally:
        for handle in handles:
            handle.remove()
        model.load_state_dict(state)  # undo the BN running-statistics update
    feeding = {name for key, (name, _) in produced.items() if key in normalised}
    # a layer called several times qualifies only if every call feeds a normalisation alone
    spoiled = {
        name for key, (name, _) in produced.items() if key not in normalised or key in uses.used
    }
    return feeding - spoiled


def _feeding_layers_by_fx(model: nn.Module) -> set[str]:
    """Names of layers whose only consumers are normalisations, from a torch.fx trace."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - any tracing failure gets the same advice
        raise ValueError(
            f"could not trace {type(model).__name__} with torch.fx ({err.__class__.__name__}: "
            f"{err}); pass example_input=... so the layers feeding a BatchNorm are found by "
            f"running the model once"
        ) from None
    modules = dict(model.named_modules())
    feeding, spoiled = set(), set()
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), _LAYERS):
            users = list(node.users)
            if users and all(
                u.op == "call_module" and isinstance(modules.get(u.target), _NORMS) for u in users
            ):
                feeding.add(node.target)
            else:  # a shared layer qualifies only if every call feeds a normalisation
                spoiled.add(node.target)
    return feeding - spoiled


def scale_invariant_weights(model: nn.Module, example_input: Any = None) -> list[str]:
    """Names of the weights (``"layer.weight"``) whose layer output feeds a BatchNorm.

    With ``example_input`` the model is run once with hooks (works for any control flow;
    BN running statistics are restored); without it, the model is traced with torch.fx.
    """
    layers = (
        _feeding_layers_by_hooks(model, example_input)
        if example_input is not None
        else _feeding_layers_by_fx(model)
    )
    return [f"{name}.weight" for name, _ in model.named_modules() if name in layers]


def param_groups(
    model: nn.Module,
    *,
    manifold: Any = "oblique",
    retraction: str | None = None,
    example_input: Any = None,
    verify: Any = None,
    **hyperparameters: Any,
) -> list[dict[str, Any]]:
    """Param groups for :class:`~riemann_dnn.optim.RiemannianSGD`: scale-invariant weights on
    ``manifold`` (``"oblique"`` by default; ``"stiefel"``, ``"grassmann"``, ... also work), the
    rest Euclidean. ``hyperparameters`` (e.g. ``lr``) go into the constrained group.

    Args:
        example_input: run the model once on it to find BN-fed layers (else torch.fx).
        verify: optional ``inputs`` batch; if given, :func:`verify_scale_invariance` checks
            numerically that the loss is invariant to rescaling every chosen filter and
            raises ``ValueError`` otherwise.

    Each group carries ``"names"`` (the parameter names) for reporting.
    """
    names = set(scale_invariant_weights(model, example_input))
    if verify is not None:
        verify_scale_invariance(model, verify, names=sorted(names), raise_on_failure=True)
    constrained = [(n, p) for n, p in model.named_parameters() if n in names]
    free = [(n, p) for n, p in model.named_parameters() if n not in names]
    groups = []
    if constrained:
        groups.append(
            {
                "params": [p for _, p in constrained],
                "names": [n for n, _ in constrained],
                "manifold": manifold,
                "retraction": retraction,
                **hyperparameters,
            }
        )
    if free:
        groups.append(
            {
                "params": [p for _, p in free],
                "names": [n for n, _ in free],
                "manifold": "euclidean",
            }
        )
    return groups


def verify_scale_invariance(
    model: nn.Module,
    inputs: Any,
    *,
    names: Sequence[str] | None = None,
    rtol: float = 1e-3,
    generator: torch.Generator | None = None,
    raise_on_failure: bool = False,
) -> dict[str, float]:
    """Rescale each filter of each named weight by a random factor in [0.5, 2] and report
    the relative change of the model's output (in training mode, BN on batch statistics).

    Returns ``{name: max |f(scaled) - f| / max |f|}``; with ``raise_on_failure`` a change
    above ``rtol`` raises ``ValueError`` naming the weight. Running statistics are not
    modified. (BatchNorm's ``eps`` makes the invariance approximate, ~eps/variance.)
    """
    names = list(names if names is not None else scale_invariant_weights(model, inputs))
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"verify_scale_invariance: no parameters named {unknown}")
    args = inputs if isinstance(inputs, tuple) else (inputs,)

    def output(overrides):
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        with torch.no_grad():
            return torch.func.functional_call(model, {**params, **buffers, **overrides}, args)

    was_training = model.training
    model.train()
    try:
        reference = output({})
        scale = reference.abs().max().clamp_min(torch.finfo(reference.dtype).tiny)
        report = {}
        for name in names:
            weight = params[name]
            shape = (weight.shape[0],) + (1,) * (weight.ndim - 1)
            factors = 0.5 + 1.5 * torch.rand(
                shape, generator=generator, dtype=weight.dtype, device="cpu"
            ).to(weight.device)
            change = (output({name: weight * factors}) - reference).abs().max() / scale
            report[name] = float(change)
    finally:
        model.train(was_training)
    failed = {n: v for n, v in report.items() if not v <= rtol}
    if raise_on_failure and failed:
        raise ValueError(
            f"the output is not invariant to rescaling the filters of {sorted(failed)} "
            f"(relative changes {failed}, rtol {rtol}); keep these weights Euclidean"
        )
    return report
