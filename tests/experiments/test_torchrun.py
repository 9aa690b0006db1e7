"""torchrun paths: one model on many processes (DDP) and sharded sweeps, on 2 gloo CPU
processes through ``python -m torch.distributed.run`` subprocesses (CUDA variants marked gpu)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from riemann_dnn.experiments.distributed import (
    GlobalBatchNorm,
    batch_share,
    convert_batchnorm,
    shard,
)
from riemann_dnn.experiments.records import read_json

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.skipif(
        not dist.is_available() or not dist.is_gloo_available(),
        reason="torch.distributed with gloo is not available",
    ),
    pytest.mark.skipif(sys.platform == "win32", reason="torchrun subprocesses on POSIX"),
]
TINY = [
    "--source",
    "embedded",
    "--quick",
    "--selection-epochs",
    "1",
    "--min-epochs",
    "1",
    "--max-epochs",
    "2",
    "--lr-candidates",
    "1e-2",
    "1e-3",
]
SCENES = [
    "segment",
    "--train-scenes",
    "32",
    "--test-scenes",
    "16",
    "--canvas",
    "32",
    "--width",
    "4",
    "--depth",
    "2",
    "--kernel",
    "3",
    "--batch-size",
    "8",
    "--quiet",
    "--resume",
]


def _env() -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo"),
    }
    shared = ROOT.parent / "shared" / "data"
    if shared.is_dir():  # else the embedded MNIST subset (a named place that is absent is refused)
        env.setdefault("RIEMANN_DNN_DATA", str(shared))
    return env


def _command(nproc: int | None, args: list[str]) -> list[str]:
    launcher = (
        []
        if nproc is None
        else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    )
    script = args[0] if args[0].endswith(".py") else None
    return [
        sys.executable,
        *launcher,
        *([script] if script else ["-m", "riemann_dnn.cli"]),
        *(args[1:] if script else args),
    ]


# gloo's known teardown abort (pytorch/pytorch#179291): a worker thread outlives the process
# group and aborts the process at exit, after the work is done. It struck twice in about 80
# launches on this 2-core machine (not reproducible on demand); such a launch is retried once.
_GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def _run(nproc: int | None, args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    for attempt in (1, 2):
        result = subprocess.run(
            _command(nproc, args),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )
        if result.returncode == 0 or _GLOO_TEARDOWN_ABORT not in result.stderr:
            break
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stderr[-3000:]}"
    return result


# -- helpers, in this process ---------------------------------------------------------------------
def test_shard_splits_a_task_list_into_disjoint_shares_that_cover_it():
    items = list(range(7))
    shares = [shard(items, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == items and shares[0] == [0, 3, 6]
    with pytest.raises(ValueError, match="rank"):
        shard(items, 3, 3)


def test_batch_share_gives_each_rank_a_contiguous_slice_of_the_global_batch():
    index = torch.arange(10, 20)
    parts = [batch_share(index, r, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), index), parts
    assert [len(p) for p in parts] == [4, 3, 3]


def test_global_batchnorm_in_one_process_is_batchnorm_sharing_its_tensors():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3)).double()
    reference = torch.nn.BatchNorm2d(3).double()
    reference.load_state_dict(model[1].state_dict())
    weight = model[1].weight
    convert_batchnorm(model)
    assert isinstance(model[1], GlobalBatchNorm) and model[1].weight is weight
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    hidden = model[0](x)
    err = (model[1](hidden) - reference(hidden)).abs().max().item()
    assert err < 1e-12, f"training-mode output differs from BatchNorm2d by {err:.3g}"
    for key, value in reference.state_dict().items():
        err = (model[1].state_dict()[key].double() - value.double()).abs().max().item()
        assert err < 1e-12, f"{key} differs by {err:.3g}"
    model.eval(), reference.eval()
    assert torch.allclose(model[1](hidden), reference(hidden), atol=1e-12)


# -- one model, two processes ---------------------------------------------------------------------
def test_two_process_ddp_with_batchnorm_equals_one_process_on_the_global_batch(tmp_path):
    """BN included: GlobalBatchNorm makes DDP's 2 ranks normalise over the global batch."""
    script = str(ROOT / "tests" / "experiments" / "_ddp_equality_script.py")
    _run(None, [script, str(tmp_path / "one.pt")])
    _run(2, [script, str(tmp_path / "two.pt")])
    one, two = (torch.load(tmp_path / f, weights_only=True) for f in ("one.pt", "two.pt"))
    for key in one:
        err = (one[key].double() - two[key].double()).abs().max().item()
        assert err < 1e-12, f"{key}: 2 processes differ from 1 by {err:.3g}"
    assert float(one["1.num_batches_tracked"]) == 5


def _record(out: Path) -> dict:
    return read_json(out / "run.json")


def test_train_archbn_on_two_processes_follows_one_process(tmp_path):
    """One engine under torchrun: ``bsgd-wd`` (weight decay selected with the rate) on 1 and
    2 gloo processes; 1 process gives exactly the record of ``train_runs`` in this process,
    2 processes (each a slice of every global batch) follow it to rounding."""
    from riemann_dnn.experiments.config import quick_protocol
    from riemann_dnn.experiments.protocol import train_runs
    from riemann_dnn.experiments.runs import MNISTTensors, run_configs

    method = ["--method", "bsgd-wd"]
    for nproc in (1, 2):
        _run(nproc, ["train", "archbn", *method, *TINY, "--out", str(tmp_path / f"p{nproc}")])
    one, two = _record(tmp_path / "p1"), _record(tmp_path / "p2")
    assert (one["config"]["world_size"], two["config"]["world_size"]) == (1, 2)
    assert (two["world_size"], two["rank"]) == (2, 0)
    assert one["config"]["run_hash"] != two["config"]["run_hash"], (
        "a layout that changes rounding must not share a record"
    )
    data = MNISTTensors.load(source="embedded")
    protocol = quick_protocol(
        selection_epochs=1, min_epochs=1, max_epochs=2, lr_candidates=(1e-2, 1e-3)
    )
    configs = run_configs(data, depths=[2], methods=["bsgd-wd"], runs=1, seed=0, protocol=protocol)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (direct,) = train_runs(configs, data, tmp_path / "direct")
    finally:
        torch.set_num_threads(previous)
    (path,) = (tmp_path / "direct" / "runs").glob("*.json")
    timing = {"seconds", "selection_seconds", "epoch_seconds", "summary", "identity"}
    assert {k: v for k, v in one.items() if k not in timing} == {
        k: v for k, v in read_json(path).items() if k not in timing
    }, "torchrun with 1 process must give train_runs' record"
    for key in ("chosen_lr", "chosen", "epochs", "stop_reason"):
        assert one[key] == two[key], key
    assert "weight_decay" in two["chosen"] and "interior" in two["selection"]
    # the 6 candidates (rate x weight decay) after their selection epoch, and the first
    # epoch of training, agree to rounding; later epochs drift further: with the summed
    # loss a step is ~1 on the mean gradient, and a max-pool or ReLU that flips on a
    # rounding difference moves the trajectory visibly (measured: 1e-6 after 3 batches,
    # 1% after an epoch)
    for a, b in zip(one["selection"]["candidates"], two["selection"]["candidates"]):
        for key in ("first_loss", "last_loss", "val_error"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5), (key, a, b)
    assert math.isclose(
        one["curves"]["train_loss"][0], two["curves"]["train_loss"][0], rel_tol=1e-5
    )
    for a, b in zip(one["filter_norms"], two["filter_norms"]):
        assert math.isclose(a, b, rel_tol=1e-2), (one["filter_norms"], two["filter_norms"])
    assert abs(one["test_error"] - two["test_error"]) <= 1e-2


def test_segment_on_two_processes_follows_one_process(tmp_path):
    _run(None, [*SCENES, "--epochs", "2", "--out", str(tmp_path / "one")])
    _run(2, [*SCENES, "--epochs", "2", "--out", str(tmp_path / "two")])
    one, two = (
        torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("one", "two")
    )
    for key, value in one["model"].items():
        err = (value.double() - two["model"][key].double()).abs().max().item()
        assert err < 1e-5, f"{key}: 2 processes differ from 1 by {err:.3g} (float32)"
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["rank"]) == (2, 0)


# -- sweeps ----------------------------------------------------------------------------------------
TABLE = [
    "reproduce",
    "table2",
    *TINY,
    "--runs",
    "2",
    "--depths",
    "2",
    "--methods",
    "un",
    "--jobs",
    "1",
]


def _numbers(table: dict) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "epoch_seconds_per_run"} for row in table["rows"]
    ]


def test_sharded_table2_equals_the_single_process_table(tmp_path):
    _run(None, [*TABLE, "--out", str(tmp_path / "one")])
    _run(2, [*TABLE, "--out", str(tmp_path / "two")])
    one, two = (read_json(tmp_path / d / "table2.json") for d in ("one", "two"))
    assert _numbers(one) == _numbers(two)
    assert one["identity"] == two["identity"]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    records = [json.loads(p.read_text()) for p in sorted((tmp_path / "two" / "runs").glob("*"))]
    assert sorted(r["rank"] for r in records) == [0, 1], "each rank trains its share"
    assert {r["world_size"] for r in records} == {2}
    names = sorted(p.name for p in (tmp_path / "one" / "runs").glob("*.json"))
    assert names == sorted(p.name for p in (tmp_path / "two" / "runs").glob("*.json"))


# -- kill -9 of one rank, then the same command --------------------------------------------------
def _rank_pid(parent: int, rank: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{parent}/task/{parent}/children")
        for pid in children.read_text().split() if children.exists() else []:
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(pid)
        time.sleep(0.1)
    raise AssertionError(f"no rank-{rank} child of torchrun {parent}")


def _kill_rank_1_once(args: list[str], out: Path, checkpointed) -> None:
    """Run ``args`` on 2 processes into ``out`` and SIGKILL rank 1 as soon as
    ``checkpointed()`` is true; torchrun must then fail."""
    proc = subprocess.Popen(
        _command(2, [*args, "--out", str(out)]),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        victim = _rank_pid(proc.pid, 1)
        deadline = time.monotonic() + 180
        while not checkpointed() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "torchrun must fail when a rank is killed"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_segment_resumes_after_kill_9_of_one_rank_with_the_uninterrupted_result(tmp_path):
    args = [*SCENES, "--epochs", "6"]
    _run(2, [*args, "--out", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    _kill_rank_1_once(args, killed, lambda: (killed / "checkpoint.pt").exists())
    epoch = torch.load(killed / "checkpoint.pt", weights_only=True)["epoch"]
    assert 1 <= epoch < 6, f"the kill came too late to test a resume (epoch {epoch})"
    _run(2, [*args, "--out", str(killed)])
    whole, resumed = (
        torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("whole", "killed")
    )
    for key, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][key]), f"{key} differs after the resume"
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole["history"]]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed["history"]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_train_archbn_resumes_after_kill_9_of_one_rank_with_the_uninterrupted_record(tmp_path):
    args = [
        "train",
        "archbn",
        "--source",
        "embedded",
        "--quick",
        "--selection-epochs",
        "2",
        "--min-epochs",
        "6",
        "--max-epochs",
        "6",
        "--lr-candidates",
        "1e-2",
        "1e-3",
    ]
    _run(2, [*args, "--out", str(tmp_path / "whole")])
    killed = tmp_path / "killed"
    _kill_rank_1_once(args, killed, lambda: bool(list((killed / "checkpoints").glob("*.pt"))))
    assert not (killed / "run.json").exists(), "the kill came too late to test a resume"
    _run(2, [*args, "--out", str(killed)])
    timing = {"seconds", "selection_seconds", "epoch_seconds", "summary"}  # summary: timings
    whole, resumed = (
        {k: v for k, v in _record(tmp_path / d).items() if k not in timing}
        for d in ("whole", "killed")
    )
    assert whole == resumed
    assert (
        _record(tmp_path / "whole")["summary"]["rows"][0]["mean"]
        == _record(killed)["summary"]["rows"][0]["mean"]
    )
    assert not list((killed / "checkpoints").glob("*.pt")), "checkpoint left after the end"


# -- usage errors under torchrun --------------------------------------------------------------------
def test_segment_comparison_under_torchrun_is_one_usage_line(tmp_path):
    env = {
        **_env(),
        "RANK": "0",
        "WORLD_SIZE": "2",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "1",
        "LOCAL_RANK": "0",
    }
    result = subprocess.run(
        _command(None, [*SCENES, "--seed", "0", "1", "--out", str(tmp_path)]),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "one --method, one --seed and one --lr" in result.stderr


# -- GPUs -----------------------------------------------------------------------------------------
def _gpus() -> int:
    return min(2, torch.cuda.device_count()) if torch.cuda.is_available() else 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_archbn_ddp_on_cuda_with_bf16_autocast(tmp_path):
    _run(
        _gpus(),
        ["train", "archbn", *TINY, "--device", "cuda", "--amp", "bf16", "--out", str(tmp_path)],
    )
    record = _record(tmp_path)
    assert record["config"]["amp"] == "bf16" and record["device"].startswith("cuda")
    assert record["world_size"] == _gpus() and record["test_error"] < 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sharded_table2_on_cuda_equals_one_process(tmp_path):
    _run(None, [*TABLE, "--device", "cuda", "--out", str(tmp_path / "one")])
    _run(_gpus(), [*TABLE, "--device", "cuda", "--out", str(tmp_path / "two")])
    one, two = (read_json(tmp_path / d / "table2.json") for d in ("one", "two"))
    # on CUDA the stacked ensemble's kernels may round differently for another ensemble size
    # (the split of the task list depends on the world size): same rates and epochs, test
    # errors within an image or two
    for a, b in zip(one["rows"], two["rows"]):
        assert (a["chosen_lrs"], a["epochs"]) == (b["chosen_lrs"], b["epochs"]), (a, b)
        assert max(abs(x - y) for x, y in zip(a["test_errors"], b["test_errors"])) <= 2e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_segment_ddp_on_cuda_with_syncbatchnorm(tmp_path):
    _run(_gpus(), [*SCENES, "--epochs", "2", "--device", "cuda", "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == _gpus() and metrics["epochs_done"] == 2
