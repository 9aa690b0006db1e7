"""The paper's training protocol for ArchBN on MNIST (§4; SPEC §4), run for many seeds at once.

Per run (one seed):

(a) learning-rate selection: each candidate rate trains for ``selection_epochs`` epochs on
    ``selection_train`` random training images (reshuffled every epoch, each image once per
    epoch) and is scored by its error on ``selection_val`` other training images; diverged
    candidates (non-finite loss, or a final epoch loss not below the first) are ignored;
(b) full training with the chosen rate on a random split of the training images
    (``validation`` held out, default 10,000), with the bold driver after every epoch (loss
    fell: rate x1.05; rose: rate x0.5 and the epoch undone), at least ``min_epochs`` and at
    most ``max_epochs`` epochs, stopping early when the training error < 1e-5, the
    validation error rose against the one ``patience`` epochs before, or two successive
    validation errors differ by < 1e-5;
(c) the test error on the test images after the last epoch.

All runs of one (depth, method) are trained together as an :class:`~.ensemble.Ensemble`;
each run's record is written as JSON the moment the run stops.

Options beyond the paper (defaults keep its protocol; :data:`PROTOCOLS` names both):
``lr_extend`` extends the rate grid by factors of ``lr_extend_factor`` while a run's chosen
rate is the grid's smallest or largest (up to ``lr_extend`` steps each way);
``stop_on_accepted`` makes the stopping rules see only accepted epochs (an epoch the bold
driver undid restores the weights, so its validation error repeats the previous one exactly:
it is no new measurement, and with the paper's rule it reads as "flat"); ``train_images``
caps the full-training set; methods with weight decay (``bsgd-wd``) select its strength from
``weight_decays`` jointly with the rate, and ``un-split`` selects the filters' rate and the
other parameters' rate jointly from the grid.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..models import ArchBN, ConvArchBN
from ..optim import BoldDriver
from .config import (
    ARCH_NAMES,
    HALF_DECADES,
    PROTOCOLS,
    Protocol,
    RunConfig,
    quick_protocol,
)
from .ensemble import Ensemble
from .methods import METHODS, Method

__all__ = [
    "Protocol",
    "Method",
    "METHODS",
    "ARCHS",
    "PROTOCOLS",
    "HALF_DECADES",
    "RunConfig",
    "MNISTTensors",
    "train_runs",
    "quick_protocol",
    "progress_total",
    "welch_t_test",
    "run_path",
    "load_finished",
    "candidate_grid",
]


#: Architectures: the paper's MLP (:class:`ArchBN`) and its convolutional variant.
ARCHS = {"mlp": ArchBN, "conv": ConvArchBN}
assert tuple(ARCHS) == ARCH_NAMES


@dataclass
class MNISTTensors:
    """Training and test images as flat float tensors in [0, 1] on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    checksum: str = ""  # riemann_dnn.data.MNIST.checksum of the files

    @classmethod
    def load(cls, data_dir=None, *, source: str = "auto", device="cpu") -> MNISTTensors:
        from ..data import as_tensors, load_mnist

        mnist = load_mnist(data_dir, source=source)
        train_x, train_y = as_tensors(mnist.train_images, mnist.train_labels, device=device)
        test_x, test_y = as_tensors(mnist.test_images, mnist.test_labels, device=device)
        return cls(train_x, train_y, test_x, test_y, str(mnist.source), mnist.checksum)


def run_path(out_dir: Path, config: RunConfig) -> Path:
    """``out_dir/runs/<name>-<first 12 hex digits of the run hash>.json``."""
    return Path(out_dir) / "runs" / f"{config.name}-{config.run_hash[:12]}.json"


def load_finished(out_dir: Path, config: RunConfig) -> dict | None:
    """The record of a finished run with exactly this configuration (same hash), if any."""
    path = run_path(out_dir, config)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return record if record.get("config", {}).get("run_hash") == config.run_hash else None


def _write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(path)


# -- building ensembles -----------------------------------------------------------------------
def _models(configs: list[RunConfig], copies: int, in_features: int, device) -> list[ArchBN]:
    models = []
    for config in configs:
        for _ in range(copies):
            gen = torch.Generator().manual_seed(config.seed)
            torch.manual_seed(config.seed)  # PyTorch's default init, for method "sgd"
            init = METHODS[config.method].init
            if config.arch == "conv":
                side = math.isqrt(in_features)
                model = ConvArchBN(
                    config.depth, config.width, image_size=side, init=init, generator=gen
                )
            else:
                model = ArchBN(
                    config.depth, config.width, in_features=in_features, init=init, generator=gen
                )
            models.append(model.to(device))
    return models


def build_ensemble(configs: list[RunConfig], copies: int, in_features: int, device) -> Ensemble:
    """An ensemble of ``copies`` ArchBN models per config, initialised from each seed, with
    the filters on the run's manifold for constrained methods."""
    config = configs[0]
    if config.arch not in ARCHS:
        raise ValueError(f"unknown arch {config.arch!r}; choose from {sorted(ARCHS)}")
    method = METHODS[config.method]
    models = _models(configs, copies, in_features, device)
    filters = ARCHS[config.arch].scale_invariant_names(config.depth)
    manifolds = {}
    if method.constrained:
        manifolds = dict.fromkeys(filters, config.constraint)
    special = method.filter_rate is not None or method.weight_decay or method.split_rates
    return Ensemble(
        models,
        manifolds,
        retraction=config.retraction,
        filters=filters if special else (),
        filter_rate=method.filter_rate,
    )


def _epoch_batches(
    pools: torch.Tensor, generators: list[torch.Generator], copies: int, batch_size: int
):
    """Yield ``(members, batch)`` index tensors: each run's pool reshuffled (the same order
    for the ``copies`` members of a run), every image once per epoch."""
    orders = torch.stack([torch.randperm(pools.shape[1], generator=g) for g in generators])
    epoch = torch.gather(pools, 1, orders.to(pools.device)).repeat_interleave(copies, dim=0)
    for start in range(0, epoch.shape[1], batch_size):
        yield epoch[:, start : start + batch_size]


def _train_epoch(ens: Ensemble, data: MNISTTensors, pools, generators, copies, protocol):
    losses = torch.zeros(ens.size, device=pools.device)
    wrong = torch.zeros(ens.size, device=pools.device)
    batches = 0
    for index in _epoch_batches(pools, generators, copies, protocol.batch_size):
        loss, miss = ens.train_step(
            data.train_x[index], data.train_y[index], reduction=protocol.loss_reduction
        )
        losses += loss
        wrong += miss
        batches += 1
    return (losses / batches).tolist(), (wrong / pools.shape[1]).tolist()


def _errors_on(
    ens: Ensemble, data: MNISTTensors, pools: torch.Tensor, copies: int, chunk: int = 2000
) -> list[float]:
    """Each member's error on its run's held-out images ``pools[run]``."""
    wrong = torch.zeros(ens.size)
    members = pools.repeat_interleave(copies, dim=0)
    for start in range(0, members.shape[1], chunk):
        index = members[:, start : start + chunk]
        with torch.no_grad():
            pred = ens.forward(data.train_x[index], train=False).argmax(-1)
        wrong += (pred != data.train_y[index]).sum(-1).float().cpu()
    return (wrong / members.shape[1]).tolist()


@contextmanager
def _estimated_bn(ens: Ensemble, data: MNISTTensors, pools: torch.Tensor, copies: int, protocol):
    """Evaluate inside with BatchNorm statistics re-estimated on the first
    ``protocol.bn_estimate`` images of each run's training ``pools`` (when set), then
    restore the running statistics training keeps."""
    size, step = min(protocol.bn_estimate, pools.shape[1]), protocol.batch_size
    if not size:
        yield
        return
    saved = {k: v.clone() for k, v in ens.buffers.items()}
    members = pools[:, :size].repeat_interleave(copies, dim=0)
    ens.stack.estimate_batchnorm(
        data.train_x[members[:, s : s + step]] for s in range(0, max(size - step, 0) + 1, step)
    )
    try:
        yield
    finally:
        for name, value in saved.items():
            ens.buffers[name].copy_(value)


# -- the protocol -----------------------------------------------------------------------------
def candidate_grid(
    method: str, protocol: Protocol, rates: tuple[float, ...] | None = None
) -> list[dict[str, float]]:
    """The learning-rate candidates of ``method``: ``{"lr": r}`` for each rate; with split
    rates ``{"lr", "other_lr"}`` over rates x rates; with weight decay ``{"lr",
    "weight_decay"}`` over rates x ``protocol.weight_decays``."""
    rates = tuple(protocol.lr_candidates if rates is None else rates)
    spec = METHODS[method]
    if spec.split_rates:
        return [{"lr": r, "other_lr": q} for r in rates for q in rates]
    if spec.weight_decay:
        return [{"lr": r, "weight_decay": w} for r in rates for w in protocol.weight_decays]
    return [{"lr": r} for r in rates]


class _Checkpoint:
    """An ensemble's progress on disk, written atomically after every epoch, so that a run
    killed at any moment resumes within one epoch of where it stopped and finishes with the
    records an uninterrupted run writes (the random generators' states are saved too).

    One file per ensemble, ``out_dir/checkpoints/<hash of its runs' hashes>.pt``, holding a
    dict of stages: each round of rate selection and the training, either finished
    (their result) or in progress (the ensemble's, optimizer's, bold driver's and
    generators' states). It is removed when the ensemble's records are written.
    """

    def __init__(self, out_dir: Path | None, configs: list[RunConfig]):
        key = hashlib.sha256("".join(sorted(c.run_hash for c in configs)).encode()).hexdigest()
        self.path = None if out_dir is None else Path(out_dir) / "checkpoints" / f"{key[:16]}.pt"
        self.stages: dict[str, Any] = {}
        if self.path is not None and self.path.exists():
            try:
                self.stages = torch.load(self.path, weights_only=True)
            except Exception:  # noqa: BLE001 - a torn or foreign file: start afresh
                self.stages = {}

    def get(self, stage: str) -> Any:
        return self.stages.get(stage)

    def put(self, stage: str, value: Any) -> None:
        self.stages[stage] = value
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        torch.save(self.stages, tmp)
        tmp.replace(self.path)

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


def _ensemble_state(ens: Ensemble, generators: list[torch.Generator], **extra) -> dict:
    return {
        "stack": {k: v.clone() for k, v in ens.stack.state_dict().items()},
        "optimizer": ens.optimizer.state_dict(),
        "generators": [g.get_state() for g in generators],
        **extra,
    }


def _restore_ensemble(ens: Ensemble, generators: list[torch.Generator], state: dict) -> None:
    ens.stack.load_state_dict(state["stack"])
    ens.optimizer.load_state_dict(state["optimizer"])
    for g, saved in zip(generators, state["generators"]):
        g.set_state(saved)


def _score_candidates(
    configs,
    candidates,
    data,
    splits,
    device,
    progress,
    checkpoint: _Checkpoint | None = None,
    stage: str = "select0",
) -> list[list[dict]]:
    """Train every run's candidates (``candidates[r]``: dicts of :func:`candidate_grid`, the
    same number per run; ``None`` pads) as copies of one ensemble on its selection images and
    score them on its selection validation images (resuming from ``checkpoint``)."""
    checkpoint = checkpoint or _Checkpoint(None, configs)
    done = checkpoint.get(stage)
    if done is not None and "scored" in done:
        progress(configs[0].protocol.selection_epochs)
        return done["scored"]
    protocol = configs[0].protocol
    copies = len(candidates[0])
    flat = [c or {"lr": 0.0} for cands in candidates for c in cands]
    ens = build_ensemble(configs, copies, data.train_x.shape[1], device)
    # float32 tensors, copied into the optimizer's float64 rates (as the protocol always did)
    lr = torch.tensor([c["lr"] for c in flat])
    other = (
        torch.tensor([c.get("other_lr", c["lr"]) for c in flat])
        if any("other_lr" in c for c in flat)
        else None
    )
    ens.set_lr(lr, other)
    if any("weight_decay" in c for c in flat):
        ens.set_weight_decay(torch.tensor([c.get("weight_decay", 0.0) for c in flat]))
    generators = [torch.Generator().manual_seed(c.seed + 1) for c in configs]
    pools = torch.stack([s["selection_train"] for s in splits]).to(device)
    val = torch.stack([s["selection_val"] for s in splits]).to(device)
    first_loss, last_loss = None, None
    finite = torch.ones(ens.size, dtype=torch.bool)
    start = 0
    if done is not None:  # an interrupted round: its state after epoch ``done["epoch"]``
        _restore_ensemble(ens, generators, done)
        start, first_loss, last_loss, finite = (
            done["epoch"],
            done["first_loss"],
            done["last_loss"],
            done["finite"],
        )
        lr, other = done["lr"], done["other"]
        progress(start)
    for epoch in range(start, protocol.selection_epochs):
        loss, _ = _train_epoch(ens, data, pools, generators, copies, protocol)
        loss_t = torch.tensor(loss)
        finite &= torch.isfinite(loss_t)
        lr[~finite] = 0  # stop moving diverged members
        if other is not None:
            other[~finite] = 0
        ens.set_lr(lr, other)
        first_loss = loss_t if first_loss is None else first_loss
        last_loss = loss_t
        checkpoint.put(
            stage,
            _ensemble_state(
                ens,
                generators,
                epoch=epoch + 1,
                first_loss=first_loss,
                last_loss=last_loss,
                finite=finite,
                lr=lr,
                other=other,
            ),
        )
        progress(1)
    with _estimated_bn(ens, data, pools, copies, protocol):
        val_error = _errors_on(ens, data, val, copies)
    scored = []
    for r, cands in enumerate(candidates):
        row = []
        for c, cand in enumerate(cands):
            if cand is None:
                continue
            m = r * copies + c
            diverged = not bool(finite[m]) or not float(last_loss[m]) < float(first_loss[m])
            row.append(
                {
                    **cand,
                    "val_error": val_error[m],
                    "diverged": diverged,
                    "first_loss": float(first_loss[m]),
                    "last_loss": float(last_loss[m]),
                }
            )
        scored.append(row)
    checkpoint.put(stage, {"scored": scored})
    return scored


def _best(candidates: list[dict]) -> dict:
    usable = [c for c in candidates if not c["diverged"]] or candidates
    return min(usable, key=lambda c: c["val_error"])


def _extensions(config: RunConfig, candidates: list[dict], steps: dict) -> list[dict]:
    """New candidates for a run whose chosen rate (either rate, with split rates) is the
    smallest or largest tried, one ``lr_extend_factor`` step beyond it (at most
    ``lr_extend`` steps each way; ``steps`` counts them)."""
    protocol = config.protocol
    best = _best(candidates)
    new = []
    for key in ("lr", "other_lr"):
        if key not in best:
            continue
        tried = sorted({c[key] for c in candidates})
        for side, edge, factor in (
            ("low", tried[0], 1 / protocol.lr_extend_factor),
            ("high", tried[-1], protocol.lr_extend_factor),
        ):
            if best[key] != edge or len(tried) < 2 or steps[(key, side)] >= protocol.lr_extend:
                continue
            steps[(key, side)] += 1
            value = edge * factor
            seen = set()
            for c in candidates:  # the new value with every tried value of the other keys
                cand = {
                    **{k: v for k, v in c.items() if k in ("lr", "other_lr", "weight_decay")},
                    key: value,
                }
                marker = tuple(sorted(cand.items()))
                if marker not in seen:
                    seen.add(marker)
                    new.append(cand)
    return new


def _select_rates(
    configs, data, splits, device, progress, checkpoint: _Checkpoint | None = None
) -> list[dict]:
    protocol = configs[0].protocol
    grid = candidate_grid(configs[0].method, protocol)
    scored = _score_candidates(
        configs,
        [list(grid) for _ in configs],
        data,
        splits,
        device,
        progress,
        checkpoint,
        "select0",
    )
    rounds = 0
    steps = [
        dict.fromkeys([(k, s) for k in ("lr", "other_lr") for s in ("low", "high")], 0)
        for _ in configs
    ]
    while protocol.lr_extend:
        new = [_extensions(c, scored[r], steps[r]) for r, c in enumerate(configs)]
        todo = [r for r, n in enumerate(new) if n]
        if not todo:
            break
        width = max(len(new[r]) for r in todo)
        padded = [new[r] + [None] * (width - len(new[r])) for r in todo]
        rounds += 1
        more = _score_candidates(
            [configs[r] for r in todo],
            padded,
            data,
            [splits[r] for r in todo],
            device,
            progress,
            checkpoint,
            f"select{rounds}",
        )
        for r, row in zip(todo, more):
            scored[r] += row
    selections = []
    for candidates in scored:
        best = _best(candidates)
        chosen = {k: best[k] for k in ("lr", "other_lr", "weight_decay") if k in best}
        selections.append(
            {
                "candidates": candidates,
                "chosen_lr": best["lr"],
                "chosen": chosen,
                "all_diverged": not any(not c["diverged"] for c in candidates),
                "interior": not _at_edge(candidates, best),
            }
        )
    return selections


def _at_edge(candidates: list[dict], best: dict) -> bool:
    """Whether the chosen rate (either rate) is the smallest or largest tried."""
    for key in ("lr", "other_lr"):
        if key in best:
            tried = [c[key] for c in candidates]
            if best[key] in (min(tried), max(tried)):
                return True
    return False


def _splits(config: RunConfig, num_images: int) -> dict[str, torch.Tensor]:
    """The run's random subsets of training-image indices (disjoint where they must be)."""
    protocol = config.protocol
    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(num_images, generator=gen)
    sel_val = order[: protocol.selection_val]
    sel_train = order[protocol.selection_val : protocol.selection_val + protocol.selection_train]
    order = torch.randperm(num_images, generator=gen)
    validation = protocol.validation_size(num_images)
    train = order[validation:]
    if protocol.train_images is not None:
        if protocol.train_images > train.shape[0]:
            raise ValueError(
                f"train_images={protocol.train_images} exceeds the "
                f"{train.shape[0]} training images left after validation"
            )
        train = train[: protocol.train_images]
    return {
        "selection_val": sel_val,
        "selection_train": sel_train,
        "validation": order[:validation],
        "train": train,
    }


def _stop_reason(protocol: Protocol, epoch: int, train_error: float, val_errors: list[float]):
    if epoch >= protocol.max_epochs:
        return "max_epochs"
    if epoch < protocol.min_epochs:
        return None
    if train_error < protocol.min_train_error:
        return "training_error_below_threshold"
    if len(val_errors) > protocol.patience and val_errors[-1] > val_errors[-1 - protocol.patience]:
        return "validation_error_rose"
    if len(val_errors) > 1 and abs(val_errors[-1] - val_errors[-2]) < protocol.min_val_change:
        return "validation_error_flat"
    return None


def _stop_check(protocol: Protocol, epoch: int, curves: dict) -> str | None:
    """The stopping rules after ``epoch`` for a run with ``curves`` (its per-epoch lists).
    With ``protocol.stop_on_accepted`` an epoch the bold driver undid only counts towards
    ``max_epochs``, and the other rules see the accepted epochs' measurements alone."""
    if not protocol.stop_on_accepted:
        return _stop_reason(protocol, epoch, curves["train_error"][-1], curves["val_error"])
    if not curves["accepted"][-1]:
        return "max_epochs" if epoch >= protocol.max_epochs else None
    kept = [v for v, ok in zip(curves["val_error"], curves["accepted"]) if ok]
    return _stop_reason(protocol, epoch, curves["train_error"][-1], kept)


def _filter_norms(ens: Ensemble, config: RunConfig, run: int) -> list[float]:
    """Mean filter norm of each BN-fed layer of ensemble member ``run``."""
    names = ARCHS[config.arch].scale_invariant_names(config.depth)
    return [float(ens.params[n][run].detach().flatten(1).norm(dim=1).mean()) for n in names]


def train_runs(
    configs: list[RunConfig],
    data: MNISTTensors,
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] = lambda n: None,
    world_size: int = 1,
) -> list[dict]:
    """Run the protocol for runs that share depth, method and constraint (different seeds),
    as one ensemble; write and return each run's record.

    ``world_size``: the processes of the launch (a sweep sharded by ``torchrun``), recorded
    with the rank that trained the runs (``configs[i].rank``); neither changes a number."""
    if not configs:
        return []
    keys = {
        (c.depth, c.method, c.constraint, c.retraction, c.protocol, c.width, c.arch)
        for c in configs
    }
    if len(keys) != 1:
        raise ValueError("train_runs: configs must differ only in their seeds")
    protocol, device = configs[0].protocol, torch.device(device)
    start = time.perf_counter()
    checkpoint = _Checkpoint(out_dir, configs)
    splits = [_splits(c, data.train_x.shape[0]) for c in configs]
    selections = _select_rates(configs, data, splits, device, progress, checkpoint)
    selection_seconds = time.perf_counter() - start

    ens = build_ensemble(configs, 1, data.train_x.shape[1], device)
    chosen = [s["chosen_lr"] for s in selections]
    ens.set_lr(
        torch.tensor(chosen, device=device),
        torch.tensor([s["chosen"].get("other_lr", s["chosen_lr"]) for s in selections])
        if METHODS[configs[0].method].split_rates
        else None,
    )
    if METHODS[configs[0].method].weight_decay:
        ens.set_weight_decay(torch.tensor([s["chosen"]["weight_decay"] for s in selections]))
    driver = BoldDriver(
        ens.optimizer,
        ens.stack,
        lr=torch.tensor(chosen, dtype=torch.float64),
        increase=protocol.increase,
        decrease=protocol.decrease,
        copies=len(configs),
    )
    generators = [torch.Generator().manual_seed(c.seed + 2) for c in configs]
    pools = torch.stack([s["train"] for s in splits]).to(device)
    val_pools = torch.stack([s["validation"] for s in splits]).to(device)
    curves = [
        {"train_loss": [], "train_error": [], "val_error": [], "lr": [], "accepted": []}
        for _ in configs
    ]
    active = [True] * len(configs)
    records: list[dict | None] = [None] * len(configs)
    epoch_seconds = []
    epoch = 0
    saved = checkpoint.get("train")
    if saved is not None:  # resume after the last finished epoch
        _restore_ensemble(ens, generators, saved)
        driver.load_state_dict(saved["driver"])
        epoch, curves, active, records, epoch_seconds = (
            saved["epoch"],
            saved["curves"],
            saved["active"],
            saved["records"],
            saved["epoch_seconds"],
        )
        progress(epoch)
    while any(active):
        epoch += 1
        tick = time.perf_counter()
        loss, train_error = _train_epoch(ens, data, pools, generators, 1, protocol)
        epoch_seconds.append(time.perf_counter() - tick)
        accepted = driver.step(torch.tensor(loss, dtype=torch.float64))
        for r in range(len(configs)):
            if active[r]:
                curves[r]["accepted"].append(bool(accepted[r]))
        with _estimated_bn(ens, data, pools, 1, protocol):
            val_error = _errors_on(ens, data, val_pools, 1)
        stopping = []
        for r in range(len(configs)):
            if not active[r]:
                continue
            c = curves[r]
            c["train_loss"].append(loss[r])
            c["train_error"].append(train_error[r])
            c["val_error"].append(val_error[r])
            c["lr"].append(float(driver.rates[r]))
            reason = _stop_check(protocol, epoch, c)
            if reason is not None:
                stopping.append((r, reason))
        if stopping:
            with _estimated_bn(ens, data, pools, 1, protocol):
                test_error = ens.errors(data.test_x, data.test_y, shared_input=True).tolist()
            done = torch.zeros(len(configs), dtype=torch.bool)
            for r, reason in stopping:
                active[r] = False
                done[r] = True
                records[r] = {
                    "config": configs[r].to_json(),
                    "name": configs[r].name,
                    "data": data.source,
                    "selection": selections[r],
                    "chosen_lr": selections[r]["chosen_lr"],
                    "chosen": selections[r]["chosen"],
                    "filter_norms": _filter_norms(ens, configs[r], r),
                    "epochs": epoch,
                    "stop_reason": reason,
                    "curves": curves[r],
                    "final_val_error": curves[r]["val_error"][-1],
                    "test_error": test_error[r],
                    "ensemble_size": len(configs),
                    "selection_seconds": selection_seconds,
                    "epoch_seconds": list(epoch_seconds),
                    "seconds": time.perf_counter() - start,
                    "device": str(device),
                    "torch_threads": torch.get_num_threads(),
                    "world_size": world_size,
                    "rank": configs[r].rank,
                }
                _write_json(run_path(out_dir, configs[r]), records[r])
            driver.freeze(done)
        checkpoint.put(
            "train",
            _ensemble_state(
                ens,
                generators,
                driver=driver.state_dict(),
                epoch=epoch,
                curves=curves,
                active=active,
                records=records,
                epoch_seconds=epoch_seconds,
            ),
        )
        progress(1)
    checkpoint.remove()
    return records


def progress_total(configs: list[RunConfig]) -> int:
    """Upper bound of progress ticks :func:`train_runs` gives for ``configs``."""
    return configs[0].protocol.selection_epochs + configs[0].protocol.max_epochs if configs else 0


def welch_t_test(a: list[float], b: list[float]) -> dict[str, float]:
    """Welch's unequal-variance t-test of mean(a) vs mean(b) (two-sided p-value)."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return {"t": math.nan, "p_value": math.nan}
    result = stats.ttest_ind(a, b, equal_var=False)
    return {"t": float(result.statistic), "p_value": float(result.pvalue)}
