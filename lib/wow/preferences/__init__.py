"""Preference sets for alignment: built from graded answers (TRL's conversational format), saved and loaded.

``build_preferences(answers, pref_type, ...)`` turns graded answers (``answers.jsonl`` rows), and where the type
needs them pairwise judgements or judge scores, into a ``datasets.DatasetDict`` with a ``train`` and a
``validation`` split. Each row has

* ``prompt``: the chat messages the answer was generated from (its ``prompt_messages``); with ``drop_options`` the
  question text without the options (the paper's variant);
* ``chosen`` / ``rejected``: ``[{"role": "assistant", "content": <answer text>}]``;
* metadata: ``question_id, generator, chosen_id, rejected_id, chosen_label, rejected_label`` (raw labels),
  ``source_method`` (what ordered this pair: ``oracle``, ``row``, ``direct``, ``direct_both_orders`` or ``score``),
  ``pref_type`` (the type of the whole set) and ``same_prompt`` (whether both answers came from the same prompt;
  false only for multiple-choice answers sampled with different option orders, where the chosen answer's prompt is
  used).

Types (the paper's ``preference_optimization/finetune.py`` collectors; docs/fidelity.md rows 2, 6, 7, 15):

* ``oracle``: both answers wrong and parsed, raw labels differ; chosen = higher raw label.
* ``direct``: pairs from a pairwise judge (``judgements/pairwise_<judge>.jsonl``). With ``both_orders=True`` only pairs
  judged the same way in both orders; without it the first (forward) order decides and unparsed verdicts are
  skipped.
* ``score``: wrong-over-wrong candidate pairs ordered by a judge score; per (task, generator) the ``margin`` share of
  pairs with the largest score gap is kept by the one pair rule of :mod:`wow.pairs` (``floor(n * M)``, at least
  one: exactly the pairs Acc_WoW at that margin scores), then pairs with equal scores are dropped (a tie states no
  preference; Acc_WoW counts it as a miss).
* ``noisy`` (``noisy@q``) and ``random``: exactly the pairs and splits of ``oracle``, with a seeded share ``q`` (0.5
  for ``random``) of each split's pairs flipped (:func:`wow.preferences.preference_examples.flip_examples`), so that their
  Acc_WoW is ``1 - q`` by construction and preference accuracy is the only thing that differs from ``oracle``.
* ``row``: right over wrong: exactly one of the two answers correct, both parsed.
* ``row_oracle``, ``row_direct``, ``row_score``: 50:50 mixes of ``row`` with the wrong-over-wrong type,
  ``n = min(cap // 2, |wow|, |row|)`` pairs of each.

Sources: ``self`` uses the answers of one generator (the model being trained), ``mix`` those of several. A pair is
always formed within one question and one generator.

The pairs come from :mod:`wow.preferences.preference_pairs`, the examples and their split from :mod:`wow.preferences.preference_examples`.

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

import logging
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wow import WowError, io, schema
from wow.pairs import states_answer
from wow.preferences.preference_examples import (
    example_features,
    examples_from_pairs,
    flip_examples,
    question_fields,
    question_prompts,
    split_by_question,
    true_acc_wow,
)
from wow.preferences.preference_pairs import (
    gold_over_wrong_pairs,
    largest_gap_pairs,
    right_over_wrong_pairs,
    train_answer_pool,
    wrong_over_wrong_pairs,
)
from wow.protocol import is_paper

log = logging.getLogger(__name__)

SPLITS = ("train", "validation")


def build_preferences(
    answers: Iterable[dict],
    pref_type: str,
    *,
    source: str = "self",
    generators: list[str] | None = None,
    judgements: Iterable[dict] | None = None,
    scores: Mapping[str, float | None] | None = None,
    both_orders: bool = True,
    margin: float = 0.5,
    flip: float | None = None,
    cap: int | None = 4000,
    val_fraction: float = 0.1,
    seed: int = 42,
    drop_options: bool = False,
    questions: Iterable | Mapping | None = None,
    protocol: str = "wow",
    pairs_per_question: int | None = None,
    stated_only: bool = False,
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
        both_orders: ``direct`` only: keep only pairs judged the same way in both orders.
        margin: ``score`` only: share (0, 1] of pairs with the largest score gap kept per (task, generator)
            (:func:`wow.pairs.margin_pairs`).
        flip: ``noisy`` only: the share of pairs flipped in each split (``random`` flips 0.5).
        cap: most pairs in the set (seeded sample); a ``row_*`` mix takes ``cap // 2`` of each kind. None: no cap.
        val_fraction: share of the set's questions whose pairs form the validation split.
        seed: seed of the cap sample, the mix shuffle and the validation split.
        drop_options: use the question text without options as the prompt (the paper's variant); needs
            ``questions``.
        questions: ``Question`` objects or ``questions.jsonl`` rows (or a mapping id -> either); only needed with
            ``drop_options`` and for ``gold`` (its gold answers).
        protocol: ``paper``: prompts are the paper's query (no options, no step-by-step instruction,
            :func:`wow.protocol.paper_prompt_messages`); ``score`` sets cut ``round(n * M)`` pairs per (task,
            generator) keeping ties with the later answer chosen (:func:`wow.pairs.paper_score_margin`), and
            MedMCQA's tied wrong pairs enter them (:func:`wow.protocol.allows_tied_pairs`).
        pairs_per_question: ``gold``: the k most wrong answers of each question; ``oracle``, ``noisy@q``, ``random``: keep the k pairs of largest label gap of each
            train question (:func:`wow.preferences.preference_pairs.largest_gap_pairs`) before the cap and the flips, so every
            controlled arm trains on the same label-bearing pairs. None: every pair. Other types ignore it (their
            pairs must not read the labels).
        stated_only: pairs only from answers whose text states the value they are graded on
            (:func:`wow.pairs.states_answer`; the parameter ``pairs_from_stated_answers``), for every type.

    Returns:
        ``datasets.DatasetDict`` with ``train`` and ``validation`` (the latter may be empty for one question).

    Raises:
        WowError: unknown type or source, missing judgements/scores, or no pairs at all (the message says why).
    """
    if pref_type not in schema.PREF_TYPES:
        raise WowError(f"unknown preference type {pref_type!r}; valid: {', '.join(schema.PREF_TYPES)}.")
    if not 0.0 <= val_fraction < 1.0:
        raise WowError(f"val_fraction={val_fraction} must be in [0, 1).")
    if cap is not None and cap < 1:
        raise WowError(f"cap={cap} must be a positive number of pairs or None.")
    pool = train_answer_pool(answers, source, generators)
    if stated_only:
        pool = {k: a for k, a in pool.items() if states_answer(a)}
    paper = is_paper(protocol)
    prompts = question_prompts(questions) if drop_options and not paper else None
    if drop_options and prompts is None and not paper:
        raise WowError("drop_options=True needs `questions` (questions.jsonl rows) to know the option-free prompt.")
    rng = random.Random(seed)

    share = schema.flip_share(pref_type, flip) if pref_type in ("noisy", "random") else None
    wow_kind = pref_type.removeprefix("row_") if pref_type.startswith("row_") else pref_type
    wow_kind = "oracle" if share is not None else wow_kind
    if wow_kind == "gold":
        if questions is None:
            raise WowError("'gold' preferences need `questions` (questions.jsonl rows) for the gold answers.")
        gold = question_fields(questions, "gold")
        pairs = examples_from_pairs(gold_over_wrong_pairs(pool, gold, pairs_per_question), pref_type, prompts, paper)
        pairs = rng.sample(pairs, min(cap, len(pairs))) if cap else rng.sample(pairs, len(pairs))
    elif wow_kind == "row":
        pairs = examples_from_pairs(right_over_wrong_pairs(pool), pref_type, prompts, paper)
        pairs = rng.sample(pairs, min(cap, len(pairs))) if cap else rng.sample(pairs, len(pairs))
    else:
        found = wrong_over_wrong_pairs(wow_kind, pool, judgements, scores, both_orders, margin, protocol)
        if pairs_per_question is not None and wow_kind == "oracle":
            found = largest_gap_pairs(found, pairs_per_question)
        wow = examples_from_pairs(found, pref_type, prompts, paper)
        if pref_type.startswith("row_"):
            row = examples_from_pairs(right_over_wrong_pairs(pool), pref_type, prompts, paper)
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
    train, val = split_by_question(pairs, val_fraction, seed)
    if share is not None:
        train, val = flip_examples(train, share, seed), flip_examples(val, share, seed)
        log.info(
            "%s: %.3f of the oracle pairs flipped; Acc_WoW of the training pairs %.3f",
            pref_type,
            share,
            true_acc_wow(train),
        )
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

    features = example_features()

    def to_ds(rows):
        if not rows:
            return Dataset.from_dict({k: [] for k in features}, features=features)
        return Dataset.from_list(rows, features=features)

    return DatasetDict({"train": to_ds(train), "validation": to_ds(val)})


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
    from datasets import Dataset, DatasetDict

    folder = Path(folder)
    if not (folder / "meta.json").exists():
        raise WowError(f"{folder} is not a saved preference set (no meta.json); build it with save_preferences().")
    out = {}
    for split in io.read_json(folder / "dataset_dict.json")["splits"]:
        if io.read_json(folder / split / "state.json").get("_data_files"):
            out[split] = Dataset.load_from_disk(str(folder / split))
        else:  # a split saved without rows (one question, no validation pairs) has no arrow file to load
            out[split] = Dataset.from_dict({k: [] for k in example_features()}, features=example_features())
    return DatasetDict(out)


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
