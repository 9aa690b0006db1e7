"""Run under torchrun (or plainly): 5 RiemannianSGD steps of a small BN model in float64 on a
fixed global batch of 16, data-parallel over the launch; rank 0 saves the state dict to
``sys.argv[1]``. Used by ``test_torchrun.py``."""

import sys

import torch
from torch import nn

from riemann_dnn.experiments import distributed
from riemann_dnn.optim import RiemannianSGD

torch.set_num_threads(1)
launch = distributed.launch_from_env("cpu")
torch.manual_seed(0)
raw = nn.Sequential(
    nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
).double()
optimizer = RiemannianSGD(
    [
        {"params": [raw[0].weight], "manifold": "oblique"},
        {"params": [*raw[1].parameters(), *raw[3].parameters()]},
    ],
    lr=0.3,
    momentum=0.9,
)
model = distributed.prepare_ddp_model(raw, launch) if launch.distributed else raw
for step in range(5):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)
    mine = distributed.batch_share(torch.arange(16), launch.rank, launch.world_size)
    optimizer.zero_grad()
    # this rank's part of the global batch's mean loss, times the world size (DDP averages)
    loss = nn.functional.cross_entropy(model(x[mine]), y[mine], reduction="sum") / 16
    (loss * launch.world_size).backward()
    optimizer.step()
if launch.is_main:
    torch.save(raw.state_dict(), sys.argv[1])
del model, optimizer  # nothing may hold the process group past shutdown
distributed.shutdown()
