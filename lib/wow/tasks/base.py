"""The task contract: questions, prompts, answer extraction and ONE grading function per task.

A task knows how to make (or load) its questions, how to ask them, how to read the final answer out of a reply,
and how wrong that answer is. ``grade`` is the single source of truth for correctness: sampling, elicitation,
preference building and evaluation all call it.

Canonical answers: ``parse`` returns the answer in the task's canonical form, independent of how options were
shown: an original option index for multiple-choice tasks (the shown letter is mapped back through the sample's
permutation), an ``int`` for graph tasks, a ``float`` for science. Two answers are "the same" (self-consistency)
when their canonical forms are equal.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Grade:
    """How right an answer is.

    Attributes:
        correctness: graded correctness in [0, 1] (1 = right); used for p_wrong and mean correctness.
        raw_label: the task's native label (e.g. ``-|answer - gold|``, a win probability); higher is less wrong.
            Wrong-over-wrong pairs are ordered by it.
        is_correct: whether the answer counts as right.
    """

    correctness: float
    raw_label: float
    is_correct: bool


#: The grade of an answer that could not be parsed (counts as wrong, correctness 0; excluded from WoW pairs).
UNPARSED = Grade(correctness=0.0, raw_label=float("-inf"), is_correct=False)


@dataclass
class Question:
    """One question of a task.

    Attributes:
        id: stable id, unique across tasks (``<task>/<source>-<n>``).
        task: task name.
        split: ``train``, ``validation`` or ``test``.
        prompt: the question text shown to the model (instruction included, options excluded).
        gold: the reference answer in canonical form (an option index for multiple choice).
        options: option texts in their original order (multiple choice), else ``None``.
        option_labels: graded correctness of each original option (multiple choice), else ``None``.
        meta: anything else the grader needs (e.g. the normaliser of a graph task, a FEN).
    """

    id: str
    task: str
    split: str
    prompt: str
    gold: Any
    options: list[str] | None = None
    option_labels: list[float] | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """The row written to ``questions.jsonl``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict) -> Question:
        """Rebuild a question from a ``questions.jsonl`` row."""
        return cls(**{k: row[k] for k in cls.__dataclass_fields__ if k in row})


@dataclass(frozen=True)
class Extraction:
    """How the final answer is asked for in the second turn.

    Attributes:
        instruction: the user turn that asks the model to state its final answer.
        prefix: the answer prefix (e.g. "The total weight is"); local engines prefill the assistant turn with it.
        pattern: regex applied to ``prefix + reply`` (free turn: to the reply); group 1 is the answer.
    """

    instruction: str
    prefix: str
    pattern: str


LETTERS = string.ascii_uppercase


class Task:
    """Base class of every task. Subclasses set the class attributes and implement ``build`` and ``grade``.

    Class attributes:
        name: registry name.
        version: bumped whenever prompts, extraction or grading change (part of every cache key).
        multiple_choice: options are shown, re-shuffled per sample.
        free_text: answers are graded whole (no extraction turn; ``extraction`` is None): ``parse_direct`` turns
            the answer into its canonical form (e.g. a FActScore), ``parse`` is not used.
        extraction: the answer-extraction turn.
    """

    name: str = ""
    version: str = "1"
    multiple_choice: bool = False
    free_text: bool = False
    extraction: Extraction | None

    # -- questions ------------------------------------------------------------------------------------------
    def build(self, n: int, seed: int) -> list[Question]:
        """Make or load ``n`` questions (split still unset). Deterministic in ``seed``."""
        raise NotImplementedError

    def questions(
        self, n: int, seed: int = 0, split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    ) -> list[Question]:
        """``n`` questions with disjoint train/validation/test splits, deterministic in ``seed``."""
        qs = self.build(n, seed)
        return assign_splits(qs, seed, split_fractions)

    # -- prompting ------------------------------------------------------------------------------------------
    def permutation(self, question: Question, sample_index: int, seed: int) -> list[int] | None:
        """The option order shown to sample ``sample_index`` (a fresh order per sample), or ``None``."""
        if not self.multiple_choice or not question.options:
            return None
        rng = random.Random(f"{seed}/{question.id}/{sample_index}")
        order = list(range(len(question.options)))
        rng.shuffle(order)
        return order

    def messages(self, question: Question, permutation: list[int] | None = None) -> list[dict]:
        """The chat messages of the generation prompt (options shown in ``permutation`` order)."""
        text = question.prompt
        if permutation is not None:
            text = text.rstrip() + "\n" + format_options([question.options[i] for i in permutation])
        return [{"role": "user", "content": text}]

    # -- extraction -----------------------------------------------------------------------------------------
    def parse(self, text: str, question: Question, permutation: list[int] | None = None) -> Any | None:
        """The canonical answer in an extraction reply (``prefix + generated text`` or a free reply), or None."""
        m = re.search(self.extraction.pattern, text or "")
        if not m:
            return None
        return self.canonical(m.group(1), question, permutation)

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None) -> Any | None:
        """Parse the first (reasoning) answer directly, without a second turn; None when nothing matches."""
        return self.parse(answer, question, permutation)

    def canonical(self, raw: str, question: Question, permutation: list[int] | None) -> Any | None:
        """Turn the matched string into the canonical answer (option letter -> original index; number).

        A letter beyond the number of options shown gives None. Without a permutation the options are taken to
        have been shown in their original order.
        """
        if self.multiple_choice:
            order = permutation if permutation is not None else list(range(len(question.options or [])))
            idx = LETTERS.find(raw.strip().upper()[:1]) if raw.strip() else -1
            if not 0 <= idx < len(order):
                return None
            return order[idx]
        try:
            return int(raw.replace(",", ""))
        except ValueError:
            return None

    # -- grading --------------------------------------------------------------------------------------------
    def grade(self, question: Question, extracted: Any | None) -> Grade:
        """Grade a canonical answer. ``None`` (unparsed) gives :data:`UNPARSED`."""
        raise NotImplementedError


def format_options(options: list[str]) -> str:
    """Render options as ``A. ...`` lines."""
    return "Options:\n" + "".join(f"{LETTERS[i]}. {opt}\n" for i, opt in enumerate(options))


def assign_splits(questions: list[Question], seed: int, fractions: tuple[float, float, float]) -> list[Question]:
    """Assign disjoint splits by a seeded shuffle; sizes are rounded, the test split takes the remainder."""
    if abs(sum(fractions) - 1.0) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"split fractions {fractions} must be non-negative and sum to 1")
    order = list(range(len(questions)))
    random.Random(f"split/{seed}").shuffle(order)
    n = len(questions)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    for rank, i in enumerate(order):
        questions[i].split = "train" if rank < n_train else "validation" if rank < n_train + n_val else "test"
    return questions
