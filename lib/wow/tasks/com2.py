"""``com2``: COM2 commonsense multi-hop questions (4 options), labels = similarity or plausibility.

Source: the COM2 csv the user supplies (``path=...``; columns ``question``, ``context``, ``options`` (a Python list
literal, read with ``ast.literal_eval``), ``label`` (the gold index) and ``type``). As in the paper, only rows of
type ``2i``/``3i`` whose gold is not the last option are kept, and the last option is dropped (4 remain).

Labels: ``minilm`` (default, offline: option-to-gold similarity) or ``vera`` (the paper: the mean Vera plausibility
of ``"{context} {option} is {condition}."`` over the conditions named in the question, "What event or state is
both X and also Y?"; the whole question is the one condition when that form is not found).

Example::

    task = wow.tasks.get("com2", path="COM2.csv")
"""

from __future__ import annotations

import ast
import logging
import re

from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import LoaderTask, MCItem
from wow.tasks.sources import read_csv_rows, row_error

log = logging.getLogger(__name__)

COLUMNS = ["question", "context", "options", "label", "type"]
WHAT = "the COM2 csv (columns question, context, options, label, type) from the COM2 release"


class COM2(LoaderTask):
    """COM2 questions.

    Args:
        path: the COM2 csv.
        labeler: ``minilm`` (default), ``openai``, ``vera`` or a labeler object.
    """

    name = "com2"
    version = "1"

    def __init__(self, path: str = "COM2.csv", labeler="minilm"):
        self.path, self.labeler = path, labeler

    @property
    def source(self) -> str:
        return self.path

    def rows(self):
        """The rows of the COM2 csv file."""
        return read_csv_rows(self.path, WHAT, COLUMNS)

    def item(self, row) -> MCItem | None:
        """One COM2 row with two or three conditions (``2i``/``3i``) whose gold is not the last option ("none")."""
        try:
            options = ast.literal_eval(row.data["options"])
        except (ValueError, SyntaxError):
            raise row_error(row, "'options' is not a Python list literal") from None
        if not isinstance(options, list) or len(options) < 2:
            raise row_error(row, "'options' must be a list of at least two options")
        label = row.data["label"].strip()
        if not label.lstrip("-").isdigit() or not 0 <= int(label) < len(options):
            raise row_error(row, f"label {label!r} is not an index of the {len(options)} options")
        kind = row.data["type"]
        if int(label) == len(options) - 1 or not ("2i" in kind or "3i" in kind):
            return None
        context, question = row.data["context"].strip(), row.data["question"].strip()
        opts = [str(o) for o in options[:-1]]
        return MCItem(
            key=f"line{row.where.rsplit(':', 1)[-1]}",
            prompt=COT_INSTRUCTION
            + (
                "Answer a commonsense question about the causes, effects or attributes of the people in a "
                f"context.\nContext: {context}\nQuestion: {question}\n"
            ),
            options=opts,
            gold=int(label),
            meta={"source": str(self.path), "type": kind},
            statements=[[f"{context} {o} is {c}." for c in conditions(row.data["question"])] for o in opts],
        )


def conditions(question: str) -> list[str]:
    """The conditions of a COM2 question: "... both X and also Y?" -> [X, Y]; "... both X, Y, and also Z?" -> 3.

    Args:
        question: the question text.

    Returns:
        the conditions; ``[question]`` when the form is not found.
    """
    m = re.search(r"\bboth (.+?),? and also (.+?)\?*\s*$", question.strip())
    if not m:
        return [question.strip().rstrip("?")]
    return [c.strip() for c in re.split(r",\s*", m.group(1)) if c.strip()] + [m.group(2).strip()]
