"""Reading a judge's reply: pairwise verdicts and 0-5 scores from text or next-token logprobs, and judge hits.

Pairwise verdict semantics: each pair ``(a, b)`` (``a`` earlier in sample order) is judged in both orders.
``forward`` shows ``a`` as output 1 and ``b`` as output 2; ``reverse`` shows ``b`` first. In each pass ``verdict``
is the *position* preferred (1, 2 or None) and ``prefers`` the *answer* preferred (``"a"``, ``"b"`` or None).
``truth`` is the answer with the higher raw label. Accuracy (:func:`pairwise_outcomes`): check ``none`` counts every
pair on its forward verdict (unparseable = miss); check ``both_orders`` counts only pairs where both passes parsed
and prefer the same answer. A reply that does not parse gives a null verdict / null scores and a ``parse_error``.

Example::

    from wow.elicit.verdicts import parse_scores, parse_verdict
    parse_verdict("Answer 2 is closer.\nPreferred output: 2") == 2
    parse_scores("Score for answer 1: 3\nScore for answer 2: 0", 2) == ([3, 0], None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from wow import WowError
from wow.elicit.judge_prompts import MAX_SCORE, VERDICT_CHOICES
from wow.protocol import is_paper
from wow.schema import CHECKS

# -- parsing -----------------------------------------------------------------------------------------------------
_MENTION = re.compile(r"preferred\s*output", re.I)
_VERDICT = re.compile(
    r"\s*(?:is|was)?\s*[:=\-\u2013]?\s*[*_\"'\u201c\u2018(\[]*\s*(?:output|answer|response)?\s*#?\s*([12])(?!\d|\.\d)",
    re.I,
)
_ECHO = re.compile(r"\s*[*_\"'\u201d\u2019)\]]*\s*(?:(?:or|/)\s*[*_\"'\u201c\u2018(\[]*\s*[12]|if\b)", re.I)
_INDEXED_SCORE = re.compile(
    r"score\s+for\s+(?:answer|response|output)\s*#?\s*(\d+)\s*(?:is)?\s*[:=\-\u2013]?\s*[*_]*\s*(-?\d+(?:\.\d+)?)",
    re.I,
)
_PLAIN_SCORE = re.compile(r"(?<![a-z])score\s*[:=]\s*[*_]*\s*(-?\d+(?:\.\d+)?)", re.I)


def parse_verdict(text: str | None) -> int | None:
    """The verdict (1 or 2) after the LAST "Preferred output" mention of a reply; None if there is none.

    Tolerates ``Preferred output: 2``, ``preferred output is Output 1``, ``**Preferred output:** "2".`` An echo of
    the instruction (``Preferred output: 1 or 2``, ``"Preferred output: 2" if answer 2 ...``) or a last mention
    without a verdict gives None.

    Example::

        parse_verdict("Answer 2 is closer.\\nPreferred output: 2") == 2
    """
    mentions = list(_MENTION.finditer(text or ""))
    if not mentions:
        return None
    tail = text[mentions[-1].end() :]
    tail = re.sub(r"^\s*[*_\"'\u201d\u2019]+", "", tail)  # closing markup of "**Preferred output**:"
    m = _VERDICT.match(tail)
    if not m or _ECHO.match(tail[m.end() :]):
        return None
    return int(m.group(1))


def parse_scores(text: str | None, k: int) -> tuple[list[int] | None, str | None]:
    """The k integer scores (0-5) of a score-judge reply, or ``(None, why)``.

    Indexed lines (``Score for answer i: n``) are read first; a later line for the same answer overrides an earlier
    one. They must cover exactly answers 1..k: a missing answer (too few) or a number above k (too many) makes the
    whole reply unparseable. Without indexed lines, plain ``Score: n`` lines are read and there must be exactly k.
    Every score must be an integer from 0 to 5.

    Returns:
        ``(scores, None)`` or ``(None, reason)``.

    Example::

        parse_scores("Score for answer 1: 3\\nScore for answer 2: 0", 2) == ([3, 0], None)
    """
    text = text or ""
    indexed = _INDEXED_SCORE.findall(text)
    if indexed:
        by_index = {int(i): v for i, v in indexed}
        want = set(range(1, k + 1))
        missing, extra = sorted(want - set(by_index)), sorted(set(by_index) - want)
        if missing or extra:
            parts = ([f"no score for answer(s) {missing}"] if missing else []) + (
                [f"scores for answer(s) {extra} beyond the {k} shown"] if extra else []
            )
            return None, "; ".join(parts)
        values = [by_index[i] for i in range(1, k + 1)]
    else:
        values = _PLAIN_SCORE.findall(text)
        if len(values) != k:
            return None, f"found {len(values)} score line(s), expected {k}"
    scores = []
    for v in values:
        if not re.fullmatch(r"\d+", v):
            return None, f"score {v} is not an integer from 0 to {MAX_SCORE}"
        if int(v) > MAX_SCORE:
            return None, f"score {v} is out of range 0-{MAX_SCORE}"
        scores.append(int(v))
    return scores, None


def paper_parse_verdict(text: str | None) -> int | None:
    """The paper's verdict parse: the FIRST ``Preferred output: (\\d+)`` of the reply (so an echo of the instruction,
    "Preferred output: 1 or 2", reads as 1); a number other than 1 or 2 gives None (a miss, as in the paper without
    the check)."""
    m = re.search(r"Preferred output: (\d+)", text or "")
    return int(m.group(1)) if m and m.group(1) in ("1", "2") else None


def paper_parse_scores(text: str | None, k: int) -> tuple[list[int] | None, str | None]:
    """The paper's score parse: every ``Score: (\\d+)`` of the reply; exactly k of them, else all k are None (any
    integer is accepted, as in the paper)."""
    values = re.findall(r"Score: (\d+)", text or "")
    if len(values) != k:
        return None, f"found {len(values)} 'Score: n' match(es), expected {k}"
    return [int(v) for v in values], None


def choice_probabilities(logprobs: dict[str, float], choices: Sequence[str]) -> list[float]:
    """Probabilities of ``choices`` renormalised over the choices (softmax of their logprobs)."""
    missing = [c for c in choices if c not in logprobs]
    if missing:
        raise WowError(f"the engine returned no logprob for choice(s) {missing}.")
    lp = np.array([logprobs[c] for c in choices], dtype=float)
    if not np.isfinite(lp).any():
        raise WowError(f"every choice of {list(choices)} has probability 0 after the prefill.")
    p = np.exp(lp - lp[np.isfinite(lp)].max())
    return (p / p.sum()).tolist()


def text_verdict(text: str, protocol: str = "wow") -> dict:
    """One pass of a text-mode pairwise reply: ``{verdict, prefers, p1, p2, parse_error, raw}`` (``prefers`` set by
    the caller, who knows the order shown)."""
    v = paper_parse_verdict(text) if is_paper(protocol) else parse_verdict(text)
    return {
        "verdict": v,
        "prefers": None,
        "p1": None,
        "p2": None,
        "parse_error": None if v is not None else "no verdict after the last 'Preferred output'",
        "raw": text,
    }


def logprob_verdict(logprobs: dict[str, float]) -> dict:
    """One pass of a logprob-mode pairwise reply: the position with the higher P("1") vs P("2"), with both."""
    p1, p2 = choice_probabilities(logprobs, VERDICT_CHOICES)
    v = 1 if p1 > p2 else 2 if p2 > p1 else None
    return {
        "verdict": v,
        "prefers": None,
        "p1": p1,
        "p2": p2,
        "parse_error": None if v is not None else "P(1) == P(2)",
        "raw": {c: logprobs[c] for c in VERDICT_CHOICES},
    }


def pairwise_outcomes(rows: Sequence[dict], check: str = "none") -> tuple[np.ndarray, np.ndarray | None, list[dict]]:
    """Hits of a pairwise judge under a check, with a per-pair confidence gap for margins (logprob mode).

    Args:
        rows: pairwise judgement rows of ONE judge and mode.
        check: ``none``: every pair counts on its forward verdict; unparseable = miss. ``both_orders``: only pairs
            whose two passes parsed and prefer the same answer count.

    Returns:
        ``(hits, gaps, kept_rows)``: ``gaps`` is ``|p1 - p2|`` (forward; mean of both passes with the check), or
        None in text mode where verdicts carry no confidence.
    """
    if check not in CHECKS:
        raise WowError(f"unknown check {check!r}; use one of {CHECKS}.")
    modes = {r["mode"] for r in rows}
    if len(modes) > 1 or len({r["judge"] for r in rows}) > 1:
        raise WowError("pairwise_outcomes takes the rows of one judge and mode; group them first.")
    has_conf = modes == {"logprob"}
    hits, gaps, kept = [], [], []
    for r in rows:
        fwd, rev = r["forward"], r["reverse"]
        if check == "none":
            hits.append(fwd["prefers"] == r["truth"])
            gaps.append(_gap(fwd) if has_conf else 0.0)
            kept.append(r)
        elif fwd["prefers"] is not None and fwd["prefers"] == rev["prefers"]:
            hits.append(fwd["prefers"] == r["truth"])
            gaps.append((_gap(fwd) + _gap(rev)) / 2 if has_conf else 0.0)
            kept.append(r)
    return np.asarray(hits, dtype=bool), (np.asarray(gaps, dtype=float) if has_conf else None), kept


def _gap(p: dict) -> float:
    return 0.0 if p["p1"] is None else abs(p["p1"] - p["p2"])


def score_map(rows: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> score`` from score-judge rows; every answer of an unparseable group maps to None."""
    out: dict[str, float | None] = {}
    for r in rows:
        for i, aid in enumerate(r["answer_ids"]):
            out[aid] = None if r["scores"] is None else r["scores"][i]
    return out
