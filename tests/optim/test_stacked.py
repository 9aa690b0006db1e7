import torch
from torch import nn

from riemann_dnn.optim import StackedModules


def _net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, bias=False), nn.BatchNorm2d(3), nn.ReLU())


def test_estimate_batchnorm_gives_the_average_of_batch_statistics():
    stack = StackedModules([_net(0), _net(1)])
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 8, 1, 6, 6, generator=gen) * (k + 1) for k in range(3)]
    for _ in range(4):  # some training first, so the running statistics are stale
        stack.forward(torch.randn(2, 8, 1, 6, 6, generator=gen) + 5)
    tracked = stack.buffers["1.num_batches_tracked"].clone()
    stack.estimate_batchnorm(batches)
    for copy in range(2):
        conv = stack.params["0.weight"][copy].detach()
        outs = [torch.nn.functional.conv2d(b[copy], conv) for b in batches]
        means = torch.stack([o.mean((0, 2, 3)) for o in outs])
        variances = torch.stack([o.transpose(0, 1).flatten(1).var(1) for o in outs])
        torch.testing.assert_close(stack.buffers["1.running_mean"][copy], means.mean(0))
        torch.testing.assert_close(stack.buffers["1.running_var"][copy], variances.mean(0))
    assert torch.equal(stack.buffers["1.num_batches_tracked"], tracked)
    assert stack._base[1].momentum == 0.1  # the module's momentum is restored


def test_estimate_batchnorm_does_not_touch_the_weights():
    stack = StackedModules([_net(0), _net(1)])
    before = {k: v.detach().clone() for k, v in stack.params.items()}
    stack.estimate_batchnorm([torch.randn(2, 4, 1, 6, 6)])
    assert all(torch.equal(before[k], v) for k, v in stack.params.items())
