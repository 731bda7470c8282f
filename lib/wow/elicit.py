"""Scalar wrong-over-wrong scorers over ``answers.jsonl`` and the Acc_WoW table of every method.

Each scorer gives every answer a number; higher = predicted less wrong (DESIGN.md section 6):

* ``length``: generated tokens (``n_tokens``); longer is predicted better, as in the paper.
* ``consistency``: the share of the question's parsed answers (same generator) whose canonical ``extracted`` equals
  this one's (the answer itself included); None for unparsed answers. For free-text tasks (``bio_generation``)
  the extracted answer IS the grade (the FActScore), so counting equal answers would count equal grades and leak
  the label; there, as in the paper's code, consistency is the token-logprob signal (``mean_logprob``).
* ``logprob``: mean token log-probability (``mean_logprob``).
* ``oracle``: the true raw label (a check: its Acc_WoW is exactly 1.0 wherever there are pairs).
* judge scores: from :mod:`wow.judges` (score-based judges), one column per judge, k and mode.

:func:`score_answers` writes the rows of ``scores.jsonl``; no signal reads a label (graded correctness, raw label,
is_correct): shuffling the labels of a run changes none of them (tests/test_elicit.py). :func:`acc_wow_table` turns
answers, scores and pairwise judgements into ``acc_wow.csv`` over one split (:func:`split_answers`; the pairs come
from :mod:`wow.pairs`); :func:`acc_wow_bins_table` is the paper's per-bin Acc_WoW matrix (``acc_wow_bins.csv``);
:func:`task_accuracy_confidence` and :func:`acc_wow_correlations` give the paper's Figure 2/5 analysis (Pearson r
across (task, generator) points).

Example::

    from wow import elicit, io
    answers = io.read_jsonl("outputs/demo/answers.jsonl")
    scores = elicit.score_answers(answers)
    table = elicit.acc_wow_table(answers, scores, judgements=[])
"""

from __future__ import annotations

import functools
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Sequence

import pandas as pd

from wow import WowError, judges, metrics, schema
from wow.pairs import MARGINS, by_task_generator, candidate_pairs, check_margin, is_parsed
from wow.protocol import answer_identity, is_paper, paper_length

log = logging.getLogger(__name__)

SCALAR_METHODS = schema.SCALAR_METHODS
JUDGE_SCORE_PREFIX = schema.JUDGE_SCORE_PREFIX
judge_score_column = schema.judge_score_column
parse_judge_score_column = schema.parse_judge_score_column
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


def consistency(answers: Sequence[dict], protocol: str = "wow") -> dict[str, float | None]:
    """``answer_id ->`` share of the question's parsed answers (same generator) equal to this one; None if unparsed.

    Answers are compared by their canonical ``extracted`` value (JSON-encoded, so lists compare too). Free-text
    tasks (:func:`is_free_text`, e.g. ``bio_generation``) have no extracted answer apart from their grade (the
    FActScore): their consistency is ``mean_logprob``, as in the paper's code, so no signal reads a label. Under
    ``protocol="paper"`` multiple-choice answers are compared by the letter shown
    (:func:`wow.protocol.answer_identity`), as the paper's code does across option orders.

    Example::

        extracted 3, 3, 5, None -> 2/3, 2/3, 1/3, None
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    out: dict[str, float | None] = {}
    for a in answers:
        if is_free_text(a["task"]):
            out[a["answer_id"]] = a.get("mean_logprob")
        else:
            groups[(a["question_id"], a["generator"])].append(a)
    for rows in groups.values():
        parsed = [answer_identity(a, protocol) for a in rows if a.get("extracted") is not None]
        counts = Counter(parsed)
        for a in rows:
            ex = a.get("extracted")
            out[a["answer_id"]] = None if ex is None else counts[answer_identity(a, protocol)] / len(parsed)
    return out


@functools.cache
def is_free_text(task: str) -> bool:
    """Whether ``task`` is a registered free-text task (graded whole; its ``extracted`` value is its grade)."""
    from wow import tasks

    return task in tasks.REGISTRY and bool(tasks.task_class(task).free_text)


def oracle(answers: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> raw_label``: the true order, as a scorer (Acc_WoW must be exactly 1.0)."""
    return {a["answer_id"]: a.get("raw_label") for a in answers}


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
    answers: Sequence[dict],
    judge_scores: dict[str, dict[str, float | None]] | None = None,
    protocol: str = "wow",
    tokenizer=None,
) -> list[dict]:
    """The rows of ``scores.jsonl``: every scalar score of every answer.

    Args:
        answers: rows of ``answers.jsonl``.
        judge_scores: ``column -> {answer_id: score}`` for score judges, column from :func:`judge_score_column`
            (e.g. from :func:`judge_score_maps`). An answer missing from a judge's map gets None.
        protocol: ``paper``: consistency compares letters (:func:`consistency`) and length counts Llama-3
            tokenizer ids of the text when that tokenizer is available offline (else generated tokens, logged).
        tokenizer: the length tokenizer under ``paper`` (default: the local Llama-3 tokenizer, if any).

    Returns:
        One dict per answer: ``answer_id, question_id, task, generator, length, consistency, logprob`` and one key
        per judge column.
    """
    judge_scores = judge_scores or {}
    for col in judge_scores:
        parse_judge_score_column(col)
    ln, cons, lp = length(answers), consistency(answers, protocol), logprob(answers)
    if is_paper(protocol):
        ln = paper_length(answers, tokenizer) or ln
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
    cluster_by_question: bool = False,
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
        scores: rows of ``scores.jsonl`` (:func:`score_answers`).
        judgements: rows of ``judgements/pairwise_*.jsonl`` (any judges and modes together).
        margins: shares M in (0, 1].
        split: the questions whose pairs count (:func:`split_answers`): ``train`` (the pairs preference sets use;
            the ``acc_wow_split`` default), ``validation``, ``test`` or ``all``; written in the ``split`` column.
        n_boot: bootstrap resamples for the CIs.
        seed: bootstrap seed.
        cluster_by_question: bootstrap whole questions instead of pairs.
        protocol: ``paper`` cuts margins with the paper's ``int(n * M)`` (0 keeps all pairs,
            :func:`wow.pairs.paper_margin_keep`).

    Returns:
        DataFrame with :data:`TABLE_COLUMNS`. ``acc_wow`` (and its CI) is NaN only where ``n_pairs`` is 0, and
        ``note`` says why. ``parse_fail_rate`` and ``flip_rate`` are set for pairwise rows only (NaN elsewhere).
    """
    margins = [check_margin(m) for m in margins]
    answers = split_answers(answers, split)
    qids_in_split = {a["question_id"] for a in answers}
    pairs_by_group = by_task_generator(candidate_pairs(answers))
    groups = sorted({(a["task"], a["generator"]) for a in answers})
    score_maps = _score_maps(answers, scores)
    judged: dict[tuple, list[dict]] = defaultdict(list)
    for row in judgements:
        if row["question_id"] in qids_in_split:
            judged[(row["task"], row["generator"], row["judge"], row["mode"])].append(row)

    out = []
    for task, gen in groups:
        pairs = pairs_by_group.get((task, gen), [])
        qids = [a["question_id"] for a, _ in pairs]
        for (method, judge), smap in score_maps.items():
            arrays = metrics.pair_arrays(pairs, smap)
            for m in margins:
                res = metrics.acc_wow(
                    *arrays,
                    m,
                    n_boot=n_boot,
                    seed=seed,
                    groups=qids if cluster_by_question else None,
                    protocol=protocol,
                )
                out.append(_row(task, gen, split, method, judge, "none", res))
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
    answers: Sequence[dict], scores: Sequence[dict], d: int = 4, margin: float = 1.0, *, split: str = "all"
) -> pd.DataFrame:
    """The paper's per-bin Acc_WoW matrix for every (task, generator) with graded labels (``acc_wow_bins.csv``).

    As the paper's Knowledge Crosswords analysis (``patch.analysis_kc``: ``detailed=4``, correct answers included):
    the raw labels of the parsed answers, correct ones included, are cut into ``d`` equal-width bins between their
    min and max; the pairs are all label-distinct pairs of parsed answers of one question and generator
    (:func:`wow.pairs.candidate_pairs` with ``include_correct=True``); :func:`wow.metrics.acc_wow_by_bins` then gives
    Acc_WoW per pair of bins ``(i <= j)``, for every scalar method and judge score (not the oracle: 1.0
    everywhere). A (task, generator) counts as graded when its parsed answers have more than two distinct labels;
    right/wrong tasks (two labels) have no bins to compare and are left out.

    Args:
        answers: rows of ``answers.jsonl``.
        scores: rows of ``scores.jsonl``.
        d: label bins.
        margin: share M of pairs kept before binning (1.0 in the paper).
        split: the questions that count (:func:`split_answers`).

    Returns:
        DataFrame with :data:`BINS_COLUMNS`, one row per (task, generator, method, judge) and cell ``i <= j``
        (``acc`` NaN in empty cells).
    """
    answers = split_answers(answers, split)
    score_maps = _score_maps(answers, scores)
    pairs_by_group = by_task_generator(candidate_pairs(answers, include_correct=True))
    labels: dict[tuple, set] = defaultdict(set)
    for a in answers:
        if is_parsed(a):
            labels[(a["task"], a["generator"])].add(float(a["raw_label"]))
    frames = []
    for (task, gen), pairs in sorted(pairs_by_group.items()):
        if len(labels[(task, gen)]) <= 2:
            continue
        edges = metrics.label_bin_edges(sorted(labels[(task, gen)]), d)
        for (method, judge), smap in score_maps.items():
            if method == "oracle":
                continue
            df = metrics.acc_wow_by_bins(*metrics.pair_arrays(pairs, smap), margin=margin, edges=edges)
            frames.append(df.assign(task=task, generator=gen, split=split, method=method, judge=judge, margin=margin))
    if not frames:
        return pd.DataFrame(columns=BINS_COLUMNS)
    return pd.concat(frames, ignore_index=True)[BINS_COLUMNS]


def _score_maps(answers: Sequence[dict], scores: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """``(method, judge) -> {answer_id: score}`` for oracle, the scalar methods and every judge column."""
    maps: dict[tuple[str, str], dict] = {("oracle", ""): oracle(answers)}
    for method in SCALAR_METHODS:
        maps[(method, "")] = {r["answer_id"]: r.get(method) for r in scores}
    columns = sorted({c for r in scores for c in r if c.startswith(JUDGE_SCORE_PREFIX)})
    for col in columns:
        judge, k, mode = parse_judge_score_column(col)
        maps[(schema.score_method(k, mode), judge)] = {r["answer_id"]: r.get(col) for r in scores}
    return maps


def _row(
    task: str,
    gen: str,
    split: str,
    method: str,
    judge: str,
    check: str,
    res: metrics.AccWow,
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
    n_pairs = Counter((a["task"], a["generator"]) for a, _ in candidate_pairs(answers))
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
