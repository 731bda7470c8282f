"""wow.analysis.acc_wow, wow.analysis.bootstrap and wow.analysis.metrics on hand-computed cases: Acc_WoW, CIs, evaluation metrics."""

import math

import numpy as np
import pytest
from conftest import answer
from wow import WowError
from wow.analysis import acc_wow, bootstrap, metrics
from wow.pairs import MARGINS, candidate_pairs, margin_keep, pair_id


# -- Acc_WoW ------------------------------------------------------------------------------------------------------
def test_tie_counts_as_miss():
    res = acc_wow.acc_wow([3, 1, 2], [1, 1, 5], [0, -1, -1], [-1, -3, -2], n_boot=0)
    assert res.n_hits == 1 and res.n_pairs == 3
    assert res.acc == pytest.approx(1 / 3)


def test_oracle_scores_give_exactly_one():
    la, lb = [-1.0, -3.0, -2.0], [-3.0, -2.0, -7.0]
    for m in MARGINS:
        res = acc_wow.acc_wow(la, lb, la, lb, m, n_boot=200)
        assert res.acc == 1.0 and res.ci_low == 1.0 and res.ci_high == 1.0


def test_margin_where_int_n_m_is_zero_keeps_the_largest_gap_first_on_ties():
    # gaps 1, 5, 2, 5, 3: the two largest (5) tie; the earlier pair (index 1) wins the single slot.
    pred_a, pred_b = [1, 5, 2, 5, 3], [0, 0, 0, 0, 0]
    label_a, label_b = [1, 1, 1, -1, 1], [0, 0, 0, 0, 0]  # index 1 is a hit, index 3 a miss
    res = acc_wow.acc_wow(pred_a, pred_b, label_a, label_b, 0.1, n_boot=0)
    assert (res.n_pairs, res.n_hits, res.acc) == (1, 1, 1.0)
    res = acc_wow.acc_wow(pred_a, pred_b, label_a, label_b, 0.5, n_boot=0)  # floor(2.5) = 2: indices 1 and 3
    assert (res.n_pairs, res.n_hits, res.acc) == (2, 1, 0.5)
    assert list(margin_keep([1, 5, 2, 5, 3], 0.5)) == [1, 3]


@pytest.mark.parametrize("margin", [0, -0.1, 1.5, "x", None])
def test_margin_outside_unit_interval_is_an_error(margin):
    with pytest.raises(WowError, match="margin"):
        acc_wow.acc_wow([1], [0], [1], [0], margin)


def test_empty_pair_set_gives_none_with_a_note():
    res = acc_wow.acc_wow([], [], [], [], 0.5)
    assert res.acc is None and res.n_pairs == 0 and res.n_hits == 0
    assert res.ci_low is None and res.ci_high is None
    assert res.note == "no candidate pairs"


def test_missing_predictions_are_dropped_and_counted():
    res = acc_wow.acc_wow([1, None, float("nan")], [0, 2, 1], [1, 1, 1], [0, 0, 0], n_boot=0)
    assert (res.n_candidates, res.n_missing, res.n_pairs, res.acc) == (3, 2, 1, 1.0)
    res = acc_wow.acc_wow([None], [0], [1], [0], n_boot=0)
    assert res.acc is None and res.n_missing == 1 and "missing" in res.note


def test_equal_labels_in_a_pair_are_an_error():
    with pytest.raises(WowError, match="equal labels"):
        acc_wow.acc_wow([1], [0], [-2], [-2])


def test_margin_below_one_without_gaps_is_an_error():
    with pytest.raises(WowError, match="gap"):
        acc_wow.acc_from_hits([True, False], None, 0.5)


def test_bootstrap_ci_of_acc_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(1)
    hits = rng.random(200) < 0.7
    a = acc_wow.acc_from_hits(hits, n_boot=500, seed=3)
    b = acc_wow.acc_from_hits(hits, n_boot=500, seed=3)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert a.ci_low < a.acc < a.ci_high
    assert a.ci_high - a.ci_low == pytest.approx(2 * 1.96 * math.sqrt(a.acc * (1 - a.acc) / 200), rel=0.25)


def test_cluster_bootstrap_resamples_whole_groups():
    # Two questions: all hits in one, all misses in the other. Resampling questions gives only 0, 0.5 or 1.
    hits = [1, 1, 1, 0, 0, 0]
    res = acc_wow.acc_from_hits(hits, n_boot=300, seed=0, groups=["q1"] * 3 + ["q2"] * 3)
    assert res.acc == 0.5
    assert res.ci_low == 0.0 and res.ci_high == 1.0


def test_acc_wow_pairs_uses_the_score_map():
    rows = [answer("q", 0, -1.0), answer("q", 1, -3.0), answer("q", 2, -2.0)]
    pairs = candidate_pairs(rows)  # (0,1) (0,2) (1,2)
    scores = {"q|g|0": 5.0, "q|g|1": 1.0, "q|g|2": 1.0}  # hit, hit, tie
    res = acc_wow.acc_wow_pairs(pairs, scores, n_boot=0)
    assert (res.n_pairs, res.n_hits) == (3, 2)
    assert pair_id(*pairs[0]) == "q|g|0&q|g|1"


def test_acc_wow_by_bins_hand_computed():
    # labels in [-8, 0], d=2: bins [-8, -4) and [-4, 0].
    label_a, label_b = [0, -8, -5], [-1, 0, -6]
    pred_a, pred_b = [2, 3, 1], [1, 1, 0]  # hit (bin 1,1), miss (bins 0,1), hit (bin 0,0)
    df = acc_wow.acc_wow_by_bins(pred_a, pred_b, label_a, label_b, d=2)
    cells = {(r.bin_i, r.bin_j): (r.n_pairs, r.acc) for r in df.itertuples()}
    assert cells == {(0, 0): (1, 1.0), (0, 1): (1, 0.0), (1, 1): (1, 1.0)}
    assert df.loc[0, ["lo_i", "hi_i"]].tolist() == [-8.0, -4.0]
    # margin 0.5 keeps floor(1.5) = 1 pair: the largest gap (2, pair 2) -> only cell (0, 1), a miss.
    df = acc_wow.acc_wow_by_bins(pred_a, pred_b, label_a, label_b, d=2, margin=0.5)
    assert df.n_pairs.tolist() == [0, 1, 0] and df.acc.isna().tolist() == [True, False, True]


# -- evaluation metrics -------------------------------------------------------------------------------------------
def test_mean_correctness_counts_missing_as_zero_and_clips():
    assert metrics.mean_correctness([1.0, 0.5, None, 0.0]) == 0.375
    assert metrics.mean_correctness([1.2, -0.5]) == 0.5


def test_p_wrong_is_mean_correctness_over_wrong_answers_with_unparsed_at_zero():
    assert metrics.p_wrong([1.0, 0.5, None, 0.25], [True, False, False, False]) == pytest.approx(0.25)


def test_p_wrong_without_wrong_answers_is_nan():
    assert math.isnan(metrics.p_wrong([1.0], [True]))


def test_accuracy():
    assert metrics.accuracy([True, False, False, True]) == 0.5
    with pytest.raises(WowError):
        metrics.accuracy([])


def test_ece_hand_computed():
    # bin (0.8, 0.9]: conf 0.9, acc 0.5, weight 2/3; bin (0.1, 0.2]: conf 0.2, acc 0, weight 1/3.
    assert metrics.ece([0.9, 0.9, 0.2], [True, False, False]) == pytest.approx((2 * 0.4 + 0.2) / 3)


def test_perfect_calibration_has_zero_ece():
    assert metrics.ece([1.0, 1.0, 0.0], [True, True, False]) == 0.0


def test_reliability_bins_edges():
    table = metrics.reliability_bins([0.0, 0.1, 0.3, 0.31, 1.0], [False, False, True, True, True])
    assert len(table) == 10
    assert table.n.tolist() == [2, 0, 1, 1, 0, 0, 0, 0, 0, 1]  # 0 and 0.1 in the first bin, 0.3 in (0.2, 0.3]
    assert table.loc[0, "mean_conf"] == pytest.approx(0.05)
    assert math.isnan(table.loc[1, "accuracy"])


def test_ece_rejects_missing_or_out_of_range_confidence():
    with pytest.raises(WowError):
        metrics.ece([None, 0.5], [True, False])
    with pytest.raises(WowError):
        metrics.ece([1.5], [True])


def test_bootstrap_ci_resamples_rows_jointly():
    x = np.arange(50.0)
    lo, hi = bootstrap.bootstrap_ci(lambda a, b: float(np.mean(a - b)), x, x.copy(), n_boot=200)
    assert (lo, hi) == (0.0, 0.0)
    lo, hi = bootstrap.bootstrap_ci(metrics.p_wrong, [0.5, 0.2, 1.0, None], [False, False, True, False], n_boot=200)
    assert 0.0 <= lo <= hi <= 0.5


def test_bootstrap_ci_is_seeded():
    x = np.random.default_rng(0).random(40)
    assert bootstrap.bootstrap_ci(np.mean, x, seed=5) == bootstrap.bootstrap_ci(np.mean, x, seed=5)
    assert bootstrap.bootstrap_ci(np.mean, x, seed=5) != bootstrap.bootstrap_ci(np.mean, x, seed=6)


def test_pearson_hand_computed():
    r, p, n = metrics.pearson([1, 2, 3, 4], [1, 3, 2, 4])
    assert (r, n) == (pytest.approx(0.8), 4)
    assert p == pytest.approx(0.2)  # t-test with 2 degrees of freedom: p = 1 - |t| / sqrt(t^2 + 2) = 0.2


def test_pearson_undefined_cases_are_none():
    assert metrics.pearson([1, 2], [3, 4]) == (None, None, 2)
    assert metrics.pearson([1, 2, None, 4], [1, float("nan"), 3, 4]) == (None, None, 2)
    assert metrics.pearson([1, 1, 1], [1, 2, 3]) == (None, None, 3)
