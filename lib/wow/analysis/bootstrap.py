"""Percentile bootstrap confidence intervals of any statistic, over rows or over whole clusters of rows.

Answers, pairs and judgements of one question are not independent (an answer sits in up to 9 pairs, and a judge's
skill varies by question), so the project's intervals resample whole questions (clusters). :func:`resample_counts`
draws the resamples as count matrices (how often each cluster is drawn), so that statistics that are sums over
clusters are computed for every resample at once (:mod:`wow.analysis.acc_wow`, :mod:`wow.analysis.eval_metrics`,
:mod:`wow.analysis.gain_slope`); :func:`bootstrap_ci` takes any statistic and loops.

Two numbers read off an interval, and what they mean:

* :func:`detectable_difference` is the minimum detectable effect (MDE) of the design: the true difference the study
  would find non-zero with 80% power. It is a property of the design (how many questions, how noisy), known before
  looking at the estimate; it is not a threshold for an observed difference. An observed difference is
  significant at 5% when its 95% CI excludes 0 (about 1.96 SE), while the MDE is about 2.8 SE, so a significant
  difference can be smaller than the MDE.
* :func:`equivalence_bound` is what a null result supports: the smallest bound ``d`` for which the data reject
  ``|true difference| >= d`` (two one-sided tests at 5%, read off the 90% CI).

Example::

    from wow.analysis.bootstrap import bootstrap_ci, detectable_difference
    lo, hi = bootstrap_ci(np.mean, hits, n_boot=1000, seed=0, groups=question_ids)
    mde = detectable_difference(lo, hi)  # 80% power, two-sided 5% level: a property of the design
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from statistics import NormalDist

import numpy as np

from wow import WowError
from wow.analysis.arrays import has_none

#: What an Acc_WoW interval resamples (the ``ci_resample`` parameter): whole questions with all their pairs (the
#: default), or single pairs as if independent (too narrow wherever a question holds several pairs).
RESAMPLE_UNITS = ("question", "pair")


def check_resample(unit: str) -> str:
    """Validate a resampling unit of :data:`RESAMPLE_UNITS`; raises WowError naming the valid ones."""
    if unit not in RESAMPLE_UNITS:
        raise WowError(f"unknown resampling unit {unit!r}; use one of {', '.join(RESAMPLE_UNITS)}.")
    return unit


def bootstrap_ci(
    fn: Callable[..., float],
    *arrays: Sequence,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``fn(*arrays)``, resampling rows of all arrays jointly.

    Args:
        fn: statistic of the (resampled) arrays, e.g. ``p_wrong``.
        *arrays: equal-length arrays; row ``i`` of each is resampled together.
        n_boot: resamples.
        seed: RNG seed (same seed, same CI).
        alpha: 1 - CI level (0.05 -> 95%).
        groups: optional cluster id per row; whole clusters are resampled (cluster bootstrap).

    Returns:
        ``(low, high)``; resamples where ``fn`` is NaN are left out, ``(nan, nan)`` when all are.

    Example::

        lo, hi = bootstrap_ci(p_wrong, correctness, is_correct, n_boot=1000, seed=0)
    """
    if not arrays:
        raise WowError("bootstrap_ci needs at least one array.")
    arrs = [np.asarray(a, dtype=object if has_none(a) else None) for a in arrays]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise WowError(f"bootstrap arrays differ in length: {[len(a) for a in arrs]}.")
    if n == 0:
        raise WowError("bootstrap_ci over zero rows.")
    if n_boot < 1:
        raise WowError(f"n_boot must be >= 1, got {n_boot}.")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    if groups is None:
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            values[b] = fn(*(a[idx] for a in arrs))
    else:
        inverse, n_groups = cluster_index(groups, n)
        members = [np.flatnonzero(inverse == k) for k in range(n_groups)]
        for b in range(n_boot):
            pick = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[k] for k in pick])
            values[b] = fn(*(a[idx] for a in arrs))
    return percentile_interval(values, alpha)


def cluster_index(groups: Sequence, n: int | None = None) -> tuple[np.ndarray, int]:
    """The cluster of each row as an integer, and the number of clusters.

    Args:
        groups: a cluster id per row (e.g. the question id of each pair); ids are compared as text.
        n: the number of rows the ids must cover (checked when given).

    Returns:
        ``(index, n_clusters)``: ``index[i]`` in ``0 .. n_clusters - 1`` (clusters in sorted order of their ids).
    """
    g = np.asarray(groups, dtype=object).reshape(-1)
    if n is not None and len(g) != n:
        raise WowError(f"{len(g)} group ids for {n} rows.")
    if len(g) == 0:
        return np.zeros(0, dtype=int), 0
    _, inverse = np.unique(g.astype(str), return_inverse=True)
    return inverse.reshape(-1), int(inverse.max()) + 1


def resample_counts(
    n_units: int, n_boot: int, rng: np.random.Generator, row_size: int | None = None, max_cells: int = 2_000_000
) -> Iterator[np.ndarray]:
    """Bootstrap resamples as counts: how often each of ``n_units`` units (clusters) is drawn, ``n_units`` draws with
    replacement per resample.

    A statistic that is a ratio of sums over units is then ``(counts @ numerator) / (counts @ denominator)`` for
    every resample at once. The resamples come in blocks of at most ``max_cells`` cells (memory stays flat).

    Args:
        n_units: units to draw from (questions, or pairs where pairs are the unit).
        n_boot: resamples in all.
        rng: the random generator (one per interval, seeded by the caller).
        row_size: cells one resample occupies in the caller's arrays (default ``n_units``), to size the blocks.
        max_cells: most cells in one block.

    Yields:
        Integer arrays of shape ``(block, n_units)``; the blocks' rows add up to ``n_boot`` resamples.
    """
    if n_units < 1:
        raise WowError("a bootstrap needs at least one unit to resample.")
    if n_boot < 1:
        raise WowError(f"n_boot must be >= 1, got {n_boot}.")
    block = max(1, max_cells // max(n_units, row_size or 0))
    done = 0
    while done < n_boot:
        b = min(block, n_boot - done)
        draws = rng.integers(0, n_units, size=(b, n_units))
        flat = (np.arange(b)[:, None] * n_units + draws).reshape(-1)
        yield np.bincount(flat, minlength=b * n_units).reshape(b, n_units)
        done += b


def percentile_interval(values: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """The ``alpha / 2`` and ``1 - alpha / 2`` quantiles of bootstrap values; non-finite values (resamples where the
    statistic is undefined) are left out, ``(nan, nan)`` when none is left."""
    v = np.asarray(values, dtype=float).reshape(-1)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def equivalence_bound(low_90: float | None, high_90: float | None) -> float:
    """The equivalence bound a result supports: the end of its 90% CI farthest from zero.

    For every ``d`` above it, two one-sided tests at the 5% level reject ``true difference <= -d`` and
    ``true difference >= d`` (TOST): the data say the true difference lies within ``± bound``. This is how to report
    a null result ("smaller than the bound"), where the MDE (:func:`detectable_difference`) only describes the design.

    Args:
        low_90: lower end of the 90% interval (``alpha = 0.10``).
        high_90: upper end.

    Returns:
        ``max(|low_90|, |high_90|)``; NaN when either end is missing.
    """
    if low_90 is None or high_90 is None or not (math.isfinite(low_90) and math.isfinite(high_90)):
        return float("nan")
    return float(max(abs(low_90), abs(high_90)))


def detectable_difference(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference of a study's design, from the spread of its bootstrap CI of the difference.

    What it says: "this study detects a true difference of this size with probability ``power``". It describes the
    design, not the observed difference: an observed difference inside ``± MDE`` may still be significant (its CI
    excludes 0), and one outside it need not be large. Judge an observed difference by its own CI, and a null
    result by its :func:`equivalence_bound`.

    The standard error is read off the interval as ``SE = (high - low) / (2 z_{1-alpha/2})`` (exact for a normal
    bootstrap distribution); a true difference ``d`` is found non-zero by a two-sided test at level ``alpha`` with
    probability ``power`` when ``|d| >= (z_{1-alpha/2} + z_{power}) * SE``. For a 95% CI and 80% power that is
    ``0.7147 * (high - low)``.

    Args:
        ci_low: lower end of the ``1 - alpha`` interval.
        ci_high: upper end.
        alpha: the interval's (and the test's) level.
        power: the probability of detecting a true difference of the returned size.

    Returns:
        The difference; NaN when either end is missing.
    """
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return float("nan")
    z = NormalDist().inv_cdf
    se = (ci_high - ci_low) / (2 * z(1 - alpha / 2))
    return float((z(1 - alpha / 2) + z(power)) * se)
