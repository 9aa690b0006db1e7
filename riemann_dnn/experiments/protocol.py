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
each run's record is written as JSON the moment the run stops. The same code trains one
model on many processes (``torchrun``, a :class:`~.config.RunConfig` with ``world_size`` > 1:
each rank takes its slice of every global batch) and under autocast (``amp="bf16"``).

Options beyond the paper (defaults keep its protocol; :data:`~.config.PROTOCOLS` names both):
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

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..optim import BoldDriver
from .config import Protocol, RunConfig
from .distributed import Launch, barrier, current_launch
from .ensemble import Ensemble
from .methods import METHODS
from .runs import MNISTTensors, splits_of, write_record
from .selection import select_rates
from .training import (
    ARCHS,
    Checkpoint,
    build_ensemble,
    ensemble_epoch,
    ensemble_state,
    errors_on,
    estimated_bn,
    rate_tensor,
    restore_ensemble,
    take_copies,
    test_errors,
)

__all__ = ["train_runs", "stop_reason", "stop_check", "progress_total"]


def stop_reason(
    protocol: Protocol, epoch: int, train_error: float, val_errors: list[float]
) -> str | None:
    """The paper's stopping rules after ``epoch`` (see the module docstring): the reason to
    stop, or ``None``."""
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


def stop_check(protocol: Protocol, epoch: int, curves: dict) -> str | None:
    """The stopping rules after ``epoch`` for a run with ``curves`` (its per-epoch lists).
    With ``protocol.stop_on_accepted`` an epoch the bold driver undid only counts towards
    ``max_epochs``, and the other rules see the accepted epochs' measurements alone."""
    if not protocol.stop_on_accepted:
        return stop_reason(protocol, epoch, curves["train_error"][-1], curves["val_error"])
    if not curves["accepted"][-1]:
        return "max_epochs" if epoch >= protocol.max_epochs else None
    kept = [v for v, ok in zip(curves["val_error"], curves["accepted"]) if ok]
    return stop_reason(protocol, epoch, curves["train_error"][-1], kept)


def _record_epoch(curves, active, epoch, protocol, loss, train_error, val_error, rates):
    """Append the epoch to each active run's curves; the ``(run, reason)`` of those that stop."""
    stopping = []
    for r, c in enumerate(curves):
        if not active[r]:
            continue
        c["train_loss"].append(loss[r])
        c["train_error"].append(train_error[r])
        c["val_error"].append(val_error[r])
        c["lr"].append(float(rates[r]))
        reason = stop_check(protocol, epoch, c)
        if reason is not None:
            stopping.append((r, reason))
    return stopping


def _filter_norms(ens: Ensemble, config: RunConfig, run: int) -> list[float]:
    """Mean filter norm of each BN-fed layer of ensemble member ``run``."""
    names = ARCHS[config.arch].scale_invariant_names(config.depth)
    return [float(ens.params[n][run].detach().flatten(1).norm(dim=1).mean()) for n in names]


def _by_run(members: list[int], runs: int, values: list) -> list:
    """Per-member ``values`` as a list over all ``runs`` (``None`` for runs not in it)."""
    out: list = [None] * runs
    for i, r in enumerate(members):
        out[r] = values[i]
    return out


class _Training:
    """Stage (b)'s ensemble: one copy per run still training (``members``, run indices),
    its optimizer, bold driver, generators and image pools. :meth:`keep` drops the runs
    that stopped: their copies leave the ensemble, so no epoch is spent on them. Every
    other copy's numbers are unchanged (each copy is computed on its own, and each run
    draws its batches from its own generator)."""

    def __init__(self, configs, selections, splits, data, device, launch):
        self.configs, self.selections, self.data = configs, selections, data
        self.device, self.launch = device, launch
        self.method = METHODS[configs[0].method]
        self.all_generators = [torch.Generator().manual_seed(c.seed + 2) for c in configs]
        self.all_pools = torch.stack([s["train"] for s in splits]).to(device)
        self.all_val_pools = torch.stack([s["validation"] for s in splits]).to(device)
        self._build(list(range(len(configs))))

    def _build(self, members: list[int]) -> None:
        configs, selections = (
            [self.configs[r] for r in members],
            [self.selections[r] for r in members],
        )
        protocol = configs[0].protocol
        ens = build_ensemble(
            configs, 1, self.data.train_x.shape[1], self.device, launch=self.launch
        )
        chosen = [s["chosen_lr"] for s in selections]
        others = [s["chosen"].get("other_lr", s["chosen_lr"]) for s in selections]
        ens.set_lr(rate_tensor(chosen), rate_tensor(others) if self.method.split_rates else None)
        if self.method.weight_decay:
            ens.set_weight_decay(torch.tensor([s["chosen"]["weight_decay"] for s in selections]))
        # from here on the bold driver alone writes the optimizer's rates
        self.driver = BoldDriver(
            ens.optimizer,
            ens.stack,
            lr=torch.tensor(chosen, dtype=torch.float64),
            increase=protocol.increase,
            decrease=protocol.decrease,
            copies=len(members),
        )
        self.ensemble, self.members = ens, members
        index = torch.tensor(members, device=self.all_pools.device)
        self.pools = self.all_pools.index_select(0, index)
        self.val_pools = self.all_val_pools.index_select(0, index)
        self.generators = [self.all_generators[r] for r in members]

    def _live(self) -> dict:
        return {
            "stack": self.ensemble.stack.state_dict(),
            "optimizer": self.ensemble.optimizer.state_dict(),
            "driver": self.driver.state_dict(),
        }

    def _load(self, state: dict) -> None:
        self.ensemble.stack.load_state_dict(state["stack"])
        self.ensemble.optimizer.load_state_dict(state["optimizer"])
        self.driver.load_state_dict(state["driver"])

    def copies(self, positions: list[int]) -> Ensemble:
        """The ensemble's copies at ``positions`` as an ensemble of their own (the same
        weights and buffers: each copy evaluates as it would in the whole)."""
        if positions == list(range(len(self.members))):
            return self.ensemble
        configs = [self.configs[self.members[i]] for i in positions]
        part = build_ensemble(
            configs, 1, self.data.train_x.shape[1], self.device, launch=self.launch
        )
        part.stack.load_state_dict(
            take_copies(self.ensemble.stack.state_dict(), positions, len(self.members))
        )
        return part

    def keep(self, active: list[bool]) -> None:
        """Drop the copies of the runs that are no longer ``active``."""
        keep = [i for i, r in enumerate(self.members) if active[r]]
        if len(keep) == len(self.members) or not keep:
            return
        state = take_copies(self._live(), keep, len(self.members))
        self._build([self.members[i] for i in keep])
        self._load(state)

    def state(self, **extra) -> dict:
        """What the checkpoint keeps: :func:`~.training.ensemble_state` with the bold
        driver and the runs the ensemble holds."""
        return ensemble_state(
            self.ensemble,
            self.generators,
            driver=self.driver.state_dict(),
            members=self.members,
            **extra,
        )

    def restore(self, saved: dict) -> None:
        """Back to a checkpoint's :meth:`state` (of every run, for a checkpoint written
        before runs left the ensemble)."""
        members = saved.get("members", list(range(len(self.configs))))
        if members != self.members:
            self._build(members)
        restore_ensemble(self.ensemble, self.generators, saved)
        self.driver.load_state_dict(saved["driver"])


def _launch(configs: list[RunConfig]) -> Launch | None:
    """The processes that train ``configs`` together: this launch for a data-parallel run
    (``world_size`` > 1), else ``None`` (this process alone)."""
    world = configs[0].world_size
    if world == 1:
        return None
    launch = current_launch()
    if launch.world_size != world:
        raise ValueError(
            f"train_runs: the runs are for {world} processes, but this launch has "
            f"{launch.world_size}; start them under torchrun --nproc-per-node={world}"
        )
    return launch


def train_runs(
    configs: list[RunConfig],
    data: MNISTTensors,
    out_dir: Path,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] = lambda n: None,
    world_size: int = 1,
) -> list[dict]:
    """Run the protocol for runs that share everything but their seeds, as one ensemble;
    write and return each run's record.

    Runs with ``world_size`` > 1 (``torchrun ... train archbn``) are trained data-parallel
    over the current launch (:func:`~.distributed.launch_from_env`, on its device): every
    rank calls this with the same configs, takes its slice of each global batch, and
    returns the same records; rank 0 writes them and the checkpoint.

    ``world_size``: the processes of the launch when it shards a sweep (each rank training
    its own runs), recorded with the rank that trained the runs (``configs[i].rank``);
    neither changes a number."""
    if not configs:
        return []
    keys = {
        (c.depth, c.method, c.constraint, c.retraction, c.protocol, c.width, c.arch)
        + (c.amp, c.world_size)
        for c in configs
    }
    if len(keys) != 1:
        raise ValueError("train_runs: configs must differ only in their seeds")
    launch = _launch(configs)
    if launch is not None:
        device, world_size = launch.device, launch.world_size
    writes = launch is None or launch.is_main
    protocol, amp, device = configs[0].protocol, configs[0].amp, torch.device(device)
    start = time.perf_counter()
    checkpoint = Checkpoint(out_dir, configs, launch=launch)
    splits = [splits_of(c, data.train_x.shape[0]) for c in configs]
    selections = select_rates(configs, data, splits, device, progress, checkpoint, launch=launch)
    selection_seconds = time.perf_counter() - start

    training = _Training(configs, selections, splits, data, device, launch)
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
        epoch, curves, active, records, epoch_seconds = (
            saved["epoch"],
            saved["curves"],
            saved["active"],
            saved["records"],
            saved["epoch_seconds"],
        )
        training.restore(saved)
        training.keep(active)
        progress(epoch)
    while any(active):
        epoch += 1
        ens, members = training.ensemble, training.members
        tick = time.perf_counter()
        loss, train_error = ensemble_epoch(
            ens, data, training.pools, training.generators, 1, protocol, amp=amp, launch=launch
        )
        epoch_seconds.append(time.perf_counter() - tick)
        accepted = training.driver.step(torch.tensor(loss, dtype=torch.float64))
        for i, r in enumerate(members):
            curves[r]["accepted"].append(bool(accepted[i]))
        with estimated_bn(ens, data, training.pools, 1, protocol, launch=launch):  # both errors
            val_error = errors_on(ens, data, training.val_pools, 1, launch=launch)
            stopping = _record_epoch(
                curves,
                active,
                epoch,
                protocol,
                *(_by_run(members, len(configs), v) for v in (loss, train_error, val_error)),
                _by_run(members, len(configs), training.driver.rates.tolist()),
            )
            if stopping:  # the test error of the runs that stop (theirs only)
                stops = [members.index(r) for r, _ in stopping]
                tested = test_errors(training.copies(stops), data, launch=launch)
                test_error = _by_run([members[i] for i in stops], len(configs), tested)
        for r, reason in stopping:
            active[r] = False
            records[r] = {
                "config": configs[r].to_json(),
                "name": configs[r].name,
                "data": data.source,
                "selection": selections[r],
                "chosen_lr": selections[r]["chosen_lr"],
                "chosen": selections[r]["chosen"],
                "filter_norms": _filter_norms(ens, configs[r], members.index(r)),
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
            if writes:
                write_record(out_dir, configs[r], records[r])
        training.keep(active)
        checkpoint.put(
            "train",
            training.state(
                epoch=epoch,
                curves=curves,
                active=active,
                records=records,
                epoch_seconds=epoch_seconds,
            ),
        )
        progress(1)
    checkpoint.remove()
    if launch is not None:
        barrier()  # the records are written before any rank returns
    return records


def progress_total(configs: list[RunConfig]) -> int:
    """Upper bound of progress ticks :func:`train_runs` gives for ``configs``."""
    return configs[0].protocol.selection_epochs + configs[0].protocol.max_epochs if configs else 0
