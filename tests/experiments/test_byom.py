"""riemann-dnn byom at small scale: both architectures train with RiemannianSGD on the groups
param_groups finds (and stay on their manifolds) and with torch.optim.SGD; the files."""

from __future__ import annotations

import json

import torch

from riemann_dnn.cli.main import main
from riemann_dnn.experiments.byom import ByomConfig, build_model, run_byom, train_one, write_byom


def _tiny(**overrides):
    return ByomConfig.quick(
        width=4,
        train_images=200,
        validation_images=100,
        test_images=200,
        epochs=1,
        lr_candidates=(0.1,),
        seeds=1,
        source="embedded",
        **overrides,
    )


def test_run_writes_every_cell_with_the_constrained_groups(tmp_path):
    result = run_byom(_tiny())
    cells = {(s["arch"], s["method"]): s for s in result["summary"]}
    assert set(cells) == {(a, m) for a in ("resnet-gn-ws", "convnext") for m in ("rsgd", "sgd")}
    resnet = cells[("resnet-gn-ws", "rsgd")]["constrained"]
    assert [g["manifold"] for g in resnet] == ["oblique"] and len(resnet[0]["names"]) == 6
    convnext = cells[("convnext", "rsgd")]["constrained"]
    assert [g["manifold"] for g in convnext] == ["oblique:groups=1"]
    assert sorted(convnext[0]["names"]) == [
        "block1.dwconv.weight",
        "block2.dwconv.weight",
        "stem.weight",
    ]
    assert cells[("convnext", "sgd")]["constrained"] == []
    paths = write_byom(result, tmp_path)
    assert [p.name for p in paths] == ["byom.json", "byom.md", "byom.png"]
    assert json.loads(paths[0].read_text())["summary"][0]["runs"] == 1
    assert "| resnet-gn-ws | rsgd | 0.1 |" in paths[1].read_text()


def test_rsgd_keeps_the_constrained_weights_on_their_manifolds(monkeypatch):
    config = _tiny()
    x = torch.rand(200, 1, 28, 28)
    y = torch.randint(0, 10, (200,))
    models = []
    monkeypatch.setattr(
        "riemann_dnn.experiments.byom.build_model",
        lambda arch, width, seed: models.append(build_model(arch, width, seed)) or models[-1],
    )
    row = train_one(config, "convnext", "rsgd", 0.1, 0, (x, y), (x, y))
    assert 0 <= row["error"] <= 1 and len(row["train_loss"]) == 1
    model = models[-1]
    for name in ("stem.weight", "block1.dwconv.weight", "block2.dwconv.weight"):
        norm = dict(model.named_parameters())[name].norm()
        torch.testing.assert_close(norm, torch.tensor(1.0), msg=name)


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


def test_a_run_whose_loss_blows_up_is_counted_as_diverged():
    x = torch.rand(200, 1, 28, 28)
    y = torch.randint(0, 10, (200,))
    for method in ("rsgd", "sgd"):
        row = train_one(_tiny(), "resnet-gn-ws", method, 1e12, 0, (x, y), (x, y))
        assert row["diverged"] and row["error"] != row["error"], (method, row)  # nan
