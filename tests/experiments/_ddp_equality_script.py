"""Run under torchrun (or plainly): 5 RiemannianSGD steps of a small BN model in float64 on a
fixed global batch of 16, data-parallel over the launch through the experiments' one loop
(``train_epoch``); rank 0 saves the state dict to ``sys.argv[1]``. Used by
``test_torchrun.py``."""

import sys

import torch
from torch import nn

from riemann_dnn.experiments import distributed
from riemann_dnn.experiments.epoch import train_epoch
from riemann_dnn.optim import RiemannianSGD

torch.set_num_threads(1)
launch = distributed.launch_from_env("cpu")
torch.manual_seed(0)
model = nn.Sequential(
    nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)
).double()
distributed.convert_batchnorm(model)  # BN over the global batch
optimizer = RiemannianSGD(
    [
        {"params": [model[0].weight], "manifold": "oblique"},
        {"params": [*model[1].parameters(), *model[3].parameters()]},
    ],
    lr=0.3,
    momentum=0.9,
)
for step in range(5):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(16, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (16,), generator=gen)

    def objective(mine, size):
        # this rank's part of the global batch's mean loss: the parts sum to it
        loss = nn.functional.cross_entropy(model(x[mine]), y[mine], reduction="sum") / size
        return loss, (loss.detach(),)

    train_epoch(optimizer, [torch.arange(16)], objective, launch=launch)
if launch.is_main:
    torch.save(model.state_dict(), sys.argv[1])
model = optimizer = None  # nothing may hold the process group past shutdown
distributed.shutdown()
