"""Fig 3 with a controlled x-axis: preference sets of known accuracy (``noisy@q``, ``random``), the design's minimum
detectable gain and the equivalence bound of a null result, the figure, and the slope with its training seeds.
Every expected value was worked out by hand."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from wow import WowError, params, schema
from wow.analysis import bootstrap, eval_metrics, fig3_points
from wow.figures import alignment_figures
from wow.preferences import build_preferences, pref_spec, save_preferences
from wow.preferences.preference_examples import flip_examples, true_acc_wow

matplotlib.use("Agg")


def ans(qid, idx, label, correct=False, split="train"):
    return {
        "answer_id": f"{qid}|A|{idx}",
        "question_id": qid,
        "task": "shortest_path",
        "split": split,
        "generator": "A",
        "sample_index": idx,
        "prompt_messages": [{"role": "user", "content": f"What is the answer to {qid}?"}],
        "text": f"A says {label} for {qid} (sample {idx})",
        "extracted": 10 + label,
        "raw_label": label,
        "correctness": 1.0 if correct else 0.0,
        "is_correct": correct,
        "mean_logprob": -1.0,
    }


@pytest.fixture
def answers():
    """Train questions q1..q4, each with wrong answers labelled -1, -2, -3, -4 (all different): 6 oracle pairs per
    question, 24 in all; one correct answer per question (no wrong-over-wrong pair with it)."""
    rows = []
    for q in ("q1", "q2", "q3", "q4"):
        rows += [ans(q, i, -(i + 1)) for i in range(4)] + [ans(q, 4, 0, correct=True)]
    return rows + [ans("q9", 0, -1, split="test"), ans("q9", 1, -2, split="test")]


def unordered(ds, split):
    return sorted(tuple(sorted((r["chosen_id"], r["rejected_id"]))) for r in ds[split])


def flipped_ids(ds, split):
    return {(r["chosen_id"], r["rejected_id"]) for r in ds[split] if r["source_method"] == "oracle_flipped"}


# -- the knob -----------------------------------------------------------------------------------------------------
def test_noisy_keeps_the_oracle_pairs_and_splits_and_flips_exactly_round_q_n_of_each_split(answers):
    oracle = build_preferences(answers, "oracle", generators=["A"], val_fraction=0.25, seed=3)
    noisy = build_preferences(answers, "noisy", flip=0.25, generators=["A"], val_fraction=0.25, seed=3)
    for split in ("train", "validation"):
        assert unordered(noisy, split) == unordered(oracle, split)  # the same pairs, the same count
        assert [r["question_id"] for r in noisy[split]] == [r["question_id"] for r in oracle[split]]
    # 4 questions, one in validation (6 pairs), three in train (18 pairs): round(0.25 * 18) = 4 (4.5 rounds to even)
    assert len(noisy["train"]) == 18 and len(noisy["validation"]) == 6
    n_train = sum(r["source_method"] == "oracle_flipped" for r in noisy["train"])
    n_val = sum(r["source_method"] == "oracle_flipped" for r in noisy["validation"])
    assert (n_train, n_val) == (round(0.25 * 18), round(0.25 * 6)) == (4, 2)
    assert true_acc_wow(noisy["train"]) == pytest.approx(14 / 18) and true_acc_wow(oracle["train"]) == 1.0
    text = {a["answer_id"]: a["text"] for a in answers}
    for r in noisy["train"]:
        flipped = r["source_method"] == "oracle_flipped"
        assert (r["chosen_label"] < r["rejected_label"]) == flipped  # the flipped pairs prefer the more wrong answer
        assert r["pref_type"] == "noisy"
        assert (
            r["chosen"][0]["content"] == text[r["chosen_id"]] and r["rejected"][0]["content"] == text[r["rejected_id"]]
        )


def test_random_flips_half_and_a_smaller_share_flips_a_subset_of_a_larger_ones(answers):
    kw = {"generators": ["A"], "val_fraction": 0.0, "seed": 0}
    random_set = build_preferences(answers, "random", **kw)
    assert sum(r["source_method"] == "oracle_flipped" for r in random_set["train"]) == 12  # 0.5 x 24
    assert true_acc_wow(random_set["train"]) == 0.5
    small = flipped_ids(build_preferences(answers, "noisy", flip=0.1, **kw), "train")
    large = flipped_ids(build_preferences(answers, "noisy", flip=0.25, **kw), "train")
    assert len(small) == 2 and len(large) == 6 and small < large  # round(2.4), round(6.0): nested
    assert flipped_ids(build_preferences(answers, "noisy", flip=0.1, **kw), "train") == small  # seeded


def test_flip_examples_swaps_every_field_of_the_pair():
    ex = {"chosen": "c", "rejected": "r", "chosen_id": "1", "rejected_id": "2", "chosen_label": -1.0}
    ex |= {"rejected_label": -3.0, "source_method": "oracle", "question_id": "q"}
    (out,) = flip_examples([ex], 1.0, seed=0)
    assert out == ex | {"chosen": "r", "rejected": "c", "chosen_id": "2", "rejected_id": "1"} | {
        "chosen_label": -3.0,
        "rejected_label": -1.0,
        "source_method": "oracle_flipped",
    }
    assert flip_examples([ex], 0.0, seed=0) == [ex] and math.isnan(true_acc_wow([]))
    with pytest.raises(WowError, match=r"\[0, 1\]"):
        flip_examples([ex], 1.5, seed=0)


def test_pref_type_specs_and_setting_names():
    assert schema.parse_pref_type("noisy@0.25") == ("noisy", 0.25)
    assert schema.parse_pref_type("random") == ("random", None)
    with pytest.raises(ValueError, match="share of oracle pairs to flip"):
        schema.parse_pref_type("noisy")
    with pytest.raises(ValueError, match="only score and noisy"):
        schema.parse_pref_type("random@0.5")
    assert [schema.flip_share(*schema.parse_pref_type(s)) for s in ("oracle", "noisy@0.1", "random", "direct")] == [
        0.0,
        0.1,
        0.5,
        None,
    ]
    assert schema.setting_name("self", "noisy", "dpo", margin=0.25) == "self_noisy_0.25_dpo"
    assert schema.setting_name("self", "random", "dpo") == "self_random_dpo"
    P = params.validate({"pref_types": ["oracle", "noisy@0.1", "noisy@0.25", "random"], "judges": []})
    assert [s.setting(P, "dpo") for s in pref_spec.pref_specs(P)] == [
        "self_oracle_dpo",
        "self_noisy_0.1_dpo",
        "self_noisy_0.25_dpo",
        "self_random_dpo",
    ]


def test_fig3_x_of_a_controlled_set_is_the_accuracy_of_its_saved_training_pairs(tmp_path, answers):
    P = params.validate({"pref_types": ["oracle", "noisy@0.25", "random"], "judges": [], "output_root": str(tmp_path)})
    for spec in pref_spec.pref_specs(P):
        ds = build_preferences(answers, spec.pref_type, flip=spec.margin, generators=["A"], val_fraction=0.25, seed=3)
        save_preferences(ds, P.layout.preferences("shortest_path", spec.setting(P)))
    alignment = pd.DataFrame(
        [
            {"setting": s, "task": "shortest_path", "pref_type": k, "source": "self", "trainer": "dpo", "margin": m}
            | {"judge": None, "d_p_wrong": 0.0, "d_acc": 0.0, "neg_d_ece": 0.0}
            for s, k, m in (
                ("self_oracle_dpo", "oracle", None),
                ("self_noisy_0.25_dpo", "noisy", 0.25),
                ("self_random_dpo", "random", None),
            )
        ]
    )
    points = fig3_points.method_acc_wow(P, pd.DataFrame(), alignment).set_index("setting")
    assert points.loc["self_oracle_dpo", "acc_wow"] == 1.0
    assert points.loc["self_noisy_0.25_dpo", "acc_wow"] == pytest.approx(14 / 18)  # 4 of 18 training pairs flipped
    assert points.loc["self_random_dpo", "acc_wow"] == pytest.approx(9 / 18)
    assert points.loc["self_noisy_0.25_dpo", "acc_wow_pairs"] == 18
    assert list(points["method"]) == ["oracle", "noisy@0.25", "random"]


# -- power ----------------------------------------------------------------------------------------------------------
def test_detectable_difference_by_hand():
    # 95% CI [-0.1, 0.1]: SE = 0.2 / (2 x 1.959964) = 0.0510214; (1.959964 + 0.841621) x SE = 0.1429413
    assert bootstrap.detectable_difference(-0.1, 0.1) == pytest.approx(0.1429413, abs=1e-6)
    assert bootstrap.detectable_difference(0.3, 0.5) == pytest.approx(0.1429413, abs=1e-6)  # the spread, not the place
    # 90% power: z_0.9 = 1.281552 -> (1.959964 + 1.281552) x 0.0510214 = 0.1653866
    assert bootstrap.detectable_difference(-0.1, 0.1, power=0.9) == pytest.approx(0.1653866, abs=1e-6)
    assert math.isnan(bootstrap.detectable_difference(None, 0.1))
    assert math.isnan(bootstrap.detectable_difference(float("nan"), 0.1))


def test_compare_reports_the_detectable_difference_of_each_gain():
    def row(q, c):
        return {"question_id": q, "correctness": c, "is_correct": c == 1.0, "mean_logprob": -0.5, "extracted": 1}

    before = [row(f"q{i}", c) for i, c in enumerate([0.2, 0.4, 0.1, 0.3, 0.5, 1.0])]
    after = [row(f"q{i}", c) for i, c in enumerate([0.3, 0.4, 0.3, 0.3, 0.6, 1.0])]
    out = eval_metrics.compare_before_after(before, after, n_boot=200, seed=1)
    for gain in ("d_p_wrong", "d_acc", "neg_d_ece", "d_mean_correctness"):
        assert out[f"{gain}_mde"] == pytest.approx(
            bootstrap.detectable_difference(out[f"{gain}_ci_low"], out[f"{gain}_ci_high"])
        )
    assert out["d_p_wrong_mde"] > 0
    assert math.isnan(eval_metrics.compare_before_after(before, after, n_boot=0)["d_p_wrong_mde"])


def test_equivalence_bound_is_the_90_percent_intervals_far_end():
    assert bootstrap.equivalence_bound(-0.02, 0.05) == 0.05
    assert bootstrap.equivalence_bound(-0.07, 0.01) == 0.07
    assert bootstrap.equivalence_bound(0.01, 0.03) == 0.03  # a significant gain is bounded too
    assert math.isnan(bootstrap.equivalence_bound(None, 0.1))


def test_compare_reports_the_equivalence_bound_of_each_gain_by_hand():
    """Two questions. q1: before one of two answers correct, after both (ΔAcc 0.5); q2: none correct either way
    (ΔAcc 0). A resample draws {q1, q1} (0.5), {q2, q2} (0) or one of each (0.25) with probabilities 1/4, 1/4, 1/2:
    the 90% interval is [0, 0.5], so the data bound |ΔAcc| by 0.5, and the 95% CI [0, 0.5] holds 0."""

    def row(q, correct):
        return {"question_id": q, "correctness": float(correct), "is_correct": correct, "mean_logprob": -0.5}

    before = [row("q1", True), row("q1", False), row("q2", False), row("q2", False)]
    after = [row("q1", True), row("q1", True), row("q2", False), row("q2", False)]
    out = eval_metrics.compare_before_after(before, after, n_boot=2000, seed=0)
    assert (out["d_acc"], out["d_acc_ci_low"], out["d_acc_ci_high"]) == (0.25, 0.0, 0.5)
    assert out["d_acc_equiv_bound"] == 0.5
    assert math.isnan(eval_metrics.compare_before_after(before, after, n_boot=0)["d_acc_equiv_bound"])


# -- the figure -----------------------------------------------------------------------------------------------------
def test_fig3_draws_each_points_own_ci_and_states_the_designs_power_in_words_not_as_a_band():
    points = pd.DataFrame(
        {
            "task": ["shortest_path"] * 3,
            "method": ["oracle", "noisy@0.25", "random"],
            "source": ["self"] * 3,
            "acc_wow": [1.0, 0.75, 0.5],
            "d_p_wrong": [0.10, 0.05, 0.0],
            "d_p_wrong_ci_low": [0.02, -0.03, -0.08],
            "d_p_wrong_ci_high": [0.18, 0.13, 0.08],
            "d_p_wrong_mde": [0.11, 0.12, 0.13],
            "d_acc": [0.0, 0.0, 0.0],
            "neg_d_ece": [0.0, 0.0, 0.0],
        }
    )
    fig = alignment_figures.fig_alignment_vs_acc_wow(points)
    ax = fig.axes[0]
    (bars,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segments = sorted(seg.tolist() for seg in bars.lines[2][0].get_segments())
    assert segments == [
        [[0.5, -0.08], [0.5, 0.08]],
        [[0.75, -0.03], [0.75, 0.13]],
        [[1.0, pytest.approx(0.02)], [1.0, pytest.approx(0.18)]],
    ]
    assert not ax.patches  # no band to read the points against
    (note,) = [t for t in ax.texts if t.get_gid() == "design_power"]
    assert note.get_text() == "this design detects a true gain of ±0.120 with 80% power"  # the median of the three
    assert not [c for c in fig.axes[1].containers if isinstance(c, ErrorbarContainer)]  # no CI columns for ΔAcc
    assert not [t for t in fig.axes[1].texts if t.get_gid() == "design_power"]  # nor a design note


# -- the slope of Fig 3's line, with its CI ---------------------------------------------------------------------------
def test_gain_slope_and_its_paired_bootstrap_by_hand():
    """Two settings, two test questions, every answer wrong. Before: q1 0.2, q2 0.4 (p_wrong 0.3). After the set of
    Acc_WoW 1.0: q1 0.5, q2 0.6 (Δ 0.25); after the set of 0.5: unchanged (Δ 0). Slope 0.25 / 0.5 = 0.5.
    A resample draws {q1, q1} (Δ 0.3: slope 0.6), {q2, q2} (Δ 0.2: slope 0.4) or one of each (0.5), with
    probabilities 1/4, 1/4, 1/2, so the 95% CI is [0.4, 0.6] and the detectable slope 0.7147 x 0.2."""
    from wow.analysis import gain_slope
    from wow.figures import alignment_figures

    def rows(c1, c2):
        return [
            {"question_id": q, "correctness": c, "is_correct": False, "mean_logprob": -1.0, "extracted": 1}
            for q, c in (("q1", c1), ("q2", c2))
        ]

    points = pd.DataFrame(
        {"setting": ["good", "coin"], "task": ["t", "t"], "acc_wow": [1.0, 0.5], "d_p_wrong": [0.25, 0.0]}
    )
    answers = {("t", "good"): (rows(0.2, 0.4), rows(0.5, 0.6)), ("t", "coin"): (rows(0.2, 0.4), rows(0.2, 0.4))}
    table = gain_slope.gain_slopes(points, answers, n_boot=2000, seed=0).set_index("gain")
    p = table.loc["d_p_wrong"]
    assert (p.n_settings, p.n_questions) == (2, 2)
    assert p.slope == pytest.approx(0.5)
    assert (p.ci_low, p.ci_high) == (pytest.approx(0.4), pytest.approx(0.6))
    assert p.mde == pytest.approx(bootstrap.detectable_difference(0.4, 0.6))
    line = alignment_figures.fig3_lines(points).set_index(["gain", "line"]).loc[("d_p_wrong", "all datasets")]
    assert line.slope == pytest.approx(p.slope)  # the same line as the figure's
    assert table.loc["d_acc", "slope"] == 0 and table.loc["neg_d_ece", "slope"] == pytest.approx(0)
    one = gain_slope.gain_slopes(points.iloc[:1], answers)
    assert one.empty  # one point has no slope


def one_question_rows(correctness):
    return [
        {"question_id": "q1", "correctness": correctness, "is_correct": False, "mean_logprob": -1.0, "extracted": 1}
    ]


def test_gain_slope_takes_the_spread_between_training_seeds_by_hand():
    """One test question (its resampling changes nothing), two settings with two seeds each. Before: 0.2. The set of
    Acc_WoW 1.0 gains 0.2 and 0.4 (seeds 0 and 1), the set of 0.5 gains 0 and 0: slope (0.3 - 0) / 0.5 = 0.6. The
    spread between seeds: squares 0.01 + 0.01 + 0 + 0 = 0.02 over 2 degrees of freedom, 0.01 (no test-answer noise
    to take out with one question); Sxx over the four rows is 4 x 0.25^2 = 0.25, so the slope's seed variance is
    0.01 / 0.25 = 0.04 (SD 0.2), drawn as 0.2 x t(2): the 95% CI is 0.6 ± 4.303 x 0.2 = [-0.261, 1.461]."""
    from wow.analysis import gain_slope

    before = one_question_rows(0.2)
    points = pd.DataFrame(
        {
            "setting": ["good", "good", "coin", "coin"],
            "task": ["t"] * 4,
            "train_seed": [0, 1, 0, 1],
            "acc_wow": [1.0, 1.0, 0.5, 0.5],
        }
    )
    answers = {
        ("t", "good", 0): (before, one_question_rows(0.4)),
        ("t", "good", 1): (before, one_question_rows(0.6)),
        ("t", "coin", 0): (before, one_question_rows(0.2)),
        ("t", "coin", 1): (before, one_question_rows(0.2)),
    }
    table = gain_slope.gain_slopes(points, answers, n_boot=20_000, seed=0).set_index("gain")
    p = table.loc["d_p_wrong"]
    assert (p.n_settings, p.n_runs, p.n_questions) == (2, 4, 1)
    assert p.slope == pytest.approx(0.6)
    assert p.seed_sd == pytest.approx(0.1)
    assert p.ci_low == pytest.approx(0.6 - 4.303 * 0.2, abs=0.03) and p.ci_high == pytest.approx(
        0.6 + 4.303 * 0.2, abs=0.03
    )
    assert "training seeds (2-2 per setting" in p.variance_included and "x held fixed" in p.variance_excluded

    # the same four models as four settings of their own: nothing but the one question is resampled
    alone = points.assign(setting=["good0", "good1", "coin0", "coin1"]).drop(columns="train_seed")
    named = zip(alone.setting, points.setting, points.train_seed, strict=True)
    flat = {("t", s): answers[("t", k, seed)] for s, k, seed in named}
    q = gain_slope.gain_slopes(alone, flat, n_boot=200, seed=0).set_index("gain").loc["d_p_wrong"]
    assert q.slope == pytest.approx(0.6) and q.ci_low == pytest.approx(0.6) and q.ci_high == pytest.approx(0.6)
    assert math.isnan(q.seed_sd) and "training seed and the grid's choice" in q.variance_excluded


def test_seed_variance_takes_out_the_test_answers_own_noise():
    """Two seeds whose gains differ by 0.2 (squares 0.02) while their deviations vary by 0.0025 each across the
    question resamples (summed 0.005): the seed variance is (0.02 - 0.005) / 1; noise larger than the spread gives
    0."""
    from wow.analysis import gain_slope

    gains = np.array([0.1, 0.3])
    resamples = np.array([[0.05, 0.35], [0.15, 0.25]])  # deviations ±0.15 and ±0.05: variance 0.0025 each
    assert gain_slope.seed_variance(gains, resamples, [np.array([0, 1])]) == (pytest.approx(0.015), 1)
    noisy = np.array([[-0.5, 0.9], [0.7, -0.3]])
    assert gain_slope.seed_variance(gains, noisy, [np.array([0, 1])]) == (0.0, 1)
    assert gain_slope.seed_variance(gains, resamples, [np.array([0]), np.array([1])]) == (0.0, 0)
