"""Metrics of graded answers: one model's summary, before/after comparisons with paired bootstrap CIs, and
reliability-diagram data.

* :func:`summarize` gives mean correctness, p_wrong, accuracy and ECE (10 bins, confidence = exp(mean token
  logprob)) of one model's answer rows.
* :func:`compare` gives before/after values and Δp_wrong = after - before, ΔAcc = after - before,
  -ΔECE = before - after (positive = better for all three), with paired bootstrap CIs that resample questions.
* :func:`reliability` gives reliability-diagram data per model.

All metric definitions come from :mod:`wow.metrics` (DESIGN.md section 6); the answer rows come from
:mod:`wow.evaluate`.

Example::

    from wow import eval_metrics
    eval_metrics.summarize(after)["p_wrong"]
    eval_metrics.compare(before, after)["d_p_wrong"]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from wow import WowError

log = logging.getLogger(__name__)

#: metric name -> sign of "after - before" that counts as better (ECE: lower is better).
METRICS = {"mean_correctness": 1, "p_wrong": 1, "accuracy": 1, "ece": -1}
#: delta column per metric (positive = better for all).
DELTA_NAMES = {
    "mean_correctness": "d_mean_correctness",
    "p_wrong": "d_p_wrong",
    "accuracy": "d_acc",
    "ece": "neg_d_ece",
}


def _confidence(rows: Sequence[dict]) -> np.ndarray:
    """exp(mean token logprob) per row; NaN where the logprob is missing."""
    return np.array(
        [math.exp(r["mean_logprob"]) if r.get("mean_logprob") is not None else np.nan for r in rows], dtype=float
    )


def _metric(name: str, correctness: np.ndarray, is_correct: np.ndarray, confidence: np.ndarray) -> float:
    """One metric of :data:`METRICS` (ECE over the answers that have a confidence; NaN if none)."""
    from wow import metrics

    if name == "mean_correctness":
        return metrics.mean_correctness(correctness)
    if name == "p_wrong":
        return metrics.p_wrong(correctness, is_correct) if not is_correct.all() else float("nan")
    if name == "accuracy":
        return metrics.accuracy(is_correct)
    has_conf = np.isfinite(confidence)
    return metrics.ece(confidence[has_conf], is_correct[has_conf]) if has_conf.any() else float("nan")


def _arrays(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not rows:
        raise WowError("no answer rows to summarise; evaluate_model returned nothing.")
    correctness = np.array([np.nan if r.get("correctness") is None else r["correctness"] for r in rows], dtype=float)
    is_correct = np.array([bool(r["is_correct"]) for r in rows], dtype=bool)
    return correctness, is_correct, _confidence(rows)


def gain(name: str, before_rows: Sequence[dict], after_rows: Sequence[dict]) -> float:
    """One metric's gain from the original model's rows to the aligned model's, positive = better: after - before,
    before - after for ECE (the values :func:`compare` reports as ``d_p_wrong``, ``d_acc``, ``neg_d_ece``).

    Args:
        name: a metric of :data:`METRICS` (``p_wrong``, ``accuracy``, ``ece``, ``mean_correctness``).
        before_rows: the original model's answer rows.
        after_rows: the aligned model's.
    """
    before = _metric(name, *_arrays(before_rows))
    return METRICS[name] * (_metric(name, *_arrays(after_rows)) - before)


def summarize(rows: Sequence[dict]) -> dict:
    """Evaluation metrics of graded answer rows.

    Args:
        rows: ``answers.jsonl``-style rows (``correctness``, ``is_correct``, ``mean_logprob``, ``extracted``).

    Returns:
        ``n`` (answers), ``n_questions``, ``mean_correctness``, ``p_wrong`` (mean correctness of wrong answers,
        unparsed at 0), ``accuracy``, ``ece`` (over the answers with a logprob; NaN if none), ``n_confidence``
        (answers with a logprob) and ``parse_rate``.
    """
    correctness, is_correct, confidence = _arrays(rows)
    n_conf = int(np.isfinite(confidence).sum())
    if n_conf < len(rows):
        log.warning("ECE over %d of %d answers: the others have no logprobs", n_conf, len(rows))
    return {
        "n": len(rows),
        "n_questions": len({r["question_id"] for r in rows}),
        **{name: _metric(name, correctness, is_correct, confidence) for name in METRICS},
        "n_confidence": n_conf,
        "parse_rate": float(np.mean([r.get("extracted") is not None for r in rows])),
    }


def compare(
    before_rows: Sequence[dict],
    after_rows: Sequence[dict],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Before/after metrics and their differences, with paired bootstrap CIs over questions.

    Only questions answered by both models are compared. Every bootstrap resample draws questions with replacement
    and takes all answers of a drawn question from both models, so the CIs of the differences are paired.

    Args:
        before_rows: answers of the original model.
        after_rows: answers of the aligned model (same questions, ideally the same seed).
        n_boot: bootstrap resamples (0: no CIs).
        seed: bootstrap seed.
        alpha: 1 - CI level.

    Returns:
        ``n_questions, n_before, n_after``; for each metric ``m`` of :data:`METRICS`: ``before_m``, ``after_m``
        (each with ``_ci_low`` / ``_ci_high``); the differences ``d_mean_correctness``, ``d_p_wrong``
        (after - before), ``d_acc`` (after - before) and ``neg_d_ece`` (before - after), each with CIs and
        ``<difference>_mde``, the smallest difference the comparison would detect with 80% power at the CI's
        level (:func:`wow.bootstrap.detectable_difference`). Positive differences are improvements.
    """
    from wow.bootstrap import bootstrap_ci, detectable_difference

    common = {r["question_id"] for r in before_rows} & {r["question_id"] for r in after_rows}
    if not common:
        raise WowError("the before and after answers share no question; evaluate both on the same test questions.")
    before = [r for r in before_rows if r["question_id"] in common]
    after = [r for r in after_rows if r["question_id"] in common]
    if len(before) < len(before_rows) or len(after) < len(after_rows):
        log.warning("compare: only the %d questions answered by both models are compared", len(common))
    rows = before + after
    correctness, is_correct, confidence = _arrays(rows)
    is_after = np.array([False] * len(before) + [True] * len(after))
    groups = [r["question_id"] for r in rows]

    def value(which: str, name: str) -> Callable[..., float]:
        def fn(c, ok, conf, aft):
            sel = aft if which == "after" else ~aft
            if not sel.any():
                return float("nan")
            return _metric(name, c[sel], ok[sel], conf[sel])

        return fn

    def delta(name: str) -> Callable[..., float]:
        def fn(c, ok, conf, aft):
            b, a = value("before", name)(c, ok, conf, aft), value("after", name)(c, ok, conf, aft)
            return METRICS[name] * (a - b)

        return fn

    arrays = (correctness, is_correct, confidence, is_after)
    out: dict[str, Any] = {"n_questions": len(common), "n_before": len(before), "n_after": len(after)}
    for name in METRICS:
        stats = {
            f"before_{name}": value("before", name),
            f"after_{name}": value("after", name),
            DELTA_NAMES[name]: delta(name),
        }
        for key, fn in stats.items():
            out[key] = fn(*arrays)
            if n_boot > 0:
                lo, hi = bootstrap_ci(fn, *arrays, n_boot=n_boot, seed=seed, alpha=alpha, groups=groups)
            else:
                lo = hi = None
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = lo, hi
        delta_key = DELTA_NAMES[name]
        out[f"{delta_key}_mde"] = detectable_difference(
            out[f"{delta_key}_ci_low"], out[f"{delta_key}_ci_high"], alpha=alpha
        )
    return out


def reliability(rows_by_model: Mapping[str, Sequence[dict]], n_bins: int = 10):
    """Reliability-diagram data per model (answers without a logprob are left out).

    Args:
        rows_by_model: e.g. ``{"before": before_rows, "after": after_rows}``.
        n_bins: equal-width confidence bins.

    Returns:
        ``pandas.DataFrame``: ``model, bin, lo, hi, n, mean_conf, accuracy`` (see
        :func:`wow.metrics.reliability_bins`).
    """
    import pandas as pd

    from wow import metrics

    tables = []
    for model, rows in rows_by_model.items():
        _, is_correct, confidence = _arrays(rows)
        ok = np.isfinite(confidence)
        table = metrics.reliability_bins(confidence[ok], is_correct[ok], n_bins)
        table.insert(0, "model", model)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
