"""Acc_WoW: wrong-over-wrong accuracy of a method over pairs of wrong answers, with margins, CIs and label bins.

Pure numpy/pandas: no model, no files. Definitions follow DESIGN.md section 6.

The pairs come from :mod:`wow.pairs` (the one pair rule: candidate pairs, margins, subsampling). :func:`acc_wow`
scores a method that gives each answer a scalar (higher = predicted less wrong). A pair is a hit when the predicted
order strictly agrees with the labels; a tie in the prediction is a miss. The margin M keeps the M share of pairs
with the largest predicted gap (:func:`wow.pairs.margin_keep`: ``floor(n * M)``, at least one). The result carries
the pair count and a percentile bootstrap 95% CI (:func:`acc_interval`) that resamples whole questions (the pairs of
one question share answers and the judge's skill on that question, so they are not independent) and redoes the
margin's cut in every resample; random guessing scores 0.5.
:func:`acc_wow_by_bins` splits Acc_WoW by the label bins of the two answers of a pair.

Example::

    from wow.analysis.acc_wow import acc_wow_pairs
    from wow.pairs import candidate_pairs
    pairs = candidate_pairs(answers)
    res = acc_wow_pairs(pairs, {a["answer_id"]: a["n_tokens"] for a in answers}, margin=0.5)
    res.acc, res.n_pairs, (res.ci_low, res.ci_high), res.ci_resample   # ... "question"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from wow import WowError
from wow.analysis.arrays import floats
from wow.analysis.bootstrap import check_resample, cluster_index, percentile_interval, resample_counts
from wow.pairs import check_margin, margin_keep
from wow.protocol import is_paper


@dataclass(frozen=True)
class AccWow:
    """An Acc_WoW result.

    Attributes:
        acc: hits / kept pairs, or ``None`` when no pair is kept (see ``note``).
        n_pairs: pairs kept (after dropping missing predictions, the consistency check and the margin).
        n_hits: kept pairs whose predicted order strictly agrees with the labels.
        ci_low, ci_high: percentile bootstrap CI of ``acc`` (``None`` without pairs or with ``n_boot=0``).
        n_candidates: pairs offered before anything was dropped.
        n_missing: pairs dropped because a prediction was missing (null score, unparsed or inconsistent verdict).
        margin: the margin M applied.
        note: why ``acc`` is ``None`` (empty otherwise).
        ci_resample: what the CI resampled: ``question`` (whole questions) or ``pair``; empty without a CI.
    """

    acc: float | None
    n_pairs: int
    n_hits: int
    ci_low: float | None
    ci_high: float | None
    n_candidates: int = 0
    n_missing: int = 0
    margin: float = 1.0
    note: str = ""
    ci_resample: str = ""

    def to_dict(self) -> dict:
        """Plain dict (one row of ``acc_wow.csv``)."""
        return asdict(self)


def acc_from_hits(
    hits: Sequence[bool] | np.ndarray,
    gaps: Sequence[float] | np.ndarray | None = None,
    margin: float = 1.0,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence | None = None,
    n_candidates: int | None = None,
    n_missing: int = 0,
    protocol: str = "wow",
) -> AccWow:
    """Acc_WoW from per-pair hits (and gaps when a margin below 1 is asked for).

    Args:
        hits: 1/True where the prediction agrees with the labels, per pair.
        gaps: predicted gap (confidence) per pair; required when ``margin < 1``.
        margin: share M in (0, 1] of pairs with the largest gap to keep.
        n_boot: bootstrap resamples for the CI (0: no CI).
        seed: bootstrap seed.
        alpha: 1 - CI level.
        groups: the question id of each pair: the CI resamples whole questions. Without it every pair is resampled
            alone, as if the pairs were independent (too narrow where a question holds several pairs).
        n_candidates: pairs offered before drops (defaults to ``len(hits) + n_missing``).
        n_missing: pairs already dropped by the caller (reported, not used).
        protocol: ``paper`` cuts margins with the paper's arithmetic (:func:`wow.pairs.paper_margin_keep`).

    Returns:
        :class:`AccWow`.
    """
    m = check_margin(margin)
    hits = np.asarray(hits, dtype=float).reshape(-1)
    n_candidates = len(hits) + n_missing if n_candidates is None else n_candidates
    if len(hits) == 0:
        note = (
            "no candidate pairs" if n_candidates == 0 else f"no usable pairs ({n_missing} of {n_candidates} missing)"
        )
        return AccWow(None, 0, 0, None, None, n_candidates, n_missing, m, note)
    if m < 1.0:
        if gaps is None:
            raise WowError("a margin below 1 needs the predicted gap of every pair; this method gives none.")
        gaps = np.asarray(gaps, dtype=float).reshape(-1)
        if len(gaps) != len(hits):
            raise WowError(f"{len(gaps)} gaps for {len(hits)} pairs.")
        keep = margin_keep(gaps, m, protocol)
    else:
        keep = np.arange(len(hits))
    kept = hits[keep]
    acc = float(kept.mean())
    lo = hi = None
    unit = ""
    if n_boot > 0:
        lo, hi = acc_interval(hits, gaps, m, groups=groups, n_boot=n_boot, seed=seed, alpha=alpha, protocol=protocol)
        unit = "pair" if groups is None else "question"
    return AccWow(acc, len(kept), int(kept.sum()), lo, hi, n_candidates, n_missing, m, "", unit)


def acc_interval(
    hits: Sequence[bool] | np.ndarray,
    gaps: Sequence[float] | np.ndarray | None,
    margin: float = 1.0,
    *,
    groups: Sequence | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    protocol: str = "wow",
) -> tuple[float, float]:
    """Percentile bootstrap CI of Acc_WoW at margin M, resampling whole questions (or pairs without ``groups``).

    Every resample draws the questions with replacement, each with all its pairs, and applies the margin's cut to
    the resampled pairs (the share M of the largest gaps; a question drawn twice brings its pairs twice), so the CI
    also carries the uncertainty of where the cut falls. Vectorised: resamples are count matrices
    (:func:`wow.analysis.bootstrap.resample_counts`).

    Args:
        hits: per pair, before the margin (missing predictions already dropped).
        gaps: predicted gap per pair; needed when ``margin < 1``.
        margin: share M in (0, 1].
        groups: the question id of each pair (None: every pair is its own unit).
        n_boot: resamples.
        seed: RNG seed.
        alpha: 1 - CI level.
        protocol: ``paper`` cuts ``int(n * M)`` pairs, all of them when that is 0
            (:func:`wow.pairs.paper_margin_keep`).

    Returns:
        ``(low, high)``.
    """
    h = np.asarray(hits, dtype=float).reshape(-1)
    if groups is None:
        units, n_units = np.arange(len(h)), len(h)
    else:
        units, n_units = cluster_index(groups, len(h))
    rng = np.random.default_rng(seed)
    values = []
    if margin >= 1.0:
        num = np.bincount(units, weights=h, minlength=n_units)
        den = np.bincount(units, minlength=n_units).astype(float)
        for counts in resample_counts(n_units, n_boot, rng):
            values.append((counts @ num) / (counts @ den))
    else:
        order = np.argsort(-np.asarray(gaps, dtype=float).reshape(-1), kind="stable")
        h_sorted, u_sorted = h[order], units[order]
        for counts in resample_counts(n_units, n_boot, rng, row_size=len(h)):
            w = counts.astype(float)[:, u_sorted]  # resample x pair (largest gap first): copies of each pair
            k = _kept(w.sum(axis=1), margin, protocol)
            kept = np.clip(k[:, None] - (np.cumsum(w, axis=1) - w), 0.0, w)
            values.append((kept @ h_sorted) / k)
    return percentile_interval(np.concatenate(values), alpha)


def _kept(n: np.ndarray, margin: float, protocol: str) -> np.ndarray:
    """How many of ``n`` (resampled) pairs a margin keeps, per resample (:func:`wow.pairs.margin_count`, or the
    paper's ``int(n * M)`` with 0 meaning all)."""
    if is_paper(protocol):
        k = np.floor(n * margin)
        return np.where(k == 0, n, k)
    return np.maximum(1.0, np.floor(n * margin + 1e-9))


def acc_wow(
    pred_a: Sequence[float | None],
    pred_b: Sequence[float | None],
    label_a: Sequence[float],
    label_b: Sequence[float],
    margin: float = 1.0,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    groups: Sequence | None = None,
    protocol: str = "wow",
) -> AccWow:
    """Acc_WoW of a scalar method over pairs given as four aligned arrays.

    A pair is a hit when ``(pred_a - pred_b) * (label_a - label_b) > 0``; a tie in the prediction is a miss. Pairs
    with a missing prediction (None/NaN) are dropped first and counted in ``n_missing``; the margin then keeps the
    M share of the remaining pairs with the largest ``|pred_a - pred_b|`` (:func:`wow.pairs.margin_keep`).

    Args:
        pred_a, pred_b: predicted scores (higher = predicted less wrong).
        label_a, label_b: true labels (higher = less wrong); must differ within each pair.
        margin: share M in (0, 1].
        n_boot, seed, alpha, groups, protocol: see :func:`acc_from_hits`.

    Returns:
        :class:`AccWow`; ``acc`` is None with a ``note`` when no pair remains.

    Example::

        acc_wow([3, 1, 2], [1, 1, 5], [0, -1, -1], [-1, -3, -2]).acc == 1 / 3   # hit, tie (miss), miss
    """
    pa, pb, la, lb = (
        floats(x, name)
        for x, name in ((pred_a, "pred_a"), (pred_b, "pred_b"), (label_a, "label_a"), (label_b, "label_b"))
    )
    if not len(pa) == len(pb) == len(la) == len(lb):
        raise WowError(f"pair arrays differ in length: {len(pa)}, {len(pb)}, {len(la)}, {len(lb)}.")
    if not (np.isfinite(la).all() and np.isfinite(lb).all()):
        raise WowError(
            "a pair has a missing or infinite label; build pairs with wow.pairs.candidate_pairs (parsed answers only)."
        )
    if (la == lb).any():
        raise WowError(
            "a pair has equal labels; wrong-over-wrong pairs need different labels (see wow.pairs.candidate_pairs)."
        )
    ok = np.isfinite(pa) & np.isfinite(pb)
    n_missing = int((~ok).sum())
    hits = (pa[ok] - pb[ok]) * (la[ok] - lb[ok]) > 0
    gaps = np.abs(pa[ok] - pb[ok])
    g = None if groups is None else np.asarray(groups, dtype=object)[ok]
    return acc_from_hits(
        hits,
        gaps,
        margin,
        n_boot=n_boot,
        seed=seed,
        alpha=alpha,
        groups=g,
        n_candidates=len(pa),
        n_missing=n_missing,
        protocol=protocol,
    )


def pair_arrays(
    pairs: Sequence[tuple[dict, dict]], scores: dict[str, float | None], label_key: str = "raw_label"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Turn pairs of answer rows and a score map into ``(pred_a, pred_b, label_a, label_b)`` arrays.

    Args:
        pairs: from :func:`wow.pairs.candidate_pairs`.
        scores: ``answer_id -> score`` (None or absent = missing).
        label_key: the row key holding the label.
    """
    pa = floats([scores.get(a["answer_id"]) for a, _ in pairs], "scores")
    pb = floats([scores.get(b["answer_id"]) for _, b in pairs], "scores")
    la = floats([a[label_key] for a, _ in pairs], label_key)
    lb = floats([b[label_key] for _, b in pairs], label_key)
    return pa, pb, la, lb


def acc_wow_pairs(
    pairs: Sequence[tuple[dict, dict]],
    scores: dict[str, float | None],
    margin: float = 1.0,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    resample: str = "question",
) -> AccWow:
    """Acc_WoW of a score map over candidate pairs (:func:`acc_wow` on :func:`pair_arrays`).

    Args:
        pairs: from :func:`wow.pairs.candidate_pairs`.
        scores: ``answer_id -> score`` (higher = predicted less wrong; None = missing).
        margin, n_boot, seed, alpha: see :func:`acc_wow`.
        resample: what the CI resamples: ``question`` (whole questions; the pairs of one question are not
            independent) or ``pair``.
    """
    groups = [a["question_id"] for a, _ in pairs] if check_resample(resample) == "question" else None
    return acc_wow(*pair_arrays(pairs, scores), margin, n_boot=n_boot, seed=seed, alpha=alpha, groups=groups)


def label_bin_edges(labels: Sequence[float], d: int) -> np.ndarray:
    """``d + 1`` edges of ``d`` equal-width bins between the min and max of ``labels``."""
    if d < 1:
        raise WowError(f"need at least one label bin, got d={d}.")
    x = floats(labels, "labels")
    x = x[np.isfinite(x)]
    if len(x) == 0:
        raise WowError("no finite labels to bin.")
    return np.linspace(x.min(), x.max(), d + 1)


def label_bin(labels: Sequence[float] | np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index (0..d-1) of each label; bins are ``[lo, hi)``, the last one ``[lo, hi]``; outside -> clipped."""
    d = len(edges) - 1
    idx = np.searchsorted(edges, np.asarray(labels, dtype=float), side="right") - 1
    return np.clip(idx, 0, d - 1)


def acc_wow_by_bins(
    pred_a: Sequence[float | None],
    pred_b: Sequence[float | None],
    label_a: Sequence[float],
    label_b: Sequence[float],
    d: int = 4,
    margin: float = 1.0,
    edges: Sequence[float] | None = None,
    protocol: str = "wow",
) -> pd.DataFrame:
    """Acc_WoW per pair of label bins: does the method separate answers that are far apart better than close ones?

    The labels are cut into ``d`` equal-width bins between the min and max label of the pairs (pass ``edges``,
    e.g. from :func:`label_bin_edges` over every wrong answer, to fix them). Missing predictions are dropped and
    the margin is applied over all pairs first (as in :func:`acc_wow`); each kept pair then falls in the cell
    ``(i, j)`` with ``i <= j`` the bins of its lower and higher label.

    Args:
        pred_a, pred_b, label_a, label_b: as in :func:`acc_wow`.
        d: number of label bins.
        margin: share M in (0, 1].
        edges: ``d + 1`` bin edges (overrides ``d``).
        protocol: ``paper`` cuts the margin with the paper's arithmetic, as :func:`acc_wow` does.

    Returns:
        Long DataFrame, one row per cell ``i <= j`` (empty cells included): ``bin_i, bin_j, lo_i, hi_i, lo_j,
        hi_j, n_pairs, n_hits, acc`` (``acc`` NaN where ``n_pairs`` is 0). The matrix is
        ``df.pivot(index="bin_i", columns="bin_j", values="acc")``.
    """
    pa, pb, la, lb = (floats(x, "pairs") for x in (pred_a, pred_b, label_a, label_b))
    if not len(pa) == len(pb) == len(la) == len(lb):
        raise WowError("pair arrays differ in length.")
    edges = np.asarray(edges, dtype=float) if edges is not None else label_bin_edges(np.concatenate([la, lb]), d)
    d = len(edges) - 1
    ok = np.isfinite(pa) & np.isfinite(pb)
    pa, pb, la, lb = pa[ok], pb[ok], la[ok], lb[ok]
    keep = margin_keep(np.abs(pa - pb), margin, protocol) if len(pa) else np.array([], dtype=int)
    hits = ((pa - pb) * (la - lb) > 0)[keep]
    ba, bb = label_bin(la[keep], edges), label_bin(lb[keep], edges)
    lo_bin, hi_bin = np.minimum(ba, bb), np.maximum(ba, bb)
    rows = []
    for i in range(d):
        for j in range(i, d):
            sel = (lo_bin == i) & (hi_bin == j)
            n = int(sel.sum())
            rows.append(
                {
                    "bin_i": i,
                    "bin_j": j,
                    "lo_i": float(edges[i]),
                    "hi_i": float(edges[i + 1]),
                    "lo_j": float(edges[j]),
                    "hi_j": float(edges[j + 1]),
                    "n_pairs": n,
                    "n_hits": int(hits[sel].sum()),
                    "acc": float(hits[sel].mean()) if n else float("nan"),
                }
            )
    return pd.DataFrame(rows)
