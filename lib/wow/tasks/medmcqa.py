"""``medmcqa``: MedMCQA medical multiple choice (4 options) with one-hot labels: no graded wrongness.

Source: the hub dataset ``openlifescienceai/medmcqa`` (fields ``id``, ``question``, ``opa``..``opd``, ``cop`` = the
gold index 0-3), or a local file of the same schema (``data_files=...``). Every wrong option has label 0, so two
wrong answers always have equal ``raw_label`` and never form a wrong-over-wrong pair; the paper uses it as a proxy
task. The paper draws train questions from the hub ``train`` split and test questions from ``validation``; here
one split (``split=``) is read and divided by the usual seeded split.

Example::

    task = wow.tasks.get("medmcqa", split="validation")
"""

from __future__ import annotations

from wow.tasks.base import Question
from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import MultipleChoiceTask, option_labels
from wow.tasks.sources import field, load_rows, row_error, sample

HUB_ID = "openlifescienceai/medmcqa"


class MedMCQA(MultipleChoiceTask):
    """MedMCQA questions.

    Args:
        path: hub id (default ``openlifescienceai/medmcqa``) or a local file.
        split: the split to read (default ``train``).
        data_files: a local file of the same schema.
    """

    name = "medmcqa"
    version = "1"

    def __init__(self, path=HUB_ID, split="train", data_files=None):
        self.path, self.split, self.data_files = path, split, data_files

    def build(self, n: int, seed: int) -> list[Question]:
        """A seeded sample of ``n`` questions with one-hot option labels.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        pool = []
        for row in load_rows(None if self.data_files else self.path, self.split, self.data_files):
            options = [str(field(row, k)) for k in ("opa", "opb", "opc", "opd")]
            gold = field(row, "cop", int)
            if not 0 <= gold < 4:
                raise row_error(row, f"cop {gold} is not an option index 0-3")
            pool.append((row, field(row, "question", str), options, gold))
        chosen = sample(pool, n, seed)
        labels = option_labels("onehot", [c[2] for c in chosen], [c[3] for c in chosen])
        return [
            Question(
                id=f"{self.name}/{row.data.get('id', row.index)}",
                task=self.name,
                split="",
                prompt=COT_INSTRUCTION + f"Question: {text.strip()}\n",
                gold=gold,
                options=options,
                option_labels=lab,
                meta={"source": HUB_ID if not self.data_files else str(self.data_files)},
            )
            for (row, text, options, gold), lab in zip(chosen, labels, strict=True)
        ]
