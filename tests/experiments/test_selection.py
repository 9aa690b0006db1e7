import math

from riemann_dnn.experiments.selection import _best, best_candidate


def _c(lr, score, diverged=False):
    return {"lr": lr, "val_error": score, "mean_iou": score, "diverged": diverged}


def test_best_candidate_ignores_diverged_and_nonfinite_scores():
    cands = [_c(1.0, 0.01, diverged=True), _c(0.1, 0.05), _c(0.01, math.nan), _c(1e-3, 0.07)]
    assert best_candidate(cands, "val_error")["lr"] == 0.1
    assert best_candidate(cands, "mean_iou", maximize=True)["lr"] == 1e-3


def test_best_candidate_is_none_when_nothing_is_usable():
    assert best_candidate([_c(1.0, 0.1, diverged=True), _c(0.1, math.nan)], "val_error") is None


def test_the_protocol_falls_back_to_the_lowest_error_when_all_diverged():
    cands = [_c(1.0, 0.3, diverged=True), _c(0.1, 0.2, diverged=True)]
    assert _best(cands)["lr"] == 0.1
