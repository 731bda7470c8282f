"""Metrics of graded answers: one model's summary, before/after comparisons with paired bootstrap CIs, and
reliability-diagram data.

* :func:`summarize` gives mean correctness, p_wrong, accuracy and ECE (10 bins, confidence = exp(mean token
  logprob)) of one model's answer rows.
* :func:`compare_before_after` gives before/after values and Δp_wrong = after - before, ΔAcc = after - before,
  -ΔECE = before - after (positive = better for all three), with paired bootstrap CIs that resample questions, the
  design's minimum detectable difference and the equivalence bound a null result supports.
* :func:`question_totals` and :func:`weighted_metric`: every metric from per-question sums, for any weighting of the
  questions at once (a bootstrap resample is a weighting by counts); :mod:`wow.analysis.gain_slope` resamples with them too.
* :func:`reliability` gives reliability-diagram data per model.

All metric definitions come from :mod:`wow.analysis.metrics` (DESIGN.md section 6); the answer rows come from
:mod:`wow.align.evaluate`.

Example::

    from wow.analysis import eval_metrics
    eval_metrics.summarize(after)["p_wrong"]
    eval_metrics.compare_before_after(before, after)["d_p_wrong"]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wow import WowError

log = logging.getLogger(__name__)

#: metric name -> sign of "after - before" that counts as better (ECE: lower is better). Beside p_wrong, what reads
#: it: the parse rate, p_wrong over the parsed answers only (p_wrong counts an unparsed answer as a wrong one of
#: correctness 0, so a model that stops writing a parseable answer looks more wrong), and the mean answer length in
#: tokens (its sign +1 only orders the difference: after - before, longer or shorter is neither better).
METRICS = {
    "mean_correctness": 1,
    "p_wrong": 1,
    "accuracy": 1,
    "ece": -1,
    "parse_rate": 1,
    "p_wrong_parsed": 1,
    "mean_length": 1,
}
#: delta column per metric (positive = better for all but ``d_mean_length``).
DELTA_NAMES = {
    "mean_correctness": "d_mean_correctness",
    "p_wrong": "d_p_wrong",
    "accuracy": "d_acc",
    "ece": "neg_d_ece",
    "parse_rate": "d_parse_rate",
    "p_wrong_parsed": "d_p_wrong_parsed",
    "mean_length": "d_mean_length",
}
#: A model whose test answers parse less often than this is flagged beside its gains (report, verdict).
LOW_PARSE_RATE = 0.9
#: ECE bins of the before/after comparison when none are given (:func:`wow.analysis.metrics.ece`'s default and the
#: paper's; a run passes its ``n_bins``).
ECE_BINS = 10


def _confidence(rows: Sequence[dict]) -> np.ndarray:
    """exp(mean token logprob) per row; NaN where the logprob is missing."""
    return np.array(
        [math.exp(r["mean_logprob"]) if r.get("mean_logprob") is not None else np.nan for r in rows], dtype=float
    )


@dataclass(frozen=True)
class _Rows:
    """One model's answer rows as arrays: graded correctness (NaN unparsed), correct, confidence (NaN without a
    logprob), parsed, answer length in tokens (NaN unknown)."""

    correctness: np.ndarray
    is_correct: np.ndarray
    confidence: np.ndarray
    parsed: np.ndarray
    length: np.ndarray


def _metric(name: str, rows: _Rows, n_bins: int = ECE_BINS) -> float:
    """One metric of :data:`METRICS` (ECE over ``n_bins`` bins, on the answers that have a confidence; NaN if none)."""
    from wow.analysis import metrics

    correctness, is_correct, confidence = rows.correctness, rows.is_correct, rows.confidence
    if name == "mean_correctness":
        return metrics.mean_correctness(correctness)
    if name == "p_wrong":
        return metrics.p_wrong(correctness, is_correct) if not is_correct.all() else float("nan")
    if name == "accuracy":
        return metrics.accuracy(is_correct)
    if name == "parse_rate":
        return float(rows.parsed.mean())
    if name == "p_wrong_parsed":
        wrong = rows.parsed & ~is_correct
        return float(np.clip(np.nan_to_num(correctness[wrong]), 0.0, 1.0).mean()) if wrong.any() else float("nan")
    if name == "mean_length":
        known = np.isfinite(rows.length)
        return float(rows.length[known].mean()) if known.any() else float("nan")
    has_conf = np.isfinite(confidence)
    return metrics.ece(confidence[has_conf], is_correct[has_conf], n_bins) if has_conf.any() else float("nan")


def _arrays(rows: Sequence[dict]) -> _Rows:
    if not rows:
        raise WowError("no answer rows to summarise; evaluate_model returned nothing.")
    correctness = np.array([np.nan if r.get("correctness") is None else r["correctness"] for r in rows], dtype=float)
    is_correct = np.array([bool(r["is_correct"]) for r in rows], dtype=bool)
    parsed = np.array([r.get("extracted") is not None for r in rows], dtype=bool)
    length = np.array([np.nan if r.get("n_tokens") is None else r["n_tokens"] for r in rows], dtype=float)
    return _Rows(correctness, is_correct, _confidence(rows), parsed, length)


def metric(name: str, rows: Sequence[dict], n_bins: int = ECE_BINS) -> float:
    """One metric of :data:`METRICS` of one model's answer rows (what :func:`summarize` reports under ``name``)."""
    return _metric(name, _arrays(rows), n_bins)


def gain(name: str, before_rows: Sequence[dict], after_rows: Sequence[dict], n_bins: int = ECE_BINS) -> float:
    """One metric's gain from the original model's rows to the aligned model's, positive = better: after - before,
    before - after for ECE (the values :func:`compare_before_after` reports as ``d_p_wrong``, ``d_acc``, ``neg_d_ece``).

    Args:
        name: a metric of :data:`METRICS` (``p_wrong``, ``accuracy``, ``ece``, ``mean_correctness``).
        before_rows: the original model's answer rows.
        after_rows: the aligned model's.
        n_bins: ECE bins.
    """
    before = _metric(name, _arrays(before_rows), n_bins)
    return METRICS[name] * (_metric(name, _arrays(after_rows), n_bins) - before)


def summarize(rows: Sequence[dict], n_bins: int = ECE_BINS) -> dict:
    """Evaluation metrics of graded answer rows.

    Args:
        rows: ``answers.jsonl``-style rows (``correctness``, ``is_correct``, ``mean_logprob``, ``extracted``).
        n_bins: ECE bins.

    Returns:
        ``n`` (answers), ``n_questions``, ``mean_correctness``, ``p_wrong`` (mean correctness of wrong answers,
        unparsed at 0), ``accuracy``, ``ece`` (over the answers with a logprob; NaN if none), ``parse_rate``,
        ``p_wrong_parsed`` (p_wrong over the parsed answers), ``mean_length`` (tokens) and ``n_confidence``
        (answers with a logprob).
    """
    arrays = _arrays(rows)
    n_conf = int(np.isfinite(arrays.confidence).sum())
    if n_conf < len(rows):
        log.warning("ECE over %d of %d answers: the others have no logprobs", n_conf, len(rows))
    return {
        "n": len(rows),
        "n_questions": len({r["question_id"] for r in rows}),
        **{name: _metric(name, arrays, n_bins) for name in METRICS},
        "n_confidence": n_conf,
    }


@dataclass(frozen=True)
class QuestionTotals:
    """Per-question sums of one model's answer rows: every metric of :data:`METRICS` follows from them for any
    weighting of the questions (:func:`weighted_metric`). Arrays over the questions, in the order asked for.

    Attributes:
        n: answers.
        correct: correct answers.
        correctness: graded correctness summed (clipped to [0, 1], unparsed = 0).
        n_wrong: wrong answers.
        wrong_correctness: graded correctness of the wrong answers summed.
        n_confidence: answers with a confidence (a logprob).
        bin_gap: questions x ECE bins: ``confidence - is_correct`` summed over the answers in each bin.
        n_parsed: parsed answers.
        n_parsed_wrong: parsed wrong answers.
        parsed_wrong_correctness: graded correctness of the parsed wrong answers summed.
        n_length: answers of known length.
        length: their lengths (tokens) summed.
    """

    n: np.ndarray
    correct: np.ndarray
    correctness: np.ndarray
    n_wrong: np.ndarray
    wrong_correctness: np.ndarray
    n_confidence: np.ndarray
    bin_gap: np.ndarray
    n_parsed: np.ndarray
    n_parsed_wrong: np.ndarray
    parsed_wrong_correctness: np.ndarray
    n_length: np.ndarray
    length: np.ndarray


def question_totals(rows: Sequence[dict], questions: Sequence[str], n_bins: int = ECE_BINS) -> QuestionTotals:
    """The per-question sums of ``rows`` over ``questions`` (a question without rows sums to 0; rows of other
    questions are left out).

    Args:
        rows: answer rows (``question_id``, ``correctness``, ``is_correct``, ``mean_logprob``).
        questions: the question ids, in the order of the arrays.
        n_bins: ECE bins.

    Returns:
        :class:`QuestionTotals`.
    """
    from wow.analysis import metrics

    pos = {q: i for i, q in enumerate(questions)}
    n_q = len(questions)
    index, correctness, correct, logprob, parsed, length = [], [], [], [], [], []
    for r in rows:  # one pass: this runs for every model of a study
        i = pos.get(r["question_id"])
        if i is None:
            continue
        index.append(i)
        c, lp, n_tokens = r.get("correctness"), r.get("mean_logprob"), r.get("n_tokens")
        correctness.append(np.nan if c is None else c)
        correct.append(bool(r["is_correct"]))
        logprob.append(np.nan if lp is None else lp)
        parsed.append(r.get("extracted") is not None)
        length.append(np.nan if n_tokens is None else n_tokens)
    q = np.array(index, dtype=int)
    c = np.clip(np.nan_to_num(np.array(correctness, dtype=float), nan=0.0), 0.0, 1.0)
    ok = np.array(correct, dtype=float)
    confidence = np.exp(np.array(logprob, dtype=float))
    has = np.isfinite(confidence)
    bins = metrics.confidence_bin(confidence[has], n_bins)
    gap = np.bincount(q[has] * n_bins + bins, weights=confidence[has] - ok[has], minlength=n_q * n_bins)
    bin_gap = gap.reshape(n_q, n_bins)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(q, weights=values, minlength=n_q).astype(float)

    seen = np.array(parsed, dtype=float)
    parsed_wrong = seen * (1.0 - ok)
    tokens = np.array(length, dtype=float)
    known = np.isfinite(tokens)

    return QuestionTotals(
        n=total(np.ones(len(q))),
        correct=total(ok),
        correctness=total(c),
        n_wrong=total(1.0 - ok),
        wrong_correctness=total(c * (1.0 - ok)),
        n_confidence=total(has.astype(float)),
        bin_gap=bin_gap,
        n_parsed=total(seen),
        n_parsed_wrong=total(parsed_wrong),
        parsed_wrong_correctness=total(c * parsed_wrong),
        n_length=total(known.astype(float)),
        length=total(np.nan_to_num(tokens)),
    )


def weighted_metric(name: str, totals: QuestionTotals, weights: np.ndarray) -> np.ndarray:
    """A metric of :data:`METRICS` with question ``q`` counted ``weights[..., q]`` times (1: once; a bootstrap
    resample: how often it was drawn), for every row of ``weights`` at once.

    Equal to the metric of the rows (:func:`summarize`) when every weight is 1; ECE is
    ``sum_bins |sum (confidence - correct)| / answers with a confidence``, the same as :func:`wow.analysis.metrics.ece`.

    Args:
        name: ``mean_correctness``, ``p_wrong``, ``accuracy`` or ``ece``.
        totals: :func:`question_totals` of one model.
        weights: ``(..., questions)`` array.

    Returns:
        One value per row of ``weights``; NaN where the metric is undefined (no wrong answer, no confidence).
    """
    w = np.asarray(weights, dtype=float)
    if name == "ece":
        num, den = np.abs(w @ totals.bin_gap).sum(axis=-1), w @ totals.n_confidence
    else:
        num, den = {
            "mean_correctness": (totals.correctness, totals.n),
            "p_wrong": (totals.wrong_correctness, totals.n_wrong),
            "accuracy": (totals.correct, totals.n),
            "parse_rate": (totals.n_parsed, totals.n),
            "p_wrong_parsed": (totals.parsed_wrong_correctness, totals.n_parsed_wrong),
            "mean_length": (totals.length, totals.n_length),
        }[name]
        num, den = w @ num, w @ den
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def compare_before_after(
    before_rows: Sequence[dict],
    after_rows: Sequence[dict],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    n_bins: int = ECE_BINS,
) -> dict:
    """Before/after metrics and their differences, with paired bootstrap CIs over questions.

    Only questions answered by both models are compared. Every bootstrap resample draws questions with replacement
    and takes all answers of a drawn question from both models, so the CIs of the differences are paired (and the
    answers of one question, which are not independent, move together).

    Args:
        before_rows: answers of the original model.
        after_rows: answers of the aligned model (same questions, ideally the same seed).
        n_boot: bootstrap resamples (0: no CIs).
        seed: bootstrap seed.
        alpha: 1 - CI level.
        n_bins: ECE bins (a run's ``n_bins``).

    Returns:
        ``n_questions, n_before, n_after``; for each metric ``m`` of :data:`METRICS`: ``before_m``, ``after_m``
        (each with ``_ci_low`` / ``_ci_high``); the differences ``d_mean_correctness``, ``d_p_wrong``
        (after - before), ``d_acc`` (after - before) and ``neg_d_ece`` (before - after), each with CIs,
        ``<difference>_mde`` (the design's minimum detectable difference: the true difference these test questions
        would find with 80% power at the CI's level, :func:`wow.analysis.bootstrap.detectable_difference`; a property of the
        design, not a threshold for the observed difference) and ``<difference>_equiv_bound`` (the equivalence
        bound the data support: the end of the 90% CI farthest from 0, :func:`wow.analysis.bootstrap.equivalence_bound`).
        Positive differences are improvements.
    """
    from wow.analysis.bootstrap import detectable_difference, equivalence_bound, percentile_interval

    common = {r["question_id"] for r in before_rows} & {r["question_id"] for r in after_rows}
    if not common:
        raise WowError("the before and after answers share no question; evaluate both on the same test questions.")
    before = [r for r in before_rows if r["question_id"] in common]
    after = [r for r in after_rows if r["question_id"] in common]
    if len(before) < len(before_rows) or len(after) < len(after_rows):
        log.warning("compare: only the %d questions answered by both models are compared", len(common))
    questions = sorted(common)
    totals = [question_totals(rows, questions, n_bins) for rows in (before, after)]
    boot = _paired_resamples(*totals, n_boot, seed)
    arrays = {"before": _arrays(before), "after": _arrays(after)}
    out: dict[str, Any] = {"n_questions": len(common), "n_before": len(before), "n_after": len(after)}
    for name in METRICS:
        b, a = _metric(name, arrays["before"], n_bins), _metric(name, arrays["after"], n_bins)
        delta_key = DELTA_NAMES[name]
        for key, value in ((f"before_{name}", b), (f"after_{name}", a), (delta_key, METRICS[name] * (a - b))):
            out[key] = value
            lo, hi = percentile_interval(boot[key], alpha) if n_boot > 0 else (None, None)
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = lo, hi
        out[f"{delta_key}_mde"] = detectable_difference(
            out[f"{delta_key}_ci_low"], out[f"{delta_key}_ci_high"], alpha=alpha
        )
        out[f"{delta_key}_equiv_bound"] = (
            equivalence_bound(*percentile_interval(boot[delta_key], 0.10)) if n_boot > 0 else float("nan")
        )
    return out


def _paired_resamples(before: QuestionTotals, after: QuestionTotals, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """Every value of :func:`compare_before_after` on ``n_boot`` resamples of the questions (the same draw for both models)."""
    from wow.analysis.bootstrap import resample_counts

    if n_boot <= 0:
        return {}
    parts: dict[str, list[np.ndarray]] = {}
    for counts in resample_counts(len(before.n), n_boot, np.random.default_rng(seed)):
        counts = counts.astype(float)
        for name in METRICS:
            b, a = weighted_metric(name, before, counts), weighted_metric(name, after, counts)
            for key, value in (
                (f"before_{name}", b),
                (f"after_{name}", a),
                (DELTA_NAMES[name], METRICS[name] * (a - b)),
            ):
                parts.setdefault(key, []).append(value)
    return {key: np.concatenate(v) for key, v in parts.items()}


def reliability(rows_by_model: Mapping[str, Sequence[dict]], n_bins: int = 10):
    """Reliability-diagram data per model (answers without a logprob are left out).

    Args:
        rows_by_model: e.g. ``{"before": before_rows, "after": after_rows}``.
        n_bins: equal-width confidence bins.

    Returns:
        ``pandas.DataFrame``: ``model, bin, lo, hi, n, mean_conf, accuracy`` (see
        :func:`wow.analysis.metrics.reliability_bins`).
    """
    import pandas as pd

    from wow.analysis import metrics

    tables = []
    for model, rows in rows_by_model.items():
        arrays = _arrays(rows)
        ok = np.isfinite(arrays.confidence)
        table = metrics.reliability_bins(arrays.confidence[ok], arrays.is_correct[ok], n_bins)
        table.insert(0, "model", model)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
