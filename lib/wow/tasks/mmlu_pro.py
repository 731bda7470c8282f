"""``mmlu_pro``: MMLU-Pro multiple choice (up to 10 options), labels = option-to-gold embedding similarity.

Source: the hub dataset ``TIGER-Lab/MMLU-Pro`` (split ``test``; fields ``question_id``, ``question``, ``options``,
``answer_index``, ``src``), or a local file of the same schema (``data_files=...``). As in the paper, only the 23
subjects that come from the original MMLU are kept (``subjects="paper"``; ``None`` keeps all).

Example::

    task = wow.tasks.get("mmlu_pro")                                   # hub, MiniLM labels
    task = wow.tasks.get("mmlu_pro", data_files="mmlu_pro.jsonl", labeler="openai")
"""

from __future__ import annotations

from wow.tasks.extract import COT_INSTRUCTION
from wow.tasks.multiple_choice import LoaderTask, MCItem
from wow.tasks.sources import field, row_error

HUB_ID = "TIGER-Lab/MMLU-Pro"
#: The original-MMLU subjects the paper keeps (``src`` values without the ``ori_mmlu-`` prefix).
PAPER_SUBJECTS = (
    "anatomy business_ethics college_medicine high_school_biology high_school_european_history high_school_geography "
    "high_school_government_and_politics high_school_macroeconomics high_school_microeconomics "
    "high_school_us_history high_school_world_history international_law jurisprudence logical_fallacies management "
    "moral_disputes philosophy prehistory professional_law professional_medicine security_studies sociology "
    "world_religions"
).split()


class MMLUPro(LoaderTask):
    """MMLU-Pro questions.

    Args:
        path: hub id (default ``TIGER-Lab/MMLU-Pro``) or a local file.
        split: the split to read.
        data_files: a local file of the same schema (read through ``datasets``).
        subjects: ``"paper"`` (the 23 original-MMLU subjects), None (all), or a list of ``src`` values.
        labeler: ``minilm`` (default, offline), ``openai`` (the paper's text-embedding-3-small) or an embedder.
    """

    name = "mmlu_pro"
    version = "1"

    def __init__(self, path=HUB_ID, split="test", data_files=None, subjects="paper", labeler="minilm"):
        self.path, self.split, self.data_files = path, split, data_files
        self.subjects = {f"ori_mmlu-{s}" for s in PAPER_SUBJECTS} if subjects == "paper" else subjects
        self.labeler = labeler

    def item(self, row) -> MCItem | None:
        """One MMLU-Pro row (left out when its ``src`` is not among ``subjects``)."""
        src = str(field(row, "src", str))
        if self.subjects is not None and src not in self.subjects:
            return None
        options = [str(o) for o in field(row, "options", list)]
        gold = field(row, "answer_index", int)
        if not options or not 0 <= gold < len(options):
            raise row_error(row, f"answer_index {gold} is outside the {len(options)} options")
        return MCItem(
            key=str(row.data.get("question_id", row.index)),
            prompt=COT_INSTRUCTION + f"Question: {field(row, 'question', str).strip()}\n",
            options=options,
            gold=gold,
            meta={"source": str(self.source), "src": src},
        )
