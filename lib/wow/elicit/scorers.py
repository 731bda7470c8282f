"""The scalar wrong-over-wrong scorers: each gives every answer a number, higher = predicted less wrong (scores.jsonl).

The scorers (DESIGN.md section 6):

* ``length``: generated tokens (``n_tokens``); longer is predicted better, as in the paper.
* ``consistency``: the share of the question's parsed answers (same generator) whose canonical ``extracted`` equals
  this one's (the answer itself included); None for unparsed answers. For free-text tasks (``bio_generation``)
  the extracted answer IS the grade (the FActScore), so counting equal answers would count equal grades and leak
  the label; there, as in the paper's code, consistency is the token-logprob signal (``mean_logprob``).
* ``logprob``: mean token log-probability (``mean_logprob``).
* ``oracle``: the true raw label (a check: its Acc_WoW is exactly 1.0 wherever there are pairs).
* judge scores: from :mod:`wow.elicit.judges` (score-based judges), one column per judge, k and mode.

:func:`score_answers` writes the rows of ``scores.jsonl``; no signal reads a label (graded correctness, raw label,
is_correct): shuffling the labels of a run changes none of them (tests/test_elicit.py). :func:`method_score_maps`
turns those rows back into one ``answer_id -> score`` map per method, the input of the Acc_WoW tables
(:mod:`wow.analysis.acc_wow_tables`).

Example::

    from wow import io
    from wow.elicit import scorers
    answers = io.read_jsonl("outputs/demo/answers.jsonl")
    rows = scorers.score_answers(answers)
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Sequence

from wow import schema
from wow.elicit.verdicts import score_map
from wow.protocol import answer_identity, is_paper, paper_length
from wow.schema import JUDGE_SCORE_PREFIX, SCALAR_METHODS, judge_score_column, parse_judge_score_column


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
    return {col: score_map(rows) for col, rows in grouped.items()}


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


def method_score_maps(answers: Sequence[dict], scores: Sequence[dict]) -> dict[tuple[str, str], dict]:
    """``(method, judge) -> {answer_id: score}`` for oracle, the scalar methods and every judge column."""
    maps: dict[tuple[str, str], dict] = {("oracle", ""): oracle(answers)}
    for method in SCALAR_METHODS:
        maps[(method, "")] = {r["answer_id"]: r.get(method) for r in scores}
    columns = sorted({c for r in scores for c in r if c.startswith(JUDGE_SCORE_PREFIX)})
    for col in columns:
        judge, k, mode = parse_judge_score_column(col)
        maps[(schema.score_method(k, mode), judge)] = {r["answer_id"]: r.get(col) for r in scores}
    return maps
