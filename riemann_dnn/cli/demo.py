"""``riemann-dnn demo``: solve a small problem on a product manifold with the torch backend."""

from __future__ import annotations

import argparse

from .options import add_device, check_device, nonnegative_int, set_command


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="solve a least-squares problem on Oblique(rows) x Euclidean with pymanopt",
        description="Fit unit-norm filters W (rows on the oblique manifold) and a free matrix "
        "B to data Y = W X + B Z by pymanopt's TrustRegions with the device-native torch "
        "backend, and print the result.",
    )
    add_device(parser)
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    set_command(parser, run)


def run(args: argparse.Namespace) -> int:
    import pymanopt
    import torch

    import riemann_dnn.function
    from riemann_dnn.manifolds import Euclidean, Oblique, Product

    device, dtype = torch.device(check_device(args.device)), torch.float64
    manifold = Product([Oblique(8, 5, unit="rows"), Euclidean(8, 3)])
    truth = manifold.random_point(device=device, dtype=dtype, generator=args.seed)
    gen = torch.Generator(device=device).manual_seed(args.seed + 1)
    x = torch.randn(5, 200, generator=gen, device=device, dtype=dtype)
    z = torch.randn(3, 200, generator=gen, device=device, dtype=dtype)
    y = truth[0] @ x + truth[1] @ z

    @riemann_dnn.function.torch(manifold)
    def cost(w, b):
        return 0.5 * torch.sum((w @ x + b @ z - y) ** 2) / y.shape[1]

    problem = pymanopt.Problem(manifold, cost)
    start = manifold.random_point(device=device, dtype=dtype, generator=args.seed + 2)
    result = pymanopt.optimizers.TrustRegions(verbosity=0).run(problem, initial_point=start)
    w, b = result.point
    print(f"manifold: {manifold}")
    print(
        f"solver:   TrustRegions, {result.iterations} iterations, {result.time:.2f} s "
        f"({result.stopping_criterion})"
    )
    print(f"cost:     {result.cost:.3e}  (0 at the truth)")
    print(
        f"|W - W*|: {float((w - truth[0]).abs().max()):.2e}   "
        f"|B - B*|: {float((b - truth[1]).abs().max()):.2e}"
    )
    print(f"row norms of W: {[round(float(v), 12) for v in w.norm(dim=1)]}")
    print(f"point stays a {type(w).__name__} on {w.device}")
    return 0
