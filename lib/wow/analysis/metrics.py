"""Evaluation metrics of a model's answers: p_wrong, accuracy, calibration (ECE, reliability bins), Pearson r.

Pure numpy/pandas/scipy: no model, no files. Definitions follow DESIGN.md section 6. Acc_WoW lives in
:mod:`wow.analysis.acc_wow`; the bootstrap CIs of these metrics come from :mod:`wow.analysis.bootstrap`.

Example::

    from wow.analysis import metrics
    metrics.p_wrong([1.0, 0.5, None, 0.25], [True, False, False, False])   # 0.25
    metrics.ece([0.9, 0.9, 0.2], [True, False, False])
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from wow import WowError
from wow.analysis.arrays import floats

log = logging.getLogger(__name__)


def mean_correctness(correctness: Sequence[float | None]) -> float:
    """Mean graded correctness, clipped to [0, 1]; a missing value (None/NaN, an unparsed answer) counts as 0.

    Example::

        mean_correctness([1.0, 0.5, None, 0.0]) == 0.375
    """
    c = _correctness(correctness)
    return float(c.mean())


def p_wrong(correctness: Sequence[float | None], is_correct: Sequence[bool]) -> float:
    """Mean graded correctness over the wrong answers ("less wrong"); unparsed answers count, at 0.

    Returns NaN (with a warning) when no answer is wrong.

    Example::

        p_wrong([1.0, 0.5, None, 0.25], [True, False, False, False]) == 0.25
    """
    c = _correctness(correctness)
    ok = _bools(is_correct, len(c))
    if ok.all():
        log.warning("p_wrong: every answer is correct; p_wrong is undefined (NaN).")
        return float("nan")
    return float(c[~ok].mean())


def accuracy(is_correct: Sequence[bool]) -> float:
    """Share of correct answers."""
    ok = _bools(is_correct)
    return float(ok.mean())


def reliability_bins(confidence: Sequence[float], is_correct: Sequence[bool], n_bins: int = 10) -> pd.DataFrame:
    """Calibration table over ``n_bins`` equal-width confidence bins.

    Bin ``k`` is ``(k/n, (k+1)/n]``, except that the first bin also holds confidence exactly 0 (``[0, 1/n]``).
    The paper's code uses an exclusive lower edge throughout, so a confidence of exactly 0 falls in no bin there.

    Args:
        confidence: per answer, in [0, 1] (e.g. exp(mean token logprob)).
        is_correct: per answer.
        n_bins: number of bins.

    Returns:
        DataFrame with one row per bin: ``bin, lo, hi, n, mean_conf, accuracy`` (NaN in empty bins).
    """
    conf = floats(confidence, "confidence")
    ok = _bools(is_correct, len(conf))
    if not np.isfinite(conf).all():
        raise WowError("a confidence is missing or not finite; ECE needs exp(mean_logprob) for every answer.")
    if ((conf < 0) | (conf > 1)).any():
        raise WowError("confidences must lie in [0, 1].")
    if n_bins < 1:
        raise WowError(f"n_bins must be >= 1, got {n_bins}.")
    edges = np.arange(n_bins + 1) / n_bins
    idx = confidence_bin(conf, n_bins)
    rows = []
    for k in range(n_bins):
        sel = idx == k
        n = int(sel.sum())
        rows.append(
            {
                "bin": k,
                "lo": float(edges[k]),
                "hi": float(edges[k + 1]),
                "n": n,
                "mean_conf": float(conf[sel].mean()) if n else float("nan"),
                "accuracy": float(ok[sel].mean()) if n else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def confidence_bin(confidence: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """The bin of each confidence (0 .. n_bins - 1) as :func:`reliability_bins` cuts them: ``(k/n, (k+1)/n]``, the
    first bin also holding 0."""
    edges = np.arange(n_bins + 1) / n_bins
    return np.clip(np.searchsorted(edges, np.asarray(confidence, dtype=float), side="left") - 1, 0, n_bins - 1)


def ece(confidence: Sequence[float], is_correct: Sequence[bool], n_bins: int = 10) -> float:
    """Expected calibration error: ``sum_bins |bin|/N * |mean confidence - accuracy|`` (bins: :func:`reliability_bins`).

    Example::

        ece([0.9, 0.9, 0.2], [True, False, False]) == (2 * 0.4 + 0.2) / 3
    """
    table = reliability_bins(confidence, is_correct, n_bins)
    full = table[table.n > 0]
    n = full.n.sum()
    return float((full.n / n * (full.mean_conf - full.accuracy).abs()).sum())


class Pearson(NamedTuple):
    """Pearson correlation: ``r`` and its two-sided ``p`` (None when undefined), over ``n`` points."""

    r: float | None
    p: float | None
    n: int


def pearson(x: Sequence[float | None], y: Sequence[float | None]) -> Pearson:
    """Pearson r with its p-value (scipy.stats.pearsonr) over the points where both values are finite.

    With fewer than 3 points, or a constant series, r and p are None (undefined), never a silent NaN.

    Example::

        r, p, n = pearson([0.1, 0.4, 0.5, 0.9], [0.52, 0.55, 0.61, 0.70])
    """
    xs, ys = floats(x, "x"), floats(y, "y")
    if len(xs) != len(ys):
        raise WowError(f"pearson: x has {len(xs)} values, y has {len(ys)}.")
    ok = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    n = len(xs)
    if n < 3:
        log.info("pearson: %d point(s); need 3 for a correlation with a p-value.", n)
        return Pearson(None, None, n)
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        log.info("pearson: a constant series has no correlation.")
        return Pearson(None, None, n)
    res = stats.pearsonr(xs, ys)
    return Pearson(float(res.statistic), float(res.pvalue), n)


# -- helpers ------------------------------------------------------------------------------------------------------
def _correctness(correctness: Sequence[float | None]) -> np.ndarray:
    c = floats(correctness, "correctness")
    if len(c) == 0:
        raise WowError("no answers to measure.")
    return np.clip(np.nan_to_num(c, nan=0.0), 0.0, 1.0)


def _bools(values: Sequence[bool], n: int | None = None) -> np.ndarray:
    v = list(values)
    if any(x is None for x in v):
        raise WowError("is_correct has a missing value; grade every answer (unparsed answers are not correct).")
    b = np.asarray(v, dtype=bool)
    if n is not None and len(b) != n:
        raise WowError(f"is_correct has {len(b)} values for {n} answers.")
    if len(b) == 0:
        raise WowError("no answers to measure.")
    return b
