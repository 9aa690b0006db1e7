"""The model helper (riemann_dnn.params.groups): which weights are scale-invariant."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.params import param_groups, scale_invariant_weights, verify_scale_invariance


class FeaturePool(nn.Module):
    """Max-pooling of width 2 over the feature dimension (ArchBN: 64 -> 32)."""

    def forward(self, x):
        return x.view(x.shape[0], -1, 2).amax(-1)


def archbn(depth: int = 2) -> nn.Sequential:
    layers, width = [], 784
    for _ in range(depth):
        layers += [nn.Linear(width, 64, bias=False), nn.BatchNorm1d(64), nn.ReLU(), FeaturePool()]
        width = 32
    layers.append(nn.Linear(32, 10, bias=False))
    return nn.Sequential(*layers)


class ConvNet(nn.Module):
    """conv1 -> BN (invariant), conv2 with bias -> BN (invariant: BN removes the bias),
    conv3 -> ReLU (not), a residual around bn4 (not), classifier (not)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 1)
        self.conv4 = nn.Conv2d(8, 8, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.conv3(x))
        h = self.conv4(x)
        x = self.bn4(h) + h  # h is used outside the BN: not scale-invariant
        return self.head(x.mean(dim=(2, 3)))


class Branchy(ConvNet):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        if x.mean() > 0:
            x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


class Shared(nn.Module):
    """One layer called twice, once into a BN and once not: not invariant."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6, bias=False)
        self.bn = nn.BatchNorm1d(6)
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(self.fc(self.bn(self.fc(x))))


def _images(seed=0, n=16):
    return torch.randn(n, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("use_hooks", [False, True], ids=["fx", "hooks"])
def test_archbn_groups_pick_exactly_the_bn_fed_weights(use_hooks):
    torch.manual_seed(0)
    model = archbn(depth=4)
    example = torch.rand(8, 784) if use_hooks else None
    groups = param_groups(model, example_input=example, lr=0.01)
    assert groups[0]["names"] == ["0.weight", "4.weight", "8.weight", "12.weight"]
    assert groups[0]["manifold"] == "oblique" and groups[0]["lr"] == 0.01
    assert groups[1]["manifold"] == "euclidean"
    assert "16.weight" in groups[1]["names"]  # the classifier theta
    assert sorted(groups[0]["names"] + groups[1]["names"]) == sorted(
        n for n, _ in model.named_parameters()
    )


@pytest.mark.parametrize("use_hooks", [False, True], ids=["fx", "hooks"])
def test_conv_groups_exclude_layers_not_fed_only_to_a_bn(use_hooks):
    model = ConvNet()
    example = _images() if use_hooks else None
    assert scale_invariant_weights(model, example) == ["conv1.weight", "conv2.weight"]


@pytest.mark.parametrize("use_hooks", [False, True], ids=["fx", "hooks"])
def test_a_layer_shared_between_bn_and_other_uses_is_not_picked(use_hooks):
    model = Shared()
    example = torch.randn(8, 6) if use_hooks else None
    assert scale_invariant_weights(model, example) == []


def test_hook_path_leaves_the_model_untouched():
    model = ConvNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scale_invariant_weights(model, _images())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), f"{key} changed (BN running statistics?)"


def test_control_flow_model_falls_back_to_one_hooked_pass_with_one_notice():
    model = Branchy()
    with pytest.warns(UserWarning, match=r"could not trace Branchy.*running it once with hooks"):
        groups = param_groups(model)
    assert groups[0]["names"] == ["conv1.weight", "conv2.weight"]
    with pytest.raises(ValueError, match=r"could not trace Branchy.*trace='hooks'"):
        scale_invariant_weights(model, _images(), trace="fx")
    assert scale_invariant_weights(model, _images(), trace="hooks") == [
        "conv1.weight",
        "conv2.weight",
    ]
    opt = RiemannianSGD(groups, lr=0.1)
    total = len(list(model.parameters()))
    assert [len(g["params"]) for g in opt.param_groups] == [2, total - 2]


def test_verify_scale_invariance_separates_bn_fed_weights_from_the_classifier():
    torch.manual_seed(1)
    model = archbn(depth=2)
    inputs = torch.rand(64, 784)
    report = verify_scale_invariance(
        model,
        inputs,
        names=["0.weight", "4.weight", "8.weight"],
        generator=torch.Generator().manual_seed(2),
    )
    # ~0: BatchNorm's eps makes the invariance approximate (about eps / variance)
    assert report["0.weight"] < 1e-3 and report["4.weight"] < 1e-3, report
    assert report["8.weight"] > 0.1, f"the classifier looked invariant: {report}"
    # default names: the BN-fed weights found on the batch
    assert set(verify_scale_invariance(model, inputs)) == {"0.weight", "4.weight"}


def test_verify_scale_invariance_leaves_running_statistics_alone():
    model = ConvNet()
    before = {k: v.clone() for k, v in model.named_buffers()}
    verify_scale_invariance(model, _images(), names=["conv1.weight"])
    assert all(torch.equal(v, before[k]) for k, v in model.named_buffers())
    assert model.training


def test_verify_failure_raises_naming_the_weight():
    model = ConvNet()
    with pytest.raises(ValueError, match=r"conv4\.weight.*keep these weights Euclidean"):
        verify_scale_invariance(
            model, _images(), names=["conv1.weight", "conv4.weight"], raise_on_failure=True
        )
    with pytest.raises(ValueError, match="no parameters named"):
        verify_scale_invariance(model, _images(), names=["nope.weight"])


def test_param_groups_with_verify_passes_for_a_bn_network():
    model = ConvNet()
    groups = param_groups(model, verify=_images(), manifold="stiefel", retraction="polar")
    assert groups[0]["names"] == ["conv1.weight", "conv2.weight"]
    assert groups[0]["manifold"] == "stiefel" and groups[0]["retraction"] == "polar"
