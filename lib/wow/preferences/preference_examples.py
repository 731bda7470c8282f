"""Preference examples in TRL's conversational format: one example per pair, duplicates dropped, split by question.

An example holds ``prompt`` (the chat messages the chosen answer was generated from, or the option-free question,
or the paper's query), ``chosen`` / ``rejected`` (one assistant message each) and the pair's metadata
(:func:`example_features`). The validation split is drawn by question (seeded), so no question has examples in both.

Example::

    from wow.preferences.preference_examples import examples_from_pairs, split_by_question
    train, val = split_by_question(examples_from_pairs(pairs, "oracle", None), 0.1, seed=42)
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping

from wow import WowError
from wow.pairs import label
from wow.protocol import paper_prompt_messages

log = logging.getLogger(__name__)


def example_features():
    """The ``datasets.Features`` of a preference example."""
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


def question_fields(questions, name: str) -> dict:
    """``question id -> field`` from ``Question`` objects or ``questions.jsonl`` rows (or a mapping id -> either)."""
    items = questions.values() if isinstance(questions, Mapping) else questions
    return {
        (q["id"] if isinstance(q, Mapping) else q.id): (q[name] if isinstance(q, Mapping) else getattr(q, name))
        for q in items
    }


def question_prompts(questions) -> dict[str, str] | None:
    """``question id -> prompt`` (the question without its options) from ``Question`` objects or rows."""
    return None if questions is None else question_fields(questions, "prompt")


def _messages(messages: list[dict]) -> list[dict]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


def _example(pair: dict, pref_type: str, prompts: dict[str, str] | None, paper: bool = False) -> dict:
    chosen, rejected = pair["chosen"], pair["rejected"]
    prompt = _messages(chosen["prompt_messages"])
    same = prompt == _messages(rejected["prompt_messages"])
    if paper:  # the paper's query; its oracle, score and row prompts keep the "Options:" header, direct ones not
        header = not pair["method"].startswith("direct")
        prompt, same = paper_prompt_messages(chosen, options_header=header), True
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


def examples_from_pairs(
    pairs: list[dict], pref_type: str, prompts: dict[str, str] | None, paper: bool = False
) -> list[dict]:
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


def flip_examples(examples: list[dict], share: float, seed: int) -> list[dict]:
    """The examples with ``round(share * n)`` of them flipped (chosen and rejected swapped, ``source_method``
    ``oracle_flipped``), so that an oracle set's Acc_WoW becomes ``1 - round(share * n) / n`` by construction.

    The flipped examples are the first of one seeded order of the examples, whatever the share, so a smaller share
    flips a subset of a larger one's pairs (the sets of a study differ only in the flips). The order of the examples
    is kept.
    """
    if not 0.0 <= share <= 1.0:
        raise WowError(f"the share of pairs to flip must lie in [0, 1], not {share}.")
    order = list(range(len(examples)))
    random.Random(f"{seed}/flip").shuffle(order)
    flipped = set(order[: round(share * len(examples))])
    out = []
    for i, ex in enumerate(examples):
        if i not in flipped:
            out.append(ex)
            continue
        out.append(
            ex
            | {
                "chosen": ex["rejected"],
                "rejected": ex["chosen"],
                "chosen_id": ex["rejected_id"],
                "rejected_id": ex["chosen_id"],
                "chosen_label": ex["rejected_label"],
                "rejected_label": ex["chosen_label"],
                "source_method": f"{ex['source_method']}_flipped",
            }
        )
    return out


def true_acc_wow(examples) -> float:
    """The Acc_WoW of a preference set's pairs by their true labels: the share whose chosen answer has the higher raw
    label (1.0 for an oracle set, ``1 - q`` for ``noisy@q``); NaN without pairs.

    Args:
        examples: example dicts, or a ``datasets.Dataset`` of them.
    """
    labels = [(e["chosen_label"], e["rejected_label"]) for e in examples]  # dicts, or the rows of a Dataset
    if not labels:
        return float("nan")
    return sum(c > r for c, r in labels) / len(labels)


def split_by_question(examples: list[dict], val_fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
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
