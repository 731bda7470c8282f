"""Preference pairs for alignment, in TRL's standard conversational format.

``build_preferences(answers, pref_type, ...)`` turns graded answers (``answers.jsonl`` rows), and where the type
needs them pairwise judgements or judge scores, into a ``datasets.DatasetDict`` with a ``train`` and a
``validation`` split. Each row has

* ``prompt``: the chat messages the answer was generated from (its ``prompt_messages``); with ``drop_options`` the
  question text without the options (the paper's variant);
* ``chosen`` / ``rejected``: ``[{"role": "assistant", "content": <answer text>}]``;
* metadata: ``question_id, generator, chosen_id, rejected_id, chosen_label, rejected_label`` (raw labels),
  ``source_method`` (what ordered this pair: ``oracle``, ``row``, ``direct``, ``direct_checked`` or ``score``),
  ``pref_type`` (the type of the whole set) and ``same_prompt`` (whether both answers came from the same prompt;
  false only for multiple-choice answers sampled with different option orders, where the chosen answer's prompt is
  used).

Types (see ``reference-method.md`` section 4 and ``DESIGN.md`` section 6):

* ``oracle``: both answers wrong and parsed, raw labels differ; chosen = higher raw label.
* ``direct``: pairs from a pairwise judge (``judgements/pairwise_<judge>.jsonl``). With ``check=True`` only pairs
  judged the same way in both orders; without it the first (forward) order decides and unparsed verdicts are
  skipped.
* ``score``: wrong-over-wrong candidate pairs ordered by a judge score; per (task, generator) the ``margin`` share of
  pairs with the largest score gap is kept by the one pair rule of :mod:`wow.pairs` (``floor(n * M)``, at least
  one: exactly the pairs Acc_WoW at that margin scores), then pairs with equal scores are dropped (a tie states no
  preference; Acc_WoW counts it as a miss).
* ``row``: right over wrong: exactly one of the two answers correct, both parsed.
* ``row_oracle``, ``row_direct``, ``row_score``: 50:50 mixes of ``row`` with the wrong-over-wrong type,
  ``n = min(cap // 2, |wow|, |row|)`` pairs of each.

Sources: ``self`` uses the answers of one generator (the model being trained), ``mix`` those of several. A pair is
always formed within one question and one generator.

Leakage rules: only answers of ``train``-split questions are used; the validation split of the preference set is
drawn by question (seeded), so no question has pairs in both splits. Identical ``(prompt, chosen, rejected)``
triples and pairs whose two texts are identical are dropped (not under ``protocol="paper"``, which keeps every pair
as the paper's code does); the cap samples pairs with the seed.

Example::

    from wow import io, preferences
    answers = io.read_jsonl("outputs/demo/answers.jsonl")
    ds = preferences.build_preferences(answers, "oracle", source="self", generators=["smollm2-135m"])
    preferences.save_preferences(ds, "outputs/demo/preferences/self_oracle")
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wow import WowError, io, schema
from wow.pairs import (
    by_task_generator,
    candidate_pairs,
    check_margin,
    is_candidate_pair,
    label,
    margin_pairs,
    paper_score_margin,
    row_pairs,
)
from wow.protocol import allows_tied_pairs, is_paper, paper_prompt_messages

log = logging.getLogger(__name__)

PREF_TYPES = schema.PREF_TYPES
SOURCES = schema.SOURCES
SPLITS = ("train", "validation")


def _features():
    from datasets import Features, List, Value

    message = {"role": Value("string"), "content": Value("string")}
    return Features(
        {
            "prompt": List(message),
            "chosen": List(message),
            "rejected": List(message),
            "question_id": Value("string"),
            "generator": Value("string"),
            "chosen_id": Value("string"),
            "rejected_id": Value("string"),
            "chosen_label": Value("float64"),
            "rejected_label": Value("float64"),
            "source_method": Value("string"),
            "pref_type": Value("string"),
            "same_prompt": Value("bool"),
        }
    )


def build_preferences(
    answers: Iterable[dict],
    pref_type: str,
    *,
    source: str = "self",
    generators: list[str] | None = None,
    judgements: Iterable[dict] | None = None,
    scores: Mapping[str, float | None] | None = None,
    check: bool = True,
    margin: float = 0.5,
    cap: int | None = 4000,
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_options: bool = False,
    questions: Iterable | Mapping | None = None,
    protocol: str = "wow",
):
    """Build a preference set (train and validation splits) from graded answers.

    Args:
        answers: ``answers.jsonl`` rows (all splits; only ``train`` rows are used).
        pref_type: one of :data:`PREF_TYPES`.
        source: ``self`` (exactly one generator) or ``mix`` (several; pairs never cross generators).
        generators: generators to use. ``self``: the one generator (may be left out when the answers hold only
            one); ``mix``: default all generators in the answers.
        judgements: pairwise judge rows (``pair_id, question_id, generator, answer_a, answer_b, forward, reverse``);
            needed by ``direct`` and ``row_direct``.
        scores: judge score per ``answer_id`` (None = unparsed); needed by ``score`` and ``row_score``.
        check: ``direct`` only: keep only pairs judged the same way in both orders.
        margin: ``score`` only: share (0, 1] of pairs with the largest score gap kept per (task, generator)
            (:func:`wow.pairs.margin_pairs`).
        cap: most pairs in the set (seeded sample); a ``row_*`` mix takes ``cap // 2`` of each kind. None: no cap.
        val_fraction: share of the set's questions whose pairs form the validation split.
        seed: seed of the cap sample, the mix shuffle and the validation split.
        drop_options: use the question text without options as the prompt (the paper's variant); needs
            ``questions``.
        questions: ``Question`` objects or ``questions.jsonl`` rows (or a mapping id -> either); only needed with
            ``drop_options``.
        protocol: ``paper``: prompts are the paper's query (no options, no step-by-step instruction,
            :func:`wow.protocol.paper_prompt_messages`); ``score`` sets cut ``round(n * M)`` pairs per (task,
            generator) keeping ties with the later answer chosen (:func:`wow.pairs.paper_score_margin`), and
            MedMCQA's tied wrong pairs enter them (:func:`wow.protocol.allows_tied_pairs`).

    Returns:
        ``datasets.DatasetDict`` with ``train`` and ``validation`` (the latter may be empty for one question).

    Raises:
        WowError: unknown type or source, missing judgements/scores, or no pairs at all (the message says why).
    """
    if pref_type not in PREF_TYPES:
        raise WowError(f"unknown preference type {pref_type!r}; valid: {', '.join(PREF_TYPES)}.")
    if not 0.0 <= val_fraction < 1.0:
        raise WowError(f"val_fraction={val_fraction} must be in [0, 1).")
    if cap is not None and cap < 1:
        raise WowError(f"cap={cap} must be a positive number of pairs or None.")
    pool = _train_answers(answers, source, generators)
    paper = is_paper(protocol)
    prompts = _question_prompts(questions) if drop_options and not paper else None
    if drop_options and prompts is None and not paper:
        raise WowError("drop_options=True needs `questions` (questions.jsonl rows) to know the option-free prompt.")
    rng = random.Random(seed)

    wow_kind = pref_type.removeprefix("row_") if pref_type.startswith("row_") else pref_type
    if wow_kind == "row":
        pairs = _dedup(_row_pairs(pool), pref_type, prompts, paper)
        pairs = rng.sample(pairs, min(cap, len(pairs))) if cap else rng.sample(pairs, len(pairs))
    else:
        wow = _dedup(
            _wow_pairs(wow_kind, pool, judgements, scores, check, margin, protocol), pref_type, prompts, paper
        )
        if pref_type.startswith("row_"):
            row = _dedup(_row_pairs(pool), pref_type, prompts, paper)
            n = min(len(wow), len(row), cap // 2 if cap else len(wow))
            if n == 0:
                raise WowError(
                    f"{pref_type} needs both kinds of pairs but found {len(wow)} wrong-over-wrong and {len(row)} "
                    f"right-over-wrong pairs (cap {cap}); use more questions or samples, or a single type."
                )
            pairs = rng.sample(wow, n) + rng.sample(row, n)
            rng.shuffle(pairs)
        else:
            pairs = rng.sample(wow, min(cap, len(wow))) if cap else rng.sample(wow, len(wow))
    train, val = _split_by_question(pairs, val_fraction, seed)
    log.info(
        "%s preferences (%s: %s): %d train / %d validation pairs from %d questions",
        pref_type,
        source,
        ", ".join(sorted({a["generator"] for a in pool.values()})),
        len(train),
        len(val),
        len({p["question_id"] for p in pairs}),
    )
    from datasets import Dataset, DatasetDict

    features = _features()

    def to_ds(rows):
        if not rows:
            return Dataset.from_dict({k: [] for k in features}, features=features)
        return Dataset.from_list(rows, features=features)

    return DatasetDict({"train": to_ds(train), "validation": to_ds(val)})


# -- answer pool --------------------------------------------------------------------------------------------------
def _train_answers(answers: Iterable[dict], source: str, generators: list[str] | None) -> dict[str, dict]:
    """answer_id -> row, for train-split answers of the chosen generators (file order kept)."""
    if source not in SOURCES:
        raise WowError(f"unknown preference source {source!r}; valid: {', '.join(SOURCES)}.")
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


def _wow_pairs(kind, pool, judgements, scores, check, margin, protocol="wow") -> list[dict]:
    if kind == "oracle":
        return _oracle_pairs(pool)
    if kind == "direct":
        if judgements is None:
            raise WowError("'direct' preferences need `judgements` (rows of judgements/pairwise_<judge>.jsonl).")
        return _direct_pairs(pool, judgements, check)
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


def _row_pairs(pool: dict[str, dict]) -> list[dict]:
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


def _direct_pairs(pool: dict[str, dict], judgements: Iterable[dict], check: bool) -> list[dict]:
    pairs, why = [], Counter()
    method = "direct_checked" if check else "direct"
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
        if check:
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
            "generators" + (", or build without the consistency check (check=False)." if check else ".")
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


# -- examples, dedup, split ---------------------------------------------------------------------------------------
def _question_prompts(questions) -> dict[str, str] | None:
    if questions is None:
        return None
    items = questions.values() if isinstance(questions, Mapping) else questions
    out = {}
    for q in items:
        qid, prompt = (q["id"], q["prompt"]) if isinstance(q, Mapping) else (q.id, q.prompt)
        out[qid] = prompt
    return out


def _messages(messages: list[dict]) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _example(pair: dict, pref_type: str, prompts: dict[str, str] | None, paper: bool = False) -> dict:
    chosen, rejected = pair["chosen"], pair["rejected"]
    prompt = _messages(chosen["prompt_messages"])
    same = prompt == _messages(rejected["prompt_messages"])
    if paper:
        prompt, same = paper_prompt_messages(chosen), True
    elif prompts is not None:
        qid = chosen["question_id"]
        if qid not in prompts:
            raise WowError(f"drop_options: question {qid!r} is not among the given questions.")
        last_user = max(i for i, m in enumerate(prompt) if m["role"] == "user")
        prompt[last_user] = {"role": "user", "content": prompts[qid]}
        same = True
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen["text"]}],
        "rejected": [{"role": "assistant", "content": rejected["text"]}],
        "question_id": chosen["question_id"],
        "generator": chosen["generator"],
        "chosen_id": chosen["answer_id"],
        "rejected_id": rejected["answer_id"],
        "chosen_label": label(chosen),
        "rejected_label": label(rejected),
        "source_method": pair["method"],
        "pref_type": pref_type,
        "same_prompt": same,
    }


def _dedup(pairs: list[dict], pref_type: str, prompts: dict[str, str] | None, paper: bool = False) -> list[dict]:
    """Examples from pairs, without identical (prompt, chosen, rejected) triples or identical texts (``paper``: every
    pair kept, as the paper's code does not deduplicate)."""
    if paper:
        return [_example(pair, pref_type, prompts, paper) for pair in pairs]
    seen, out, n_dup, n_same_text, n_diff_prompt = set(), [], 0, 0, 0
    for pair in pairs:
        ex = _example(pair, pref_type, prompts, paper)
        if ex["chosen"][0]["content"] == ex["rejected"][0]["content"]:
            n_same_text += 1
            continue
        key = json.dumps([ex["prompt"], ex["chosen"], ex["rejected"]], sort_keys=True)
        if key in seen:
            n_dup += 1
            continue
        seen.add(key)
        n_diff_prompt += not ex["same_prompt"]
        out.append(ex)
    if n_dup or n_same_text:
        log.info("dropped %d duplicate pairs and %d pairs with identical texts", n_dup, n_same_text)
    if n_diff_prompt:
        log.warning(
            "%d pairs join answers sampled from different prompts (option orders); they use the chosen answer's "
            "prompt. drop_options=True gives the paper's option-free prompt instead.",
            n_diff_prompt,
        )
    if not out:
        raise WowError(
            f"all {len(pairs)} pairs have identical chosen and rejected texts; sample more varied answers "
            "(temperature 1.0) or use more questions."
        )
    return out


def _split_by_question(examples: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded split by question: every question's pairs go to one split; train keeps at least one question."""
    qids = sorted({ex["question_id"] for ex in examples})
    random.Random(f"{seed}/validation").shuffle(qids)
    n_val = round(val_fraction * len(qids))
    if val_fraction > 0 and len(qids) >= 2:
        n_val = max(1, min(n_val, len(qids) - 1))
    else:
        n_val = 0
    val_q = set(qids[:n_val])
    return [e for e in examples if e["question_id"] not in val_q], [e for e in examples if e["question_id"] in val_q]


# -- storage ------------------------------------------------------------------------------------------------------
def save_preferences(ds, folder: str | os.PathLike, info: dict | None = None) -> Path:
    """Save a preference set with ``save_to_disk`` plus a ``meta.json`` of counts, replacing ``folder`` atomically.

    Args:
        ds: the ``DatasetDict`` from :func:`build_preferences`.
        folder: target folder (e.g. ``outputs/<run>/preferences/<setting>``).
        info: extra build parameters to record in ``meta.json`` (type, source, judge, margin...).

    Returns:
        The folder.
    """
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    io.write_json(tmp / "meta.json", preferences_summary(ds) | {"info": info or {}})
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def preferences_summary(ds) -> dict:
    """Counts of a preference set: pairs and questions per split, pairs per generator, method and type.

    Args:
        ds: a ``DatasetDict`` (or a single ``Dataset``, reported as ``train``).

    Returns:
        A JSON-serialisable dict.
    """
    splits = ds if hasattr(ds, "keys") else {"train": ds}
    out: dict[str, Any] = {"n_pairs": {}, "n_questions": {}, "by_generator": {}, "by_source_method": {}}
    types = set()
    for name, d in splits.items():
        out["n_pairs"][name] = len(d)
        out["n_questions"][name] = len(set(d["question_id"])) if len(d) else 0
        out["by_generator"][name] = dict(sorted(Counter(d["generator"]).items())) if len(d) else {}
        out["by_source_method"][name] = dict(sorted(Counter(d["source_method"]).items())) if len(d) else {}
        types |= set(d["pref_type"]) if len(d) else set()
    out["pref_type"] = sorted(types)
    return out


def load_preferences(folder: str | os.PathLike):
    """Load a preference set saved by :func:`save_preferences`.

    Returns:
        The ``DatasetDict`` (``train``, ``validation``).

    Raises:
        WowError: the folder is missing or is not a saved preference set.
    """
    from datasets import load_from_disk

    folder = Path(folder)
    if not (folder / "meta.json").exists():
        raise WowError(f"{folder} is not a saved preference set (no meta.json); build it with save_preferences().")
    return load_from_disk(str(folder))


def question_ids(preference_sets: Iterable) -> set[str]:
    """All question ids in one or more preference sets (``DatasetDict``, ``Dataset`` or saved folders).

    Args:
        preference_sets: the sets (any mix of the three forms).

    Returns:
        The set of question ids, over all splits.
    """
    ids: set[str] = set()
    for p in preference_sets:
        if isinstance(p, (str, os.PathLike)):
            p = load_preferences(p)
        for d in p.values() if hasattr(p, "keys") else [p]:
            ids.update(d["question_id"])
    return ids
