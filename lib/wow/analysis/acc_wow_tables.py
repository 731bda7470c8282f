"""The Acc_WoW tables of a run: every method's Acc_WoW per margin (``acc_wow.csv``), per label bin, and its Figure 2/5
correlations.

:func:`acc_wow_table` turns answers, scores (:mod:`wow.elicit.scorers`) and pairwise judgements (:mod:`wow.elicit.judges`) into
``acc_wow.csv`` over one split (:func:`split_answers`; the pairs come from :mod:`wow.pairs`, the numbers from
:mod:`wow.analysis.acc_wow`); :func:`acc_wow_bins_table` is the paper's per-bin Acc_WoW matrix (``acc_wow_bins.csv``);
:func:`task_accuracy_confidence` and :func:`acc_wow_correlations` give the paper's Figure 2/5 analysis (Pearson r
across (task, generator) points).

Example::

    from wow import io
    from wow.analysis import acc_wow_tables
    from wow.elicit import scorers
    answers = io.read_jsonl("outputs/demo/answers.jsonl")
    scores = scorers.score_answers(answers)
    table = acc_wow_tables.acc_wow_table(answers, scores, judgements=[])
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import pandas as pd

from wow import WowError, schema
from wow.analysis import metrics
from wow.analysis.acc_wow import AccWow, acc_from_hits, acc_wow, acc_wow_by_bins, label_bin_edges, pair_arrays
from wow.analysis.bootstrap import check_resample
from wow.elicit import judges
from wow.elicit.scorers import method_score_maps
from wow.elicit.verdicts import pairwise_outcomes
from wow.pairs import MARGINS, by_task_generator, candidate_pairs, check_margin, is_parsed

log = logging.getLogger(__name__)

#: The scalar methods of the table, besides the oracle, judge scores and pairwise judges (:mod:`wow.elicit.scorers`).
#: Values of the ``acc_wow_split`` parameter: one split of the questions, or ``all``.
SPLITS = ("train", "validation", "test", "all")
TABLE_COLUMNS = [
    "task",
    "generator",
    "split",
    "method",
    "judge",
    "check",
    "margin",
    "n_candidates",
    "n_missing",
    "n_pairs",
    "n_hits",
    "acc_wow",
    "ci_low",
    "ci_high",
    "ci_resample",
    "parse_fail_rate",
    "flip_rate",
    "note",
]


# -- the Acc_WoW table -------------------------------------------------------------------------------------------
def split_answers(answers: Sequence[dict], split: str) -> list[dict]:
    """The answers of one split's questions (``train``, ``validation``, ``test``), or every answer (``all``).

    Acc_WoW is computed on the train split by default (``acc_wow_split``): the pairs the preference sets use, as in
    the paper's code.
    """
    if split not in SPLITS:
        raise WowError(f"unknown split {split!r} for Acc_WoW; use one of {', '.join(SPLITS)}.")
    return list(answers) if split == "all" else [a for a in answers if a.get("split") == split]


def acc_wow_table(
    answers: Sequence[dict],
    scores: Sequence[dict],
    judgements: Sequence[dict] = (),
    margins: Sequence[float] = MARGINS,
    *,
    split: str = "all",
    n_boot: int = 1000,
    seed: int = 0,
    resample: str = "question",
    protocol: str = "wow",
) -> pd.DataFrame:
    """Acc_WoW of every method x margin x task x generator (x judge, x check for pairwise judges) on one split.

    Methods: ``oracle``, ``length``, ``consistency``, ``logprob``, ``score_k<k>[_logprob]`` (one per judge-score
    column of ``scores``) and ``pairwise_<mode>`` (per judge and mode found in ``judgements``), each with
    ``check`` ``none`` or, for pairwise judges, also ``both_orders``. Free-text pairwise verdicts carry no
    confidence, so only margin 1.0 is reported for them; the logprob mode ranks pairs by its confidence. Pairs and
    margins follow :mod:`wow.pairs`, per (task, generator): a ``score@M`` preference set of the same split trains on
    exactly the pairs scored here at M.

    Args:
        answers: rows of ``answers.jsonl``.
        scores: rows of ``scores.jsonl`` (:func:`wow.elicit.scorers.score_answers`).
        judgements: rows of ``judgements/pairwise_*.jsonl`` (any judges and modes together).
        margins: shares M in (0, 1].
        split: the questions whose pairs count (:func:`split_answers`): ``train`` (the pairs preference sets use;
            the ``acc_wow_split`` default), ``validation``, ``test`` or ``all``; written in the ``split`` column.
        n_boot: bootstrap resamples for the CIs.
        seed: bootstrap seed.
        resample: what the CIs resample (the ``ci_resample`` parameter, written in the ``ci_resample`` column):
            ``question`` (default: whole questions with all their pairs, the margin's cut redone in each resample,
            :func:`wow.analysis.acc_wow.acc_interval`) or ``pair`` (each pair alone, as if independent: too narrow wherever
            a question holds several pairs).
        protocol: ``paper`` cuts margins with the paper's ``int(n * M)`` (0 keeps all pairs,
            :func:`wow.pairs.paper_margin_keep`).

    Returns:
        DataFrame with :data:`TABLE_COLUMNS`. ``acc_wow`` (and its CI) is NaN only where ``n_pairs`` is 0, and
        ``note`` says why. ``parse_fail_rate`` and ``flip_rate`` are set for pairwise rows only (NaN elsewhere).
    """
    margins = [check_margin(m) for m in margins]
    by_question = check_resample(resample) == "question"
    answers = split_answers(answers, split)
    qids_in_split = {a["question_id"] for a in answers}
    pairs_by_group = by_task_generator(candidate_pairs(answers))
    groups = sorted({(a["task"], a["generator"]) for a in answers})
    score_maps = method_score_maps(answers, scores)
    judged: dict[tuple, list[dict]] = defaultdict(list)
    for row in judgements:
        if row["question_id"] in qids_in_split:
            judged[(row["task"], row["generator"], row["judge"], row["mode"])].append(row)

    out = []
    for task, gen in groups:
        pairs = pairs_by_group.get((task, gen), [])
        qids = [a["question_id"] for a, _ in pairs]
        for (method, judge), smap in score_maps.items():
            arrays = pair_arrays(pairs, smap)
            for m in margins:
                res = acc_wow(
                    *arrays,
                    m,
                    n_boot=n_boot,
                    seed=seed,
                    groups=qids if by_question else None,
                    protocol=protocol,
                )
                out.append(_row(task, gen, split, method, judge, "none", res))
        for (jt, jg, judge, mode), rows in sorted(judged.items()):
            if (jt, jg) != (task, gen):
                continue
            rates = judges.pairwise_rates(rows)
            for check in schema.CHECKS:
                hits, gaps, rows_kept = pairwise_outcomes(rows, check)
                n_missing = len(rows) - len(hits)
                g = [r["question_id"] for r in rows_kept] if by_question else None
                for m in margins:
                    if m < 1.0 and mode != "logprob":
                        continue
                    res = acc_from_hits(
                        hits,
                        gaps,
                        m,
                        n_boot=n_boot,
                        seed=seed,
                        groups=g,
                        n_candidates=len(rows),
                        n_missing=n_missing,
                        protocol=protocol,
                    )
                    out.append(_row(task, gen, split, schema.pairwise_method(mode), judge, check, res, rates))
    table = pd.DataFrame(out, columns=TABLE_COLUMNS)
    return table.astype({c: float for c in ("acc_wow", "ci_low", "ci_high", "parse_fail_rate", "flip_rate")})


#: Columns of ``acc_wow_bins.csv`` (:func:`acc_wow_bins_table`).
BINS_COLUMNS = [
    "task",
    "generator",
    "split",
    "method",
    "judge",
    "margin",
    "bin_i",
    "bin_j",
    "lo_i",
    "hi_i",
    "lo_j",
    "hi_j",
    "n_pairs",
    "n_hits",
    "acc",
]


def acc_wow_bins_table(
    answers: Sequence[dict],
    scores: Sequence[dict],
    d: int = 4,
    margin: float = 1.0,
    *,
    split: str = "all",
    protocol: str = "wow",
) -> pd.DataFrame:
    """The paper's per-bin Acc_WoW matrix for every (task, generator) with graded labels (``acc_wow_bins.csv``).

    As the paper's Knowledge Crosswords analysis (``patch.analysis_kc``: ``detailed=4``, correct answers included):
    the raw labels of the parsed answers, correct ones included, are cut into ``d`` equal-width bins between their
    min and max; the pairs are all label-distinct pairs of parsed answers of one question and generator
    (:func:`wow.pairs.candidate_pairs` with ``include_correct=True``); :func:`wow.analysis.acc_wow.acc_wow_by_bins` then gives
    Acc_WoW per pair of bins ``(i <= j)``, for every scalar method and judge score (not the oracle: 1.0
    everywhere). A (task, generator) counts as graded when its parsed answers have more than two distinct labels;
    right/wrong tasks (two labels) have no bins to compare and are left out.

    Args:
        answers: rows of ``answers.jsonl``.
        scores: rows of ``scores.jsonl``.
        d: label bins.
        margin: share M of pairs kept before binning (1.0 in the paper).
        split: the questions that count (:func:`split_answers`).
        protocol: ``paper`` cuts the margin with the paper's arithmetic (:func:`wow.analysis.acc_wow.acc_wow_by_bins`).

    Returns:
        DataFrame with :data:`BINS_COLUMNS`, one row per (task, generator, method, judge) and cell ``i <= j``
        (``acc`` NaN in empty cells).
    """
    answers = split_answers(answers, split)
    score_maps = method_score_maps(answers, scores)
    pairs_by_group = by_task_generator(candidate_pairs(answers, include_correct=True))
    labels: dict[tuple, set] = defaultdict(set)
    for a in answers:
        if is_parsed(a):
            labels[(a["task"], a["generator"])].add(float(a["raw_label"]))
    frames = []
    for (task, gen), pairs in sorted(pairs_by_group.items()):
        if len(labels[(task, gen)]) <= 2:
            continue
        edges = label_bin_edges(sorted(labels[(task, gen)]), d)
        for (method, judge), smap in score_maps.items():
            if method == "oracle":
                continue
            df = acc_wow_by_bins(*pair_arrays(pairs, smap), margin=margin, edges=edges, protocol=protocol)
            frames.append(df.assign(task=task, generator=gen, split=split, method=method, judge=judge, margin=margin))
    if not frames:
        return pd.DataFrame(columns=BINS_COLUMNS)
    return pd.concat(frames, ignore_index=True)[BINS_COLUMNS]


#: The margins of the per-bin matrix under each protocol: the paper's analysis printed it at three (row 49).
BINS_MARGINS = {"wow": (1.0,), "paper": (1.0, 0.5, 0.1)}


def acc_wow_bins_tables(
    answers: Sequence[dict], scores: Sequence[dict], d: int = 4, *, split: str = "all", protocol: str = "wow"
) -> pd.DataFrame:
    """:func:`acc_wow_bins_table` at every margin of :data:`BINS_MARGINS` of ``protocol`` (``acc_wow_bins.csv``;
    its ``margin`` column tells them apart): M = 1 under ``wow``; 1, 0.5 and 0.1 under ``paper``, as the paper's
    ``analysis_kc`` printed (docs/fidelity.md row 49)."""
    schema.check_protocol(protocol)
    tables = [
        acc_wow_bins_table(answers, scores, d, margin, split=split, protocol=protocol)
        for margin in BINS_MARGINS[protocol]
    ]
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=BINS_COLUMNS)


def _row(
    task: str,
    gen: str,
    split: str,
    method: str,
    judge: str,
    check: str,
    res: AccWow,
    rates: dict | None = None,
) -> dict:
    return {
        "task": task,
        "generator": gen,
        "split": split,
        "method": method,
        "judge": judge,
        "check": check,
        "margin": res.margin,
        "n_candidates": res.n_candidates,
        "n_missing": res.n_missing,
        "n_pairs": res.n_pairs,
        "n_hits": res.n_hits,
        "acc_wow": res.acc,
        "ci_low": res.ci_low,
        "ci_high": res.ci_high,
        "ci_resample": res.ci_resample,
        "parse_fail_rate": None if rates is None else rates["parse_fail_rate"],
        "flip_rate": None if rates is None else rates["flip_rate"],
        "note": res.note,
    }


# -- Figure 2/5 analysis -----------------------------------------------------------------------------------------
#: The task whose accuracy the paper's code takes as its mean graded correctness (FActScore) under ``protocol: paper``.
PAPER_MEAN_SCORE_TASK = "bio_generation"


def task_accuracy_confidence(answers: Sequence[dict], protocol: str = "wow") -> pd.DataFrame:
    """Task accuracy and mean confidence per (task, generator): the x-axes of the paper's Figures 2 and 5.

    ``wow``: accuracy is the share of correct answers over all answers (unparsed = wrong), for every task; confidence
    is the mean of ``exp(mean_logprob)`` over the answers that have logprobs. ``paper`` (docs/fidelity.md rows 36
    and 41): both are sums over all answers divided by their number, so an answer without logprobs counts 0
    confidence; Bio's accuracy is the mean FActScore (its ``correctness``), not the share with FActScore >= 0.9.

    Returns:
        DataFrame: ``task, generator, n_answers, accuracy, mean_confidence, n_confidence, n_wow_pairs``.
    """
    schema.check_protocol(protocol)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for a in answers:
        groups[(a["task"], a["generator"])].append(a)
    n_pairs = Counter((a["task"], a["generator"]) for a, _ in candidate_pairs(answers))
    rows = []
    for (task, gen), rows_g in sorted(groups.items()):
        conf = [math.exp(a["mean_logprob"]) for a in rows_g if a.get("mean_logprob") is not None]
        if protocol == "paper":
            graded = [a.get("correctness") or 0.0 for a in rows_g] if task == PAPER_MEAN_SCORE_TASK else None
            accuracy = (
                sum(graded) / len(rows_g)
                if graded is not None
                else metrics.accuracy([bool(a["is_correct"]) for a in rows_g])
            )
            confidence = sum(conf) / len(rows_g) if rows_g else None
        else:
            accuracy = metrics.accuracy([bool(a["is_correct"]) for a in rows_g])
            confidence = sum(conf) / len(conf) if conf else None
        rows.append(
            {
                "task": task,
                "generator": gen,
                "n_answers": len(rows_g),
                "accuracy": accuracy,
                "mean_confidence": confidence,
                "n_confidence": len(conf),
                "n_wow_pairs": n_pairs[(task, gen)],
            }
        )
    return pd.DataFrame(rows)


def acc_wow_correlations(table: pd.DataFrame, task_stats: pd.DataFrame) -> pd.DataFrame:
    """Pearson r between Acc_WoW and task accuracy / mean confidence across (task, generator) points.

    Args:
        table: :func:`acc_wow_table` output.
        task_stats: :func:`task_accuracy_confidence` output.

    Returns:
        DataFrame, one row per (method, judge, check, margin) and x in {accuracy, mean_confidence}:
        ``method, judge, check, margin, x, r, p, n`` (r, p NaN where undefined: fewer than 3 points or a constant
        series; ``n`` says how many points there were).
    """
    merged = table.merge(task_stats, on=["task", "generator"], how="inner")
    rows = []
    for (method, judge, check, margin), g in merged.groupby(["method", "judge", "check", "margin"], sort=True):
        for x in ("accuracy", "mean_confidence"):
            r, p, n = metrics.pearson(g[x].tolist(), g["acc_wow"].tolist())
            rows.append(
                {"method": method, "judge": judge, "check": check, "margin": margin, "x": x, "r": r, "p": p, "n": n}
            )
    out = pd.DataFrame(rows, columns=["method", "judge", "check", "margin", "x", "r", "p", "n"])
    return out.astype({"r": float, "p": float})
