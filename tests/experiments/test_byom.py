"""riemann-dnn byom at small scale: the methods and their controls start from the points
they claim and step as they claim; selection reads validation errors only and extends the
grid; diverged runs are stopped, counted and never chosen; runs are saved and reused; the
files and the command."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from riemann_dnn.cli.main import main
from riemann_dnn.experiments import byom
from riemann_dnn.experiments.byom import (
    ByomConfig,
    build_model,
    make_optimizer,
    run_byom,
    train_one,
    write_byom,
)
from riemann_dnn.experiments.records import read_json

WS_CONVS = 6  # the ResNet's weight-standardized convs


def _tiny(**overrides):
    values = dict(
        width=4,
        train_images=200,
        validation_images=100,
        test_images=200,
        epochs=1,
        lr_candidates=(0.1,),
        lr_extend=0,
        seeds=1,
        source="embedded",
    )
    return ByomConfig.quick(**{**values, **overrides})


def _random_data(n=200):
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)
    return {"train": (x, y), "validation": (x, y), "test": (x, y), "source": "random"}


def test_run_writes_every_cell_with_the_constrained_groups(tmp_path):
    result = run_byom(_tiny(archs=("resnet-gn-ws", "convnext")), out=tmp_path)
    cells = {(s["arch"], s["method"]): s for s in result["summary"]}
    assert set(cells) == {
        *(("resnet-gn-ws", m) for m in ("un", "bsgd", "bsgd-elr", "sgd")),
        *(("convnext", m) for m in ("un", "bsgd", "sgd")),
    }
    # per-filter rates cannot control a whole-tensor symmetry: said, not run
    assert [(s["arch"], s["method"]) for s in result["not_run"]] == [("convnext", "bsgd-elr")]
    assert "oblique:groups=1" in result["not_run"][0]["why"]
    resnet = cells[("resnet-gn-ws", "un")]["constrained"]
    assert [g["manifold"] for g in resnet] == ["oblique"] and len(resnet[0]["names"]) == WS_CONVS
    convnext = cells[("convnext", "un")]["constrained"]
    assert [g["manifold"] for g in convnext] == ["oblique:groups=1"]
    assert sorted(convnext[0]["names"]) == [
        "block1.dwconv.weight",
        "block2.dwconv.weight",
        "stem.weight",
    ]
    assert len(result["comparisons"]) == 4 + 3  # convnext: no un - bsgd-elr
    paths = write_byom(result, tmp_path)
    assert [p.name for p in paths] == ["byom.json", "byom.md", "byom.png"]
    saved = json.loads(paths[0].read_text())
    assert saved["summary"][0]["runs"] == 1 and saved["timing"]["jobs"] == 1
    text = paths[1].read_text()
    assert "| resnet-gn-ws | UN | 0.1 |" in text and "not run: per-filter rates" in text
    assert len(list((tmp_path / "runs").glob("*.json"))) == 7


def test_un_bsgd_and_elr_start_from_one_point_and_sgd_from_pytorchs():
    x = torch.rand(8, 1, 28, 28)
    models = {m: build_model("resnet-gn-ws", 8, 3) for m in ("un", "bsgd", "bsgd-elr", "sgd")}
    groups = {m: make_optimizer(models[m], m, 0.1, 0.9, x)[1] for m in models}
    names = groups["un"][0]["names"]
    assert len(names) == WS_CONVS and all(groups[m][0]["names"] == names for m in models)
    params = {m: dict(models[m].named_parameters()) for m in models}
    for name in params["un"]:
        for m in ("bsgd", "bsgd-elr"):
            torch.testing.assert_close(params[m][name], params["un"][name], rtol=0, atol=0)
        if name in names:  # same directions, PyTorch's norms (about 0.58 for these filters)
            raw = params["sgd"][name].detach().flatten(1)
            torch.testing.assert_close(
                F.normalize(raw, dim=1), params["un"][name].detach().flatten(1)
            )
            assert 0.3 < float(raw.norm(dim=1).mean()) < 0.8
        else:
            torch.testing.assert_close(params["sgd"][name], params["un"][name], rtol=0, atol=0)


def test_each_method_steps_as_it_claims():
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    lr = 0.05
    for method in ("bsgd", "bsgd-elr", "sgd"):
        model = build_model("resnet-gn-ws", 8, 0)
        opt, constrained = make_optimizer(model, method, lr, 0.0, x[:8])
        assert isinstance(opt, torch.optim.SGD) == (method != "bsgd-elr")
        invariant = set(constrained[0]["names"])
        before = copy.deepcopy(model)
        F.cross_entropy(model(x), y).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
        for name, p in model.named_parameters():
            w, g = before.get_parameter(name).detach(), grads[name]
            rate = lr
            if method == "bsgd-elr" and name in invariant:  # lr * ||w_i||^2 per filter
                rate = lr * w.flatten(1).pow(2).sum(1).view(-1, *[1] * (w.ndim - 1))
            torch.testing.assert_close(p.detach(), w - rate * g, msg=f"{method} {name}")


def test_un_keeps_the_constrained_weights_on_their_manifolds(monkeypatch):
    models = []
    monkeypatch.setattr(
        "riemann_dnn.experiments.byom.build_model",
        lambda arch, width, seed: models.append(build_model(arch, width, seed)) or models[-1],
    )
    row = train_one(_tiny(), "convnext", "un", 0.3, 0, _random_data())
    assert not row["diverged"] and 0 <= row["test_error"] <= 1
    assert len(row["history"]) == 1 and row["history"][0]["filter_norm"] == pytest.approx(1)
    model = models[-1]
    for name in ("stem.weight", "block1.dwconv.weight", "block2.dwconv.weight"):
        norm = model.get_parameter(name).norm()
        torch.testing.assert_close(norm, torch.tensor(1.0), msg=name)


def test_the_angle_per_step_is_the_turn_of_each_filter():
    w = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    turning = byom._Turning([{"manifold": "oblique", "params": [w]}])
    turning.before()
    with torch.no_grad():  # turn row 0 by 0.3 rad, scale row 1 (no turn)
        w[0] = torch.tensor([math.cos(0.3), math.sin(0.3)])
        w[1] *= 3
    turning.after()
    angle, norm = turning.epoch()
    assert angle == pytest.approx(0.15) and norm == pytest.approx((1 + 6) / 2)


def test_a_run_whose_loss_blows_up_is_stopped_and_counted():
    # the unit-norm methods' losses become non-finite: stopped there, counted as diverged
    for method in ("un", "bsgd-elr"):
        row = train_one(_tiny(), "resnet-gn-ws", method, 1e12, 0, _random_data())
        assert row["diverged"] and math.isnan(row["test_error"]), (method, row)
        assert math.isnan(row["val_error"]) and row["history"] == []
    # Euclidean SGD's stays finite (its filters grow so large that their steps stop
    # turning them): not diverged, but counted as untrained, and never chosen over a run
    # that trained (selection reads the validation error)
    rows = [
        train_one(_tiny(), "resnet-gn-ws", "bsgd", lr, 0, _random_data()) for lr in (1e12, 0.1)
    ]
    assert not rows[0]["diverged"] and rows[0]["history"][0]["train_loss"] > 1e6
    assert math.isinf(rows[0]["history"][0]["filter_norm"]) is False
    summary = byom._summary(rows[:1], {("resnet-gn-ws", "bsgd"): {"interior": False}})
    assert summary[0]["untrained"] == 1 and summary[0]["diverged"] == 0


def test_a_nonfinite_gradient_stops_the_run_through_the_optimizers_error(monkeypatch):
    """RiemannianSGD's row kernel raises NonFiniteGradientError after leaving bad rows
    untouched: the run must stop there, not go on training on partial steps."""
    steps = []
    real = byom.make_optimizer

    def poisoned(*args):
        opt, constrained = real(*args)
        step = opt.step

        def poisoned_step(*a, **k):
            steps.append(1)
            if len(steps) == 3:
                constrained[0]["params"][1].grad[0, 0, 0, 0] = math.nan
            return step(*a, **k)

        opt.step = poisoned_step
        return opt, constrained

    monkeypatch.setattr(byom, "make_optimizer", poisoned)
    row = train_one(_tiny(epochs=2), "resnet-gn-ws", "un", 0.1, 0, _random_data())
    assert row["diverged"] and len(steps) == 3 and row["history"] == []


def test_selection_reads_validation_only_extends_the_grid_and_skips_diverged_runs():
    def fake_train(config, arch, method, lr, seed, data):
        # validation is best at lr 0.01, past the low edge; test error is best elsewhere
        val = abs(math.log10(lr) + 2) / 10 + 0.05
        return {
            "arch": arch,
            "method": method,
            "lr": lr,
            "seed": seed,
            "diverged": lr > 0.5,
            "val_error": math.nan if lr > 0.5 else val,
            "test_error": math.nan if lr > 0.5 else 1 - val,
            "history": [
                {"epoch": 1, "train_loss": 1.0, "val_error": val, "angle": 0.1, "filter_norm": 1}
            ],
            "seconds": 0.0,
            "data": "fake",
            "constrained": [],
        }

    config = _tiny(lr_candidates=(0.1, 1.0), lr_extend=2, methods=("un",))
    runner = byom._Runner(config, None, None, lambda _: None)
    old, byom._task = byom._task, lambda task: fake_train(config, *task, None)
    try:
        result = byom._run(config, [("resnet-gn-ws", "un")], runner)
    finally:
        byom._task = old
    selection = {(s["arch"], s["method"]): s for s in result["selection"]}
    chosen = selection[("resnet-gn-ws", "un")]
    assert [round(c["lr"], 6) for c in chosen["candidates"]] == [0.01, 0.031623, 0.1, 1.0]
    assert chosen["chosen_lr"] == pytest.approx(0.01) and not chosen["interior"]
    assert chosen["candidates"][-1]["diverged"]
    assert [(r["lr"], r["seed"]) for r in result["runs"]] == [(chosen["chosen_lr"], 0)]


def test_finished_runs_are_read_back_instead_of_rerun(tmp_path, monkeypatch):
    config = _tiny(methods=("un", "sgd"))
    first = run_byom(config, out=tmp_path)
    monkeypatch.setattr(byom, "train_one", lambda *a: pytest.fail("a finished run was rerun"))
    again = run_byom(config, out=tmp_path)
    assert [r["test_error"] for r in again["runs"]] == [r["test_error"] for r in first["runs"]]
    # another configuration is not confused with it
    record = read_json(next((tmp_path / "runs").glob("*un*.json")))
    assert record["run_key"]["epochs"] == 1


def test_worker_processes_give_the_numbers_of_one_process():
    config = _tiny(methods=("un", "sgd"), seeds=2)
    alone = run_byom(config)
    pooled = run_byom(config, jobs=2)
    assert pooled["timing"]["jobs"] == 2
    key = ("arch", "method", "lr", "seed", "test_error", "val_error")
    assert [[r[k] for k in key] for r in pooled["runs"]] == [
        [r[k] for k in key] for r in alone["runs"]
    ]
    assert all(r["torch_threads"] == 1 for r in pooled["runs"])


def test_comparisons_pair_seeds_and_leave_out_diverged_ones():
    runs = [
        {"arch": "a", "method": m, "seed": s, "diverged": d, "test_error": e}
        for m, s, d, e in [
            ("un", 0, False, 0.10),
            ("un", 1, False, 0.12),
            ("un", 2, True, math.nan),
            ("sgd", 0, False, 0.08),
            ("sgd", 1, False, 0.11),
            ("sgd", 2, False, 0.09),
        ]
    ]
    (row,) = byom._comparisons(runs)
    assert (row["a"], row["b"], row["seeds"], row["n"]) == ("un", "sgd", [0, 1], 2)
    assert row["mean_diff"] == pytest.approx(0.015) and row["p_holm"] == row["p_paired"]


def test_cli_quick_options_are_checked(tmp_path, capsys):
    code = main(["byom", "--quick", "--width", "6", "--out", str(tmp_path)])
    assert code == 2 and "--width 6" in capsys.readouterr().err
    code = main(
        [
            "byom",
            "--quick",
            "--source",
            "embedded",
            "--train-images",
            "4900",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2 and "more than the 5000 training images" in capsys.readouterr().err
    code = main(["byom", "--quick", "--lr-candidates", "0.1", "--lr-extend", "1"])
    assert code == 2 and "--lr-extend 1" in capsys.readouterr().err


def test_cli_writes_the_files(tmp_path, capsys):
    args = ["byom", "--quick", "--source", "embedded", "--methods", "un", "sgd"]
    args += ["--seeds", "1", "--lr-candidates", "0.1", "--epochs", "1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "| resnet-gn-ws | UN | 0.1 |" in capsys.readouterr().out
    assert {p.name for p in tmp_path.iterdir()} >= {"byom.json", "byom.md", "byom.png", "runs"}


def test_default_test_images_beyond_the_data_are_capped_with_a_notice_and_reported_true(
    tmp_path, capsys
):
    """The default 10,000 test images on the embedded subset (1,000): all of them, a notice,
    and the report says 1000 (it said 10000)."""
    args = ["byom", "--source", "embedded", "--methods", "un", "--seeds", "1", "--epochs", "1"]
    args += ["--train-images", "200", "--validation-images", "100", "--width", "4"]
    args += ["--lr-candidates", "0.1", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "embedded has 1000 test images; using all of them" in capsys.readouterr().err
    assert read_json(tmp_path / "byom.json")["config"]["test_images"] == 1000
    assert "1000 test images" in (tmp_path / "byom.md").read_text()


@pytest.mark.slow
def test_quick_command_runs_every_method(tmp_path):
    assert main(["byom", "--quick", "--source", "embedded", "--out", str(tmp_path)]) == 0
    result = read_json(tmp_path / "byom.json")
    assert {s["method"] for s in result["summary"]} == {"un", "bsgd", "bsgd-elr", "sgd"}
    assert all(s["runs"] == 2 for s in result["summary"])
