"""SegNet and SegNet-Basic: shapes, which weights are scale-invariant, unpooling by indices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from riemann_dnn.models import SegNet, SegNetBasic
from riemann_dnn.params import param_groups, scale_invariant_weights, verify_scale_invariance


def _bn_fed_convs(model: nn.Module) -> set[str]:
    """Independent rule: a conv is BN-fed iff its Sequential's next module is a BatchNorm2d."""
    names = set()
    for parent_name, parent in model.named_modules():
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (name, module), (_, following) in zip(children, children[1:]):
                if isinstance(module, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
                    names.add(f"{parent_name}.{name}.weight")
    return names


@pytest.mark.parametrize(
    ("shape", "stages"), [((2, 1, 64, 64), 4), ((3, 3, 45, 61), 4), ((1, 2, 16, 24), 2)]
)
def test_segnet_basic_output_shape(shape, stages):
    torch.manual_seed(0)
    model = SegNetBasic(11, in_channels=shape[1], width=8, stages=stages)
    out = model(torch.rand(shape))
    assert out.shape == (shape[0], 11, *shape[2:]), f"got {tuple(out.shape)} for input {shape}"


@pytest.mark.parametrize(
    ("shape", "depth"), [((2, 3, 32, 32), 5), ((2, 3, 45, 61), 5), ((1, 1, 20, 28), 3)]
)
def test_segnet_output_shape(shape, depth):
    torch.manual_seed(0)
    model = SegNet(12, in_channels=shape[1], width=4, depth=depth)
    out = model(torch.rand(shape))
    assert out.shape == (shape[0], 12, *shape[2:]), f"got {tuple(out.shape)} for input {shape}"


def test_segnet_has_vgg16_layout():
    model = SegNet(11, width=4)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == 27 and len(norms) == 26, (len(convs), len(norms))
    encoder_channels = [
        m.out_channels for m in model.encoder.modules() if isinstance(m, nn.Conv2d)
    ]
    assert encoder_channels == [4] * 2 + [8] * 2 + [16] * 3 + [32] * 3 + [32] * 3
    decoder_channels = [
        m.out_channels for m in model.decoder.modules() if isinstance(m, nn.Conv2d)
    ]
    assert decoder_channels == [32] * 3 + [32, 32, 16] + [16, 16, 8] + [8, 4] + [4, 4]
    assert all(m.bias is None for m in convs[:-1]) and model.classifier.bias is not None


@pytest.mark.parametrize(
    "factory",
    [
        lambda: SegNetBasic(11, in_channels=1, width=6, stages=4),
        lambda: SegNet(11, in_channels=3, width=4, depth=5),
        lambda: SegNet(5, in_channels=3, width=4, depth=2, classifier_kernel=1),
    ],
)
def test_param_groups_put_exactly_the_bn_fed_convs_on_the_oblique_manifold(factory):
    model = factory()
    expected = _bn_fed_convs(model)
    conv_weights = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert expected == conv_weights - {"classifier.weight"}, sorted(conv_weights - expected)
    groups = param_groups(model)  # torch.fx trace
    oblique = [g for g in groups if g["manifold"] == "oblique"]
    assert len(oblique) == 1 and set(oblique[0]["names"]) == expected, sorted(
        set(oblique[0]["names"]) ^ expected
    )
    free = next(g for g in groups if g["manifold"] == "euclidean")
    assert "classifier.weight" in free["names"] and "classifier.bias" in free["names"]
    x = torch.rand(2, next(model.parameters()).shape[1], 32, 32)
    assert set(scale_invariant_weights(model, example_input=x)) == expected


def test_bn_fed_filters_are_scale_invariant_and_the_classifier_is_not():
    torch.manual_seed(0)
    model = SegNetBasic(11, in_channels=1, width=6)
    x = torch.rand(4, 1, 32, 32)
    names = sorted(_bn_fed_convs(model))
    report = verify_scale_invariance(
        model, x, names=names + ["classifier.weight"], generator=torch.Generator().manual_seed(1)
    )
    worst = max(report[n] for n in names)
    assert worst < 1e-3, f"BN-fed filters changed the output by {worst:.2e}"
    assert report["classifier.weight"] > 1e-2, report["classifier.weight"]


@pytest.mark.parametrize(
    "factory", [lambda: SegNetBasic(11, 1, 4), lambda: SegNet(11, 1, 4, depth=3)]
)
def test_unit_init_gives_unit_norm_filters(factory):
    model = factory()
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            norms = module.weight.detach().flatten(1).norm(dim=1)
            assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6), (name, norms)


@pytest.mark.parametrize(
    "factory", [lambda: SegNetBasic(5, 1, 4, stages=3, kernel=3), lambda: SegNet(5, 1, 4, depth=3)]
)
def test_decoder_unpools_with_the_matching_encoder_indices(factory):
    """Each decoder stage's input is zero except at the argmax positions of the matching
    encoder stage's 2x2 windows, where it holds the incoming (coarser) feature map."""
    torch.manual_seed(0)
    model = factory().eval()
    encoded, decoded, unpooled = [], [], []
    for stage in model.encoder:
        stage.register_forward_hook(lambda m, a, out: encoded.append(out))
    for stage in model.decoder:
        stage.register_forward_pre_hook(lambda m, a: unpooled.append(a[0]))
        stage.register_forward_hook(lambda m, a, out: decoded.append(out))
    model(torch.randn(2, 1, 22, 30))
    stages = len(encoded)
    for j in range(stages):
        skip = encoded[stages - 1 - j]
        pooled, indices = F.max_pool2d(skip, 2, 2, return_indices=True)
        incoming = pooled if j == 0 else decoded[j - 1]
        u = unpooled[j]
        assert u.shape == skip.shape, (j, tuple(u.shape), tuple(skip.shape))
        flat = u.flatten(2)
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(2, indices.flatten(2), True)
        off = flat[~mask].abs().max() if (~mask).any() else torch.tensor(0.0)
        assert off == 0, f"stage {j}: nonzero {off:.3e} away from the encoder's argmax"
        gathered = flat.gather(2, indices.flatten(2)).view_as(incoming)
        assert torch.equal(gathered, incoming), f"stage {j}: values not placed at indices"


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="width"):
        SegNetBasic(11, width=0)
    with pytest.raises(ValueError, match="kernel"):
        SegNetBasic(11, kernel=4)
    with pytest.raises(ValueError, match="depth"):
        SegNet(11, depth=6)
    with pytest.raises(ValueError, match="init"):
        SegNetBasic(11, init="xavier")
