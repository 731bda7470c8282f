"""Does the gain of alignment depend on the accuracy of the preferences? The slope of Fig 3's black line, with a
paired bootstrap CI over test questions (and training seeds, where a setting has several) and the design's minimum
detectable slope.

Fig 3 fits ``gain = intercept + slope * Acc_WoW`` over the aligned settings (:func:`wow.figures.alignment_figures.fig3_lines`).
Each point's gain has its own CI, but the paper's question is about the slope. :func:`gain_slopes` resamples the test
questions (within each task, the same draw for every setting, before and after alike, so the comparison is paired),
recomputes every setting's gain on the draw and refits the line; the percentiles of the refitted slopes are its 95%
CI. The point estimate is the least-squares slope over all rows, Fig 3's black line.

Where a setting was trained with several seeds (several rows of ``points`` with the same task and setting, told
apart by ``train_seed``), the spread between its seeds enters the CI too (:func:`seed_variance`). The question
resampling already carries each model's own sampling noise on the test answers, so only the part of the spread
between seeds that exceeds it is added: each resample's slope gets a draw of that variance (a t draw with the
seeds' degrees of freedom, since a few seeds estimate it roughly).

What the interval leaves out is written beside it (``variance_excluded``): x is held fixed (it is the accuracy of
each set's own training pairs, exact for them; read as an estimate of a judge's skill it has its own error, which
attenuates the slope and narrows the interval), and with one trained model per setting, so are the training seed
and the grid's choice on validation questions.

Example::

    from wow.analysis import gain_slope
    from wow.analysis import fig3_points
    from wow.steps import correlation_plots
    points = fig3_points.method_acc_wow(P, acc, alignment)
    answers = {(r.task, r.setting): correlation_plots.eval_answers(P, r)[2:] for _, r in points.iterrows()}
    table = gain_slope.gain_slopes(points, answers, n_boot=1000, seed=0)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from wow import WowError
from wow.analysis.bootstrap import detectable_difference, equivalence_bound, percentile_interval, resample_counts
from wow.analysis.eval_metrics import (
    DELTA_NAMES,
    ECE_BINS,
    METRICS,
    QuestionTotals,
    question_totals,
    weighted_metric,
)

#: The gains whose slopes are reported (Fig 3's three): column name -> metric.
GAINS = {DELTA_NAMES[name]: name for name in ("p_wrong", "accuracy", "ece")}
#: The column of ``points`` that tells the training seeds of one setting apart.
SEED_COLUMN = "train_seed"
COLUMNS = [
    "gain",
    "n_settings",
    "n_runs",
    "n_questions",
    "slope",
    "ci_low",
    "ci_high",
    "equiv_bound",
    "mde",
    "seed_sd",
    "variance_included",
    "variance_excluded",
]


def gain_slopes(
    points: pd.DataFrame,
    answers: Mapping[tuple, tuple[Sequence[dict], Sequence[dict]]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = ECE_BINS,
) -> pd.DataFrame:
    """The least-squares slope of each gain against Acc_WoW over the rows of ``points``, with its bootstrap CI.

    Args:
        points: Fig 3's points (:func:`wow.analysis.fig3_points.method_acc_wow`): ``setting``, ``task`` and ``acc_wow``,
            one row per trained model. Several rows with the same task and setting are that setting's training
            seeds, told apart by a ``train_seed`` column.
        answers: ``(task, setting) -> (before rows, after rows)``, the test answers of the original and the aligned
            model; ``(task, setting, train_seed)`` where ``points`` has seeds.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        n_bins: ECE bins of -ΔECE (the run's ``n_bins``, as in ``alignment.csv``).
        alpha: 1 - the CI level.

    Returns:
        One row per gain (``d_p_wrong``, ``d_acc``, ``neg_d_ece``): ``n_settings``, ``n_runs`` (trained models:
        more than ``n_settings`` where settings have several seeds), ``n_questions``, ``slope`` (the point estimate,
        equal to Fig 3's black line), ``ci_low``, ``ci_high``, ``equiv_bound`` (the end of the 90% CI farthest from
        zero: the slopes a null result rules out), ``mde`` (the true slope this design detects with 80% power: a
        property of the design), ``seed_sd`` (the standard deviation of a setting's gain between training seeds,
        beyond the test answers' own noise; NaN without seeds), ``variance_included`` and ``variance_excluded``
        (what the interval does and does not carry). Empty when fewer than two rows with different Acc_WoW are
        given.

    Raises:
        WowError: a setting's before and after answers share no test question.
    """
    pts = points.dropna(subset=["acc_wow"]).reset_index(drop=True)
    keys = [_key(r) for _, r in pts.iterrows()]
    have = [k in answers for k in keys]
    pts, keys = pts[have].reset_index(drop=True), [k for k, h in zip(keys, have, strict=True) if h]
    if len(pts) < 2 or pts["acc_wow"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    x = pts["acc_wow"].to_numpy(float)
    tasks = sorted(set(pts["task"]))
    rows = {k: _common(*answers[k]) for k in keys}
    questions = {t: sorted({q for k in keys if k[0] == t for q in rows[k][2]}) for t in tasks}
    if not any(questions.values()):
        raise WowError("the settings' before and after answers share no test question.")
    totals = _totals(keys, answers, rows, questions, n_bins)
    settings = _settings(pts)
    ones = {t: np.ones(len(q)) for t, q in questions.items()}
    gains = {c: np.array([_gain(n, *totals[i], ones[k[0]]) for i, k in enumerate(keys)]) for c, n in GAINS.items()}
    replicates = _question_resamples(len(x), [k[0] for k in keys], totals, questions, n_boot, seed)
    included, excluded = variance_sources(settings)
    out = []
    for column in GAINS:
        boot = _slopes(np.broadcast_to(x, replicates[column].shape), replicates[column])
        seed_var, df = seed_variance(gains[column], replicates[column], settings)
        if df > 0:
            draws = np.random.default_rng([seed, 1, list(GAINS).index(column)]).standard_t(df, size=len(boot))
            boot = boot + np.sqrt(seed_var * _seed_weight(x)) * draws
        lo, hi = percentile_interval(boot, alpha)
        out.append(
            {
                "gain": column,
                "n_settings": len(settings),
                "n_runs": len(pts),
                "n_questions": sum(len(v) for v in questions.values()),
                "slope": _slope(x, gains[column]),
                "ci_low": lo,
                "ci_high": hi,
                "equiv_bound": equivalence_bound(*percentile_interval(boot, 0.10)),
                "mde": detectable_difference(lo, hi, alpha=alpha),
                "seed_sd": float(np.sqrt(seed_var)) if df > 0 else np.nan,
                "variance_included": included,
                "variance_excluded": excluded,
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)


def variance_sources(settings: Sequence[np.ndarray]) -> tuple[str, str]:
    """What the slope's interval carries and what it leaves out, in words (the two ``variance_*`` columns).

    Args:
        settings: the row indices of each setting (one per training seed).

    Returns:
        ``(included, excluded)``.
    """
    seeds = [len(s) for s in settings]
    included = "test questions (paired: one draw per task for every setting, before and after)"
    excluded = (
        "x held fixed (the accuracy of each set's own training pairs; as an estimate of a judge's skill it has its "
        "own error, which attenuates the slope and narrows the interval)"
    )
    if max(seeds) > 1:
        included += (
            f"; training seeds ({min(seeds)}-{max(seeds)} per setting: the spread between seeds beyond the test "
            "answers' noise, pooled over settings, applied to every trained model)"
        )
        excluded += "; the preference pairs' sampling (each set held fixed)"
    else:
        excluded += "; training seed and the grid's choice on validation (one trained model per setting)"
    return included, excluded


def _key(row: pd.Series) -> tuple:
    """The ``answers`` key of one row of ``points``."""
    if SEED_COLUMN in row and pd.notna(row[SEED_COLUMN]):
        return (row["task"], row["setting"], row[SEED_COLUMN])
    return (row["task"], row["setting"])


def _common(before: Sequence[dict], after: Sequence[dict]) -> tuple[list[dict], list[dict], set[str]]:
    """The before and after rows of the questions both answered, and those questions."""
    both = {r["question_id"] for r in before} & {r["question_id"] for r in after}
    return [r for r in before if r["question_id"] in both], [r for r in after if r["question_id"] in both], both


def _totals(
    keys: list[tuple],
    answers: Mapping[tuple, tuple[Sequence[dict], Sequence[dict]]],
    rows: Mapping[tuple, tuple[list[dict], list[dict], set[str]]],
    questions: Mapping[str, list[str]],
    n_bins: int = ECE_BINS,
) -> list[tuple[QuestionTotals, QuestionTotals]]:
    """Each row's per-question sums before and after, over its task's questions (the original model's answers,
    shared by the settings of a task, are summed once)."""
    shared: dict[tuple, QuestionTotals] = {}
    out = []
    for k in keys:
        before, after, both = rows[k]
        ident = (id(answers[k][0]), k[0], frozenset(both))
        if ident not in shared:
            shared[ident] = question_totals(before, questions[k[0]], n_bins)
        out.append((shared[ident], question_totals(after, questions[k[0]], n_bins)))
    return out


def _settings(pts: pd.DataFrame) -> list[np.ndarray]:
    """The row indices of each (task, setting): one row, or one per training seed."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (t, s) in enumerate(zip(pts["task"], pts["setting"], strict=True)):
        groups[(t, s)].append(i)
    return [np.array(v) for _, v in sorted(groups.items())]


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope over the finite points (NaN with fewer than two distinct x)."""
    ok = np.isfinite(y)
    if ok.sum() < 2 or np.unique(x[ok]).size < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def _slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of every row of ``y`` against the same row of ``x`` (``(resamples, points)`` each),
    over its finite values; NaN where fewer than two distinct x remain."""
    w = np.isfinite(y).astype(float)
    n = w.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        xm = (w * x).sum(axis=1) / n
        xc = (x - xm[:, None]) * w
        sxx = (xc * xc).sum(axis=1)
        sxy = (xc * np.nan_to_num(y)).sum(axis=1)
        scale = np.maximum(1.0, (w * x * x).sum(axis=1))
        return np.where((n >= 2) & (sxx > 1e-12 * scale), sxy / sxx, np.nan)


def _gain(name: str, before: QuestionTotals, after: QuestionTotals, weights: np.ndarray) -> np.ndarray:
    """A gain (positive = better) under question weights (:func:`wow.analysis.eval_metrics.weighted_metric`); with every
    weight 1 it is :func:`wow.analysis.eval_metrics.gain` of the rows."""
    return METRICS[name] * (weighted_metric(name, after, weights) - weighted_metric(name, before, weights))


def _row_mean(y: np.ndarray) -> np.ndarray:
    """The mean of each row's finite values, as a column (NaN where a row has none)."""
    ok = np.isfinite(y)
    n = ok.sum(axis=1, keepdims=True)
    total = np.where(ok, y, 0.0).sum(axis=1, keepdims=True)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def _question_resamples(
    n_rows: int,
    row_task: list[str],
    totals: list[tuple[QuestionTotals, QuestionTotals]],
    questions: Mapping[str, list[str]],
    n_boot: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Every row's gains on ``n_boot`` resamples of the test questions, drawn per task (the same draw for every row
    of the task, before and after alike): ``gain -> (n_boot, rows)``."""
    rng = np.random.default_rng(seed)
    tasks = [t for t in sorted(questions) if questions[t]]
    out: dict[str, list[np.ndarray]] = {c: [np.full((0, n_rows), np.nan)] for c in GAINS}  # n_boot 0: no resample
    done = 0
    block = max(1, 200_000 // max(len(questions[t]) for t in tasks))
    while done < n_boot:
        b = min(block, n_boot - done)
        counts = {t: next(resample_counts(len(questions[t]), b, rng)).astype(float) for t in tasks}
        for column, name in GAINS.items():
            y = np.full((b, n_rows), np.nan)
            original: dict[int, np.ndarray] = {}  # the original model's metric, once per task's shared answers
            for i, t in enumerate(row_task):
                if t in counts:
                    before, after = totals[i]
                    if id(before) not in original:
                        original[id(before)] = weighted_metric(name, before, counts[t])
                    y[:, i] = METRICS[name] * (weighted_metric(name, after, counts[t]) - original[id(before)])
            out[column].append(y)
        done += b
    return {c: np.concatenate(v) for c, v in out.items()}


def seed_variance(gains: np.ndarray, replicates: np.ndarray, settings: Sequence[np.ndarray]) -> tuple[float, int]:
    """The variance of a setting's gain between training seeds, beyond the test answers' own noise, pooled over
    the settings with several seeds.

    The seeds of one setting are evaluated on the same test questions, so their spread holds the seed's effect plus
    each model's sampling noise on those questions. The question resamples carry that noise already (each seed's
    deviation from its setting's mean varies across them), so it is taken out: ``(sum of squared deviations -
    their summed variance across the resamples) / degrees of freedom``, at least 0.

    Args:
        gains: one gain per row, on every test question.
        replicates: the same rows' gains on the question resamples, ``(n_boot, rows)``.
        settings: the row indices of each setting.

    Returns:
        ``(variance, degrees of freedom)``; ``(0.0, 0)`` when no setting has two seeds with a gain.
    """
    squares = noise = 0.0
    df = 0
    for idx in settings:
        ok = idx[np.isfinite(gains[idx])]
        if len(ok) < 2:
            continue
        squares += float(((gains[ok] - gains[ok].mean()) ** 2).sum())
        deviations = replicates[:, ok] - _row_mean(replicates[:, ok])
        if np.isfinite(deviations).sum(axis=0).min(initial=len(deviations)) >= 2:  # a resampled spread to take out
            noise += float(np.nansum(np.nanvar(deviations, axis=0)))
        df += len(ok) - 1
    if df == 0:
        return 0.0, 0
    return max(0.0, (squares - noise) / df), df


def _seed_weight(x: np.ndarray) -> float:
    """The variance of the least-squares slope over the rows per unit of seed variance: every row is one trained
    model with its own seed effect ``v``, which enters the slope as ``sum_rows (x - mean x) v / Sxx``, so its
    variance is ``seed variance / Sxx`` (the pooled seed variance stands for the settings trained once too)."""
    return 1.0 / float(((x - x.mean()) ** 2).sum())
