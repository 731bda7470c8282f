"""The ``protocol`` switch: ``wow`` (our computation, the default) or ``paper`` (the paper's code, where reproducible).

wow deliberately improves on the paper's code in several places (docs/fidelity.md lists every one). Under
``protocol: paper`` the stages follow the paper's computation instead wherever that can be done offline. The
protocol reaches each stage as an explicit ``protocol=`` argument (from ``P.protocol`` in :mod:`wow.steps.data_prep` and
the notebooks); this module holds the paper-side rules that several stages share:

* :func:`paper_query`: the prompt judges and training sets see (the question only: no options, no step-by-step
  instruction);
* :func:`paper_extraction_instruction`, :func:`paper_parse`: the free 32-token extraction reply (multiple choice:
  asked for the letter alone) read with the paper's strict first-match regex (no prefill, no tolerant pattern, no
  fallback to the reasoning answer);
* :func:`paper_grade`: the graph correctness normaliser ``longest - gold`` and Science's integer truncation;
  :func:`paper_evaluation_rows`: Science's 5 % rule (strict) for the evaluation's accuracy;
* :func:`answer_identity`: what self-consistency compares (the paper: the shown letter for multiple choice);
* :func:`judge_pair_cap`: the 10,000-pair cap, for the GPT-4o judge only; :func:`judged_answers`: which answers the
  judges see (wow: those of the splits later stages use; the paper: its "train" files);
* :func:`eval_samples`: 3 evaluation samples for Bio;
* :func:`allows_tied_pairs`: MedMCQA's tied wrong pairs in score preference sets.

Example::

    from wow import protocol
    protocol.judge_pair_cap("paper", "gpt-4o", None)        # 10000
    protocol.judge_pair_cap("paper", "smollm2-135m", 500)   # None: the paper capped GPT-4o only
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from wow import WowError, schema

log = logging.getLogger(__name__)

#: The paper's pair cap for its GPT-4o judge (metric.py), and the judges it applies to.
PAPER_JUDGE_CAP = 10_000
PAPER_CAPPED_JUDGES = frozenset({"gpt-4o", "openai:gpt-4o"})
#: The paper's evaluation samples per question for Bio (evaluate.py's hard-coded override).
PAPER_BIO_EVAL_SAMPLES = 3
#: Tokens of the paper's extraction reply.
PAPER_EXTRACT_MAX_TOKENS = 32
#: The paper's extraction regexes (``preference_generation/dataset.py``, ``RawPreferenceDataset.process_answer``),
#: searched once (first match, no flags).
PAPER_MC_PATTERN = r"([A-Z])(\.|\. .+)?$"
PAPER_SCIENCE_PATTERN = r"The final answer is ([-+]?\d+(?:,\d+)*(?:\.\d+)?(?:[eE][-+]?\d+)?)"
#: Tasks whose tied wrong pairs the paper's preference code admits (``is_same_label`` is always False there).
PAPER_TIED_PAIR_TASKS = frozenset({"medmcqa"})
#: Tasks whose questions the paper's judges read in full: ``patch.py``'s ``merge`` folded the test files of Knowledge
#: Crosswords and the three NLGraph tasks into their train files.
PAPER_MERGED_TASKS = frozenset({"knowledge_crosswords", "shortest_path", "max_flow", "matching"})


def is_paper(protocol: str) -> bool:
    """Whether ``protocol`` is ``paper`` (validated)."""
    return schema.check_protocol(protocol) == "paper"


# -- prompts -----------------------------------------------------------------------------------------------------
def paper_query(
    messages: Sequence[Mapping], permutation: Sequence[int] | None = None, options_header: bool = False
) -> str:
    """The paper's ``query`` of a generation prompt: the question without the step-by-step instruction and, for a
    multiple-choice prompt (``permutation`` given), without the options block appended after it.

    The paper's judges and training prompts see this text only, although the answers were generated with both. Its
    judge slot (and so its ``direct`` training prompts) is ``query[:-9]``, the query less its trailing "Options:"
    header; its oracle, score and right-over-wrong training prompts are the whole query, which ends with that header
    and no options (``options_header=True``).

    Example::

        paper_query([{"role": "user", "content": COT_INSTRUCTION + "Q?\\nOptions:\\nA. x\\n"}], [0])   # "Q?"
    """
    from wow.tasks.extract import COT_INSTRUCTION

    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise WowError("a generation prompt without a user turn has no query.")
    text = str(users[0]["content"]).removeprefix(COT_INSTRUCTION)
    if permutation is not None:
        cut = text.rfind("\nOptions:\n")
        if cut >= 0:
            text = text[:cut]
        if options_header:
            return text.strip() + "\nOptions:"
    return text.strip()


def paper_prompt_messages(answer: Mapping, options_header: bool = False) -> list[dict]:
    """The paper's single-turn prompt of an ``answers.jsonl`` row (:func:`paper_query` of its prompt)."""
    query = paper_query(answer["prompt_messages"], answer.get("permutation"), options_header)
    return [{"role": "user", "content": query}]


# -- extraction and grading --------------------------------------------------------------------------------------
def paper_pattern(task) -> str:
    """The paper's extraction regex for a task: the option letter at the end of the reply (multiple choice), the
    prefix followed by digits (graph tasks), or the Science float."""
    from wow.tasks.science import Science

    if task.multiple_choice:
        return PAPER_MC_PATTERN
    if isinstance(task, Science):
        return PAPER_SCIENCE_PATTERN
    if task.extraction is None:
        raise WowError(f"task {task.name!r} has no extraction turn (free-text answers are graded whole).")
    return re.escape(task.extraction.prefix) + r" (\d+)"


def paper_extraction_instruction(task) -> str:
    """The extraction turn under ``protocol: paper``: for multiple choice the letter alone (the paper's
    ``multi_choice_extract.txt`` asks for a single letter, and its regex ``([A-Z])(\\.|\\. .+)?$`` reads a letter at
    the end of the reply, not "The answer is option B) Liver"); other tasks keep theirs, which already ask for the
    paper's answer prefix ("The total weight is", "The final answer is", ...)."""
    from wow.tasks.extract import PAPER_MC_INSTRUCTION

    return PAPER_MC_INSTRUCTION if task.multiple_choice else task.extraction.instruction


def paper_parse(task, text: str | None, question, permutation: Sequence[int] | None = None) -> Any | None:
    """Read a free extraction reply the paper's way: the first match of :func:`paper_pattern`, else None.

    Multiple choice: the letter maps to the option shown at that position (a letter beyond the options shown gives
    None); graph tasks: ``int``; Science: ``float`` with thousands commas removed.
    """
    m = re.search(paper_pattern(task), text or "")
    if m is None:
        return None
    raw = m.group(1)
    if task.multiple_choice:
        return task.canonical(raw, question, list(permutation) if permutation is not None else None)
    if task.name == "science":
        return float(raw.replace(",", ""))
    return int(raw)


def paper_grade(task, question, extracted):
    """The paper's grade where it differs from ``task.grade``; other tasks are graded by the task itself.

    * graph tasks: ``correctness = clip(1 - |e - gold| / (longest - gold), 0, 1)`` with the paper's normaliser
      (:meth:`~wow.tasks.graphs.GraphTask.paper_normaliser`: the true longest simple path for shortest path,
      ``2 * gold`` for flow and matching; ours divides by ``max(normaliser - gold, gold)``). Where
      ``longest == gold`` (a graph with a single s-t path) the paper divides by zero; we keep the task's own
      correctness there and log it;
    * Science: ``raw_label = -|e - int(gold)|`` and ``is_correct = e == int(gold)`` (metric.py's truncated gold,
      which the elicitation stage uses), ``correctness`` 1.0 when ``|e - gold| < 0.05 |gold|`` else 0.0 (the
      boolean of the paper's evaluation).
    """
    from wow.tasks.base import Grade
    from wow.tasks.graphs import GraphTask
    from wow.tasks.science import Science

    grade = task.grade(question, extracted)
    if extracted is None:
        return grade
    if isinstance(task, GraphTask):
        gold, norm = question.gold, task.paper_normaliser(question)
        if norm == gold:
            log.warning(
                "question %s: the paper's normaliser equals the gold %s (division by zero in the paper's code); "
                "graded as under protocol wow",
                question.id,
                gold,
            )
            return grade
        correctness = min(1.0, max(0.0, 1.0 - abs(extracted - gold) / (norm - gold)))
        return Grade(correctness=correctness, raw_label=grade.raw_label, is_correct=grade.is_correct)
    if isinstance(task, Science) and math.isfinite(extracted):
        gold = float(question.gold)
        within = abs(extracted - gold) < 0.05 * abs(gold)
        trunc = int(gold)
        return Grade(
            correctness=1.0 if within else 0.0, raw_label=-abs(extracted - trunc), is_correct=extracted == trunc
        )
    return grade


# -- elicitation, judging, evaluation ------------------------------------------------------------------------------
def paper_evaluation_rows(protocol: str, task, rows: list[dict]) -> list[dict]:
    """Evaluation rows with the paper's accuracy where it differs from elicitation's: Science answers are right
    when ``|e - gold| < 0.05 |gold|`` (evaluate.py), not ``e == int(gold)`` (metric.py). Other rows unchanged."""
    from wow.tasks.science import Science

    if not is_paper(protocol) or not isinstance(task, Science):
        return rows
    return [{**r, "is_correct": r.get("extracted") is not None and r["correctness"] == 1.0} for r in rows]


def answer_identity(answer: Mapping, protocol: str = "wow") -> str | None:
    """What self-consistency compares, JSON-encoded; None for an unparsed answer.

    ``wow``: the canonical answer (for multiple choice the original option index, so two answers that chose the
    same option under different orders agree). ``paper``: for multiple choice the letter shown (the position in
    that sample's permutation), as the paper's code compares stored letter indices across permutations.
    """
    ex = answer.get("extracted")
    if ex is None:
        return None
    perm = answer.get("permutation")
    if is_paper(protocol) and perm is not None and ex in perm:
        return json.dumps(["letter", list(perm).index(ex)])
    if isinstance(ex, float) and ex.is_integer():
        ex = int(ex)  # 3 and 3.0 are the same answer
    return json.dumps(ex, sort_keys=True)


def judge_pair_cap(protocol: str, judge: str, max_pairs: int | None) -> int | None:
    """The judged-pair cap: ``max_pairs`` (wow, every judge); the paper: 10,000 for GPT-4o, none for others."""
    if is_paper(protocol):
        return PAPER_JUDGE_CAP if judge in PAPER_CAPPED_JUDGES else None
    return max_pairs


def judged_splits(protocol: str, task: str, acc_wow_split: str = "train") -> frozenset[str] | None:
    """The splits whose answers the judges see for ``task`` (None: every split).

    ``wow``: the answers a later stage uses: the ``train`` questions (preference sets are built from them only, and
    Acc_WoW scores them by default) and those of ``acc_wow_split`` (every split for ``all``). Judging validation and
    test answers nobody reads would spend about a fifth of the judge calls for nothing, and the pair cap would be
    drawn over pairs no stage uses. ``paper``: the questions of the paper's "train" files, which its judges read
    (``preference_generation/metric.py``): the train split, and every question for Knowledge Crosswords and the NLGraph
    tasks, whose test files ``patch.py``'s ``merge`` folded into the train files.
    """
    if is_paper(protocol):
        return None if task in PAPER_MERGED_TASKS else frozenset({"train"})
    return None if acc_wow_split == "all" else frozenset({"train", acc_wow_split})


def judged_answers(protocol: str, answers: Sequence[Mapping], acc_wow_split: str = "train") -> list[Mapping]:
    """The answers the judges see (:func:`judged_splits` of each answer's task), in their order."""
    out = []
    for a in answers:
        splits = judged_splits(protocol, a["task"], acc_wow_split)
        if splits is None or a.get("split") in splits:
            out.append(a)
    return out


def eval_samples(protocol: str, task: str, n_samples: int) -> int:
    """Evaluation samples per test question: ``n_samples``; the paper uses 3 for Bio."""
    if is_paper(protocol) and task == "bio_generation":
        return PAPER_BIO_EVAL_SAMPLES
    return n_samples


def allows_tied_pairs(protocol: str, task: str, pref_kind: str) -> bool:
    """Whether a preference set of ``pref_kind`` admits wrong pairs with equal labels (the paper's MedMCQA, whose
    one-hot labels tie every wrong pair; its proxy runs used score sets)."""
    return is_paper(protocol) and task in PAPER_TIED_PAIR_TASKS and pref_kind.endswith("score")


def paper_length(answers: Sequence[Mapping], tokenizer=None) -> dict[str, float | None] | None:
    """Answer lengths in Llama-3 tokenizer ids (BOS included, as the paper), or None when that tokenizer is not
    available offline (the caller then keeps generated-token counts and says so)."""
    if tokenizer is None:
        try:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained("meta-llama/Meta-Llama-3-8B-Instruct", local_files_only=True)
        except Exception as e:  # noqa: BLE001 - any failure means the tokenizer is not there
            log.warning("protocol paper: no local Llama-3 tokenizer (%s); length stays in generated tokens", e)
            return None
    return {a["answer_id"]: float(len(tokenizer(a.get("text") or "")["input_ids"])) for a in answers}
