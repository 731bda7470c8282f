"""Does the gain of alignment depend on the accuracy of the preferences? The slope of Fig 3's black line, with a
paired bootstrap CI over test questions and the smallest slope the study could have detected.

Fig 3 fits ``gain = intercept + slope * Acc_WoW`` over the aligned settings (:func:`wow.alignment_figures.fig3_lines`).
Each point's gain has its own CI, but the paper's question is about the slope. :func:`gain_slopes` resamples the test
questions (within each task, the same draw for every setting, before and after alike, so the comparison is paired),
recomputes every setting's gain from its test answers and refits the line; the percentiles of the refitted slopes
are its 95% CI, and :func:`wow.bootstrap.detectable_difference` turns their spread into the smallest slope the study
would detect with 80% power.

Example::

    from wow import gain_slope, pipeline_align
    points = pipeline_align.method_acc_wow(P, acc, alignment)
    answers = {(r.task, r.setting): pipeline_align.eval_answers(P, r)[2:] for _, r in points.iterrows()}
    table = gain_slope.gain_slopes(points, answers, n_boot=1000, seed=0)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from wow import WowError
from wow.bootstrap import detectable_difference
from wow.eval_metrics import DELTA_NAMES, gain

#: The gains whose slopes are reported: column name -> metric.
GAINS = {delta: name for name, delta in DELTA_NAMES.items() if name != "mean_correctness"}
COLUMNS = ["gain", "n_settings", "n_questions", "slope", "ci_low", "ci_high", "mde"]


def gain_slopes(
    points: pd.DataFrame,
    answers: Mapping[tuple[str, str], tuple[Sequence[dict], Sequence[dict]]],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The least-squares slope of each gain against Acc_WoW over the settings of ``points``, with its bootstrap CI.

    Args:
        points: Fig 3's points (:func:`wow.pipeline_align.method_acc_wow`): ``setting``, ``task`` and ``acc_wow``.
        answers: ``(task, setting) -> (before rows, after rows)``, the test answers of the original and the aligned
            model.
        n_boot: bootstrap resamples of the test questions.
        seed: bootstrap seed.
        alpha: 1 - the CI level.

    Returns:
        One row per gain (``d_p_wrong``, ``d_acc``, ``neg_d_ece``): ``n_settings``, ``n_questions``, ``slope`` (the
        point estimate, equal to Fig 3's black line), ``ci_low``, ``ci_high`` and ``mde`` (the smallest slope
        detectable with 80% power). Empty when fewer than two settings with different Acc_WoW are given.
    """
    pts = points.dropna(subset=["acc_wow"])
    pts = pts[[(t, s) in answers for t, s in zip(pts["task"], pts["setting"], strict=True)]]
    if len(pts) < 2 or pts["acc_wow"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS)
    x = pts["acc_wow"].to_numpy(float)
    # rows of every setting grouped by task and question: a resample draws questions per task
    by_q: dict[tuple[str, str], dict[str, tuple[list, list]]] = {}
    questions: dict[str, list[str]] = defaultdict(list)
    settings = list(zip(pts["task"], pts["setting"], strict=True))
    for key in settings:
        before, after = answers[key]
        groups: dict[str, tuple[list, list]] = defaultdict(lambda: ([], []))
        for r in before:
            groups[r["question_id"]][0].append(r)
        for r in after:
            groups[r["question_id"]][1].append(r)
        by_q[key] = {q: g for q, g in groups.items() if g[0] and g[1]}
        for q in sorted(by_q[key]):
            if q not in questions[key[0]]:
                questions[key[0]].append(q)
    if not any(questions.values()):
        raise WowError("the settings' before and after answers share no test question.")

    def slope_of(y: np.ndarray) -> float:
        ok = np.isfinite(y)
        if ok.sum() < 2 or np.unique(x[ok]).size < 2:
            return float("nan")
        return float(np.polyfit(x[ok], y[ok], 1)[0])

    def gains(drawn: Mapping[str, list[str]]) -> dict[str, np.ndarray]:
        """Every gain of every setting on the drawn questions (a question drawn twice counts twice); each setting's
        rows are gathered once for all gains."""
        out: dict[str, list[float]] = {column: [] for column in GAINS}
        for key in settings:
            before = [r for q in drawn[key[0]] for r in by_q[key].get(q, ([], []))[0]]
            after = [r for q in drawn[key[0]] for r in by_q[key].get(q, ([], []))[1]]
            for column, name in GAINS.items():
                out[column].append(gain(name, before, after))
        return {column: np.array(v, dtype=float) for column, v in out.items()}

    point = {column: slope_of(y) for column, y in gains(questions).items()}
    rng = np.random.default_rng(seed)
    boot: dict[str, list[float]] = {column: [] for column in GAINS}
    for _ in range(n_boot):
        draw = {t: [qs[i] for i in rng.integers(0, len(qs), size=len(qs))] for t, qs in questions.items()}
        for column, y in gains(draw).items():
            boot[column].append(slope_of(y))

    rows = []
    for column, slopes in boot.items():
        finite = np.array([v for v in slopes if np.isfinite(v)])
        lo, hi = (
            (float(np.quantile(finite, alpha / 2)), float(np.quantile(finite, 1 - alpha / 2)))
            if finite.size
            else (float("nan"), float("nan"))
        )
        rows.append(
            {
                "gain": column,
                "n_settings": len(pts),
                "n_questions": sum(len(v) for v in questions.values()),
                "slope": point[column],
                "ci_low": lo,
                "ci_high": hi,
                "mde": detectable_difference(lo, hi, alpha=alpha),
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
