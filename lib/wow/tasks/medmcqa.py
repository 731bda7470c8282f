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

from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import LoaderTask, MCItem
from wow.tasks.sources import field, row_error

HUB_ID = "openlifescienceai/medmcqa"


class MedMCQA(LoaderTask):
    """MedMCQA questions.

    Args:
        path: hub id (default ``openlifescienceai/medmcqa``) or a local file.
        split: the split to read (default ``train``).
        data_files: a local file of the same schema.
    """

    name = "medmcqa"
    version = "1"
    labeler = "onehot"  # every wrong option 0: no graded wrongness

    def __init__(self, path=HUB_ID, split="train", data_files=None):
        self.path, self.split, self.data_files = path, split, data_files

    def item(self, row) -> MCItem:
        """One MedMCQA row: its question, options ``opa``..``opd`` and gold ``cop``."""
        gold = field(row, "cop", int)
        if not 0 <= gold < 4:
            raise row_error(row, f"cop {gold} is not an option index 0-3")
        return MCItem(
            key=str(row.data.get("id", row.index)),
            prompt=COT_INSTRUCTION + f"Question: {field(row, 'question', str).strip()}\n",
            options=[str(field(row, k)) for k in ("opa", "opb", "opc", "opd")],
            gold=gold,
            meta={"source": str(self.source)},
        )
