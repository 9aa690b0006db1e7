"""The controlled study: the stopping-rule fix, the control methods' steps, the rate grid's
extension, and the whole ``reproduce study`` pipeline on a tiny slice."""

import json
from dataclasses import replace

import pytest
import torch

from riemann_dnn.experiments.config import PROTOCOLS, Protocol, RunConfig
from riemann_dnn.experiments.ensemble import Ensemble
from riemann_dnn.experiments.methods import METHODS
from riemann_dnn.experiments.protocol import stop_check
from riemann_dnn.experiments.records import strict
from riemann_dnn.experiments.selection import _extensions, candidate_grid
from riemann_dnn.experiments.study import StudyPlan, reproduce_study
from riemann_dnn.experiments.training import build_ensemble
from riemann_dnn.models import ArchBN, ConvArchBN
from riemann_dnn.optim import RiemannianSGD


# -- the stopping rules after an undone epoch ---------------------------------------------------
def _curves(val, accepted, train=0.01):
    return {"val_error": list(val), "accepted": list(accepted), "train_error": [train] * len(val)}


def test_an_undone_epoch_is_no_flat_validation_measurement():
    # epoch 4 was undone: the weights rolled back, so its validation error repeats epoch 3's
    curves = _curves([0.10, 0.08, 0.07, 0.07], [True, True, True, False])
    old = Protocol(min_epochs=3)
    fixed = replace(old, stop_on_accepted=True)
    assert stop_check(old, 4, curves) == "validation_error_flat"  # the paper's rule's artefact
    assert stop_check(fixed, 4, curves) is None
    # the next accepted epoch is compared with the last accepted one, not the undone one
    curves = _curves([0.10, 0.08, 0.07, 0.07, 0.065], [True, True, True, False, True])
    assert stop_check(fixed, 5, curves) is None
    curves = _curves([0.10, 0.08, 0.07, 0.07, 0.07], [True, True, True, False, True])
    assert stop_check(fixed, 5, curves) == "validation_error_flat"


def test_an_undone_epoch_still_counts_towards_max_epochs():
    fixed = Protocol(min_epochs=2, max_epochs=3, stop_on_accepted=True)
    curves = _curves([0.1, 0.09, 0.09], [True, True, False])
    assert stop_check(fixed, 3, curves) == "max_epochs"


def test_patience_rule_sees_accepted_epochs_only():
    fixed = Protocol(min_epochs=1, patience=2, stop_on_accepted=True)
    # accepted: 0.10, 0.08, 0.09 -> rose against two accepted epochs before? 0.09 < 0.10: no
    curves = _curves([0.10, 0.08, 0.08, 0.09], [True, True, False, True])
    assert stop_check(fixed, 4, curves) is None
    assert stop_check(replace(fixed, stop_on_accepted=False), 4, curves) == "validation_error_rose"


# -- the control methods ----------------------------------------------------------------------
def _batch(copies, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.rand(copies, 16, 784, generator=gen),
        torch.randint(0, 10, (copies, 16), generator=gen),
    )


def test_weight_decay_step_is_sgd_weight_decay_on_the_filters():
    model = ArchBN(2, generator=torch.Generator().manual_seed(0))
    names = ArchBN.scale_invariant_names(2)
    ens = Ensemble([model, model], filters=names)
    lr = torch.tensor([0.1, 0.1], dtype=torch.float64)
    ens.set_lr(lr)
    ens.set_weight_decay(torch.tensor([1e-2, 0.0]))
    before = {k: v.detach().clone() for k, v in ens.params.items()}
    x, y = _batch(2)
    x[1], y[1] = x[0], y[0]  # the same batch: copy 1 is the same step without decay
    ens.train_step(x, y)
    for name in names:
        w0 = before[name][0]
        grad_only = w0 - ens.params[name][1].detach()  # 0.1 * g
        expected = w0 - grad_only - 0.1 * 1e-2 * w0  # W - lr (g + wd W)
        torch.testing.assert_close(ens.params[name][0].detach(), expected)
    # the same single step as RiemannianSGD's own weight_decay on a plain model
    single = ArchBN(2, generator=torch.Generator().manual_seed(0))
    groups = [
        {"params": [p for n, p in single.named_parameters() if n in names], "weight_decay": 1e-2},
        {"params": [p for n, p in single.named_parameters() if n not in names]},
    ]
    opt = RiemannianSGD(groups, lr=0.1)
    loss = torch.nn.functional.cross_entropy(single(x[0]), y[0])
    loss.backward()
    opt.step()
    for name, param in single.named_parameters():
        torch.testing.assert_close(
            ens.params[name][0].detach(), param.detach(), rtol=1e-5, atol=1e-6
        )


def test_bsgd_elr_ensemble_steps_filters_with_rate_times_norm_squared():
    config = RunConfig(depth=2, method="bsgd-elr", seed=0)
    ens = build_ensemble([config], 1, 784, "cpu")
    assert ens.optimizer.param_groups[0]["filter_rate"] == "norm2"
    assert all("filter_rate" not in g for g in ens.optimizer.param_groups[1:])
    with torch.no_grad():
        ens.params["linears.0.weight"].mul_(3.0)  # filter norms 3 (the loss does not change)
    ens.set_lr(torch.tensor([0.1], dtype=torch.float64))
    w0 = ens.params["linears.0.weight"].detach().clone()
    x, y = _batch(1)
    ens.optimizer.zero_grad()
    logits = ens.forward(x, train=True)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
    g = ens.params["linears.0.weight"].grad.clone()
    ens.optimizer.step()
    torch.testing.assert_close(ens.params["linears.0.weight"].detach(), w0 - 0.1 * 9.0 * g)


def test_un_split_sets_separate_rates_for_filters_and_the_rest():
    ens = build_ensemble([RunConfig(depth=2, method="un-split", seed=0)], 2, 784, "cpu")
    first, *rest = ens.optimizer.param_groups
    assert first["manifold"] == "oblique" and len(first["params"]) == 2
    ens.set_lr(torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4]))
    assert first["lr"].tolist() == pytest.approx([0.1, 0.2])
    assert all(g["lr"].tolist() == pytest.approx([0.3, 0.4]) for g in rest)


def test_candidate_grids_and_their_extension():
    protocol = PROTOCOLS["study"]
    assert len(candidate_grid("un", protocol)) == 5
    assert len(candidate_grid("un-split", protocol)) == 25
    assert {c["weight_decay"] for c in candidate_grid("bsgd-wd", protocol)} == {1e-4, 1e-3, 1e-2}
    config = RunConfig(depth=2, method="un", seed=0, protocol=protocol)
    scored = [
        {"lr": c["lr"], "val_error": 0.1 + c["lr"], "diverged": False}
        for c in candidate_grid("un", protocol)
    ]  # the smallest rate is best
    steps = dict.fromkeys([(k, s) for k in ("lr", "other_lr") for s in ("low", "high")], 0)
    new = _extensions(config, scored, steps)
    assert [c["lr"] for c in new] == pytest.approx([10**-2.5])
    scored.append({"lr": 10**-2.5, "val_error": 0.5, "diverged": False})
    assert _extensions(config, scored, steps) == []  # now interior


def test_every_method_of_the_registry_is_known_to_the_study():
    from riemann_dnn.experiments.study import STUDY_METHODS

    assert set(STUDY_METHODS) <= set(METHODS)


# -- the conv ArchBN -------------------------------------------------------------------------
def test_conv_archbn_filters_are_the_bn_fed_convs_and_scale_invariant():
    from riemann_dnn.params import scale_invariant_weights

    model = ConvArchBN(2, 4, generator=torch.Generator().manual_seed(0))
    x = torch.rand(8, 784)
    assert model(x).shape == (8, 10)
    assert sorted(scale_invariant_weights(model, x)) == ConvArchBN.scale_invariant_names(2)
    model = model.double()
    for norm in model.norms:
        norm.eps = 1e-12  # BN's eps is the one thing that sees a filter's scale
    x = x.double()
    before = model(x)
    with torch.no_grad():
        for conv in model.convs:
            conv.weight.mul_(torch.rand(4, 1, 1, 1, dtype=torch.float64) + 0.5)
    torch.testing.assert_close(model(x), before, rtol=1e-8, atol=1e-8)


# -- the pipeline ----------------------------------------------------------------------------
def test_quick_study_end_to_end_on_a_tiny_slice(tmp_path, capsys):
    from riemann_dnn.experiments.study import SegNetPlan

    tiny = replace(
        PROTOCOLS["study"],
        lr_candidates=(1.0, 0.1),
        selection_train=100,
        selection_val=100,
        selection_epochs=1,
        validation=200,
        train_images=200,
        min_epochs=1,
        max_epochs=2,
        lr_extend=0,
        weight_decays=(1e-3,),
    )
    plan = StudyPlan(
        methods=("un", "bsgd", "bsgd-wd"),
        mlp_depths=(2,),
        mlp_seeds=2,
        mlp_protocol=tiny,
        conv_depths=(1,),
        conv_seeds=2,
        conv_width=2,
        conv_protocol=tiny,
        segnet=SegNetPlan(
            seeds=2,
            lr_grid=(0.1,),
            config={
                "model": "segnet-basic",
                "width": 2,
                "depth": 1,
                "kernel": 3,
                "epochs": 1,
                "batch_size": 8,
                "train_scenes": 8,
                "test_scenes": 8,
                "canvas": 32,
            },
        ),
    )
    result = reproduce_study(tmp_path, plan=plan, source="embedded", jobs=1, progress=True)
    bars = capsys.readouterr().err
    assert "study mlp:" in bars and "study conv:" in bars and "table2" not in bars, bars[-2000:]
    for name in ("study.json", "study.md", "study.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "study.json").read_text())  # strict JSON: "nan" strings
    assert saved["comparisons"] == json.loads(json.dumps(strict(result["comparisons"])))
    keys = {
        "arch",
        "depth",
        "a",
        "b",
        "n",
        "mean_diff",
        "ci_low",
        "ci_high",
        "p_paired",
        "p_holm",
        "p_wilcoxon",
        "effect_images",
    }
    pairs = {(c["arch"], c["a"], c["b"]) for c in saved["comparisons"]}
    assert {
        ("mlp", "un", "bsgd"),
        ("mlp", "un", "bsgd-wd"),
        ("conv", "un", "bsgd"),
        ("segnet", "un", "bsgd"),
    } <= pairs
    assert all(keys <= set(c) and c["n"] == 2 for c in saved["comparisons"])
    cells = {(c["arch"], c["method"]): c for c in saved["cells"]}
    assert cells[("mlp", "bsgd-wd")]["chosen"][0]["weight_decay"] == 1e-3
    assert cells[("mlp", "un")]["torch_threads"] == [1]
    assert saved["protocol"]["mlp"]["loss_reduction"] == "mean"
    assert saved["protocol"]["mlp"]["stop_on_accepted"] is True
    # a rerun resumes: nothing is trained again, the same numbers come back
    runs = sorted((tmp_path / "mlp" / "runs").glob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in runs]
    again = reproduce_study(tmp_path, plan=plan, source="embedded", jobs=1, progress=False)
    assert [p.stat().st_mtime_ns for p in runs] == stamps
    assert [c["mean_diff"] for c in again["comparisons"]] == [
        c["mean_diff"] for c in saved["comparisons"]
    ]


def test_study_plan_options():
    from riemann_dnn.experiments.study import study_plan

    plan = study_plan(archs=("mlp",), mlp_scale="paper")
    assert plan.conv_depths == () and plan.segnet is None
    assert plan.mlp_protocol == PROTOCOLS["study"] and plan.mlp_protocol.train_images is None
    old = study_plan(protocol="paper-sum")
    assert old.mlp_protocol.loss_reduction == "sum" and not old.mlp_protocol.stop_on_accepted
    assert old.mlp_protocol.train_images == study_plan().mlp_protocol.train_images
    with pytest.raises(ValueError, match="archs"):
        study_plan(archs=("resnet",))
    with pytest.raises(ValueError, match="mlp_scale"):
        study_plan(mlp_scale="huge")


# -- the momentum and adaptive arms -----------------------------------------------------------
def test_arms_select_their_methods_and_comparisons():
    from riemann_dnn.experiments.methods import ARMS
    from riemann_dnn.experiments.study import COMPARISONS, STUDY_METHODS, study_plan

    assert study_plan().methods == STUDY_METHODS == ARMS["sgd"]  # the default study unchanged
    plan = study_plan(optimizers=("sgd", "momentum", "adam"))
    assert plan.methods == ARMS["sgd"] + ARMS["momentum"] + ARMS["adam"]
    # every comparison pairs two methods of one arm, the arm's reference first or second
    for a, b in COMPARISONS:
        assert METHODS[a].arm == METHODS[b].arm
        assert ARMS[METHODS[a].arm][0] in (a, b)
    with pytest.raises(ValueError, match="optimizers must be some of"):
        study_plan(optimizers=("rmsprop",))
    with pytest.raises(ValueError, match="compares 'sgdp' with 'un-mom'"):
        StudyPlan(methods=("un", "sgdp"))


def test_adaptive_and_momentum_grids_are_scaled_and_decays_their_own():
    protocol = PROTOCOLS["study"]
    base = [c["lr"] for c in candidate_grid("un", protocol)]
    assert [c["lr"] for c in candidate_grid("un-mom", protocol)] == pytest.approx(
        [r / 10 for r in base]
    )
    assert [c["lr"] for c in candidate_grid("radam", protocol)] == pytest.approx(
        [r / 10 for r in base]
    )
    assert [c["lr"] for c in candidate_grid("adam", protocol)] == pytest.approx(
        [r / 100 for r in base]
    )
    adamw = candidate_grid("adamw", protocol)
    assert len(adamw) == 15 and {c["weight_decay"] for c in adamw} == {1e-2, 1e-1, 1.0}


def test_each_method_gets_its_optimizer_from_the_ensemble():
    import adamp

    from riemann_dnn.experiments.per_copy import PerCopy
    from riemann_dnn.optim import RiemannianAdam

    def built(method):
        return build_ensemble([RunConfig(depth=2, method=method, seed=0)], 2, 784, "cpu")

    un_mom = built("un-mom").optimizer
    assert isinstance(un_mom, RiemannianSGD)
    assert {g["momentum"] for g in un_mom.param_groups} == {0.9}
    assert {g["manifold"] for g in un_mom.param_groups} == {"oblique", "euclidean"}
    bsgd_mom = built("bsgd-mom").optimizer
    assert {g["manifold"] for g in bsgd_mom.param_groups} == {"euclidean"}
    radam = built("radam").optimizer
    assert isinstance(radam, RiemannianAdam) and radam.param_groups[0]["manifold"] == "oblique"
    assert {g["manifold"] for g in built("adam").optimizer.param_groups} == {"euclidean"}
    sgdp = built("sgdp").optimizer
    assert isinstance(sgdp, PerCopy) and isinstance(sgdp.inner, adamp.SGDP)
    assert sgdp.inner.defaults["momentum"] == 0.9
    ens = built("adamp")
    assert isinstance(ens.optimizer.inner, adamp.AdamP)
    # decoupled decay: the optimizer's, on the filters' group, one value per copy
    ens.set_weight_decay(torch.tensor([0.1, 1.0]))
    assert ens.weight_decay is None  # no L2 penalty in the objective
    assert ens.optimizer.param_groups[0]["weight_decay"].tolist() == pytest.approx([0.1, 1.0])
    assert all(g["weight_decay"] == 0.0 for g in ens.optimizer.param_groups[1:])
    assert isinstance(built("adamw").optimizer.inner, torch.optim.AdamW)


def test_adamw_ensemble_copy_equals_torch_adamw_on_one_model():
    """An AdamW copy of the ensemble (decoupled decay on the filters) steps as
    torch.optim.AdamW on a single model with the same groups (to the rounding of the batched
    forward; the steps themselves are equal bit for bit, tests/experiments/test_per_copy.py)."""
    config = RunConfig(depth=2, method="adamw", seed=0)
    ens = build_ensemble([config], 1, 784, "cpu")
    ens.set_lr(torch.tensor([1e-3], dtype=torch.float64))
    ens.set_weight_decay(torch.tensor([0.5]))
    single = ArchBN(2, generator=torch.Generator().manual_seed(0))
    names = ArchBN.scale_invariant_names(2)
    opt = torch.optim.AdamW(
        [
            {
                "params": [p for n, p in single.named_parameters() if n in names],
                "weight_decay": 0.5,
            },
            {"params": [p for n, p in single.named_parameters() if n not in names]},
        ],
        lr=1e-3,
        weight_decay=0.0,
    )
    for step in range(3):
        x, y = _batch(1, seed=step)
        ens.train_step(x, y)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(single(x[0]), y[0]).backward()
        opt.step()
    for name, param in single.named_parameters():
        torch.testing.assert_close(
            ens.params[name][0].detach(), param.detach(), rtol=1e-5, atol=1e-6
        )


def test_quick_study_with_the_new_arms_on_a_tiny_slice(tmp_path):
    from riemann_dnn.experiments.methods import ARMS
    from riemann_dnn.experiments.study import SegNetPlan

    tiny = replace(
        PROTOCOLS["study"],
        lr_candidates=(1.0, 0.1),
        selection_train=100,
        selection_val=100,
        selection_epochs=1,
        validation=200,
        train_images=200,
        min_epochs=1,
        max_epochs=2,
        lr_extend=0,
    )
    plan = StudyPlan(
        methods=ARMS["momentum"] + ARMS["adam"],
        mlp_depths=(2,),
        mlp_seeds=2,
        mlp_protocol=tiny,
        conv_depths=(1,),
        conv_seeds=2,
        conv_width=2,
        conv_protocol=tiny,
        segnet=SegNetPlan(
            seeds=2,
            lr_grid=(0.1,),
            config={
                "model": "segnet-basic",
                "width": 2,
                "depth": 1,
                "kernel": 3,
                "epochs": 1,
                "batch_size": 8,
                "train_scenes": 8,
                "test_scenes": 8,
                "canvas": 32,
            },
        ),
    )
    result = reproduce_study(tmp_path, plan=plan, source="embedded", jobs=1, progress=False)
    pairs = {(c["arch"], c["a"], c["b"]) for c in result["comparisons"]}
    expected = {("un-mom", "bsgd-mom"), ("un-mom", "sgdp")} | {
        ("radam", b) for b in ("adam", "adamw", "adamp")
    }
    assert pairs == {(arch, a, b) for arch in ("mlp", "conv", "segnet") for a, b in expected}
    assert all(c["n"] == 2 for c in result["comparisons"])
    # Holm over all 15 comparisons of the run
    from riemann_dnn.experiments.stats import holm

    assert [c["p_holm"] for c in result["comparisons"]] == holm(
        [c["p_paired"] for c in result["comparisons"]]
    )
    cells = {(c["arch"], c["method"]): c for c in result["cells"]}
    # rates at each method's scale; AdamW's and AdamP's decays from their own grid
    assert {x["lr"] for x in cells[("mlp", "radam")]["chosen"]} <= {0.1, 0.01}
    assert {x["lr"] for x in cells[("mlp", "adam")]["chosen"]} <= {0.01, 0.001}
    assert {x["lr"] for x in cells[("mlp", "sgdp")]["chosen"]} <= {0.1, 0.01}
    assert {x["weight_decay"] for x in cells[("mlp", "adamp")]["chosen"]} <= {1e-2, 1e-1, 1.0}
    assert cells[("segnet", "adamw")]["chosen"][0] == {"lr": 0.001, "weight_decay": 0.1}
    assert cells[("segnet", "radam")]["chosen"][0]["lr"] == pytest.approx(0.01)  # its own grid
    assert cells[("segnet", "adam")]["chosen"][0]["lr"] == pytest.approx(0.001)
    assert sorted(p.name for p in tmp_path.glob("segnet-*")) == [
        "segnet-adam",
        "segnet-adam-lr0.1",
        "segnet-adam-wd",
        "segnet-momentum",
    ]
    assert cells[("segnet", "un-mom")]["chosen"][0]["lr"] == pytest.approx(0.01)
    # UN's filters stay unit-norm under Riemannian Adam; Adam's drift
    assert cells[("mlp", "radam")]["filter_norms"][0] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert cells[("mlp", "adam")]["filter_norms"][0] != pytest.approx([1.0, 1.0], abs=1e-5)
