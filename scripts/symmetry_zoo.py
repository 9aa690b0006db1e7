"""Detection against the numerical ground truth on third-party model libraries' models.

For each model (randomly initialised; every parameter initialised to a constant -- biases,
norm scales, layer scales, gains -- is given generic values, since a symmetry must hold
whatever training makes of them), through the public API only:

- ground truth: for every weight, the finest rescaling (per filter, per group of
  consecutive filters, the whole weight) whose relative output change in training mode
  (``riemann_dnn.params.verify_scale_invariance``: float64, eps made negligible) is below
  1e-3 and below 1e-2 times the weight's influence, the change when it is rescaled along
  another axis (its input channels: a perturbation of the same size that is no symmetry);
- detection: ``riemann_dnn.params.find_symmetries`` on the same batch (torch.fx, else one
  hooked forward pass), timed;
- a claim is false when its own rescaling changes the output (ground truth "none", or a
  coarser kind than claimed); a weight is found when the claimed kind equals the truth.
- ``param_groups(model)`` timed (detection and the numerical check of every claim, one
  thread), on the batch ``example_batch`` builds.

Needs timm and/or torchvision (not dependencies of riemann_dnn)::

    python scripts/symmetry_zoo.py --out results/symmetry-zoo [--models resnet18 ...]

Writes zoo.json and zoo.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import torch

from riemann_dnn.params import (
    Symmetry,
    example_batch,
    find_symmetries,
    param_groups,
    verify_scale_invariance,
)

TOL = 1e-3
RATIO = 1e-2

# name: (library, constructor name, keyword arguments, input shape)
MODELS = {
    "resnet18": ("torchvision", "resnet18", {}, (4, 3, 64, 64)),
    "resnet50": ("torchvision", "resnet50", {}, (4, 3, 64, 64)),
    "repvgg_a0": ("timm", "repvgg_a0", {}, (4, 3, 64, 64)),
    "regnetx_002": ("timm", "regnetx_002", {}, (4, 3, 64, 64)),
    "efficientnet_b0": ("timm", "efficientnet_b0", {}, (4, 3, 64, 64)),
    "mobilenetv3_small_100": ("timm", "mobilenetv3_small_100", {}, (4, 3, 64, 64)),
    "densenet121": ("torchvision", "densenet121", {}, (4, 3, 64, 64)),
    "convnext_atto": ("timm", "convnext_atto", {}, (4, 3, 64, 64)),
    "vit_tiny_patch16": ("timm", "vit_tiny_patch16_224", {"img_size": 64}, (4, 3, 64, 64)),
    "mixer_s16": ("timm", "mixer_s16_224", {"img_size": 64}, (4, 3, 64, 64)),
    "nf_resnet26": ("timm", "nf_resnet26", {}, (4, 3, 64, 64)),
    "resnetv2_50x1_bit": ("timm", "resnetv2_50x1_bit", {}, (4, 3, 64, 64)),
    "tv_efficientnet_b0": ("torchvision", "efficientnet_b0", {}, (4, 3, 64, 64)),
    "tv_mobilenet_v3_small": ("torchvision", "mobilenet_v3_small", {}, (4, 3, 64, 64)),
    "tv_regnet_x_400mf": ("torchvision", "regnet_x_400mf", {}, (4, 3, 64, 64)),
    "tv_convnext_tiny": ("torchvision", "convnext_tiny", {}, (4, 3, 64, 64)),
}


def build(library: str, name: str, kwargs: dict) -> torch.nn.Module:
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, **kwargs)
    import torchvision

    return getattr(torchvision.models, name)(weights=None, **kwargs)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Generic values for constant-initialised parameters: zeros -> N(0, 0.3), other
    constants -> N(1, 0.3)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            first = p.reshape(-1)[0]
            if p.numel() == 1 or bool((p == first).all()):
                noise = 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype)
                p.copy_(noise if float(first) == 0 else 1 + noise)
    return model


def _plan(found: dict[str, Symmetry], groups: dict[str, int], axis=None) -> dict:
    plan = {}
    for name, g in groups.items():
        s = found[name]
        kind = "filter" if g == s.filters else ("tensor" if g == 1 else "group")
        plan[name] = Symmetry(name, s.shape, kind, g, s.axis if axis is None else axis[name])
    return plan


def influence(model, x, found: dict[str, Symmetry]) -> dict[str, float]:
    """The output change when a weight is rescaled along another axis than its filters'
    (its input channels, or its kernel for a depthwise conv): a perturbation of the same
    size that is no symmetry, to judge each weight against its own influence."""
    axis, groups = {}, {}
    for name, s in found.items():
        others = [a for a in range(len(s.shape)) if a != s.axis and s.shape[a] > 1]
        if others:
            axis[name] = others[0]
            groups[name] = s.shape[others[0]]
    plan = {}
    for name in axis:
        s = found[name]
        plan[name] = Symmetry(name, s.shape, "filter", groups[name], axis[name])
    changes = verify_scale_invariance(model, x, symmetries=plan) if plan else {}
    return {n: changes.get(n, float("inf")) for n in found}


def _passes(model, x, found, groups: dict[str, int], scale: dict[str, float]) -> set[str]:
    """The weights whose rescaling in ``groups[name]`` groups changes the output by less
    than RATIO times their influence (and less than TOL)."""
    plan = _plan(found, groups)
    changes = verify_scale_invariance(model, x, symmetries=plan) if plan else {}
    return {n for n, c in changes.items() if c <= min(TOL, RATIO * scale[n])}


def ground_truth(model, x, found: dict[str, Symmetry]) -> dict[str, tuple[str, int]]:
    """The finest invariant rescaling of each weight: per filter; else, if the whole weight
    passes, the largest number of groups of consecutive filters that passes; else none."""
    scale = influence(model, x, found)
    truth = {n: ("none", 0) for n in found}
    per_filter = _passes(model, x, found, {n: s.filters for n, s in found.items()}, scale)
    for n in per_filter:
        truth[n] = ("filter", found[n].filters)
    rest = [n for n in found if n not in per_filter and found[n].filters > 1]
    whole = _passes(model, x, found, {n: 1 for n in rest}, scale)
    for n in whole:
        truth[n] = ("tensor", 1)
        size = found[n].filters
        for g in (d for d in range(size - 1, 1, -1) if size % d == 0):
            if _passes(model, x, found, {n: g}, scale):
                truth[n] = ("group", g)
                break
    return truth


def check(name: str, spec) -> dict:
    library, ctor, kwargs, shape = spec
    torch.manual_seed(0)
    model = randomize(build(library, ctor, kwargs))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        found = find_symmetries(model, x)
        detect_s = time.perf_counter() - start
    fell_back = any("could not trace" in str(w.message) for w in caught)
    start = time.perf_counter()
    truth = ground_truth(model, x, found)
    truth_s = time.perf_counter() - start
    invariant = [n for n, (k, _) in truth.items() if k != "none"]
    claims = [n for n, s in found.items() if s.invariant]
    found_exact = [n for n in invariant if (found[n].kind, found[n].groups) == truth[n]]
    false = [
        n
        for n in claims
        if truth[n][0] == "none" or truth[n][1] == 0 or found[n].groups % truth[n][1] != 0
    ]
    kinds = {
        k: sum(1 for n in invariant if truth[n][0] == k) for k in ("filter", "group", "tensor")
    }
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = example_batch(model)
        groups = param_groups(model, example_input=batch)
    groups_s = time.perf_counter() - start
    constrained = sum(len(g["params"]) for g in groups if g["manifold"] != "euclidean")
    return {
        "model": name,
        "library": library,
        "constructor": ctor,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights": len(truth),
        "invariant": len(invariant),
        "invariant_kinds": kinds,
        "found": len(found_exact),
        "claims": len(claims),
        "false_claims": false,
        "missed": {
            n: [truth[n], found[n].kind, found[n].groups, found[n].reason]
            for n in invariant
            if n not in found_exact
        },
        "trace": "hooks" if fell_back else "fx",
        "detect_s": detect_s,
        "truth_s": truth_s,
        "param_groups_s": groups_s,
        "param_groups_input": list(batch[0].shape),
        "param_groups_constrained": constrained,
    }


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# Symmetry detection on third-party models",
        "",
        f"torch {meta['torch']}, {', '.join(f'{k} {v}' for k, v in meta['libraries'].items())}; "
        f"{meta['machine']}, {meta['threads']} thread(s). Randomly initialised models "
        "(constant-initialised parameters given generic values), batch of 4 random 64x64 "
        f"images, training mode; ground truth: rescaling changes the output by < {TOL:g} and "
        f"< {RATIO:g} x the weight's influence.",
        "",
        "| model | weights | invariant (filter/group/tensor) | found | claims | false claims | path | detection s | param_groups s |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        k = r["invariant_kinds"]
        lines.append(
            f"| {r['model']} ({r['library']}) | {r['weights']} | {r['invariant']} "
            f"({k['filter']}/{k['group']}/{k['tensor']}) | {r['found']} | {r['claims']} | "
            f"{len(r['false_claims'])} | {r['trace']} | {r['detect_s']:.2f} | "
            f"{r['param_groups_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/symmetry-zoo")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    libraries = {}
    for lib in ("timm", "torchvision"):
        try:
            libraries[lib] = __import__(lib).__version__
        except Exception as err:  # noqa: BLE001 - report what is missing and go on
            print(f"{lib}: not importable ({type(err).__name__}: {err}); its models are skipped")
    rows = []
    for name in args.models:
        if MODELS[name][0] not in libraries:
            continue
        row = check(name, MODELS[name])
        rows.append(row)
        print(
            f"{name:24s} weights {row['weights']:4d} invariant {row['invariant']:4d} found "
            f"{row['found']:4d} claims {row['claims']:4d} false {len(row['false_claims'])} "
            f"{row['trace']:5s} detect {row['detect_s']:.2f}s param_groups "
            f"{row['param_groups_s']:.2f}s",
            flush=True,
        )
    meta = {
        "torch": torch.__version__,
        "libraries": libraries,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "threads": args.threads,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "zoo.json").write_text(json.dumps({"meta": meta, "models": rows}, indent=1) + "\n")
    (out / "zoo.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    print(f"wrote {out / 'zoo.json'}, {out / 'zoo.md'}")


if __name__ == "__main__":
    main()
