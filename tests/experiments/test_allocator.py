"""retain_freed_memory: a loop that allocates and frees a large tensor stops page-faulting."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from riemann_dnn.experiments.allocator import retain_freed_memory
applied = retain_freed_memory() if sys.argv[1] == "retain" else None
x = torch.randn(1 << 20)                    # 4 MiB


def step():                                 # a step's tensors, all freed at its end
    results = [x * k for k in range(24)]     # 96 MiB
    return sum(float(r[0]) for r in results)


for _ in range(3):
    step()                                  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str, env: dict | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_removes_the_page_faults_of_a_reallocated_block():
    """20 steps that each allocate and free 96 MiB (24,576 pages) fault fewer pages than one
    step's worth, i.e. the freed blocks are reused.
    Without the call a fresh process faulted 0.16-0.5 million pages here (glibc returns the
    freed blocks, or trims them, and faults them in again), though how many depends on
    glibc's dynamic thresholds, i.e. on what the process allocated before."""
    applied, retained = _faults("retain")
    if applied != "True":
        pytest.skip("this libc ignores mallopt (not glibc)")
    assert retained < 24 * 1024


def test_the_environment_wins_over_retain_freed_memory(monkeypatch):
    import os

    env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
    applied, _ = _faults("retain", env)
    assert applied == "False"
