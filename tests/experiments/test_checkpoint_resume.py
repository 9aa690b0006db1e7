"""An ensemble killed with SIGKILL mid-run resumes from its last epoch checkpoint and writes
the records an uninterrupted run writes (riemann_dnn.experiments.protocol.train_runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    from riemann_dnn.experiments.config import Protocol, RunConfig
    from riemann_dnn.experiments.protocol import train_runs
    from riemann_dnn.experiments.runs import MNISTTensors
    out, kill_after = sys.argv[1], int(sys.argv[2])
    data = MNISTTensors.load(source="embedded")
    protocol = Protocol(lr_candidates=(1e-2, 1e-3), selection_train=300, selection_val=200,
                        selection_epochs=3, min_epochs=3, max_epochs=5, validation=500,
                        train_images=1500)
    configs = [RunConfig(depth=2, method="un", seed=s, protocol=protocol, data=data.source)
               for s in range(2)]
    ticks = [0]
    def progress(n):
        ticks[0] += n
        if kill_after and ticks[0] >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # a real kill -9, right after a checkpoint
    train_runs(configs, data, out, progress=progress)
""")

_TIMING = {"seconds", "selection_seconds", "epoch_seconds"}


def _run(out: Path, kill_after: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(kill_after)], env=env, cwd=ROOT, timeout=300
    ).returncode


def _records(out: Path) -> dict[str, dict]:
    return {
        p.name: {k: v for k, v in json.loads(p.read_text()).items() if k not in _TIMING}
        for p in sorted((out / "runs").glob("*.json"))
    }


@pytest.mark.parametrize("kill_after", [2, 5])  # in the rate selection; in the training
def test_sigkill_then_rerun_gives_the_uninterrupted_records(tmp_path, kill_after):
    assert _run(tmp_path / "whole", 0) == 0
    killed = tmp_path / "killed"
    assert _run(killed, kill_after) == -9, "the run was not killed"
    assert list((killed / "checkpoints").glob("*.pt")), "no checkpoint was written"
    assert _run(killed, 0) == 0
    whole, resumed = _records(tmp_path / "whole"), _records(killed)
    assert len(whole) == 2 and whole.keys() == resumed.keys()
    for name in whole:
        assert resumed[name] == whole[name], f"{name} differs after the kill and rerun"
    assert not list((killed / "checkpoints").glob("*.pt")), "checkpoint left after the end"
