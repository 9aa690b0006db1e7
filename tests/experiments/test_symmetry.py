"""The filter-rescaling symmetry of ArchBN (paper §2-3) on real MNIST (the embedded subset)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.cli.main import main
from riemann_dnn.data import as_tensors, load_mnist
from riemann_dnn.experiments.records import read_json
from riemann_dnn.experiments.symmetry import (
    EXACT_EPS,
    invariance_report,
    loss_and_gradients,
    random_filter_scales,
    rescale_filters,
    riemannian_gradient_at_unit_filters,
    set_batchnorm_eps,
    trajectories,
    unit_filters,
)
from riemann_dnn.manifolds import Oblique, filter_matrix
from riemann_dnn.models import ArchBN


@pytest.fixture(scope="module")
def batch():
    data = load_mnist(source="embedded")
    return as_tensors(data.train_images[:128], data.train_labels[:128], dtype=torch.float64)


def _model(depth=2, eps=EXACT_EPS, seed=0, dtype=torch.float64):
    model = ArchBN(depth, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return set_batchnorm_eps(model, eps)


def _rescaled(model, spread=10.0, seed=1):
    names = ArchBN.scale_invariant_names(model.depth)
    scales = random_filter_scales(
        model, names, spread=spread, generator=torch.Generator().manual_seed(seed)
    )
    return rescale_filters(model, scales), scales


@pytest.mark.parametrize("depth", [2, 4])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_loss_is_invariant_to_rescaling_every_filter(batch, depth, dtype, tol):
    x, y = batch
    model = _model(depth, dtype=dtype)
    rescaled, scales = _rescaled(model)
    alphas = torch.cat(list(scales.values()))
    assert alphas.min() < 0.2 and alphas.max() > 5, f"factors not spread: {alphas.aminmax()}"
    loss, _ = loss_and_gradients(model, x.to(dtype), y)
    loss_t, _ = loss_and_gradients(rescaled, x.to(dtype), y)
    change = abs(loss_t - loss) / loss
    assert change < tol, f"depth {depth} {dtype}: loss {loss} -> {loss_t} (relative {change:.2e})"


@pytest.mark.parametrize("depth", [2, 4])
def test_euclidean_gradient_of_each_filter_scales_as_inverse_alpha(batch, depth):
    x, y = batch
    model = _model(depth)
    rescaled, scales = _rescaled(model)
    _, grads = loss_and_gradients(model, x, y)
    _, grads_t = loss_and_gradients(rescaled, x, y)
    for name, alpha in scales.items():
        g, g_t = filter_matrix(grads[name]), filter_matrix(grads_t[name])
        deviation = float(((alpha.view(-1, 1) * g_t - g).norm(dim=1) / g.norm(dim=1)).max())
        change = float((g_t - g).norm() / g.norm())
        assert deviation < 1e-9, f"{name}: max_i |a_i g~_i - g_i|/|g_i| = {deviation:.2e}"
        assert change > 0.5, f"{name}: the Euclidean gradient barely changed ({change:.2e})"


def test_riemannian_gradient_is_the_same_from_both_parameterisations(batch):
    x, y = batch
    model = _model(2)
    rescaled, _ = _rescaled(model)
    _, grads = loss_and_gradients(model, x, y)
    _, grads_t = loss_and_gradients(rescaled, x, y)
    # independent reference: the gradient computed at the unit-normalised network itself
    unit = copy.deepcopy(rescaled)
    with torch.no_grad():
        for name in ArchBN.scale_invariant_names(2):
            filter_matrix(unit.get_parameter(name)).copy_(unit_filters(unit.get_parameter(name)))
    _, grads_u = loss_and_gradients(unit, x, y)
    for name in ArchBN.scale_invariant_names(2):
        r = riemannian_gradient_at_unit_filters(model.get_parameter(name), grads[name])
        r_t = riemannian_gradient_at_unit_filters(rescaled.get_parameter(name), grads_t[name])
        point = filter_matrix(unit.get_parameter(name).detach())
        reference = Oblique.for_filters(point.shape).euclidean_to_riemannian_gradient(
            point, filter_matrix(grads_u[name])
        )
        scale = float(reference.abs().max())
        assert float((r - r_t).abs().max()) < 1e-12 * max(1.0, scale), f"{name}: {r - r_t}"
        assert float((r - reference).abs().max()) < 1e-12 * max(1.0, scale), (
            f"{name}: from W {float((r - reference).abs().max()):.2e} off the direct gradient"
        )
        assert float((point * r).sum(1).abs().max()) < 1e-12, f"{name}: not tangent"


@pytest.mark.parametrize("depth", [2, 4])
def test_un_step_lands_on_same_weights_euclidean_step_does_not(batch, depth):
    x, y = batch
    report = invariance_report(
        _model(depth), x, y, alpha_spread=10.0, dtype=torch.float64, lr=0.1, generator=1
    )
    assert report["loss_rel_change"] < 1e-12, report["loss_rel_change"]
    assert report["gradient_scaling_max_rel_dev"] < 1e-9, report["gradient_scaling_max_rel_dev"]
    assert report["riemannian_gradient_rel_diff"] < 1e-9, report["riemannian_gradient_rel_diff"]
    assert report["un_step_max_abs_diff"] < 1e-6, report["un_step_max_abs_diff"]
    assert report["un_step_from_gradients_max_abs_diff"] < 1e-6, report[
        "un_step_from_gradients_max_abs_diff"
    ]
    assert report["euclidean_step_filter_max_abs_diff"] > 1e-3, report[
        "euclidean_step_filter_max_abs_diff"
    ]
    assert report["un_step_size"] > 1e-3, f"the UN step did not move: {report['un_step_size']}"


def test_batchnorm_eps_breaks_the_exact_symmetry(batch):
    x, y = batch
    exact = invariance_report(_model(2), x, y, 10.0, torch.float64, generator=1)
    default = invariance_report(_model(2, eps=1e-5), x, y, 10.0, torch.float64, generator=1)
    assert default["loss_rel_change"] > 1e3 * max(exact["loss_rel_change"], 1e-16), (
        exact["loss_rel_change"],
        default["loss_rel_change"],
    )
    assert 1e-4 < default["gradient_scaling_max_rel_dev"] < 1.0, default
    # the UN step still agrees: RiemannianSGD normalises the filters before the gradient
    assert default["un_step_max_abs_diff"] < 1e-12, default["un_step_max_abs_diff"]


def test_trajectories_un_copies_coincide_bsgd_copies_diverge(batch):
    x, y = batch
    steps, copies = 12, 3
    result = trajectories(
        _model(2, eps=1e-5),
        x,
        y,
        copies=copies,
        steps=steps,
        lr=0.05,
        batch_size=32,
        seed=3,
        x_test=x[:100],
        y_test=y[:100],
    )
    bsgd, un = result["methods"]["bsgd"], result["methods"]["un"]
    for rec in (bsgd, un):
        assert len(rec["loss"]) == copies and all(len(c) == steps for c in rec["loss"])
        assert all(len(d) == steps + 1 for d in rec["filter_distance"].values())
    w1 = "linears.0.weight"
    assert un["final_filter_distance"][w1] < 1e-10, un["filter_distance"][w1]
    assert max(un["loss_spread"]) < 1e-10, max(un["loss_spread"])
    assert len(set(un["test_error"])) == 1, un["test_error"]
    assert bsgd["filter_distance"][w1][0] < 1e-10, "rescaled copies start on the same filters"
    assert bsgd["final_filter_distance"][w1] > 1e-2, bsgd["filter_distance"][w1]
    first = [c[0] for c in un["loss"]]
    assert max(first) - min(first) < 1e-12 and first[0] == pytest.approx(bsgd["loss"][0][0])


def test_trajectories_reject_bad_arguments(batch):
    x, y = batch
    with pytest.raises(ValueError, match="copies"):
        trajectories(_model(2), x, y, copies=1, steps=1)
    with pytest.raises(ValueError, match="methods"):
        trajectories(_model(2), x, y, steps=1, methods=["adam"])
    with pytest.raises(ValueError, match="alpha_spread"):
        random_filter_scales(_model(2), ["linears.0.weight"], spread=0.5)
    with pytest.raises(ValueError, match="names"):
        random_filter_scales(_model(2), ["nope.weight"])
    with pytest.raises(ValueError, match="EXACT_EPS"):
        set_batchnorm_eps(_model(2), 0.0)


def test_symmetry_command_writes_json_markdown_and_png(tmp_path, capsys):
    out = tmp_path / "sym"
    code = main(
        [
            "symmetry",
            "--out",
            str(out),
            "--steps",
            "3",
            "--source",
            "embedded",
            "--check-batch",
            "100",
            "--train-images",
            "500",
            "--batch-size",
            "50",
        ]
    )
    assert code == 0
    assert str(out / "symmetry.json") in capsys.readouterr().out
    result = read_json(out / "symmetry.json")
    assert set(result) == {"config", "invariance", "trajectories"}
    assert result["config"]["steps"] == 3 and result["config"]["depth"] == 2
    assert set(result["invariance"]) == {
        "float32, eps=1e-30",
        "float64, eps=1e-30",
        "float32, eps=1e-05",
        "float64, eps=1e-05",
    }
    for check in result["invariance"].values():
        for key in (
            "loss_rel_change",
            "gradient_scaling_max_rel_dev",
            "riemannian_gradient_max_abs_diff",
            "un_step_max_abs_diff",
            "euclidean_step_filter_max_abs_diff",
        ):
            assert isinstance(check[key], float) and math.isfinite(check[key]), (key, check[key])
    assert set(result["trajectories"]["methods"]) == {"bsgd", "un"}
    markdown = (out / "symmetry.md").read_text()
    assert "Invariance checks" in markdown and "![symmetry](symmetry.png)" in markdown
    assert (out / "symmetry.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_and_gradients_leave_the_model_untouched(batch):
    x, y = batch
    model = _model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, grads = loss_and_gradients(model, x, y)
    with torch.no_grad():
        direct = float(F.cross_entropy(copy.deepcopy(model).train()(x), y))
    assert loss == pytest.approx(direct)
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert set(grads) == {n for n, _ in model.named_parameters()}
