"""The numerical ground truth of a model's symmetries, measured independently of the library:
for every weight, the finest way of rescaling it -- per filter, per group of consecutive
filters, as a whole -- that leaves the training-mode output unchanged.

A rescaling counts as invariant when the output changes by less than ``RATIO`` times the
change a random perturbation of the same weight (each entry times ``1 + N(0, 0.25)``)
causes: a weight with little influence (a small layer scale) is judged against its own
influence. Normalizations' ``eps`` is made negligible while measuring, dropout masks and
running statistics are held fixed."""

from __future__ import annotations

import torch
from torch import nn

RATIO = 1e-2


def filter_axes(model: nn.Module) -> dict[str, int]:
    """Weights whose output channels are their dim 1: transposed convolutions'."""
    axes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            for pname, _ in module.named_parameters():
                axes[f"{name}.{pname}" if name else pname] = 1
    return axes


class Outputs:
    """The model's training-mode output with some parameters replaced."""

    def __init__(self, model: nn.Module, inputs):
        self.model, self.inputs = model, inputs if isinstance(inputs, tuple) else (inputs,)
        self.reference = self(())

    def __call__(self, replaced) -> torch.Tensor:
        model = self.model
        params = dict(model.named_parameters())
        buffers = {k: v.clone() for k, v in model.named_buffers()}
        eps = [(m, m.eps) for m in model.modules() if type(getattr(m, "eps", None)) is float]
        training = model.training
        try:
            model.train()
            for m, _ in eps:
                m.eps = 1e-12
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(0)
                out = torch.func.functional_call(
                    model, {**params, **buffers, **dict(replaced)}, self.inputs
                )
        finally:
            model.train(training)
            for m, value in eps:
                m.eps = value
        return out.detach().double().reshape(-1)

    def change(self, name: str, value: torch.Tensor) -> float:
        diff = (self(((name, value),)) - self.reference).abs().max()
        return float(diff / self.reference.abs().max())


def factors(n: int, groups: int, axis: int, ndim: int, gen: torch.Generator) -> torch.Tensor:
    """Factors 2**u, u evenly spaced in [-1, 1] (shuffled), one per group of filters."""
    u = (
        torch.tensor([1.0])
        if groups == 1
        else torch.linspace(-1, 1, groups)[torch.randperm(groups, generator=gen)]
    )
    shape = [1] * ndim
    shape[axis] = n
    return (2.0 ** u.double()).repeat_interleave(n // groups).view(shape)


def invariant(outputs: Outputs, name: str, weight, axis: int, groups: int, gen) -> bool:
    scale = factors(weight.shape[axis], groups, axis, weight.ndim, gen).to(weight.dtype)
    noise = 1 + 0.5 * torch.randn(weight.shape, generator=gen, dtype=weight.dtype)
    influence = outputs.change(name, weight.detach() * noise)
    return outputs.change(name, weight.detach() * scale) <= RATIO * influence


def ground_truth(model: nn.Module, inputs) -> dict[str, tuple[str, int]]:
    """``{name: (kind, groups)}`` for every parameter with two or more dimensions."""
    outputs = Outputs(model, inputs)
    axes = filter_axes(model)
    gen = torch.Generator().manual_seed(0)
    truth = {}
    for name, weight in model.named_parameters():
        if weight.ndim < 2:
            continue
        axis = axes.get(name, 0)
        n = weight.shape[axis]
        truth[name] = ("none", 0)
        for groups in (g for g in range(n, 0, -1) if n % g == 0):
            if invariant(outputs, name, weight, axis, groups, gen):
                kind = "filter" if groups == n else ("tensor" if groups == 1 else "group")
                truth[name] = (kind, groups)
                break
    return truth
