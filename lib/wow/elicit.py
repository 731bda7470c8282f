"""Scalar wrong-over-wrong scorers over ``answers.jsonl`` and the Acc_WoW table of every method.

Each scorer gives every answer a number; higher = predicted less wrong (DESIGN.md section 6):

* ``length``: generated tokens (``n_tokens``); longer is predicted better, as in the paper.
* ``consistency``: the share of the question's parsed answers (same generator) whose canonical ``extracted`` equals
  this one's (the answer itself included); None for unparsed answers.
* ``logprob``: mean token log-probability (``mean_logprob``).
* ``oracle``: the true raw label (a check: its Acc_WoW is exactly 1.0 wherever there are pairs).
* judge scores: from :mod:`wow.judges` (score-based judges), one column per judge, k and mode.

:func:`score_answers` writes the rows of ``scores.jsonl``; :func:`acc_wow_table` turns answers, scores and
pairwise judgements into ``acc_wow.csv``; :func:`task_accuracy_confidence` and :func:`acc_wow_correlations` give
the paper's Figure 2/5 analysis (Pearson r across (task, generator) points).

Example::

    from wow import elicit, io
    answers = io.read_jsonl("outputs/demo/answers.jsonl")
    scores = elicit.score_answers(answers)
    table = elicit.acc_wow_table(answers, scores, judgements=[])
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import pandas as pd

from wow import WowError, judges, metrics

log = logging.getLogger(__name__)

#: Scalar methods computed from the answers alone, in report order.
SCALAR_METHODS = ("length", "consistency", "logprob")
#: Prefix of judge-score columns in ``scores.jsonl``: ``judge_score:<judge>:k<k>[:logprob]``.
JUDGE_SCORE_PREFIX = "judge_score:"
_JUDGE_COLUMN = re.compile(r"^judge_score:(?P<judge>.+):k(?P<k>\d+)(?::(?P<mode>text|logprob))?$")
TABLE_COLUMNS = [
    "task",
    "generator",
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
    "parse_fail_rate",
    "flip_rate",
    "note",
]


# -- scalar scorers ----------------------------------------------------------------------------------------------
def length(answers: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> n_tokens`` (None where the token count is missing)."""
    return {a["answer_id"]: None if a.get("n_tokens") is None else float(a["n_tokens"]) for a in answers}


def logprob(answers: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> mean_logprob`` (None where the engine gave no logprobs)."""
    return {a["answer_id"]: a.get("mean_logprob") for a in answers}


def consistency(answers: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id ->`` share of the question's parsed answers (same generator) equal to this one; None if unparsed.

    Answers are compared by their canonical ``extracted`` value (JSON-encoded, so lists compare too).

    Example::

        extracted 3, 3, 5, None -> 2/3, 2/3, 1/3, None
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for a in answers:
        groups[(a["question_id"], a["generator"])].append(a)
    out: dict[str, float | None] = {}
    for rows in groups.values():
        parsed = [_canon(a["extracted"]) for a in rows if a.get("extracted") is not None]
        counts = Counter(parsed)
        for a in rows:
            ex = a.get("extracted")
            out[a["answer_id"]] = None if ex is None else counts[_canon(ex)] / len(parsed)
    return out


def oracle(answers: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> raw_label``: the true order, as a scorer (Acc_WoW must be exactly 1.0)."""
    return {a["answer_id"]: a.get("raw_label") for a in answers}


def judge_score_column(judge: str, k: int, mode: str = "text") -> str:
    """Column name of a score judge in ``scores.jsonl``: ``judge_score:<judge>:k<k>`` (+ ``:logprob``)."""
    return f"{JUDGE_SCORE_PREFIX}{judge}:k{k}" + (":logprob" if mode == "logprob" else "")


def parse_judge_score_column(column: str) -> tuple[str, int, str]:
    """Inverse of :func:`judge_score_column`: ``(judge, k, mode)``."""
    m = _JUDGE_COLUMN.match(column)
    if not m:
        raise WowError(f"{column!r} is not a judge-score column (judge_score:<judge>:k<k>[:logprob]).")
    return m["judge"], int(m["k"]), m["mode"] or "text"


def judge_score_maps(score_rows: Sequence[dict]) -> dict[str, dict[str, float | None]]:
    """``column -> {answer_id: score}`` from score-judge rows of any judges, k and modes (for :func:`score_answers`).

    Example::

        rows = judges.read_judgements(run / "judgements", "score")
        scores = score_answers(answers, judge_score_maps(rows))
    """
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in score_rows:
        grouped[judge_score_column(r["judge"], r["k"], r["mode"])].append(r)
    return {col: judges.score_map(rows) for col, rows in grouped.items()}


def score_answers(
    answers: Sequence[dict], judge_scores: dict[str, dict[str, float | None]] | None = None
) -> list[dict]:
    """The rows of ``scores.jsonl``: every scalar score of every answer.

    Args:
        answers: rows of ``answers.jsonl``.
        judge_scores: ``column -> {answer_id: score}`` for score judges, column from :func:`judge_score_column`
            (e.g. from :func:`judge_score_maps`). An answer missing from a judge's map gets None.

    Returns:
        One dict per answer: ``answer_id, question_id, task, generator, length, consistency, logprob`` and one key
        per judge column.
    """
    judge_scores = judge_scores or {}
    for col in judge_scores:
        parse_judge_score_column(col)
    ln, cons, lp = length(answers), consistency(answers), logprob(answers)
    rows = []
    for a in answers:
        aid = a["answer_id"]
        row = {
            "answer_id": aid,
            "question_id": a["question_id"],
            "task": a["task"],
            "generator": a["generator"],
            "length": ln[aid],
            "consistency": cons[aid],
            "logprob": lp[aid],
        }
        for col, scores in judge_scores.items():
            row[col] = scores.get(aid)
        rows.append(row)
    return rows


# -- the Acc_WoW table -------------------------------------------------------------------------------------------
def acc_wow_table(
    answers: Sequence[dict],
    scores: Sequence[dict],
    judgements: Sequence[dict] = (),
    margins: Sequence[float] = metrics.MARGINS,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    cluster_by_question: bool = False,
) -> pd.DataFrame:
    """Acc_WoW of every method x margin x task x generator (x judge, x check for pairwise judges).

    Methods: ``oracle``, ``length``, ``consistency``, ``logprob``, ``score_k<k>[_logprob]`` (one per judge-score
    column of ``scores``) and ``pairwise_<mode>`` (per judge and mode found in ``judgements``), each with
    ``check`` ``none`` or, for pairwise judges, also ``both_orders``. Free-text pairwise verdicts carry no
    confidence, so only margin 1.0 is reported for them; the logprob mode ranks pairs by its confidence.

    Args:
        answers: rows of ``answers.jsonl``.
        scores: rows of ``scores.jsonl`` (:func:`score_answers`).
        judgements: rows of ``judgements/pairwise_*.jsonl`` (any judges and modes together).
        margins: shares M in (0, 1].
        n_boot: bootstrap resamples for the CIs.
        seed: bootstrap seed.
        cluster_by_question: bootstrap whole questions instead of pairs.

    Returns:
        DataFrame with :data:`TABLE_COLUMNS`. ``acc_wow`` (and its CI) is NaN only where ``n_pairs`` is 0, and
        ``note`` says why. ``parse_fail_rate`` and ``flip_rate`` are set for pairwise rows only (NaN elsewhere).
    """
    margins = [metrics.check_margin(m) for m in margins]
    pairs_by_group: dict[tuple, list] = defaultdict(list)
    for a, b in metrics.candidate_pairs(answers):
        pairs_by_group[(a["task"], a["generator"])].append((a, b))
    groups = sorted({(a["task"], a["generator"]) for a in answers})
    score_maps = _score_maps(answers, scores)
    judged: dict[tuple, list[dict]] = defaultdict(list)
    for row in judgements:
        judged[(row["task"], row["generator"], row["judge"], row["mode"])].append(row)

    out = []
    for task, gen in groups:
        pairs = pairs_by_group.get((task, gen), [])
        qids = [a["question_id"] for a, _ in pairs]
        for (method, judge), smap in score_maps.items():
            arrays = metrics.pair_arrays(pairs, smap)
            for m in margins:
                res = metrics.acc_wow(
                    *arrays, m, n_boot=n_boot, seed=seed, groups=qids if cluster_by_question else None
                )
                out.append(_row(task, gen, method, judge, "none", res))
        for (jt, jg, judge, mode), rows in sorted(judged.items()):
            if (jt, jg) != (task, gen):
                continue
            rates = judges.pairwise_rates(rows)
            for check in judges.CHECKS:
                hits, gaps, rows_kept = judges.pairwise_outcomes(rows, check)
                n_missing = len(rows) - len(hits)
                g = [r["question_id"] for r in rows_kept] if cluster_by_question else None
                for m in margins:
                    if m < 1.0 and mode != "logprob":
                        continue
                    res = metrics.acc_from_hits(
                        hits, gaps, m, n_boot=n_boot, seed=seed, groups=g, n_candidates=len(rows), n_missing=n_missing
                    )
                    out.append(_row(task, gen, f"pairwise_{mode}", judge, check, res, rates))
    table = pd.DataFrame(out, columns=TABLE_COLUMNS)
    return table.astype({c: float for c in ("acc_wow", "ci_low", "ci_high", "parse_fail_rate", "flip_rate")})


def _score_maps(answers: Sequence[dict], scores: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """``(method, judge) -> {answer_id: score}`` for oracle, the scalar methods and every judge column."""
    maps: dict[tuple[str, str], dict] = {("oracle", ""): oracle(answers)}
    for method in SCALAR_METHODS:
        maps[(method, "")] = {r["answer_id"]: r.get(method) for r in scores}
    columns = sorted({c for r in scores for c in r if c.startswith(JUDGE_SCORE_PREFIX)})
    for col in columns:
        judge, k, mode = parse_judge_score_column(col)
        method = f"score_k{k}" + ("_logprob" if mode == "logprob" else "")
        maps[(method, judge)] = {r["answer_id"]: r.get(col) for r in scores}
    return maps


def _row(
    task: str, gen: str, method: str, judge: str, check: str, res: metrics.AccWow, rates: dict | None = None
) -> dict:
    return {
        "task": task,
        "generator": gen,
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
        "parse_fail_rate": None if rates is None else rates["parse_fail_rate"],
        "flip_rate": None if rates is None else rates["flip_rate"],
        "note": res.note,
    }


# -- Figure 2/5 analysis -----------------------------------------------------------------------------------------
def task_accuracy_confidence(answers: Sequence[dict]) -> pd.DataFrame:
    """Task accuracy and mean confidence per (task, generator): the x-axes of the paper's Figures 2 and 5.

    Accuracy is the share of correct answers over all answers (unparsed = wrong). Confidence is the mean of
    ``exp(mean_logprob)`` over the answers that have logprobs (the paper's code kept the others in the denominator).

    Returns:
        DataFrame: ``task, generator, n_answers, accuracy, mean_confidence, n_confidence, n_wow_pairs``.
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for a in answers:
        groups[(a["task"], a["generator"])].append(a)
    n_pairs = Counter((a["task"], a["generator"]) for a, _ in metrics.candidate_pairs(answers))
    rows = []
    for (task, gen), rows_g in sorted(groups.items()):
        conf = [math.exp(a["mean_logprob"]) for a in rows_g if a.get("mean_logprob") is not None]
        rows.append(
            {
                "task": task,
                "generator": gen,
                "n_answers": len(rows_g),
                "accuracy": metrics.accuracy([bool(a["is_correct"]) for a in rows_g]),
                "mean_confidence": sum(conf) / len(conf) if conf else None,
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


def _canon(value) -> str:
    """Hashable canonical form of an extracted answer (3 and 3.0 are the same answer)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True)
