"""``hellaswag``: pick the right continuation of a context (4 endings), labels = similarity or plausibility.

Source: the hub dataset ``Rowan/hellaswag`` (split ``train`` as in the paper; fields ``ind``, ``ctx``, ``endings``,
``label``), or a local file of the same schema (``data_files=...``). The hub ``test`` split has no labels and is
refused row by row. Labels: ``minilm`` (default, offline: ending-to-gold-ending similarity) or ``vera`` (the
paper: Vera plausibility of context + ending; we join them with a space, the paper with none).

Example::

    task = wow.tasks.get("hellaswag", labeler="vera")
"""

from __future__ import annotations

from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import LoaderTask, MCItem
from wow.tasks.sources import field, row_error

HUB_ID = "Rowan/hellaswag"


class HellaSwag(LoaderTask):
    """HellaSwag completions.

    Args:
        path: hub id (default ``Rowan/hellaswag``) or a local file.
        split: the split to read (default ``train``).
        data_files: a local file of the same schema.
        labeler: ``minilm`` (default), ``openai``, ``vera`` or a labeler object.
    """

    name = "hellaswag"
    version = "1"

    def __init__(self, path=HUB_ID, split="train", data_files=None, labeler="minilm"):
        self.path, self.split, self.data_files, self.labeler = path, split, data_files, labeler

    def item(self, row) -> MCItem:
        """One HellaSwag row: its context ``ctx``, the ``endings`` and the gold ``label``."""
        ctx = field(row, "ctx", str).strip()
        endings = [str(e) for e in field(row, "endings", list)]
        label = str(field(row, "label")).strip()
        if not label.isdigit() or not 0 <= int(label) < len(endings):
            raise row_error(row, f"label {label!r} is not an index of the {len(endings)} endings (unlabelled split?)")
        return MCItem(
            key=str(row.data.get("ind", row.index)),
            prompt=COT_INSTRUCTION + f"Choose the most plausible continuation of the context.\nContext: {ctx}\n",
            options=endings,
            gold=int(label),
            meta={"source": str(self.source)},
            statements=[[f"{ctx} {e.strip()}"] for e in endings],
        )
