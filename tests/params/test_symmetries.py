"""param_groups, explain and the geometry of each kind of symmetry (riemann_dnn.params)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from model_zoo import Layers, ResNet, ResNetV2, randomize
from torch import nn

from riemann_dnn.optim import RiemannianSGD
from riemann_dnn.optim._functional import takes_row_kernel
from riemann_dnn.params import (
    example_batch,
    explain,
    find_symmetries,
    param_groups,
    resolve_geometry,
    scale_invariant_weights,
)


class ConvGnLn(nn.Module):
    """conv -> GroupNorm(4) (per group), conv -> channels-last LayerNorm (whole tensor),
    ConvTranspose -> BatchNorm (per filter along dim 1), a classifier."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(4, 8)
        self.c2 = nn.Conv2d(8, 8, 1, bias=False)
        self.ln = nn.LayerNorm(8)
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.gn(self.c1(x)))
        x = self.ln(self.c2(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.relu(self.bn(self.up(x)))
        return self.fc(x.mean((2, 3)))


def _x(n=4, side=8):
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(0))


def test_each_kind_goes_on_its_manifold_and_steps_on_the_row_kernel():
    model = ConvGnLn()
    groups = param_groups(model, lr=0.1)
    spec = {n: g["manifold"] for g in groups for n in g["names"]}
    assert spec["c1.weight"] == "oblique:groups=4"
    assert spec["c2.weight"] == "oblique:groups=1"
    assert spec["up.weight"] == "oblique:groups=1"  # filters on dim 1: the whole sphere
    assert spec["fc.weight"] == "euclidean" and groups[-1]["manifold"] == "euclidean"
    for g in groups[:-1]:
        for p in g["params"]:
            assert takes_row_kernel(p, resolve_geometry(g["manifold"], None, p))
    opt = RiemannianSGD(groups, lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        model(_x()).square().mean().backward()
        opt.step()
    norms = model.c1.weight.detach().reshape(4, -1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(4))
    torch.testing.assert_close(model.c2.weight.norm(), torch.tensor(1.0))


def test_stiefel_and_grassmann_take_the_same_rows():
    model = ConvGnLn()
    groups = param_groups(model, manifold="stiefel", retraction="qr")
    spec = {n: g["manifold"] for g in groups for n in g["names"]}
    assert spec["c1.weight"] == "stiefel:groups=4" and spec["c2.weight"] == "stiefel:groups=1"
    RiemannianSGD(groups, lr=0.1)
    rows = model.c1.weight.detach().reshape(4, -1)
    torch.testing.assert_close(rows @ rows.T, torch.eye(4), atol=1e-5, rtol=0)
    groups = param_groups(ConvGnLn(), manifold="grassmann")
    assert {g["manifold"] for g in groups} == {
        "grassmann:groups=4",
        "grassmann:groups=1",
        "euclidean",
    }


def test_bad_group_names_are_refused_with_the_fix():
    w = torch.zeros(6, 3)
    with pytest.raises(ValueError, match="do not split into 4 equal groups"):
        resolve_geometry("oblique:groups=4", None, w)
    with pytest.raises(ValueError, match="'groups=G'"):
        resolve_geometry("oblique:rows=2", None, w)


def test_torch_compile_wrapped_model_is_analysed_through_its_module():
    model = ResNet()
    compiled = torch.compile(model)
    names = scale_invariant_weights(compiled, _x(side=32))
    assert names == [f"_orig_mod.{n}" for n in scale_invariant_weights(model, _x(side=32))]
    groups = param_groups(compiled)
    assert groups[0]["params"][0] is model.conv1.weight


def test_channels_last_models_give_the_same_symmetries():
    torch.manual_seed(0)
    model = randomize(ResNetV2())
    x = _x(side=32)
    plain = find_symmetries(model, x)
    last = find_symmetries(
        model.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    )
    assert plain == last
    assert sum(s.kind == "filter" for s in plain.values()) == 9  # every StdConv


class Hidden(nn.Module):
    """A use of the conv output the analysis cannot see (torch functions disabled): the
    numerical check must refuse the claim."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        h = self.conv(x)
        with torch._C.DisableTorchFunction():
            leak = h.mean()
        return self.bn(h) + leak


def test_a_claim_the_numbers_refute_is_refused_by_name_and_stays_euclidean():
    model = Hidden()
    assert scale_invariant_weights(model, _x(), trace="hooks") == ["conv.weight"]  # fooled
    with pytest.warns(UserWarning, match=r"conv\.weight .*stay Euclidean"):
        groups = param_groups(model, example_input=_x(), trace="hooks")
    assert [g["manifold"] for g in groups] == ["euclidean"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        groups = param_groups(model, example_input=_x(), verify=False, trace="hooks")
    assert groups[0]["names"] == ["conv.weight"]
    row = explain(model, _x(), trace="hooks").rows()[0]
    assert row["kind"] == "none" and row["reason"].startswith("refused") and row["change"] > 1e-3


def test_explain_gives_a_row_per_weight_with_path_and_change():
    model = Layers()
    report = explain(model, _x())
    rows = {r["name"]: r for r in report.rows()}
    assert set(rows) == {n for n, p in model.named_parameters() if p.ndim >= 2}
    assert rows["up.weight"]["axis"] == 1 and rows["up.weight"]["kind"] == "filter"
    assert rows["conv.weight"]["path"] == "conv -> drop (dropout2d) -> bn (batch_norm)"
    assert rows["wn_filters.parametrizations.weight.original1"]["kind"] == "filter"
    assert rows["wn_whole.parametrizations.weight.original1"]["kind"] == "tensor"
    assert rows["wn_filters.parametrizations.weight.original0"]["kind"] == "none"
    assert rows["tok.weight"]["kind"] == "tensor" and rows["tok.weight"]["norms"] == [
        "ln (layer_norm)"
    ]
    assert rows["head.weight"]["reason"].startswith("reaches the output")
    for r in rows.values():
        assert (r["change"] <= 1e-3) == (r["kind"] != "none"), r
    text = str(report)
    assert "| up.weight | 3x8x4x4 | filter | oblique:groups=1 |" in text
    assert report.trace == "fx" and report.input_shapes == ((4, 3, 8, 8),)


def test_pinned_scales_are_not_claimed():
    class Mixed(nn.Module):  # LayerNorm over [conv(x), x]: conv's scale meets unscaled values
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)
            self.ln = nn.LayerNorm(6)

        def forward(self, x):
            return self.ln(torch.cat([self.conv(x), x], 1).permute(0, 2, 3, 1))

    found = find_symmetries(Mixed(), _x())["conv.weight"]
    assert found.kind == "none" and "mixes its scale with unscaled values" in found.reason


def test_example_batch_is_built_from_the_first_layer_or_refused():
    assert example_batch(nn.Sequential(nn.Linear(5, 3)))[0].shape == (8, 5)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    assert example_batch(net)[0].shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="no conv, linear or embedding layer"):
        example_batch(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="could not build an input.*example_input="):
        example_batch(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(7, 3)))


def test_analysis_leaves_the_model_and_the_rng_as_they_were():
    model = ResNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.random.get_rng_state()
    param_groups(model)
    explain(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not model.training and not model.bn1.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
