"""Which answers a preference set pairs, and which answer of a pair is chosen: the pool and the builders per type.

The pool is the train-split answers of the chosen generators (:func:`train_answer_pool`). The builders
(:func:`wrong_over_wrong_pairs` for ``oracle``, ``direct`` and ``score``, :func:`right_over_wrong_pairs` for ``row``,
:func:`gold_over_wrong_pairs` for ``gold``)
give ``{chosen, rejected, method}`` dicts of answer rows, always within one question and one generator; the pairs
themselves follow the one pair rule of :mod:`wow.pairs`. :mod:`wow.preferences.preference_examples` turns them into examples.

Example::

    from wow.preferences.preference_pairs import train_answer_pool, wrong_over_wrong_pairs
    pool = train_answer_pool(answers, "self", ["smollm2-135m"])
    pairs = wrong_over_wrong_pairs("oracle", pool, None, None, both_orders=True, margin=0.5)
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from wow import WowError, schema
from wow.pairs import (
    by_task_generator,
    candidate_pairs,
    check_margin,
    is_candidate,
    is_candidate_pair,
    label,
    margin_pairs,
    paper_score_margin,
    row_pairs,
)
from wow.protocol import allows_tied_pairs, is_paper

log = logging.getLogger(__name__)


def train_answer_pool(answers: Iterable[dict], source: str, generators: list[str] | None) -> dict[str, dict]:
    """answer_id -> row, for train-split answers of the chosen generators (file order kept)."""
    if source not in schema.SOURCES:
        raise WowError(f"unknown preference source {source!r}; valid: {', '.join(schema.SOURCES)}.")
    rows = list(answers)
    train = [a for a in rows if a.get("split") == "train"]
    present = sorted({a["generator"] for a in train})
    if not train:
        raise WowError(
            f"none of the {len(rows)} answers belongs to a train-split question; preferences are built from "
            "train questions only. Sample answers for the train split first."
        )
    if source == "self":
        if generators is None:
            if len(present) != 1:
                raise WowError(
                    f"source 'self' uses the answers of the model being trained, but the answers hold several "
                    f"generators ({', '.join(present)}); pass generators=[<that model>]."
                )
            generators = present
        elif len(generators) != 1:
            raise WowError(f"source 'self' takes exactly one generator, got {generators}; use source='mix'.")
    generators = present if generators is None else list(generators)
    missing = [g for g in generators if g not in present]
    if missing:
        raise WowError(
            f"no train-split answers from generator(s) {', '.join(missing)}; the answers hold {', '.join(present)}."
        )
    wanted = set(generators)
    pool = {}
    for a in train:
        if a["generator"] in wanted:
            if a["answer_id"] in pool:
                raise WowError(f"answer_id {a['answer_id']!r} occurs twice in the answers; ids must be unique.")
            pool[a["answer_id"]] = a
    return pool


# -- pair builders ------------------------------------------------------------------------------------------------
def _pair(chosen: dict, rejected: dict, method: str) -> dict:
    return {"chosen": chosen, "rejected": rejected, "method": method}


def wrong_over_wrong_pairs(kind, pool, judgements, scores, both_orders, margin, protocol="wow") -> list[dict]:
    """The wrong-over-wrong pairs of ``kind`` (``oracle``, ``direct`` or ``score``) among the pool's answers."""
    if kind == "oracle":
        return _oracle_pairs(pool)
    if kind == "direct":
        if judgements is None:
            raise WowError("'direct' preferences need `judgements` (rows of judgements/pairwise_<judge>.jsonl).")
        return _direct_pairs(pool, judgements, both_orders)
    if scores is None:
        raise WowError("'score' preferences need `scores`: a judge score per answer_id (see scores.jsonl).")
    if is_paper(protocol):
        return _paper_score_pairs(pool, scores, margin, protocol)
    return _score_pairs(pool, scores, margin)


def _oracle_pairs(pool: dict[str, dict]) -> list[dict]:
    pairs = []
    for a, b in candidate_pairs(pool.values()):
        hi, lo = (a, b) if label(a) > label(b) else (b, a)
        pairs.append(_pair(hi, lo, "oracle"))
    if not pairs:
        raise WowError(
            f"no wrong-over-wrong pairs among {len(pool)} train answers: all answers are correct or unparsed, or "
            "the wrong ones share their labels. Sample more answers per question or use more questions."
        )
    return pairs


def largest_gap_pairs(pairs: list[dict], k: int) -> list[dict]:
    """The ``k`` pairs of each question (and generator) whose labels differ most, the others dropped; pairs of one
    gap keep their order (sample order, :func:`wow.pairs.candidate_pairs`). Labels only: for oracle pairs and the
    sets flipped from them (``noisy@q``, ``random``), which then flip exactly these pairs."""
    if k < 1:
        raise WowError(f"pairs_per_question must be >= 1; got {k}.")
    groups: dict[tuple, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault((pair["chosen"]["question_id"], pair["chosen"]["generator"]), []).append(i)
    keep = set()
    for indices in groups.values():
        indices.sort(key=lambda i: (-(label(pairs[i]["chosen"]) - label(pairs[i]["rejected"])), i))
        keep.update(indices[:k])
    return [pair for i, pair in enumerate(pairs) if i in keep]


#: The chosen text of a ``gold`` pair: the question's gold answer in one sentence.
GOLD_TEXT = "The answer is {gold}."


def gold_over_wrong_pairs(pool: dict[str, dict], gold: Mapping[str, Any], k: int | None = None) -> list[dict]:
    """Gold over wrong, a positive control: per train question, its gold answer written as :data:`GOLD_TEXT` is
    chosen over each wrong parsed answer (with ``k``, over its ``k`` most wrong, ties in sample order). Trained with
    an NLL term (``rpo``) it is supervised fine-tuning on gold answers; it needs no answer of the model to be right.

    Args:
        pool: the train answers (:func:`train_answer_pool`).
        gold: ``{question_id: gold}``, numbers only (``questions.jsonl``'s ``gold``).
        k: most pairs per question (``pairs_per_question``); None: every wrong answer.

    Raises:
        WowError: a question's gold is missing or not a number, ``k`` < 1, or no question has a wrong answer.
    """
    if k is not None and k < 1:
        raise WowError(f"pairs_per_question must be >= 1; got {k}.")
    groups: dict[tuple, list[dict]] = {}
    for a in pool.values():
        if is_candidate(a):  # parsed and wrong
            groups.setdefault((a["question_id"], a["generator"]), []).append(a)
    pairs = []
    for (qid, generator), wrong in groups.items():
        value = gold.get(qid)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WowError(
                f"'gold' preferences need a numeric gold answer; question {qid!r} has {value!r}. Use them on "
                "tasks whose answer is a number (shortest_path, max_flow, matching, science)."
            )
        value = int(value) if float(value).is_integer() else value
        chosen = {
            **wrong[0],
            "answer_id": f"{qid}|{generator}|gold",
            "text": GOLD_TEXT.format(gold=value),
            "extracted": value,
            "raw_label": None,
            "correctness": 1.0,
            "is_correct": True,
        }
        ordered = sorted(range(len(wrong)), key=lambda i: (float(wrong[i]["correctness"]), i))
        pairs += [_pair(chosen, wrong[i], "gold") for i in ordered[:k]]
    if not pairs:
        raise WowError(f"no wrong parsed answer among {len(pool)} train answers: 'gold' has nothing to reject.")
    return pairs


def right_over_wrong_pairs(pool: dict[str, dict]) -> list[dict]:
    """Right over wrong: the pairs of one correct and one wrong parsed answer of a question."""
    pairs = [_pair(right, wrong, "row") for right, wrong in row_pairs(pool.values())]
    if not pairs:
        raise WowError(
            f"no right-over-wrong pairs among {len(pool)} train answers: no question has both a correct and a "
            "wrong parsed answer. Sample more answers per question, or use a wrong-over-wrong type."
        )
    return pairs


def _verdict(part: Any) -> int | None:
    """1 or 2 from a judgement half ({"verdict": ...}); None when missing or unparsed."""
    v = part.get("verdict") if isinstance(part, Mapping) else None
    return int(v) if v in (1, 2, "1", "2") else None


def _direct_pairs(pool: dict[str, dict], judgements: Iterable[dict], both_orders: bool) -> list[dict]:
    pairs, why = [], Counter()
    method = "direct_both_orders" if both_orders else "direct"
    for row in judgements:
        a, b = pool.get(row.get("answer_a")), pool.get(row.get("answer_b"))
        if a is None or b is None:
            why["not train answers of these generators"] += 1
            continue
        if a["generator"] != b["generator"] or a["question_id"] != b["question_id"]:
            why["answers from different generators or questions"] += 1
            continue
        if not is_candidate_pair(a, b):
            why["not a wrong-over-wrong candidate pair"] += 1
            continue
        fwd, rev = _verdict(row.get("forward")), _verdict(row.get("reverse"))
        if both_orders:
            if fwd is None or rev is None:
                why["unparsed in an order"] += 1
                continue
            if fwd == rev:  # position 1 in both orders = different answers: the judge flipped
                why["inconsistent across orders"] += 1
                continue
        elif fwd is None:
            why["forward verdict unparsed"] += 1
            continue
        chosen, rejected = (a, b) if fwd == 1 else (b, a)
        pairs.append(_pair(chosen, rejected, method))
    if why:
        log.info("direct preferences: skipped %s", dict(why))
    if not pairs:
        skipped = ", ".join(f"{n} {w}" for w, n in why.items()) or "no judgement rows"
        raise WowError(
            f"no usable judged pairs ({skipped}). Run the pairwise judge on train-split answers of these "
            "generators" + (", or build from forward verdicts alone (both_orders: false)." if both_orders else ".")
        )
    return pairs


def _score_pairs(pool: dict[str, dict], scores: Mapping[str, float | None], margin: float) -> list[dict]:
    """Per (task, generator): the pairs Acc_WoW scores at this margin (:func:`wow.pairs.margin_pairs`), ordered by
    score; pairs with equal scores are dropped (a tie states no preference)."""
    check_margin(margin)
    pairs, n_ties = [], 0
    groups = by_task_generator(candidate_pairs(pool.values()))
    for key in sorted(groups):
        kept, _ = margin_pairs(groups[key], scores, margin)
        for a, b in kept:
            sa, sb = float(scores[a["answer_id"]]), float(scores[b["answer_id"]])
            if sa == sb:
                n_ties += 1
                continue
            pairs.append(_pair(a, b, "score") if sa > sb else _pair(b, a, "score"))
    if n_ties:
        log.info("score preferences: dropped %d kept pairs with equal scores", n_ties)
    if not pairs:
        raise WowError(
            f"no scored wrong-over-wrong pairs with different scores among {len(pool)} train answers (margin "
            f"{margin}, {n_ties} ties dropped): check that the scores cover these answer ids and parsed, or use a "
            "larger margin."
        )
    return pairs


def _paper_score_pairs(pool: dict[str, dict], scores: Mapping[str, float | None], margin: float, protocol) -> list:
    """The paper's score pairs: per (task, generator) ``round(n * M)`` pairs by score gap, ties kept with the later
    answer chosen (:func:`wow.pairs.paper_score_margin`); MedMCQA also pairs wrong answers with equal labels."""
    groups: dict[tuple, list] = {}
    for task in sorted({a["task"] for a in pool.values()}):
        rows = [a for a in pool.values() if a["task"] == task]
        ties = allows_tied_pairs(protocol, task, "score")
        for key, prs in by_task_generator(candidate_pairs(rows, include_ties=ties)).items():
            groups[key] = prs
    pairs = [
        _pair(c, r, "score") for key in sorted(groups) for c, r, _ in paper_score_margin(groups[key], scores, margin)
    ]
    if not pairs:
        raise WowError(
            f"no scored wrong-over-wrong pairs among {len(pool)} train answers (margin {margin}, protocol paper): "
            "check that the scores cover these answer ids, or use a larger margin."
        )
    return pairs
