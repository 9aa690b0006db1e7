"""RiemannianSGD reads .grad when step() runs: DistributedDataParallel and gradient
accumulation give the full-batch step (unlike projecting local gradients in a hook)."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from riemann_dnn.experiments.distributed import shutdown
from riemann_dnn.optim import RiemannianSGD

STEPS = 4
BATCH = 16


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.Tanh(), nn.Linear(8, 3)).double()


def make_optimizer(model: nn.Module) -> RiemannianSGD:
    layers = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    groups = [
        {"params": [layers[0].weight], "manifold": "oblique"},
        {"params": list(layers[2].parameters())},
    ]
    return RiemannianSGD(groups, lr=0.3, momentum=0.9, nesterov=True)


def full_batch(step: int):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(BATCH, 6, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, 3, (BATCH,), generator=gen)


def _train_and_save(rank: int, world_size: int, directory: str) -> None:
    model = nn.parallel.DistributedDataParallel(make_model())
    opt = make_optimizer(model)
    share = BATCH // world_size
    for step in range(STEPS):
        x, y = full_batch(step)
        mine = slice(rank * share, (rank + 1) * share)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[mine]), y[mine]).backward()  # all-reduce: mean
        opt.step()
    torch.save([p.detach() for p in model.module.parameters()], f"{directory}/rank{rank}.pt")


def _worker(rank: int, world_size: int, directory: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{directory}/rendezvous", rank=rank, world_size=world_size
    )
    try:
        _train_and_save(rank, world_size, directory)  # returns: the DDP wrapper is freed
    finally:
        shutdown()  # frees what still holds the group, then leaves it


def single_process_run(accumulate: int = 1) -> list[torch.Tensor]:
    model = make_model()
    opt = make_optimizer(model)
    for step in range(STEPS):
        x, y = full_batch(step)
        opt.zero_grad()
        for chunk_x, chunk_y in zip(x.chunk(accumulate), y.chunk(accumulate)):
            loss = nn.functional.cross_entropy(model(chunk_x), chunk_y) / accumulate
            loss.backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
@pytest.mark.skipif(sys.platform == "win32", reason="file:// rendezvous on POSIX paths")
def test_two_process_ddp_equals_one_process_on_the_full_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    replicas = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    reference = single_process_run()
    for i, (a, b, ref) in enumerate(zip(*replicas, reference)):
        assert torch.equal(a, b), f"parameter {i}: the two replicas diverged"
        err = (a - ref).abs().max().item()
        assert err < 1e-12, f"parameter {i}: DDP differs from the full-batch step by {err:.3g}"
    assert (a - make_model()[2].bias.detach()).abs().max() > 1e-3  # the weights did move


def test_accumulated_backward_passes_equal_one_on_the_joined_batch():
    joined, accumulated = single_process_run(accumulate=1), single_process_run(accumulate=2)
    for i, (a, b) in enumerate(zip(joined, accumulated)):
        err = (a - b).abs().max().item()
        assert err < 1e-12, f"parameter {i}: accumulation differs by {err:.3g}"
    rows = torch.linalg.vector_norm(joined[0], dim=1)
    assert (rows - 1).abs().max() < 1e-14
