"""Where the time of a quick Table 2 goes: selection, training, evaluation, BN estimate,
checkpoint, bold driver, record, report, data and kernel load, worker start-up and the rest,
in one process (``--jobs 1``) and in worker processes (``--jobs N``).

Each measurement is a fresh Python process that runs ``reproduce_table2`` (the public API)
with the quick protocol, with timers around the protocol's functions (exclusive times: a
phase does not include the phases it calls). Worker processes report their own timers; a
worker's start-up is the time from the pool's start to its first task, and its idle time the
time from its last task to the pool's end. With ``--baseline DIR`` (another checkout of
riemann_dnn, e.g. ``git worktree add /tmp/before <commit>``) the same measurements of that
code are interleaved with this checkout's, and the ratios current/baseline are printed: both
see the same machine load.

    python benchmarks/protocol_time.py [--baseline DIR] [--current DIR] [--repeats 1] [--jobs 2]
        [--runs 10] [--depths 2 4] [--methods un bsgd sgd] [--modes inprocess workers]
        [--data-dir DIR] [--out results/benchmarks]

Writes ``protocol_time.json`` and ``protocol_time.md`` into ``--out`` and prints the table.
The timers cost a few microseconds per call (a few hundred calls per epoch).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

PHASES = (
    "selection",
    "training",
    "evaluation",
    "BN estimate",
    "bold driver",
    "checkpoint",
    "record",
    "report",
    "data load",
    "kernel load",
    "start-up",
    "worker idle",
    "rest",
)

# -- timers (installed in the measuring process and, through the spawned workers' import of
# -- this main module, in every worker): wall-clock and CPU seconds (all threads) per phase --
_TOTALS: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
_STACK: list[list[float]] = []
_IN_SELECTION = [0]
_TASKS: list[tuple[float, float]] = []  # (start, end) wall clock of this process's tasks
_START_CPU: list[float] = []  # this process's CPU seconds when its first task started
_ENV = "PROTOCOL_TIME_DIR"


def _timed(phase, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        name = phase(args) if callable(phase) else phase
        if name == "selection":
            _IN_SELECTION[0] += 1
        wall, cpu = time.perf_counter(), time.process_time()
        _STACK.append([0.0, 0.0])
        try:
            return fn(*args, **kwargs)
        finally:
            spent = (time.perf_counter() - wall, time.process_time() - cpu)
            nested = _STACK.pop()
            for k in (0, 1):
                _TOTALS[name][k] += spent[k] - nested[k]
                if _STACK:
                    _STACK[-1][k] += spent[k]
            if name == "selection":
                _IN_SELECTION[0] -= 1

    return wrapper


def _epoch_phase(args) -> str:
    return "selection" if _IN_SELECTION[0] else "training"


def _replace_everywhere(original, wrapper) -> None:
    """Point every name of riemann_dnn's loaded modules bound to ``original`` at ``wrapper``."""
    for name, module in list(sys.modules.items()):
        if name.startswith("riemann_dnn") and module is not None:
            for attr, value in list(vars(module).items()):
                if value is original:
                    setattr(module, attr, wrapper)


def _function(phase, *candidates: str) -> None:
    import importlib

    for candidate in candidates:
        module_name, attr = candidate.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        original = getattr(module, attr, None)
        if original is not None:
            _replace_everywhere(original, _timed(phase, original))
            return


def _method(phase, cls, *names: str) -> None:
    for name in names:
        raw = cls.__dict__.get(name)
        if raw is None:
            continue
        if isinstance(raw, classmethod):
            setattr(cls, name, classmethod(_timed(phase, raw.__func__)))
        else:
            setattr(cls, name, _timed(phase, raw))


def _worker_task(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.time()
        if not _START_CPU:
            _START_CPU.append(time.process_time())
        try:
            return fn(*args, **kwargs)
        finally:
            _TASKS.append((start, time.time()))
            _dump()

    return wrapper


def _dump() -> None:
    folder = os.environ.get(_ENV)
    if folder:
        Path(folder, f"{os.getpid()}.json").write_text(
            json.dumps(
                {
                    "totals": dict(_TOTALS),
                    "tasks": _TASKS,
                    "start_cpu": _START_CPU[0] if _START_CPU else 0.0,
                    "cpu": time.process_time(),
                }
            )
        )


def _first_call_only(fn):
    """``fn`` timed on its first call only (a cached load called at every step)."""
    timed = _timed("kernel load", fn)
    done = []

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if done:
            return fn(*args, **kwargs)
        done.append(True)
        return timed(*args, **kwargs)

    return wrapper


def install() -> None:
    """Wrap the protocol's functions (by their current names, or the names of older
    checkouts: a phase whose function is not found is counted in ``rest``)."""
    import importlib

    import riemann_dnn.experiments.table2 as table2
    from riemann_dnn.experiments import ensemble
    from riemann_dnn.optim import BoldDriver

    x = "riemann_dnn.experiments"
    for name in ("protocol", "selection", "runs", "training", "table2_report"):
        try:  # loaded first, so that the names they import get replaced too
            importlib.import_module(f"{x}.{name}")
        except ImportError:
            pass
    _function("selection", f"{x}.selection:select_rates", f"{x}.protocol:_select_rates")
    _function(
        _epoch_phase,
        f"{x}.training:ensemble_epoch",
        f"{x}.training:_train_epoch",
        f"{x}.protocol:_train_epoch",
    )
    _function(
        "evaluation",
        f"{x}.training:errors_on",
        f"{x}.training:_errors_on",
        f"{x}.protocol:_errors_on",
    )
    _function("evaluation", f"{x}.training:test_errors")
    _method("evaluation", ensemble.Ensemble, "errors")
    stacked = getattr(importlib.import_module("riemann_dnn.optim"), "StackedModules", None)
    if stacked is not None:
        _method("BN estimate", stacked, "estimate_batchnorm")
    _method("bold driver", BoldDriver, "__init__", "step", "freeze")
    training = sys.modules.get(f"{x}.training")
    checkpoint = getattr(training, "Checkpoint", None) or getattr(training, "_Checkpoint", None)
    if checkpoint is not None:
        _method("checkpoint", checkpoint, "__init__", "put", "remove")
    _function("checkpoint", f"{x}.training:ensemble_state", f"{x}.training:_ensemble_state")
    _function("checkpoint", f"{x}.training:restore_ensemble", f"{x}.training:_restore_ensemble")
    _function("record", f"{x}.runs:write_record", f"{x}.protocol:_write_json")
    _function("report", f"{x}.table2_report:write_report", f"{x}.table2:write_report")
    tensors = getattr(sys.modules.get(f"{x}.runs"), "MNISTTensors", None)
    _method("data load", tensors or sys.modules[f"{x}.protocol"].MNISTTensors, "load")
    try:  # older checkouts have no native kernel
        build = importlib.import_module("riemann_dnn.step.native.build")
        _replace_everywhere(build.load, _first_call_only(build.load))
    except ImportError:
        pass
    table2._worker = _worker_task(table2._worker)


if os.environ.get(_ENV) and __name__ == "__mp_main__":  # a spawned worker of a measurement
    install()


# -- one measurement (a child process) --------------------------------------------------------
def _measure(args) -> None:
    import torch

    cpu0 = time.process_time()
    install()
    from riemann_dnn.experiments import table2

    try:
        from riemann_dnn.experiments.config import quick_protocol
    except ImportError:  # older checkouts
        from riemann_dnn.experiments.protocol import quick_protocol

    pool_times = []
    real_pool = getattr(table2, "worker_pool", None)

    def timed_pool(*a, **k):
        pool = real_pool(*a, **k)

        class Timed:
            def __enter__(self):
                pool_times.append([time.time(), None])
                return pool.__enter__()

            def __exit__(self, *exc):
                try:
                    return pool.__exit__(*exc)
                finally:
                    pool_times[-1][1] = time.time()

        return Timed()

    if hasattr(table2, "worker_pool"):
        table2.worker_pool = timed_pool
    else:  # older checkouts start their ProcessPoolExecutor in table2 itself

        class TimedExecutor(table2.ProcessPoolExecutor):
            def __enter__(self):
                pool_times.append([time.time(), None])
                return super().__enter__()

            def __exit__(self, *exc):
                try:
                    return super().__exit__(*exc)
                finally:
                    pool_times[-1][1] = time.time()

        table2.ProcessPoolExecutor = TimedExecutor
    torch.set_num_threads(1)
    out = Path(args.child_out)
    start, cpu = time.perf_counter(), time.process_time()
    options = (
        {"threads": 1}
        if "threads" in inspect.signature(table2.reproduce_table2).parameters
        else {}
    )
    table2.reproduce_table2(
        out / "table2",
        depths=args.depths,
        methods=args.methods,
        runs=args.runs,
        protocol=quick_protocol(),
        data_dir=args.data_dir,
        source="auto" if args.data_dir is None else "full",
        jobs=args.jobs,
        progress=False,
        **options,
    )
    result = {
        "wall": time.perf_counter() - start,
        "cpu": time.process_time() - cpu,
        "start_cpu": cpu - cpu0,  # imports and timers, before the table
        "main": dict(_TOTALS),
        "workers": [
            json.loads(path.read_text())
            for path in Path(os.environ[_ENV]).glob("*.json")
            if int(path.stem) != os.getpid()
        ],
        "pools": pool_times,
    }
    (out / "result.json").write_text(json.dumps(result))


def _seconds(result: dict, jobs: int) -> dict[str, dict[str, float]]:
    """``{"wall": {phase: s}, "cpu": {phase: s}}``: the main process's phases, plus (worker
    mode) every worker's phases, start-up (wall: pool start to first task; CPU: the worker's
    CPU before its first task) and idle time (wall: last task to pool end, and pool slots no
    worker took). ``rest``: what no timer covers (wall: the main process outside the pool, and
    the workers inside their tasks)."""
    wall, cpu = defaultdict(float), defaultdict(float)
    for phase, (w, c) in result["main"].items():
        wall[phase] += w
        cpu[phase] += c
    pooled = sum(e - s for s, e in result["pools"])
    wall["rest"] += result["wall"] - pooled - sum(w for w, _ in result["main"].values())
    cpu["rest"] += result["cpu"] - sum(c for _, c in result["main"].values())
    cpu["start-up"] += result["start_cpu"]
    takers = defaultdict(int)
    for worker in result["workers"]:
        tasks = worker["tasks"]
        pool = next(p for p in result["pools"] if p[0] <= tasks[0][0] <= p[1])
        takers[tuple(pool)] += 1
        busy_wall = busy_cpu = 0.0
        for phase, (w, c) in worker["totals"].items():
            wall[phase] += w
            cpu[phase] += c
            busy_wall += w
            busy_cpu += c
        wall["start-up"] += tasks[0][0] - pool[0]
        wall["worker idle"] += pool[1] - tasks[-1][1]
        wall["rest"] += sum(e - s for s, e in tasks) - busy_wall
        cpu["start-up"] += worker["start_cpu"]
        cpu["rest"] += worker["cpu"] - worker["start_cpu"] - busy_cpu
    for pool in result["pools"]:
        wall["worker idle"] += (pool[1] - pool[0]) * max(0, jobs - takers[tuple(pool)])
    return {"wall": dict(wall), "cpu": dict(cpu)}


def _run_child(code: Path, mode: str, args) -> dict:
    jobs = 1 if mode == "inprocess" else args.jobs
    with tempfile.TemporaryDirectory(prefix="protocol-time-") as tmp:
        timers = Path(tmp, "timers")
        timers.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": str(code),
            _ENV: str(timers),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        }
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child-out",
            tmp,
            "--jobs",
            str(jobs),
            "--runs",
            str(args.runs),
            "--depths",
            *map(str, args.depths),
            "--methods",
            *args.methods,
            *(["--data-dir", args.data_dir] if args.data_dir else []),
        ]
        subprocess.run(command, env=env, check=True, cwd=tmp)
        result = json.loads(Path(tmp, "result.json").read_text())
    result["seconds"] = _seconds(result, jobs)
    return result


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _table(rows: dict, codes: list[str], modes: list[str], clock: str) -> str:
    columns = [(mode, code) for mode in modes for code in codes]
    head = "| phase |" + "".join(f" {mode}, {code} |" for mode, code in columns)
    rule = "|---|" + "---:|" * len(columns)
    if len(codes) == 2:
        head += "".join(f" {mode}: current / baseline |" for mode in modes)
        rule += "---:|" * len(modes)
    lines = [head, rule]
    for phase in (*PHASES, "total"):
        line = f"| {phase} |"
        for mode, code in columns:
            value = _median(rows[code][mode][clock][phase])
            total = _median(rows[code][mode][clock]["total"])
            line += f" {value:.1f} s ({100 * value / total:.0f} %) |" if total else " - |"
        if len(codes) == 2:
            for mode in modes:
                base, current = (_median(rows[c][mode][clock][phase]) for c in codes)
                line += f" {current / base:.2f} |" if base >= 0.1 else " - |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default=None, help="another riemann_dnn checkout")
    parser.add_argument(
        "--current", default=None, help="the checkout to measure (default: this one)"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2, help="workers of the worker mode")
    parser.add_argument("--runs", type=int, default=10, help="seeds per cell (10)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--methods", nargs="+", default=["un", "bsgd", "sgd"])
    parser.add_argument("--modes", nargs="+", default=["inprocess", "workers"])
    parser.add_argument("--data-dir", default=None, help="full MNIST (default: the lookup)")
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_out:
        _measure(args)
        return 0
    codes = {"current": Path(args.current or Path(__file__).resolve().parents[1]).resolve()}
    if args.baseline:
        codes = {"baseline": Path(args.baseline).resolve(), **codes}
    rows = {
        c: {m: {k: defaultdict(list) for k in ("wall", "cpu")} for m in args.modes} for c in codes
    }
    walls = {c: {m: [] for m in args.modes} for c in codes}
    for repeat in range(args.repeats):
        for mode in args.modes:
            for code, path in codes.items():
                print(f"[{repeat + 1}/{args.repeats}] {mode}, {code} ...", flush=True)
                result = _run_child(path, mode, args)
                walls[code][mode].append(result["wall"])
                for clock, seconds in result["seconds"].items():
                    for phase in PHASES:
                        rows[code][mode][clock][phase].append(seconds.get(phase, 0.0))
                    rows[code][mode][clock]["total"].append(sum(seconds.values()))
    setup = (
        f"A quick Table 2 ({args.runs} runs x depths {' '.join(map(str, args.depths))} x "
        f"methods {' '.join(args.methods)}, full MNIST when found), in one process "
        f"(inprocess) and in {args.jobs} worker processes (workers), 1 torch thread each; "
        f"the median of {args.repeats} interleaved measurement(s) per column. Seconds per "
        "phase (exclusive), summed over the processes, and their share of the total."
    )
    wall_line = "Wall clock of the table: " + ", ".join(
        f"{mode}, {code} {_median(walls[code][mode]):.1f} s"
        for mode in args.modes
        for code in codes
    )
    text = (
        f"{setup}\n\n{wall_line}\n\nCPU seconds (all threads):\n\n"
        f"{_table(rows, list(codes), args.modes, 'cpu')}\n\nWall-clock seconds:\n\n"
        f"{_table(rows, list(codes), args.modes, 'wall')}\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol_time.json").write_text(
        json.dumps(
            {
                "setup": setup,
                "codes": {k: str(v) for k, v in codes.items()},
                "wall": walls,
                "rows": rows,
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
            },
            indent=1,
        )
    )
    (out / "protocol_time.md").write_text(f"# Protocol time\n\n{text}")
    print(text)
    print(f"wrote {out / 'protocol_time.json'} and {out / 'protocol_time.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
