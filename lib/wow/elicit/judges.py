"""Running LLM judges for wrong-over-wrong preferences: pairwise verdicts and 0-5 scores through any Engine.

The engine passed in is already wrapped by the call cache; this module sends the requests built by
:mod:`wow.elicit.judge_prompts`, reads the replies with :mod:`wow.elicit.verdicts`, and summarises and files the judgement rows.
Every request of a run is built first and sent in one ``engine.generate`` (or ``engine.choice_logprobs``) call, so
the engine can batch them.

Two modes per judge:

* ``text``: the judge reasons briefly, then concludes with ``Preferred output: 1|2`` (pairwise) or one score line
  per answer (score). Greedy decoding. The raw reply is always kept; a reply that does not parse is recorded with a
  null verdict / null scores and a ``parse_error``, never dropped.
* ``logprob`` (local engines): the assistant turn is prefilled with ``Preferred output: `` or ``Score: `` and the
  verdict is read from the next-token distribution: P("1") vs P("2") (normalised over the two), or the expected
  score over "0".."5" (k=1 only). Always parseable, with a confidence for free.

Each pair is judged in both orders (``forward`` and ``reverse``; semantics in :mod:`wow.elicit.verdicts`).

Example::

    from wow import io
    from wow.elicit import judges
    rows = judges.judge_pairwise(engine, answers, judge="smollm2-135m", mode="logprob", max_pairs=2000, seed=0)
    io.write_jsonl(run / "judgements" / judges.checked_judgement_filename("pairwise", "smollm2-135m", "logprob"), rows)
    judges.pairwise_rates(rows), judges.unparsed_examples(rows)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wow import WowError, io, layout, schema
from wow.backends.base import ChatRequest, Engine, EngineError
from wow.elicit.judge_prompts import (
    PAIRWISE_PROMPT_VERSION,
    SCORE_CHOICES,
    SCORE_PREFILL,
    SCORE_PROMPT_VERSION,
    VERDICT_CHOICES,
    VERDICT_PREFILL,
    pairwise_messages,
    score_messages,
)
from wow.elicit.verdicts import (
    choice_probabilities,
    logprob_verdict,
    paper_parse_scores,
    parse_scores,
    text_verdict,
)
from wow.pairs import candidate_pairs, pair_id, score_groups, subsample_pairs
from wow.protocol import is_paper

log = logging.getLogger(__name__)

#: Below this mean probability mass on the choices, the logprob mode warns that the prefill misses the tokenizer.
MIN_CHOICE_MASS = 0.5


# -- running a judge ----------------------------------------------------------------------------------------------
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
        return [read_text(i, c.text) for i, c in enumerate(engine.generate(requests, progress=True))]
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
        protocol: ``paper``: prompts show the question only (:func:`wow.elicit.judge_prompts.pairwise_messages`),
            verdicts are read with :func:`wow.elicit.verdicts.paper_parse_verdict`; the caller sets the cap
            (:func:`wow.protocol.judge_pair_cap`).

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
        read_text=lambda i, text: text_verdict(text, protocol),
        read_logprobs=logprob_verdict,
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
            (:func:`wow.elicit.judge_prompts.score_messages`), read with :func:`wow.elicit.verdicts.paper_parse_scores`.

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
        probs = choice_probabilities(lp, SCORE_CHOICES)
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


# -- judgement rows -------------------------------------------------------------------------------------------
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


def score_parse_rate(rows: Sequence[dict]) -> dict:
    """``{n_groups, n_unparsed, parse_fail_rate}`` of score-judge rows."""
    bad = sum(r["scores"] is None for r in rows)
    return {"n_groups": len(rows), "n_unparsed": bad, "parse_fail_rate": bad / len(rows) if rows else None}


def checked_judgement_filename(kind: str, judge: str, mode: str = "text", k: int | None = None) -> str:
    """File name under ``judgements/`` (:func:`wow.layout.judgement_filename`), after checking ``mode``."""
    _check_mode(mode)
    return layout.judgement_filename(kind, judge, mode, k)


def read_judgements(folder: str | Path, kind: str = "pairwise") -> list[dict]:
    """All rows of ``<folder>/<kind>_*.jsonl`` (every judge and mode), files in name order."""
    rows: list[dict] = []
    for path in sorted(Path(folder).glob(f"{kind}_*.jsonl")):
        rows.extend(io.read_jsonl(path))
    return rows


def _check_mode(mode: str) -> None:
    if mode not in schema.JUDGE_MODES:
        raise WowError(f"unknown judge mode {mode!r}; use one of {schema.JUDGE_MODES}.")
