"""What ``riemann-dnn bench stochastic`` compares: problems, solvers, retractions, transports,
the step-size grids and the two presets (quick and full)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "PROBLEMS",
    "SOLVERS",
    "RETRACTIONS",
    "TRANSPORTS",
    "NATURAL_TRANSPORT",
    "BenchConfig",
    "QUICK",
    "FULL",
    "combinations",
]

#: The problems: PCA on synthetic data with a set eigengap, PCA on MNIST images (centred;
#: rank 6, where the relative eigengap of the centred images is largest among ranks 2..10:
#: 0.24 on the 60,000 training images, 0.21 on the embedded 5,000), synthetic low-rank
#: matrix completion (all on the Grassmann manifold).
PROBLEMS = ("pca-synthetic", "pca-mnist", "completion")
#: The solvers: R-SGD with a decaying step, R-SVRG and R-SRG with a fixed step.
SOLVERS = ("sgd", "svrg", "srg")
#: Grassmann's retractions and vector transports.
RETRACTIONS = ("exp", "qr", "polar")
TRANSPORTS = ("projection", "parallel", "differentiated")
#: Each retraction's own transport (the pairs of the quick preset): parallel transport with
#: the exponential map, the differentiated retraction with the others.
NATURAL_TRANSPORT = {"exp": "parallel", "qr": "differentiated", "polar": "differentiated"}
#: The retraction and transport the step sizes are chosen with.
REFERENCE = ("polar", "projection")


@dataclass(frozen=True)
class BenchConfig:
    """One preset of the bench (every field is an option of the command).

    Data are scaled so that the mean squared sample norm is 1, so one step-size grid serves
    every problem: a fixed step :math:`\\alpha` for R-SVRG and R-SRG, and for R-SGD
    :math:`\\lambda_k = \\lambda_0/(1 + k/K)` (the rate halves after :math:`K` iterations,
    given in passes: ``halving``).
    """

    problems: tuple[str, ...] = PROBLEMS
    solvers: tuple[str, ...] = SOLVERS
    retractions: tuple[str, ...] = RETRACTIONS
    transports: tuple[str, ...] | None = None  # None: each retraction's natural one
    sgd_every_retraction: bool = True  # False: R-SGD with the reference retraction only
    passes: float = 50.0
    batch_size: int = 10
    seeds: tuple[int, ...] = (0,)
    synthetic: dict[str, Any] = field(
        default_factory=lambda: {"num_samples": 10_000, "dim": 20, "rank": 5, "eigengap": 0.5}
    )
    mnist: dict[str, Any] = field(
        default_factory=lambda: {"source": "auto", "rank": 6, "num_samples": 10_000}
    )
    completion: dict[str, Any] = field(
        default_factory=lambda: {"num_samples": 5000, "dim": 100, "rank": 5, "oversampling": 4.0}
    )
    vr_steps: tuple[float, ...] = (0.1, 0.2, 0.5)
    sgd_steps: tuple[tuple[float, float], ...] = (
        (0.005, 1.0),
        (0.01, 1.0),
        (0.02, 1.0),
        (0.05, 1.0),
        (0.1, 1.0),
        (0.2, 1.0),
        (0.5, 1.0),
    )

    def with_options(self, **options: Any) -> BenchConfig:
        """This preset with the options given (``None`` keeps the preset's value)."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})


FULL = BenchConfig()
QUICK = BenchConfig(
    passes=30.0,
    synthetic={"num_samples": 2000, "dim": 20, "rank": 5, "eigengap": 0.5},
    mnist={"source": "embedded", "rank": 6, "num_samples": 2000},
    completion={"num_samples": 1000, "dim": 50, "rank": 3, "oversampling": 4.0},
    sgd_every_retraction=False,
    vr_steps=(0.1,),  # the full bench's choices (docs/stochastic.md), given, not chosen
    sgd_steps=((0.1, 1.0),),
)


def combinations(config: BenchConfig, solver: str, manifold: Any) -> list[tuple[str, str | None]]:
    """The (retraction, transport) pairs a solver runs with on ``manifold``: R-SGD has no
    transport (no momentum); R-SVRG and R-SRG take each retraction with each transport of
    the ``transports`` option the manifold has with it (its natural one when ``None``)."""
    if solver == "sgd":
        if not config.sgd_every_retraction:
            return [(REFERENCE[0], None)]
        return [(retraction, None) for retraction in config.retractions]
    pairs = []
    for retraction in config.retractions:
        available = manifold.with_transport("projection").with_retraction(retraction).transports
        wanted = (
            (NATURAL_TRANSPORT[retraction],) if config.transports is None else config.transports
        )
        pairs += [(retraction, t) for t in wanted if t in available]
    return pairs
