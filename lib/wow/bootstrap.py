"""Percentile bootstrap confidence intervals of any statistic, over rows or over whole clusters of rows.

:func:`detectable_difference` turns the spread of such an interval into the smallest true difference a study of
that size would have detected (its power), so that a null result reads "smaller than X", not "no effect".

Example::

    from wow.bootstrap import bootstrap_ci, detectable_difference
    lo, hi = bootstrap_ci(np.mean, hits, n_boot=1000, seed=0)
    mde = detectable_difference(lo, hi)  # 80% power, two-sided 5% level
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import numpy as np

from wow import WowError
from wow.arrays import has_none


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
        g = np.asarray(groups, dtype=object)
        if len(g) != n:
            raise WowError(f"{len(g)} group ids for {n} rows.")
        _, inverse = np.unique(g.astype(str), return_inverse=True)
        members = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)]
        for b in range(n_boot):
            pick = rng.integers(0, len(members), size=len(members))
            idx = np.concatenate([members[k] for k in pick])
            values[b] = fn(*(a[idx] for a in arrs))
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    return float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2))


def detectable_difference(ci_low: float, ci_high: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimum detectable difference of a study, from the spread of its bootstrap CI of the difference.

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
