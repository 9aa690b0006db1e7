"""Compile ``oblique_sgd.c`` at first use and load it with ctypes.

Nothing is compiled at import. :func:`load` (and :func:`load_kernel`, for another kernel of
this folder) compiles the shipped C source with the system C
compiler (``$CC``, else sysconfig's ``CC``, else ``cc``/``gcc``/``clang`` on ``PATH``) into a
per-user cache, ``$RIEMANN_DNN_KERNEL_CACHE`` or ``~/.cache/riemann_dnn/kernels``, under a
directory named by a hash of the source, the flags, the compiler (path, size, mtime) and the
CPU (``-march=native`` code is only valid there). The library is written to a temporary
file and renamed into place, so processes compiling at once each get a complete library.
Later processes load the cached one without compiling. ``RIEMANN_DNN_NATIVE=0`` disables
the kernel (the callers then use the eager torch path); ``RIEMANN_DNN_KERNEL_MARCH`` replaces
``-march=native`` (e.g. ``x86-64-v3``).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["load", "load_kernel", "NativeLibrary", "SOURCE", "cache_dir"]

SOURCE = Path(__file__).with_name("oblique_sgd.c")
#: Headers the kernel sources may include (hashed with each source).
HEADERS = tuple(sorted(Path(__file__).parent.glob("*.h")))
_BASE_FLAGS = (
    "-O3",
    "-std=gnu11",
    "-ffp-contract=fast",
    "-shared",
    "-fPIC",
    "-fvisibility=hidden",
)
_LOCK = threading.Lock()
_RESULT: tuple[NativeLibrary | None, str] | None = None
_KERNELS: dict[Path, tuple[NativeLibrary | None, str]] = {}


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded kernel library: the ctypes function and how it was obtained."""

    function: ctypes._CFuncPtr
    path: Path
    compiled: bool  # compiled by this process (False: loaded from the cache)
    openmp: bool
    compile_seconds: float


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$RIEMANN_DNN_KERNEL_CACHE`` overrides)."""
    env = os.environ.get("RIEMANN_DNN_KERNEL_CACHE")
    if env:
        return Path(env)
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "riemann_dnn" / "kernels"


def _find_compiler() -> str | None:
    candidates = [
        os.environ.get("CC"),
        (sysconfig.get_config_var("CC") or "").split(" ")[0],
        "cc",
        "gcc",
        "clang",
    ]
    for name in candidates:
        if name:
            found = shutil.which(name)
            if found:
                return found
    return None


def _cpu_identity() -> str:
    """The CPU model and feature flags (what ``-march=native`` compiles for)."""
    parts = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.strip())
                if line.strip() == "":  # first processor is enough
                    break
    except OSError:
        pass
    return "\n".join(parts)


def _flag_sets(compiler: str) -> list[tuple[str, ...]]:
    """Flag sets to try, best first: native code with OpenMP, then without each.
    ``RIEMANN_DNN_KERNEL_MARCH`` names another ``-march`` (e.g. ``x86-64-v3`` for code that
    runs on any AVX2 machine, or under valgrind, which lacks AVX-512)."""
    march = os.environ.get("RIEMANN_DNN_KERNEL_MARCH", "native").strip()
    native = () if sys.platform == "darwin" and "clang" in compiler else (f"-march={march}",)
    return [native + ("-fopenmp",), ("-fopenmp",), native, ()]


def _compile(
    compiler: str, flags: tuple[str, ...], target: Path, source: Path = SOURCE
) -> str | None:
    """Compile to ``target`` atomically; returns an error message or None."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        cmd = [compiler, *_BASE_FLAGS, *flags, str(source), "-o", tmp, "-lm"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}"
        os.replace(tmp, target)  # atomic: a reader sees no file or a complete one
        return None
    except (OSError, subprocess.SubprocessError) as err:
        return f"{compiler}: {err}"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _open(path: Path) -> ctypes._CFuncPtr:
    lib = ctypes.CDLL(str(path))  # CDLL releases the GIL during calls
    fn = lib.rdnn_oblique_sgd
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [
        i64,
        vp,
        vp,
        vp,  # normalize flags (int8 per tensor)
        vp,
        vp,
        vp,
        ctypes.c_int,
        vp,
        vp,
        ctypes.c_double,
        ctypes.c_double,
        ctypes.c_int,
        ctypes.c_double,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        vp,
    ]
    fn.restype = i64
    fn.has_openmp = bool(lib.rdnn_has_openmp())
    finite = lib.rdnn_all_finite
    finite.argtypes = [i64, vp, vp, ctypes.c_int]
    finite.restype = ctypes.c_int
    fn.all_finite = finite
    step = lib.rdnn_step  # the prepared form: one pointer to an rdnn_args struct
    step.argtypes = [vp]
    step.restype = i64
    fn.step = step
    return fn


def _build(kernel: Path = SOURCE, opener=None) -> tuple[NativeLibrary | None, str]:
    import time

    opener = _open if opener is None else opener
    if os.environ.get("RIEMANN_DNN_NATIVE", "1").strip().lower() in ("0", "false", "off", "no"):
        return None, "disabled by RIEMANN_DNN_NATIVE=0"
    if not kernel.exists():
        return None, f"kernel source {kernel} is missing from the installation"
    compiler = _find_compiler()
    if compiler is None:
        return None, "no C compiler found (set CC or install gcc/clang)"
    source = kernel.read_bytes() + b"".join(h.read_bytes() for h in HEADERS)
    stat = os.stat(compiler)
    errors = []
    for flags in _flag_sets(compiler):
        key = hashlib.sha256(
            b"\0".join(
                [
                    source,
                    " ".join(_BASE_FLAGS + flags).encode(),
                    os.path.realpath(compiler).encode(),
                    f"{stat.st_size}:{stat.st_mtime_ns}".encode(),
                    _cpu_identity().encode(),
                    platform.platform().encode(),
                ]
            )
        ).hexdigest()[:24]
        target = cache_dir() / key / f"{kernel.stem}.so"
        compiled, seconds = False, 0.0
        if not target.exists():
            start = time.perf_counter()
            error = _compile(compiler, flags, target, kernel)
            seconds = time.perf_counter() - start
            if error is not None:
                errors.append(error)
                continue
            compiled = True
        try:
            fn = opener(target)
        except (OSError, AttributeError) as err:
            errors.append(f"loading {target}: {err}")
            continue
        return NativeLibrary(fn, target, compiled, fn.has_openmp, seconds), ""
    return None, "compiling the kernel failed: " + " | ".join(errors)


def load() -> tuple[NativeLibrary | None, str]:
    """The kernel library (compiled or loaded once per process) and, when it is ``None``,
    why (``""`` otherwise)."""
    global _RESULT
    if _RESULT is None:
        with _LOCK:
            if _RESULT is None:
                _RESULT = _build()
    return _RESULT


def load_kernel(source: Path, opener) -> tuple[NativeLibrary | None, str]:
    """As :func:`load`, for another kernel source of this folder: ``opener(path)`` loads
    the compiled library and returns its ctypes function (with ``has_openmp`` set)."""
    if source not in _KERNELS:
        with _LOCK:
            if source not in _KERNELS:
                _KERNELS[source] = _build(source, opener)
    return _KERNELS[source]


def _reset() -> None:
    """Forget the loaded libraries (tests)."""
    global _RESULT
    _RESULT = None
    _KERNELS.clear()
