"""Reproduce Table 2 of the paper: test error of UN vs B-SGD (and plain SGD) on MNIST.

:func:`reproduce_table2` runs the protocol of :mod:`.protocol` for every (depth, method)
and seed -- in worker processes, runs of one (depth, method) trained together as an
ensemble -- skipping runs whose JSON record already exists, then writes ``table2.json``,
``table2.md`` (our mean ± std beside the paper's, Welch's t-test of UN vs B-SGD per depth)
and ``table2.png`` (test errors with error bars; validation-error curves).
"""

from __future__ import annotations

import json
import os
import queue as queue_module
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import asdict, replace
from pathlib import Path

import torch

from . import distributed
from .config import Protocol, RunConfig
from .methods import METHODS
from .pool import pool_context, send_message, worker_pool
from .progress import progress_bar, settle, write_above
from .protocol import progress_total, train_runs
from .runs import MNISTTensors, load_finished, run_configs, write_record
from .table2_report import summarize, write_report

__all__ = [
    "TableMismatchError",
    "reproduce_table2",
    "table_identity",
    "check_table",
    "data_on",
]

#: Fields of a :class:`RunConfig` that vary within one table (the rest is its identity).
_PER_RUN = ("depth", "method", "seed", "rank", "run_hash")

_DATA_CACHE: dict[tuple, MNISTTensors] = {}


class TableMismatchError(ValueError):
    """The output directory holds a table of another protocol (never overwritten)."""


def table_identity(config: RunConfig) -> dict:
    """What every run of one table shares: the protocol, the data, the constraint, dtype,
    device, threads and world size (a :class:`RunConfig` without depth, method and seed)."""
    return {k: v for k, v in config.to_json().items() if k not in _PER_RUN}


def _flat(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_table(path: Path, identity: dict, what: str = "protocol") -> None:
    """Raise :class:`TableMismatchError` (one line naming the difference) when ``path`` (a
    table's JSON) exists and was made from another ``identity``; nothing is ever overwritten
    by the results of another protocol."""
    path = Path(path)
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text()).get("identity")
    except (json.JSONDecodeError, AttributeError):
        old = None
    if old == identity:
        return
    hint = (
        f"write it into another directory (--out) or move {path.name} away; the run "
        f"records in {path.parent / 'runs'} are kept either way"
    )
    if old is None:
        raise TableMismatchError(
            f"{path} was written without a run identity (by an earlier riemann_dnn or by "
            f"hand), so it may be of another {what}; {hint}"
        )
    a, b = _flat(old), _flat(identity)
    diff = [
        f"{k}: {a.get(k, '-')} there, {b.get(k, '-')} here"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    raise TableMismatchError(
        f"{path} holds the table of another {what} ({'; '.join(diff)}); {hint}"
    )


def _worker(task: tuple) -> list[dict]:
    """Run one ensemble of configs (in a worker process, or in this one)."""
    task_id, configs, out_dir, data_args, device, in_process, world_size = task
    key = (data_args, device)
    if key not in _DATA_CACHE:
        with warnings.catch_warnings():  # the parent process already warned about the data
            warnings.simplefilter("ignore")
            _DATA_CACHE[key] = MNISTTensors.load(data_args[0], source=data_args[1], device=device)
    progress = in_process if in_process is not None else (lambda n: send_message("tick", n))
    return train_runs(
        configs,
        _DATA_CACHE[key],
        Path(out_dir),
        device=device,
        progress=progress,
        world_size=world_size,
    )


def _tasks(configs: list[RunConfig], jobs: int) -> list[list[RunConfig]]:
    """Group configs into ensembles (same depth/method), split so ``jobs`` workers stay busy
    (with a fixed thread count the split does not change any run's numbers)."""
    groups: dict[tuple, list[RunConfig]] = defaultdict(list)
    for config in configs:
        groups[(config.depth, config.method)].append(config)
    tasks = list(groups.values())
    while len(tasks) < jobs and any(len(t) > 1 for t in tasks):
        largest = max(tasks, key=len)
        tasks.remove(largest)
        half = len(largest) // 2
        tasks += [largest[:half], largest[half:]]
    return sorted(tasks, key=lambda t: -t[0].depth)  # deepest (slowest) first


def _unique(name: str, values: Sequence) -> list:
    seen, repeated = set(), []
    for value in values:
        if value in seen:
            repeated.append(value)
        seen.add(value)
    if repeated:
        raise ValueError(
            f"{name} {' '.join(map(str, values))}: {repeated[0]} is given more "
            f"than once; give each value once"
        )
    if not values:
        raise ValueError(f"{name}: give at least one value")
    return list(values)


def reproduce_table2(
    out_dir: str | Path,
    *,
    depths: Sequence[int] = (2, 4),
    methods: Sequence[str] = ("un", "bsgd", "sgd"),
    runs: int = 10,
    seed: int = 0,
    protocol: Protocol | None = None,
    data_dir: str | None = None,
    source: str = "auto",
    device: str = "cpu",
    jobs: int | None = None,
    threads: int = 1,
    constraint: str = "oblique",
    retraction: str | None = None,
    progress: bool | str = True,
    check_only: bool = False,
    title: str | None = None,
    arch: str = "mlp",
    width: int | None = None,
) -> dict | None:
    """Run (or resume) the Table 2 reproduction and write its report; returns the summary.

    Every run's record is named by its :attr:`~.protocol.RunConfig.run_hash`, so only records
    of exactly this protocol, data and execution are reused; ``table2.json`` of another
    protocol in ``out_dir`` is refused (:class:`TableMismatchError`) before any training.
    Each training process uses ``threads`` torch threads (in workers and in this process
    alike), so the numbers do not depend on ``jobs`` or the core count. ``jobs`` defaults to
    one per CPU core (under ``torchrun``: the cores of the host shared by its processes).
    ``progress``: show a progress bar on stderr, labelled ``"table2"`` or with the string
    given (e.g. ``"study mlp"``).
    ``check_only``: validate everything and return None without training.
    ``arch``/``width`` choose the architecture (:data:`~.protocol.ARCHS`; default the
    paper's MLP of width 64).

    **Sharded** (launched by ``torchrun``, after
    :func:`~.distributed.launch_from_env`): the list of ensembles (tasks) is the same on every
    rank, and rank ``r`` of ``W`` trains tasks ``r, r + W, ...``
    (:func:`~.distributed.shard`), writing its records as it goes (each names the rank that
    trained it, and the launch's world size). Then rank 0 gathers every rank's records
    (written into its ``out_dir`` if they are not there yet: hosts need not share a file
    system), writes the table and returns the summary; the other ranks return None. A run's
    numbers do not depend on the world size (each run is trained by one process with
    ``threads`` threads), so neither its hash nor the table's identity holds the world size
    of a sweep.
    """
    depths = _unique("depths", depths)
    methods = _unique("methods", methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(METHODS)}")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    launch = distributed.current_launch()
    jobs = max(1, (os.cpu_count() or 1) // launch.local_world_size) if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    protocol = protocol or Protocol()
    out_dir = Path(out_dir)
    data = MNISTTensors.load(data_dir, source=source, device="cpu")  # fail early, clearly
    configs = run_configs(
        data,
        depths=depths,
        methods=methods,
        runs=runs,
        seed=seed,
        protocol=protocol,
        constraint=constraint,
        retraction=retraction,
        device=device,
        threads=threads,
        arch=arch,
        width=width,
    )
    identity = table_identity(configs[0])
    check_table(out_dir / "table2.json", identity)
    if check_only:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    # rank 0's view of what is left, so every rank splits the same list
    todo = distributed.broadcast_object([c for c in configs if load_finished(out_dir, c) is None])
    tasks = _tasks(todo, jobs * launch.world_size)
    mine = [
        [replace(c, rank=launch.rank) for c in task]
        for task in distributed.shard(tasks, launch.rank, launch.world_size)
    ]
    if mine:
        _run_tasks(
            mine,
            out_dir,
            (data_dir, source),
            launch.device if launch.distributed else device,
            jobs,
            threads,
            (progress if isinstance(progress, str) else "table2")
            if progress and launch.is_main
            else None,
            data,
            launch.world_size,
        )
    if launch.distributed:
        trained = [load_finished(out_dir, c) for task in mine for c in task]
        gathered = distributed.all_gather_objects(trained)
        if not launch.is_main:
            return None
        for record in (r for share in gathered for r in share if r is not None):
            config = next(c for c in configs if c.run_hash == record["config"]["run_hash"])
            if load_finished(out_dir, config) is None:
                write_record(out_dir, config, record)
    records = [load_finished(out_dir, c) for c in configs]
    missing = [c.name for c, r in zip(configs, records) if r is None]
    if missing:
        raise RuntimeError(f"runs did not finish: {missing}")
    summary = summarize(records)
    summary["protocol"] = asdict(protocol)
    summary["data"] = data.source
    summary["identity"] = identity
    summary["world_size"] = launch.world_size
    summary["grid"] = {"depths": depths, "methods": methods, "runs": runs, "seed": seed}
    if title:
        summary["title"] = title
    write_report(summary, records, out_dir)
    return summary


def _ticks(records: list[dict]) -> int:
    """Progress ticks :func:`train_runs` gave for one finished ensemble."""
    protocol = records[0]["config"]["protocol"]
    return protocol["selection_epochs"] + max(r["epochs"] for r in records)


def _run_tasks(
    tasks, out_dir, data_args, device, jobs, threads, label: str | None, data, world_size: int = 1
) -> None:
    """Train ``tasks``; ``label``: the progress bar's (None: no bar)."""
    planned = [progress_total(t) for t in tasks]
    with progress_bar(
        total=sum(planned), desc=label or "", unit="epoch", enabled=label is not None
    ) as bar:
        if jobs == 1 or len(tasks) == 1:
            _DATA_CACHE[(data_args, device)] = data_on(data, device)
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                for task_id, configs in enumerate(tasks):
                    bar.set_postfix_str(f"depth {configs[0].depth} {configs[0].method}")
                    records = _worker(
                        (task_id, configs, str(out_dir), data_args, device, bar.update, world_size)
                    )
                    settle(bar, planned[task_id], _ticks(records))
            finally:
                torch.set_num_threads(previous)
            return
        messages = pool_context().Queue()
        with worker_pool(min(jobs, len(tasks)), threads=threads, messages=messages) as pool:
            futures = {
                pool.submit(_worker, (i, t, str(out_dir), data_args, device, None, world_size)): i
                for i, t in enumerate(tasks)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(messages, bar)
                for future in done:
                    records = future.result()  # re-raise a worker's error
                    settle(bar, planned[futures[future]], _ticks(records))
            deadline = time.monotonic() + 2.0  # the last ticks may trail the results
            while bar.n < bar.total and time.monotonic() < deadline:
                _drain(messages, bar, timeout=0.05)


def _drain(messages, bar, timeout: float | None = None) -> None:
    while True:
        try:
            kind, payload = messages.get(timeout=timeout) if timeout else messages.get_nowait()
        except queue_module.Empty:
            return
        if kind == "tick":
            bar.update(payload)
        else:
            write_above(bar, str(payload))


def data_on(data: MNISTTensors, device: str) -> MNISTTensors:
    return MNISTTensors(
        data.train_x.to(device),
        data.train_y.to(device),
        data.test_x.to(device),
        data.test_y.to(device),
        data.source,
        data.checksum,
    )


# -- report -----------------------------------------------------------------------------------
