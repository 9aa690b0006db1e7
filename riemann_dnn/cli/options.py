"""Options shared by the subcommands, and the checks every command makes before any work.

One definition of each shared option (``--threads``, ``--device``, ``--out``, ``--jobs``, the
data options) and one error style: a bad input is refused with :class:`UsageError`, which
``riemann-dnn`` prints as one line on stderr (``riemann-dnn COMMAND: error: ...`` naming the
option, the value and the fix) and exit status 2, before any data is trained on.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "UsageError",
    "Parser",
    "positive_int",
    "nonnegative_int",
    "positive_float",
    "nonnegative_float",
    "fraction",
    "open_fraction",
    "float_at_least",
    "add_threads",
    "add_device",
    "add_out",
    "available_cores",
    "check_jobs",
    "command_session",
    "add_data",
    "add_jobs",
    "set_command",
    "check_device",
    "prepare_out",
    "check_unique",
    "check_data",
    "check_retraction",
    "check_batch",
    "use_threads",
    "add_amp",
    "check_launch",
    "add_targets",
    "run_options",
    "result_files",
    "report_written",
]


class UsageError(Exception):
    """A bad input, found before the work: one line naming the option, value and fix."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``PROG: error: MESSAGE (see PROG
    --help)``, exit status 2 (argparse's default prints the usage first)."""

    def error(self, message: str):  # noqa: D102 - argparse's signature
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer >= {minimum}, got {text!r}"
        ) from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0)


def positive_float(text: str) -> float:
    """argparse type: a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one,
    else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _threads(text: str) -> int:
    value = _integer(text, 1)
    cores = available_cores()
    if value > cores:
        raise argparse.ArgumentTypeError(
            f"{value} is more than the {cores} CPU core(s) this process may use; give at most "
            f"{cores} (more threads than cores only slow every run down)"
        )
    return value


def _float(text: str, what: str, inside) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not inside(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    return _float(text, "a finite number >= 0", lambda v: 0 <= v < float("inf"))


def fraction(text: str) -> float:
    """argparse type: a float in [0, 1) (a momentum, a decay)."""
    return _float(text, "a number in [0, 1)", lambda v: 0 <= v < 1)


def open_fraction(text: str) -> float:
    """argparse type: a float in (0, 1) (a share of the data)."""
    return _float(text, "a number in (0, 1)", lambda v: 0 < v < 1)


def float_at_least(minimum: float):
    """argparse type: a finite float >= ``minimum``."""

    def parse(text: str) -> float:
        return _float(text, f"a finite number >= {minimum:g}", lambda v: minimum <= v < math.inf)

    return parse


def set_command(parser: argparse.ArgumentParser, handler) -> None:
    """Register ``handler`` and the command's full name (for its error lines)."""
    parser.set_defaults(handler=handler, command_name=parser.prog)


def add_targets(subparsers, name: str, help_text: str, *, dest: str = "target"):
    """A command with targets (``riemann-dnn NAME TARGET ...``): its subparsers, one of
    which is required (``dest``, shown as its upper-case metavar)."""
    parser = subparsers.add_parser(name, help=help_text)
    return parser.add_subparsers(dest=dest, metavar=dest.upper(), required=True)


def add_threads(parser, default: int = 1) -> None:
    parser.add_argument(
        "--threads",
        type=_threads,
        default=default,
        help=f"torch intra-op threads of each training process (default {default}; at most "
        "the cores available); fixed and recorded, so results do not depend on --jobs or "
        "the core count",
    )


def add_device(parser, help_text: str = "torch device: cpu, cuda, cuda:1, ...") -> None:
    parser.add_argument("--device", default="cpu", help=f"{help_text} (default cpu)")


def add_amp(parser) -> None:
    parser.add_argument(
        "--amp",
        choices=["off", "bf16"],
        default="off",
        help="bf16: forward pass and loss under torch.autocast in bfloat16 (for --device "
        "cuda; weights, gradients and the Riemannian step stay float32); recorded and "
        "hashed (default off)",
    )


def add_jobs(parser, default: int | None, help_text: str) -> None:
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=default,
        help=f"{help_text}; more than the cores available over --threads is capped, with a notice",
    )


def add_out(parser, help_text: str = "output directory") -> None:
    """``--out DIR`` and ``--wait``: a run locks its output directory while it writes there
    (:func:`prepare_out`); a second run into it is refused, or with ``--wait`` waits."""
    parser.add_argument("--out", default=None, help=help_text)
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if another run holds --out, wait for it to finish instead of refusing",
    )


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The values of the shared options a command's runs take (those of :func:`add_data`,
    :func:`add_device`, :func:`add_jobs` and :func:`add_threads`), by the names the
    experiments take them: ``data_dir``, ``source``, ``device``, ``jobs``, ``threads``."""
    return dict(
        data_dir=args.data_dir,
        source=args.source,
        device=args.device,
        jobs=args.jobs,
        threads=args.threads,
    )


def result_files(out: Path, stem: str) -> list[Path]:
    """A command's results in ``out``: ``STEM.json``, ``STEM.md`` and ``STEM.png``."""
    return [out / f"{stem}.{suffix}" for suffix in ("json", "md", "png")]


def report_written(paths: Sequence[Path], more: str = "", *, show: bool = True) -> None:
    """How a command that wrote results ends: the Markdown report among ``paths`` (with
    ``show``), then one line naming every file written, ``more`` appended."""
    if show:
        print(next(p for p in paths if p.suffix == ".md").read_text())
    print(f"wrote {', '.join(str(p) for p in paths)}{more}")


def add_data(parser, *, source: bool = True) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four MNIST IDX files (else $RIEMANN_DNN_DATA, "
        "the cache, or -- when neither is set -- the embedded 5k/1k subset)",
    )
    if source:
        parser.add_argument(
            "--source",
            choices=["auto", "full", "embedded"],
            default="auto",
            help="'full' requires the IDX files, 'embedded' uses the packaged subset",
        )


# -- checks ------------------------------------------------------------------------------------
def check_device(device: str, option: str = "--device") -> str:
    """The device name, or :class:`UsageError` if torch cannot use it here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(
            f"{option} {device}: not a torch device; use cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"{option} {device}: torch sees no CUDA device here (CUDA "
                f"build: {torch.version.cuda or 'no'}); use {option} cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"{option} {device}: only {torch.cuda.device_count()} CUDA "
                f"device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
            )
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise UsageError(
            f"{option} {device}: unsupported device type {dev.type!r}; use cpu or cuda"
        )
    elif dev.type != "cpu":
        backend = torch.backends.mps if dev.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise UsageError(
                f"{option} {device}: torch sees no {dev.type.upper()} device here; "
                f"use {option} cpu"
            )
    return device


def check_jobs(jobs: int | None, threads: int = 1, option: str = "--jobs") -> int:
    """The number of worker processes to start: ``jobs`` (None: as many as fit), capped at
    the cores available divided by ``threads`` (and by the processes of a ``torchrun``
    launch on this host) so workers never outnumber cores; a cap given ``jobs`` is told in
    one line on stderr."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = available_cores()
    limit = max(1, cores // (threads * local))
    if jobs is None:
        return limit
    if jobs > limit:
        launch = f" shared by {local} torchrun processes" if local > 1 else ""
        print(
            f"{_SESSION['command']}: {option} {jobs} capped at {limit} ({cores} CPU core(s)"
            f"{launch}, --threads {threads} each)",
            file=sys.stderr,
        )
        return limit
    return jobs


# -- the command in progress: its name, --wait, and the output directories it locked ----------
_SESSION: dict[str, Any] = {"command": "riemann-dnn", "line": None, "wait": False, "held": []}


@contextlib.contextmanager
def command_session(command: str, argv: Sequence[str], wait: bool = False) -> Iterator[None]:
    """Run one command: :func:`prepare_out` locks its output directories for it (``wait``:
    wait for another run's lock instead of refusing). When it ends, however it ends, the
    temporary files of interrupted writes are removed from them and they are released (the
    process's exit, even by ``kill -9``, releases them too; the next run into the directory
    removes what such a run left)."""
    for lock in _SESSION["held"]:  # left by a handler called outside a session
        lock.release()
    _SESSION.update(command=command, line=" ".join(["riemann-dnn", *argv]), wait=wait, held=[])
    try:
        yield
    finally:
        held, _SESSION["held"] = _SESSION["held"], []
        _SESSION.update(command="riemann-dnn", line=None, wait=False)
        for lock in reversed(held):  # a write error or Ctrl-C may have left temporaries
            _remove_temporaries(lock.folder)
            lock.release()


def _lock_out(out: Path, option: str) -> None:
    """Lock ``out`` for the command in progress (:mod:`riemann_dnn.experiments.lock`), then
    remove the temporary files a killed run may have left there. Under ``torchrun`` only
    rank 0 locks (the other ranks write into the same directory by design)."""
    from ..experiments.lock import OutputLockedError, describe_holder, lock_output

    if os.environ.get("RANK", "0") != "0":
        return

    def waiting(holder: dict) -> None:
        print(
            f"{_SESSION['command']}: {option} {out} is in use by {describe_holder(holder)}; "
            "waiting for it to finish (Ctrl-C to give up)",
            file=sys.stderr,
        )

    try:
        lock = lock_output(out, command=_SESSION["line"], wait=_SESSION["wait"], on_wait=waiting)
    except OutputLockedError as err:
        raise UsageError(
            f"{option} {out}: in use by {describe_holder(err.holder)}; wait for it to "
            f"finish (--wait), or give another {option}"
        ) from None
    _SESSION["held"].append(lock)
    _remove_temporaries(out)


def _remove_temporaries(folder: Path) -> None:
    from ..experiments.records import remove_temporaries

    remove_temporaries(folder)


def prepare_out(path: str | Path, option: str = "--out") -> Path:
    """Create the output directory, prove it writable (a temporary file is written and
    removed) and lock it for the command in progress (:func:`command_session`; released when
    the command ends); :class:`UsageError` naming the path when it is a file, under a file,
    not writable, or in use by another run (named by its pid, command and start time)."""
    out = Path(path)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under {parent}, which is a file"
            raise UsageError(f"{option} {out}: {where}; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UsageError(
            f"{option} {out}: cannot write there ({err.strerror or err}); give a "
            f"writable directory"
        ) from None
    _lock_out(out, option)
    return out


def check_unique(option: str, values: Sequence[Any]) -> list:
    """``values`` as a list, or :class:`UsageError` if one repeats (it would count twice)."""
    seen: set = set()
    for value in values:
        if value in seen:
            raise UsageError(
                f"{option} {' '.join(map(str, values))}: {value} is given more "
                f"than once; give each value once"
            )
        seen.add(value)
    return list(values)


def check_methods(option: str, methods: Sequence[str]) -> None:
    """Refuse methods whose optimizer this environment lacks (SGDP and AdamP need the
    ``adamp`` package, the ``study`` extra)."""
    from ..experiments.ensemble import missing_optimizers
    from ..experiments.methods import METHODS

    missing = [m for m in methods if missing_optimizers([METHODS[m].optimizer])]
    if missing:
        raise UsageError(
            f"{option} {' '.join(missing)}: needs the adamp package; install the study "
            'extra: pip install "riemann-dnn[study]"'
        )


def check_data(data_dir: str | None, source: str = "auto"):
    """Find and verify MNIST as the command will (:func:`riemann_dnn.data.load_mnist`; the
    load is cached, so the command's own load costs nothing); :class:`UsageError` naming
    ``--data-dir``, ``$RIEMANN_DNN_DATA`` or ``--source`` otherwise."""
    import warnings

    from ..data import MNISTError, MNISTNotFoundError, load_mnist
    from ..data.mnist import DATA_ENV_VAR, MNIST_FILES

    files = ", ".join(MNIST_FILES)
    env = os.environ.get(DATA_ENV_VAR, "")
    if source == "embedded" and data_dir is not None:
        raise UsageError(
            f"--source embedded --data-dir {data_dir}: the embedded subset takes "
            f"no directory; drop one of the two"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the command warns once itself
            return load_mnist(data_dir, source=source)
    except MNISTNotFoundError:
        if data_dir is not None:
            raise UsageError(
                f"--data-dir {data_dir}: no MNIST IDX files there or in its "
                f"mnist/ subdirectory ({files}, each optionally .gz); give the "
                f"directory that holds them"
            ) from None
        if env:
            raise UsageError(
                f"${DATA_ENV_VAR}={env}: no MNIST IDX files in it or its mnist/ "
                f"subdirectory; point it at them, or unset it to use the "
                f"embedded subset"
            ) from None
        raise UsageError(
            f"--source {source}: full MNIST not found (no --data-dir, "
            f"${DATA_ENV_VAR} unset, nothing in the cache); give --data-dir DIR "
            f"or use --source embedded"
        ) from None
    except MNISTError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"MNIST data: {first}") from None


def check_retraction(constraint: str, retraction: str | None) -> None:
    """:class:`UsageError` unless ``retraction`` (optionally ``+parallel``) is one of the
    ``constraint`` manifold's."""
    if retraction is None:
        return
    import torch

    from ..params import resolve_geometry

    try:
        resolve_geometry(constraint, retraction, torch.empty(4, 9))
    except (ValueError, KeyError) as err:
        raise UsageError(f"--retraction {retraction}: {err}") from None


def check_launch(batch_size: int | None = None, option: str = "--batch-size") -> int:
    """The world size of a ``torchrun`` launch (1 without one), read from its environment
    before any process group is joined; :class:`UsageError` when a global batch of
    ``batch_size`` cannot give every rank at least one sample."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return 1
    try:
        world = int(os.environ["WORLD_SIZE"])
    except ValueError:
        raise UsageError(
            f"$WORLD_SIZE={os.environ['WORLD_SIZE']}: not an integer; launch with torchrun"
        ) from None
    if batch_size is not None and batch_size < world:
        raise UsageError(
            f"{option} {batch_size}: smaller than the {world} processes of "
            f"this torchrun launch; give {option} >= {world}"
        )
    return world


def check_batch(option: str, batch: int, protocol, images: int, source) -> None:
    """:class:`UsageError` unless the MNIST protocol ``protocol`` (a
    :class:`~riemann_dnn.experiments.config.Protocol`) fits ``images`` training images and
    every epoch of its training stages (rate selection, training) has minibatches of
    ``batch`` (given as ``option``) of at least 2 images, which BatchNorm needs to train."""
    try:
        stages = protocol.training_sets(images)
    except ValueError as err:
        raise UsageError(f"MNIST data ({source}): {err}") from None
    if batch < 2:
        raise UsageError(
            f"{option} {batch}: BatchNorm cannot train on one image per minibatch; give "
            f"{option} >= 2"
        )
    for stage, size in stages.items():
        what = f"the {size} images {_TRAINING_STAGES[stage]} ({source})"
        if batch > size:
            raise UsageError(
                f"{option} {batch}: more than {what}, so an epoch would be one step; give at "
                f"most {size}"
            )
        if size % batch == 1:
            raise UsageError(
                f"{option} {batch}: an epoch over {what} would end with a minibatch of one "
                f"image, on which BatchNorm cannot train; give another size"
            )


_TRAINING_STAGES = {
    "selection_train": "each learning-rate candidate trains on",
    "train": "a run trains on after the rate selection",
}


def use_threads(threads: int) -> None:
    """Set this process's torch intra-op threads (the in-process training path)."""
    import torch

    torch.set_num_threads(threads)
