import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.models import ArchBN
from riemann_dnn.params import param_groups, scale_invariant_weights, verify_scale_invariance


@pytest.mark.parametrize("depth", [2, 4])
def test_archbn_shapes_follow_the_spec(depth):
    model = ArchBN(depth)
    assert tuple(model.linears[0].weight.shape) == (64, 784)
    for linear in model.linears[1:]:
        assert tuple(linear.weight.shape) == (64, 32)
    assert tuple(model.classifier.weight.shape) == (10, 32)
    assert all(linear.bias is None for linear in model.linears)
    assert model.classifier.bias is None
    assert tuple(model(torch.rand(5, 1, 28, 28)).shape) == (5, 10)


def test_unit_init_gives_unit_rows_and_is_seeded():
    a = ArchBN(2, generator=torch.Generator().manual_seed(3))
    b = ArchBN(2, generator=torch.Generator().manual_seed(3))
    for weight in [*(l.weight for l in a.linears), a.classifier.weight]:
        norms = weight.norm(dim=1)
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6), norms
    assert torch.equal(a.linears[0].weight, b.linears[0].weight)


def test_pytorch_init_is_not_unit_norm():
    torch.manual_seed(0)
    norms = ArchBN(2, init="pytorch").linears[0].weight.norm(dim=1)
    assert (norms - 1).abs().max() > 0.1


def test_maxpool_is_over_adjacent_feature_pairs():
    model = ArchBN(1)
    features = torch.arange(12.0).view(2, 6)
    pooled = features.view(2, -1, model.pool).amax(-1)
    assert pooled.tolist() == [[1, 3, 5], [7, 9, 11]]


@pytest.mark.parametrize("depth", [2, 4])
def test_model_helper_finds_exactly_the_filters(depth):
    model = ArchBN(depth)
    assert scale_invariant_weights(model) == ArchBN.scale_invariant_names(depth)
    groups = param_groups(model)
    assert groups[0]["names"] == ArchBN.scale_invariant_names(depth)
    assert groups[0]["manifold"] == "oblique"


def test_loss_is_invariant_to_rescaling_filters_but_not_the_classifier():
    torch.manual_seed(0)
    model = ArchBN(2).double()
    x = torch.rand(256, 784, dtype=torch.float64)
    report = verify_scale_invariance(
        model, x, names=[*ArchBN.scale_invariant_names(2), "classifier.weight"]
    )
    assert report["linears.0.weight"] < 1e-4 and report["linears.1.weight"] < 1e-4, report
    assert report["classifier.weight"] > 1e-2, report


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="depth"):
        ArchBN(0)
    with pytest.raises(ValueError, match="divisible"):
        ArchBN(2, width=63)
    with pytest.raises(ValueError, match="init"):
        ArchBN(2, init="xavier")


def test_one_training_epoch_on_real_mnist_beats_chance_widely(full_mnist_dir):
    from riemann_dnn.data import as_tensors, load_mnist
    from riemann_dnn.optim import RiemannianSGD

    mnist = load_mnist(full_mnist_dir, source="full")
    x, y = as_tensors(mnist.train_images[:10000], mnist.train_labels[:10000])
    xt, yt = as_tensors(mnist.test_images, mnist.test_labels)
    torch.manual_seed(0)
    model = ArchBN(2, generator=torch.Generator().manual_seed(0))
    optimizer = RiemannianSGD(param_groups(model), lr=0.1)
    for start in range(0, 10000, 100):
        optimizer.zero_grad()
        F.cross_entropy(model(x[start : start + 100]), y[start : start + 100]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        error = (model(xt).argmax(1) != yt).float().mean().item()
    assert error < 0.15, f"test error {error:.3f} after one epoch on 10k images"
