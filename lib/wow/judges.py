"""LLM-as-a-judge for wrong-over-wrong preferences: pairwise verdicts and 0-5 scores, through any Engine.

The engine passed in is already wrapped by the call cache; this module only builds requests and parses replies.
Every request of a run is built first and sent in one ``engine.generate`` (or ``engine.choice_logprobs``) call, so
the engine can batch them. The judge sees the task exactly as the generator saw it (``prompt_messages`` of the
answer, options included); under ``protocol="paper"`` it sees the question only, as in the paper's code
(:func:`wow.protocol.paper_query`).

Two modes per judge:

* ``text``: the judge reasons briefly, then concludes with ``Preferred output: 1|2`` (pairwise) or one score line
  per answer (score). Greedy decoding. The raw reply is always kept; a reply that does not parse is recorded with a
  null verdict / null scores and a ``parse_error``, never dropped.
* ``logprob`` (local engines): the assistant turn is prefilled with ``Preferred output: `` or ``Score: `` and the
  verdict is read from the next-token distribution: P("1") vs P("2") (normalised over the two), or the expected
  score over "0".."5" (k=1 only). Always parseable, with a confidence for free.

Pairwise verdict semantics: each pair ``(a, b)`` (``a`` earlier in sample order) is judged in both orders.
``forward`` shows ``a`` as output 1 and ``b`` as output 2; ``reverse`` shows ``b`` first. In each pass ``verdict``
is the *position* preferred (1, 2 or None) and ``prefers`` the *answer* preferred (``"a"``, ``"b"`` or None).
``truth`` is the answer with the higher raw label. Accuracy (:func:`pairwise_outcomes`): check ``none`` counts every
pair on its forward verdict (unparseable = miss); check ``both_orders`` counts only pairs where both passes parsed
and prefer the same answer.

Example::

    from wow import judges, io
    rows = judges.judge_pairwise(engine, answers, judge="smollm2-135m", mode="logprob", max_pairs=2000, seed=0)
    io.write_jsonl(run / "judgements" / judges.judgement_filename("pairwise", "smollm2-135m", "logprob"), rows)
    judges.pairwise_rates(rows), judges.unparsed_examples(rows)
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wow import WowError, io, layout, schema
from wow.backends.base import ChatRequest, Engine, EngineError
from wow.pairs import candidate_pairs, pair_id, score_groups, subsample_pairs
from wow.protocol import is_paper, paper_query

log = logging.getLogger(__name__)

#: Versions of the judge prompts below; part of every request's cache key. Bump when a prompt changes.
PAIRWISE_PROMPT_VERSION = "wow-pairwise-1"
SCORE_PROMPT_VERSION = "wow-score-1"
MODES = schema.JUDGE_MODES
CHECKS = schema.CHECKS
SCORE_KS = schema.SCORE_KS
#: Prefills of the logprob mode and the choices read after them. The trailing space matters: tokenizers that split
#: digits (SmolLM2, Llama-3, Qwen) write ": 1" as ":", " ", "1"; without the space the next token is almost surely
#: " " and P("1") + P("2") is ~0.001 (measured on SmolLM2-135M) instead of ~0.9.
VERDICT_PREFILL = "Preferred output: "
VERDICT_CHOICES = ("1", "2")
SCORE_PREFILL = "Score: "
#: Below this mean probability mass on the choices, the logprob mode warns that the prefill misses the tokenizer.
MIN_CHOICE_MASS = 0.5
SCORE_CHOICES = tuple(str(s) for s in range(6))
MAX_SCORE = 5

_PAIRWISE_INTRO = (
    "Below are two answers to the same task. Decide which of the two is more correct.\n"
    "Judge correctness only: ignore length, style, tone and how sure an answer sounds. Both answers may be wrong; "
    "if so, prefer the one that comes closer to the right answer."
)
_PAIRWISE_OUTRO = (
    "Explain your judgement in at most 100 words. Then write one last line that reads exactly "
    '"Preferred output: 1" if answer 1 is more correct, or "Preferred output: 2" if answer 2 is more correct.'
)
_SCORE_INTRO = (
    "Below {what} to a task. Grade the correctness of {each} on an integer scale from 0 to 5, where 0 means "
    "completely wrong and 5 means fully correct. Wrong answers can be wrong by different amounts: give more points "
    "to an answer that comes closer to the right answer. Judge correctness only: ignore length, style and tone."
)
_SCORE_OUTRO_ONE = (
    "Explain your grade in at most 60 words. Then write one last line that reads exactly "
    '"Score: n", where n is an integer from 0 to 5.'
)
_SCORE_OUTRO_MANY = (
    "Explain your grades briefly, in at most 30 words per answer. Then end with {k} lines, one per answer in order, "
    'each of the form "Score for answer i: n", where i is the answer number and n an integer from 0 to 5.'
)
#: Under ``protocol: paper``: plain "Score: n" lines in order, the form the paper's parse reads.
_SCORE_OUTRO_PAPER = (
    "Explain your grades briefly, in at most 30 words per answer. Then end with {k} lines, one per answer in order, "
    'each of the form "Score: n", where n is an integer from 0 to 5.'
)
_OWN_COPY = (
    "Each answer was written for its own copy of the task; the copies differ only in the order of the options, "
    "so read each answer against its own copy."
)


# -- prompts -----------------------------------------------------------------------------------------------------
def render_task(messages: Sequence[dict]) -> str:
    """The task text of a generation prompt: the user turn, or every turn labelled by role when there are several."""
    if len(messages) == 1:
        return str(messages[0]["content"]).strip()
    return "\n\n".join(f"[{m['role']}]\n{str(m['content']).strip()}" for m in messages)


def _answer_blocks(answers: Sequence[dict], protocol: str = "wow") -> str:
    """Task + numbered answer blocks; one shared task when every answer saw the same prompt, else one task each.

    ``protocol="paper"``: the task is the paper's query (no options, no step-by-step instruction,
    :func:`wow.protocol.paper_query`), the same for every answer of a question.
    """
    if is_paper(protocol):
        tasks = [paper_query(a["prompt_messages"], a.get("permutation")) for a in answers]
    else:
        tasks = [render_task(a["prompt_messages"]) for a in answers]
    if all(t == tasks[0] for t in tasks):
        parts = [f"[Task]\n{tasks[0]}"]
        parts += [f"[Answer {i}]\n{a['text'].strip()}" for i, a in enumerate(answers, 1)]
    else:
        parts = [_OWN_COPY]
        for i, (t, a) in enumerate(zip(tasks, answers, strict=True), 1):
            parts.append(f"[Task, as shown to the author of answer {i}]\n{t}")
            parts.append(f"[Answer {i}]\n{a['text'].strip()}")
    return "\n\n".join(parts)


def pairwise_messages(first: dict, second: dict, protocol: str = "wow") -> list[dict]:
    """The pairwise judge prompt with ``first`` as answer 1 and ``second`` as answer 2 (one user message); under
    ``protocol="paper"`` the task is the question only (:func:`_answer_blocks`)."""
    body = "\n\n".join([_PAIRWISE_INTRO, _answer_blocks([first, second], protocol), _PAIRWISE_OUTRO])
    return [{"role": "user", "content": body}]


def score_messages(group: Sequence[dict], protocol: str = "wow") -> list[dict]:
    """The score judge prompt for a group of answers (one user message); asks for ``len(group)`` scores. Under
    ``protocol="paper"`` the task is the question only (:func:`_answer_blocks`)."""
    k = len(group)
    if k == 0:
        raise WowError("a score prompt needs at least one answer.")
    intro = _SCORE_INTRO.format(
        what="is one answer" if k == 1 else f"are {k} answers", each="the answer" if k == 1 else "each answer"
    )
    outro = _SCORE_OUTRO_ONE if k == 1 else _SCORE_OUTRO_MANY.format(k=k)
    if is_paper(protocol) and k > 1:
        outro = _SCORE_OUTRO_PAPER.format(k=k)
    return [{"role": "user", "content": "\n\n".join([intro, _answer_blocks(group, protocol), outro])}]


def judgement_filename(kind: str, judge: str, mode: str = "text", k: int | None = None) -> str:
    """File name under ``judgements/`` (:func:`wow.layout.judgement_filename`), after checking ``mode``."""
    _check_mode(mode)
    return layout.judgement_filename(kind, judge, mode, k)


def read_judgements(folder: str | Path, kind: str = "pairwise") -> list[dict]:
    """All rows of ``<folder>/<kind>_*.jsonl`` (every judge and mode), files in name order."""
    rows: list[dict] = []
    for path in sorted(Path(folder).glob(f"{kind}_*.jsonl")):
        rows.extend(io.read_jsonl(path))
    return rows


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


def _normalised(logprobs: dict[str, float], choices: Sequence[str]) -> list[float]:
    """Probabilities of ``choices`` renormalised over the choices (softmax of their logprobs)."""
    missing = [c for c in choices if c not in logprobs]
    if missing:
        raise WowError(f"the engine returned no logprob for choice(s) {missing}.")
    lp = np.array([logprobs[c] for c in choices], dtype=float)
    if not np.isfinite(lp).any():
        raise WowError(f"every choice of {list(choices)} has probability 0 after the prefill.")
    p = np.exp(lp - lp[np.isfinite(lp)].max())
    return (p / p.sum()).tolist()


# -- pairwise judge ----------------------------------------------------------------------------------------------
def _ask(
    engine: Engine,
    judge: str,
    mode: str,
    messages: list[list[dict]],
    *,
    max_tokens: int,
    prefill: str,
    version: str,
    choices: Sequence[str],
    read_text,
    read_logprobs,
) -> list:
    """The request and parsing shape both judges share: one greedy request per prompt (request seed 0, so the
    caller's cache serves any rerun). ``text`` mode: a free reply of at most ``max_tokens``, read by
    ``read_text(index, reply)``; ``logprob`` mode: the turn prefilled with ``prefill``, its next-token
    distribution over ``choices`` (checked to carry most of the mass) read by ``read_logprobs(logprobs)``."""
    requests = [
        ChatRequest(
            messages=m,
            max_tokens=1 if mode == "logprob" else max_tokens,
            temperature=0.0,
            seed=0,
            prefill=prefill if mode == "logprob" else None,
            logprobs=False,
            template_version=version,
        )
        for m in messages
    ]
    if mode == "text":
        return [read_text(i, c.text) for i, c in enumerate(engine.generate(requests))]
    lps = _choice_logprobs(engine, requests, choices)
    _check_mass(lps, choices, judge)
    return [read_logprobs(lp) for lp in lps]


def judge_pairwise(
    engine: Engine,
    answers: Sequence[dict],
    judge: str | None = None,
    mode: str = "text",
    *,
    max_pairs: int | None = None,
    seed: int = 0,
    max_tokens: int = 256,
    pairs: Sequence[tuple[dict, dict]] | None = None,
    protocol: str = "wow",
) -> list[dict]:
    """Judge every (subsampled) candidate pair in both orders.

    Args:
        engine: any engine (cache-wrapped by the caller); ``logprob`` mode needs ``choice_logprobs``.
        answers: rows of ``answers.jsonl``.
        judge: judge name written in the rows (default: ``engine.model``).
        mode: ``text`` (free reply, parsed) or ``logprob`` (prefilled ``Preferred output: ``, P("1") vs P("2")).
        max_pairs: cap per (task, generator), see :func:`wow.pairs.subsample_pairs`.
        seed: subsampling seed. Requests are greedy and always use request seed 0, so another subsampling seed
            reuses the cached verdicts of the pairs both draws share.
        max_tokens: reply budget in ``text`` mode.
        pairs: judge these pairs instead of :func:`wow.pairs.candidate_pairs` of ``answers`` (not subsampled).
        protocol: ``paper``: prompts show the question only (:func:`pairwise_messages`), verdicts are read with
            :func:`paper_parse_verdict`; the caller sets the cap (:func:`wow.protocol.judge_pair_cap`).

    Returns:
        One row per pair: ``pair_id, question_id, task, generator, judge, mode, template_version, answer_a,
        answer_b, label_a, label_b, truth, forward, reverse``; each pass is ``{verdict, prefers, raw, p1, p2,
        parse_error}`` (``raw`` is the reply in text mode, the choice logprobs in logprob mode).
    """
    _check_mode(mode)
    judge = judge or engine.model
    if pairs is None:
        pairs = subsample_pairs(candidate_pairs(answers), max_pairs, seed)
    pairs = list(pairs)
    messages = [pairwise_messages(first, second, protocol) for a, b in pairs for first, second in ((a, b), (b, a))]
    log.info("pairwise judge %s (%s): %d pairs, %d requests", judge, mode, len(pairs), len(messages))
    passes = _ask(
        engine,
        judge,
        mode,
        messages,
        max_tokens=max_tokens,
        prefill=VERDICT_PREFILL,
        version=PAIRWISE_PROMPT_VERSION,
        choices=VERDICT_CHOICES,
        read_text=lambda i, text: _text_verdict(text, protocol),
        read_logprobs=_logprob_verdict,
    )
    rows = []
    for n, (a, b) in enumerate(pairs):
        fwd, rev = passes[2 * n], passes[2 * n + 1]
        fwd["prefers"] = {1: "a", 2: "b"}.get(fwd["verdict"])
        rev["prefers"] = {1: "b", 2: "a"}.get(rev["verdict"])
        rows.append(
            {
                "pair_id": pair_id(a, b),
                "question_id": a["question_id"],
                "task": a["task"],
                "generator": a["generator"],
                "judge": judge,
                "mode": mode,
                "template_version": PAIRWISE_PROMPT_VERSION,
                "answer_a": a["answer_id"],
                "answer_b": b["answer_id"],
                "label_a": a["raw_label"],
                "label_b": b["raw_label"],
                "truth": "a" if a["raw_label"] > b["raw_label"] else "b",
                "forward": fwd,
                "reverse": rev,
            }
        )
    rates = pairwise_rates(rows)
    log.info(
        "pairwise judge %s (%s): parse failures %d/%d, order flips %d/%d",
        judge,
        mode,
        rates["n_unparsed"],
        rates["n_replies"],
        rates["n_flips"],
        rates["n_both_parsed"],
    )
    return rows


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


def _text_verdict(text: str, protocol: str = "wow") -> dict:
    v = paper_parse_verdict(text) if is_paper(protocol) else parse_verdict(text)
    return {
        "verdict": v,
        "prefers": None,
        "p1": None,
        "p2": None,
        "parse_error": None if v is not None else "no verdict after the last 'Preferred output'",
        "raw": text,
    }


def _logprob_verdict(logprobs: dict[str, float]) -> dict:
    p1, p2 = _normalised(logprobs, VERDICT_CHOICES)
    v = 1 if p1 > p2 else 2 if p2 > p1 else None
    return {
        "verdict": v,
        "prefers": None,
        "p1": p1,
        "p2": p2,
        "parse_error": None if v is not None else "P(1) == P(2)",
        "raw": {c: logprobs[c] for c in VERDICT_CHOICES},
    }


def _choice_logprobs(engine: Engine, requests: list[ChatRequest], choices: Sequence[str]) -> list[dict]:
    try:
        return engine.choice_logprobs(requests, list(choices))
    except EngineError as e:
        raise WowError(f"{e} The logprob judge mode needs a local engine; use mode='text' for chat APIs.") from e


def _check_mass(logprobs: list[dict], choices: Sequence[str], judge: str) -> float | None:
    """Mean probability the judge puts on the choices; warns when it is low (verdicts then mean little)."""
    if not logprobs:
        return None
    mass = float(np.mean([sum(math.exp(lp[c]) for c in choices if c in lp) for lp in logprobs]))
    if mass < MIN_CHOICE_MASS:
        log.warning(
            "judge %s puts only %.3f of its next-token probability on %s after the prefill; the logprob verdicts "
            "are unreliable (check the prefill against the tokenizer, or use mode='text').",
            judge,
            mass,
            list(choices),
        )
    return mass


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


def pairwise_rates(rows: Sequence[dict]) -> dict:
    """Parse-failure and order-flip rates of pairwise judgements.

    Returns:
        dict with ``n_pairs``, ``n_replies`` (two per pair), ``n_unparsed``, ``parse_fail_rate`` (unparsed replies /
        replies), ``n_both_parsed`` (pairs with both passes parsed), ``n_flips`` (of those, pairs whose preferred
        answer changed with the order), ``flip_rate`` (flips / both parsed; None without such pairs) and
        ``first_position_rate`` (share of parsed verdicts naming position 1: position bias; None if none parsed).
    """
    passes = [p for r in rows for p in (r["forward"], r["reverse"])]
    parsed = [p for p in passes if p["verdict"] is not None]
    both = [r for r in rows if r["forward"]["verdict"] is not None and r["reverse"]["verdict"] is not None]
    flips = sum(r["forward"]["prefers"] != r["reverse"]["prefers"] for r in both)
    return {
        "n_pairs": len(rows),
        "n_replies": len(passes),
        "n_unparsed": len(passes) - len(parsed),
        "parse_fail_rate": (len(passes) - len(parsed)) / len(passes) if passes else None,
        "n_both_parsed": len(both),
        "n_flips": flips,
        "flip_rate": flips / len(both) if both else None,
        "first_position_rate": sum(p["verdict"] == 1 for p in parsed) / len(parsed) if parsed else None,
    }


def unparsed_examples(rows: Sequence[dict], n: int = 5) -> list[dict]:
    """Up to ``n`` replies that did not parse, pairwise or score rows, for reports.

    Returns:
        dicts ``{id, judge, mode, pass, parse_error, raw}`` (``pass`` is ``forward``/``reverse`` for pairwise rows,
        ``score`` for score rows), in row order.
    """
    out = []
    for r in rows:
        if "forward" in r:
            items = [("forward", r["forward"]), ("reverse", r["reverse"])]
            rid = r["pair_id"]
        else:
            items = [("score", r)]
            rid = r["group_id"]
        for name, p in items:
            if p.get("parse_error"):
                out.append(
                    {
                        "id": rid,
                        "judge": r["judge"],
                        "mode": r["mode"],
                        "pass": name,
                        "parse_error": p["parse_error"],
                        "raw": p["raw"],
                    }
                )
                if len(out) >= n:
                    return out
    return out


# -- score judge -------------------------------------------------------------------------------------------------
def judge_scores(
    engine: Engine,
    answers: Sequence[dict],
    judge: str | None = None,
    k: int = 5,
    mode: str = "text",
    *,
    max_tokens: int | None = None,
    protocol: str = "wow",
) -> list[dict]:
    """Score every answer 0-5, ``k`` answers per prompt (groups from :func:`wow.pairs.score_groups`).

    Args:
        engine: any engine (cache-wrapped by the caller); ``logprob`` mode needs ``choice_logprobs``.
        answers: rows of ``answers.jsonl``.
        judge: judge name written in the rows (default: ``engine.model``).
        k: answers per prompt (the paper: 1, 2, 5, 10).
        mode: ``text`` or ``logprob`` (k=1 only: prefilled ``Score: ``, expected score over "0".."5").
        max_tokens: reply budget in text mode (default ``128 + 64 * k``).
        protocol: ``paper``: prompts show the question only and ask for plain "Score: n" lines
            (:func:`score_messages`), read with :func:`paper_parse_scores`.

    Returns:
        One row per group: ``group_id, question_id, task, generator, judge, mode, k, template_version, answer_ids,
        labels, raw, scores, parse_error, probs``. ``scores`` is a list (one per answer) or None when the reply did
        not parse (``parse_error`` says why); ``probs`` holds P(0..5) per answer in logprob mode.
    """
    _check_mode(mode)
    if mode == "logprob" and k != 1:
        raise WowError(f"the logprob score mode reads one score per prompt; use k=1 (got k={k}) or mode='text'.")
    judge = judge or engine.model
    groups = score_groups(answers, k)
    parse = paper_parse_scores if is_paper(protocol) else parse_scores

    def read_text(i: int, text: str) -> tuple:
        scores, err = parse(text, len(groups[i]))
        return text, scores, err, None

    def read_logprobs(lp: dict) -> tuple:
        probs = _normalised(lp, SCORE_CHOICES)
        expected = float(sum(s * p for s, p in enumerate(probs)))
        return {c: lp[c] for c in SCORE_CHOICES}, [expected], None, [probs]

    log.info("score judge %s (k=%d, %s): %d prompts", judge, k, mode, len(groups))
    parsed = _ask(
        engine,
        judge,
        mode,
        [score_messages(g, protocol) for g in groups],
        max_tokens=max_tokens or 128 + 64 * k,
        prefill=SCORE_PREFILL,
        version=SCORE_PROMPT_VERSION,
        choices=SCORE_CHOICES,
        read_text=read_text,
        read_logprobs=read_logprobs,
    )
    rows = []
    for g, (raw, scores, err, probs) in zip(groups, parsed, strict=True):
        first = g[0]
        rows.append(
            {
                "group_id": f"{first['question_id']}|{first['generator']}|k{k}|{first['sample_index']}",
                "question_id": first["question_id"],
                "task": first["task"],
                "generator": first["generator"],
                "judge": judge,
                "mode": mode,
                "k": k,
                "template_version": SCORE_PROMPT_VERSION,
                "answer_ids": [a["answer_id"] for a in g],
                "labels": [a.get("raw_label") for a in g],
                "raw": raw,
                "scores": scores,
                "parse_error": err,
                "probs": probs,
            }
        )
    n_bad = sum(r["scores"] is None for r in rows)
    log.info("score judge %s (k=%d, %s): %d/%d replies unparseable", judge, k, mode, n_bad, len(rows))
    return rows


def score_map(rows: Sequence[dict]) -> dict[str, float | None]:
    """``answer_id -> score`` from score-judge rows; every answer of an unparseable group maps to None."""
    out: dict[str, float | None] = {}
    for r in rows:
        for i, aid in enumerate(r["answer_ids"]):
            out[aid] = None if r["scores"] is None else r["scores"][i]
    return out


def score_parse_rate(rows: Sequence[dict]) -> dict:
    """``{n_groups, n_unparsed, parse_fail_rate}`` of score-judge rows."""
    bad = sum(r["scores"] is None for r in rows)
    return {"n_groups": len(rows), "n_unparsed": bad, "parse_fail_rate": bad / len(rows) if rows else None}


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise WowError(f"unknown judge mode {mode!r}; use one of {MODES}.")
