"""The project's 95% intervals cover the truth, proven by simulation: data sets drawn with a known true value, a
question-level effect and the project's sizes (tens of questions; 10 answers each to judge, 4 to evaluate, the
``eval_samples`` default), a few hundred times; the
nominal 95% interval must hold the truth in 90-98% of them. The same simulation shows the interval that resamples
pairs (or answers, or ignores the training seeds) holding it far less often. Seeded and vectorised: seconds.

The true values come from one large draw of the same model (tens of thousands of questions). The question effects
are moderate on purpose: where a small margin keeps the pairs of a few questions only, even the question bootstrap
runs narrow (docs/footguns.md).
"""

import numpy as np
import pandas as pd
import pytest
from wow.analysis import acc_wow, eval_metrics, gain_slope, metrics
from wow.pairs import margin_keep

N_BOOT = 200
REPS = 250  # data sets per interval (the slope's studies: SLOPE_REPS; the pair bootstrap's: PAIR_REPS)
SLOPE_REPS, PAIR_REPS = 200, 150
NOMINAL = (0.90, 0.98)
ANSWERS = 10  # answers per question the judge orders
EVAL_ANSWERS = 4  # answers per test question of each evaluated model (eval_samples)

# -- Acc_WoW: 40 questions, 10 wrong answers each (45 pairs), a judge whose noise varies by question ------------------
PAIR_A, PAIR_B = np.triu_indices(ANSWERS, 1)
ACC_QUESTIONS, JUDGE_NOISE, SKILL_SPREAD = 40, 6.0, 0.3


def judged_pairs(rng: np.random.Generator, n_questions: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hits, gaps and question ids of every pair: labels 0..9 per question, scores = label + noise whose scale
    varies by question (the judge's skill on that question)."""
    labels = np.tile(np.arange(ANSWERS, dtype=float), (n_questions, 1))
    scale = np.exp(np.log(JUDGE_NOISE) + SKILL_SPREAD * rng.standard_normal(n_questions))[:, None]
    scores = labels + scale * rng.standard_normal((n_questions, ANSWERS))
    pa, pb = scores[:, PAIR_A], scores[:, PAIR_B]
    hits = ((pa - pb) * (labels[:, PAIR_A] - labels[:, PAIR_B]) > 0).reshape(-1)
    return hits, np.abs(pa - pb).reshape(-1), np.repeat(np.arange(n_questions), len(PAIR_A))


@pytest.fixture(scope="module")
def acc_coverage() -> dict[tuple[float, str], float]:
    """Share of data sets whose Acc_WoW interval holds the true Acc_WoW, per margin and resampling unit."""
    out = {}
    all_hits, all_gaps, _ = judged_pairs(np.random.default_rng(12345), 40_000)
    for margin in (1.0, 0.5, 0.1):
        truth = all_hits[margin_keep(all_gaps, margin)].mean()
        rng = np.random.default_rng(7)
        held = {"question": 0, "pair": 0}
        for rep in range(REPS):
            hits, gaps, questions = judged_pairs(rng, ACC_QUESTIONS)
            for unit in held if rep < PAIR_REPS else ["question"]:
                groups = questions if unit == "question" else None
                res = acc_wow.acc_from_hits(hits, gaps, margin, n_boot=N_BOOT, seed=rep, groups=groups)
                held[unit] += res.ci_low <= truth <= res.ci_high
        out.update({(margin, "question"): held["question"] / REPS, (margin, "pair"): held["pair"] / PAIR_REPS})
    return out


@pytest.mark.parametrize("margin", [1.0, 0.5, 0.1])
def test_acc_wow_interval_over_questions_covers_the_truth_at_every_margin(acc_coverage, margin):
    assert NOMINAL[0] <= acc_coverage[(margin, "question")] <= NOMINAL[1], acc_coverage


@pytest.mark.parametrize("margin", [1.0, 0.5, 0.1])
def test_acc_wow_interval_over_pairs_under_covers_clustered_pairs(acc_coverage, margin):
    assert acc_coverage[(margin, "pair")] < 0.85, acc_coverage
    assert acc_coverage[(margin, "pair")] < acc_coverage[(margin, "question")] - 0.1


# -- the gains: 36 test questions, 4 answers each, before and after; the gain varies by question ---------------------
TEST_QUESTIONS, GAIN_SPREAD = 36, 0.25


def expit(z):
    return 1 / (1 + np.exp(-z))


def question_effects(rng: np.random.Generator, n_questions: int) -> dict[str, np.ndarray]:
    """Per question: difficulty, the wrong answers' mean correctness, confidence offset, and how much this question
    gains per unit of preference accuracy beyond the mean (the question-level effect on the gain)."""
    z = rng.standard_normal((4, n_questions))
    return {"difficulty": z[0], "wrongness": z[1], "confidence": z[2], "gain": GAIN_SPREAD * z[3]}


def model_answers(rng, q, lift_mean: float = 0.0, acc: float = 0.0, model_effect: float = 0.0):
    """``(correctness, is_correct, confidence)``, each ``(questions, answers)``, of a model that is ``lift_mean +
    acc * (1 + question effect)`` less wrong than the original (0: the original model)."""
    n = len(q["difficulty"])
    lift = lift_mean + model_effect + acc * (0.04 + q["gain"])
    ok = rng.random((n, EVAL_ANSWERS)) < expit(-1.8 + 0.8 * q["difficulty"] + 0.5 * lift)[:, None]
    mean = np.clip(0.45 + 0.12 * q["wrongness"] + lift, 0.02, 0.98)[:, None]
    wrong = rng.beta(4 * mean * np.ones((1, EVAL_ANSWERS)), 4 * (1 - mean))
    confidence = expit(
        0.3 + 0.6 * q["confidence"][:, None] + 0.8 * rng.standard_normal((n, EVAL_ANSWERS)) - 0.6 * lift[:, None]
    )
    return np.where(ok, 1.0, wrong), ok, confidence


def answer_rows(correctness, ok, confidence, by_slot: bool = False) -> list[dict]:
    """Answer rows; ``by_slot``: every answer its own 'question' (a bootstrap that ignores questions)."""
    out = []
    for q, (cs, oks, confs) in enumerate(
        zip(correctness.tolist(), ok.tolist(), np.log(confidence).tolist(), strict=True)
    ):
        for a, (c, o, lp) in enumerate(zip(cs, oks, confs, strict=True)):
            qid = f"q{q}#{a}" if by_slot else f"q{q}"
            out.append({"question_id": qid, "correctness": c, "is_correct": o, "mean_logprob": lp})
    return out


def pooled_metrics(correctness, ok, confidence) -> dict[str, float]:
    c, o, f = correctness.ravel(), ok.ravel(), confidence.ravel()
    return {"p_wrong": c[~o].mean(), "accuracy": o.mean(), "ece": metrics.ece(f, o)}


def true_gains(accs) -> dict[str, np.ndarray]:
    """The gains of models aligned at each ``acc`` on a very large set of questions."""
    rng = np.random.default_rng(999)
    q = question_effects(rng, 60_000)
    before = pooled_metrics(*model_answers(rng, q))
    after = [pooled_metrics(*model_answers(rng, q, 0.01, acc)) for acc in accs]
    return {
        "d_p_wrong": np.array([a["p_wrong"] - before["p_wrong"] for a in after]),
        "d_acc": np.array([a["accuracy"] - before["accuracy"] for a in after]),
        "neg_d_ece": np.array([before["ece"] - a["ece"] for a in after]),
    }


@pytest.fixture(scope="module")
def gain_coverage() -> dict[tuple[str, str], float]:
    """Share of data sets whose paired gain interval holds the true gain, per gain and resampling unit."""
    truth = {g: v[0] for g, v in true_gains([1.0]).items()}
    rng = np.random.default_rng(3)
    held = {(g, unit): 0 for g in truth for unit in ("question", "answer")}
    for rep in range(REPS):
        q = question_effects(rng, TEST_QUESTIONS)
        before, after = model_answers(rng, q), model_answers(rng, q, 0.01, 1.0)
        for unit in ("question", "answer") if rep < PAIR_REPS else ("question",):
            by_slot = unit == "answer"
            out = eval_metrics.compare_before_after(
                answer_rows(*before, by_slot), answer_rows(*after, by_slot), N_BOOT, seed=rep
            )
            for g, t in truth.items():
                held[(g, unit)] += out[f"{g}_ci_low"] <= t <= out[f"{g}_ci_high"]
    return {(g, unit): n / (REPS if unit == "question" else PAIR_REPS) for (g, unit), n in held.items()}


@pytest.mark.parametrize("gain", ["d_p_wrong", "d_acc", "neg_d_ece"])
def test_paired_gain_interval_over_questions_covers_the_truth(gain_coverage, gain):
    assert NOMINAL[0] <= gain_coverage[(gain, "question")] <= NOMINAL[1], gain_coverage


def test_gain_interval_over_answers_under_covers_a_gain_that_varies_by_question(gain_coverage):
    assert gain_coverage[("d_p_wrong", "answer")] < NOMINAL[0], gain_coverage


# -- the slope: six preference sets with one model each; four with three training seeds each ---------------------
ACCS = np.array([1.0, 0.9, 0.75, 0.5, 0.44, 0.0])
SEED_ACCS, SEEDS, SEED_SPREAD = np.array([1.0, 0.75, 0.5, 0.0]), 3, 0.06


def slope_table(points: list[dict], answers: dict, rep: int) -> pd.DataFrame:
    return gain_slope.gain_slopes(pd.DataFrame(points), answers, n_boot=N_BOOT, seed=rep).set_index("gain")


def simulated_study(rng, accs: np.ndarray, seeds: int) -> tuple[list[dict], dict, list[dict], dict]:
    """One study: the original model and, per preference set, ``seeds`` aligned models (each with its own seed
    effect when there are several). Returns Fig 3's points and answers with the seeds told apart, and the same
    models as if every seed were a setting of its own."""
    q = question_effects(rng, TEST_QUESTIONS)
    before = answer_rows(*model_answers(rng, q))
    points, answers, alone, answers_alone = [], {}, [], {}
    for i, acc in enumerate(accs):
        for s in range(seeds):
            effect = SEED_SPREAD * rng.standard_normal() if seeds > 1 else 0.0
            after = answer_rows(*model_answers(rng, q, 0.01, acc, effect))
            points.append({"task": "t", "setting": f"set{i}", "acc_wow": acc, "train_seed": s})
            answers[("t", f"set{i}", s)] = (before, after)
            alone.append({"task": "t", "setting": f"set{i}_{s}", "acc_wow": acc})
            answers_alone[("t", f"set{i}_{s}")] = (before, after)
    return points, answers, alone, answers_alone


def true_slopes(accs: np.ndarray) -> dict[str, float]:
    return {g: np.polyfit(accs, v, 1)[0] for g, v in true_gains(accs).items()}


@pytest.fixture(scope="module")
def slope_coverage() -> dict[tuple[str, str], float]:
    """Share of studies whose slope interval holds the true slope: one model per set, three seeds per set, and the
    three seeds taken as settings of their own (their spread left out)."""
    truth = {"one model": true_slopes(ACCS), "seeds": true_slopes(SEED_ACCS)}
    truth["seeds ignored"] = truth["seeds"]
    held = {(g, design): 0 for g in truth["one model"] for design in truth}
    rng = np.random.default_rng(5)
    for rep in range(SLOPE_REPS):
        points, answers, _, _ = simulated_study(rng, ACCS, 1)
        tables = {"one model": slope_table(points, answers, rep)}
        points, answers, alone, answers_alone = simulated_study(rng, SEED_ACCS, SEEDS)
        tables["seeds"] = slope_table(points, answers, rep)
        tables["seeds ignored"] = slope_table(alone, answers_alone, rep)
        for g, design in held:
            row = tables[design].loc[g]
            held[(g, design)] += row.ci_low <= truth[design][g] <= row.ci_high
    return {key: n / SLOPE_REPS for key, n in held.items()}


@pytest.mark.parametrize("gain", ["d_p_wrong", "d_acc", "neg_d_ece"])
@pytest.mark.parametrize("design", ["one model", "seeds"])
def test_slope_interval_covers_the_true_slope(slope_coverage, gain, design):
    assert NOMINAL[0] <= slope_coverage[(gain, design)] <= NOMINAL[1], slope_coverage


def test_slope_interval_that_leaves_out_the_seeds_under_covers(slope_coverage):
    assert slope_coverage[("d_p_wrong", "seeds ignored")] < NOMINAL[0], slope_coverage


# -- H1's held-out ranking difference: 55 test questions, 4 wrong base answers each (6 pairs), two adapters whose
# rewards follow the labels with a skill that varies by question ------------------------------------------------
RANK_QUESTIONS, RANK_ANSWERS, RANK_SKILL, RANK_SPREAD = 55, 4, (0.35, 0.05), 1.0
RANK_A, RANK_B = np.triu_indices(RANK_ANSWERS, 1)


def ranking_rewards(rng: np.random.Generator, n_questions: int) -> list[np.ndarray]:
    """Each arm's rewards of every answer: skill_q x label + noise, skill_q = the arm's mean + a question effect."""
    labels = np.arange(RANK_ANSWERS, dtype=float)
    return [
        (mean + RANK_SPREAD * rng.standard_normal((n_questions, 1))) * labels
        + rng.standard_normal((n_questions, RANK_ANSWERS))
        for mean in RANK_SKILL
    ]


def ranking_hits(rewards: np.ndarray) -> np.ndarray:
    """Per question and pair, whether the rewards order the pair as the labels do (labels rise with the index)."""
    return rewards[:, RANK_B] > rewards[:, RANK_A]


@pytest.fixture(scope="module")
def ranking_coverage() -> dict[str, float]:
    from wow.align import mechanism

    rng = np.random.default_rng(11)
    truth = float(np.subtract(*[ranking_hits(r).mean() for r in ranking_rewards(rng, 200_000)]))
    covered = {"question": 0, "pair": 0}
    for rep in range(REPS):
        ra, rb = ranking_rewards(rng, RANK_QUESTIONS)
        rows = [
            {
                "answer_id": f"q{q}|{i}",
                "question_id": f"q{q}",
                "generator": "g",
                "sample_index": i,
                "extracted": i,
                "raw_label": float(i),
                "correctness": i / RANK_ANSWERS,
                "is_correct": False,
            }
            for q in range(RANK_QUESTIONS)
            for i in range(RANK_ANSWERS)
        ]
        rewards = {
            arm: {f"q{q}|{i}": float(r[q, i]) for q in range(RANK_QUESTIONS) for i in range(RANK_ANSWERS)}
            for arm, r in (("a", ra), ("b", rb))
        }
        d = mechanism.ranking_difference(rows, rewards, ["a"], ["b"], n_boot=N_BOOT, seed=rep)
        covered["question"] += d["ci_low"] <= truth <= d["ci_high"]
        # the same difference with pairs drawn as if independent
        diff = (ranking_hits(ra).astype(float) - ranking_hits(rb)).reshape(-1)
        draws = rng.integers(0, diff.size, (N_BOOT, diff.size))
        lo, hi = np.quantile(diff[draws].mean(axis=1), [0.025, 0.975])
        covered["pair"] += lo <= truth <= hi
    return {k: v / REPS for k, v in covered.items()}


def test_ranking_difference_interval_over_questions_covers_the_truth(ranking_coverage):
    assert NOMINAL[0] <= ranking_coverage["question"] <= NOMINAL[1], ranking_coverage


def test_ranking_difference_interval_over_pairs_under_covers_clustered_pairs(ranking_coverage):
    assert ranking_coverage["pair"] < NOMINAL[0] - 0.05, ranking_coverage
