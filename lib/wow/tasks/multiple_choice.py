"""Multiple-choice tasks: the shared base class (extraction, grading by option labels) and the option labelers.

A multiple-choice question stores its options in their original order, the gold option index, and one graded label
per option (``question.option_labels``) computed when the questions are built. Options are re-shuffled for every
sample (``Task.permutation``); the extracted letter is mapped back to an original index, so grading never depends
on the order shown.

Grading: ``raw_label = label of the chosen option``, ``correctness = clip(label, 0, 1)``, ``is_correct = the label
is the highest of the question`` (the paper's "label == max label"; tied best options are all correct).

Labelers (``labeler=`` option of the loader tasks):

* ``minilm`` / ``openai``: option-to-gold embedding similarity (:mod:`wow.tasks.embeddings`);
* ``vera``: Vera plausibility (:mod:`wow.tasks.vera`), the paper's choice for COM2 and HellaSwag, optional;
* ``onehot``: 1 for the gold option, 0 otherwise (no graded wrongness).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wow import WowError
from wow.tasks.base import UNPARSED, Grade, Question, Task
from wow.tasks.extract import MC_DIRECT_PATTERN, last_match, mc_extraction

LABELERS = ("minilm", "openai", "vera", "onehot")


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question as read from its source, before its options are labelled.

    Attributes:
        key: the question's id within the task (the question id is ``<task>/<key>``).
        prompt: the question text shown above the options.
        options: option texts in their original order.
        gold: index of the right option.
        meta: provenance kept in the question (source, subject...).
        statements: per option, the statements a plausibility labeler rates (None: the option itself).
    """

    key: str
    prompt: str
    options: list[str]
    gold: int
    meta: dict = field(default_factory=dict)
    statements: list[list[str]] | None = None


class MultipleChoiceTask(Task):
    """Base of the multiple-choice tasks: options shown re-shuffled per sample, graded by option labels."""

    multiple_choice = True
    extraction = mc_extraction()

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None) -> int | None:
        """The last explicit choice in a reasoning answer ("the answer is (B)", "Answer: B"), or None."""
        m = last_match([MC_DIRECT_PATTERN], answer)
        return None if m is None else self.canonical(m.group(1), question, permutation)

    def questions_from(self, items: list[MCItem], labeler) -> list[Question]:
        """Label the options of ``items`` (all at once: embedders batch) and make them questions (split unset).

        Args:
            items: the sampled items.
            labeler: see :func:`option_labels`.

        Returns:
            one question per item, in order.
        """
        statements = [i.statements for i in items] if items and items[0].statements is not None else None
        labels = option_labels(labeler, [i.options for i in items], [i.gold for i in items], statements)
        return [
            Question(
                id=f"{self.name}/{i.key}",
                task=self.name,
                split="",
                prompt=i.prompt,
                gold=i.gold,
                options=i.options,
                option_labels=lab,
                meta=i.meta,
            )
            for i, lab in zip(items, labels, strict=True)
        ]

    def grade(self, question: Question, extracted: int | None) -> Grade:
        """Grade an original option index by its label.

        Args:
            question: the question (``option_labels`` set).
            extracted: original option index, or None.

        Returns:
            the grade; :data:`UNPARSED` for None or an index outside the options.
        """
        labels = question.option_labels
        if extracted is None or not 0 <= extracted < len(labels):
            return UNPARSED
        label = float(labels[extracted])
        return Grade(correctness=min(1.0, max(0.0, label)), raw_label=label, is_correct=label >= max(labels))


class LoaderTask(MultipleChoiceTask):
    """Base of the multiple-choice tasks read from published data (hub ids or local files): :meth:`build` reads
    the source's rows (:meth:`rows`), makes each an item (:meth:`item`; None leaves a row out), samples ``n`` of
    them with the seed and labels their options with ``self.labeler``. A loader gives :meth:`item` and, when its
    source is not a hub dataset or a local file of the same schema (``path``, ``split``, ``data_files``),
    :meth:`rows` and :attr:`source`."""

    labeler = "minilm"

    @property
    def source(self):
        """What the questions are read from (named in their ``meta`` and in errors)."""
        return self.data_files or self.path

    def rows(self):
        """The source's rows (:class:`wow.tasks.sources.Row`)."""
        from wow.tasks.sources import load_rows

        return load_rows(None if self.data_files else self.path, self.split, self.data_files)

    def item(self, row) -> MCItem | None:
        """One row as a question item, or None to leave the row out; raises ``row_error`` for a malformed row."""
        raise NotImplementedError

    def build(self, n: int, seed: int) -> list[Question]:
        """A seeded sample of ``n`` questions (all when the source has fewer) with labelled options, split unset."""
        from wow.tasks.sources import seeded_sample

        pool = [item for item in map(self.item, self.rows()) if item is not None]
        return self.questions_from(seeded_sample(pool, n, seed, self.source), self.labeler)


def option_labels(
    labeler, options: list[list[str]], golds: list[int], statements: list[list[list[str]]] | None = None
) -> list[list[float]]:
    """Graded labels for the options of many questions at once.

    Args:
        labeler: ``minilm``, ``openai``, ``vera``, ``onehot``, or an object: one with ``embed(texts)`` is used as an
            embedder, one with ``score(statements)`` as a Vera-style scorer.
        options: per question, the option texts.
        golds: per question, the gold option index.
        statements: per question, per option, the statements a plausibility scorer rates (default: the option).

    Returns:
        per question, one label per option, the gold option's label exactly 1.0.
    """
    if labeler == "onehot":
        return [[1.0 if i == g else 0.0 for i in range(len(opts))] for opts, g in zip(options, golds, strict=True)]
    if labeler == "vera" or hasattr(labeler, "score"):
        from wow.tasks.vera import plausibility_labels

        stmts = statements or [[[o] for o in opts] for opts in options]
        return plausibility_labels(stmts, golds, None if labeler == "vera" else labeler)
    if labeler in ("minilm", "openai") or hasattr(labeler, "embed"):
        from wow.tasks.embeddings import similarity_labels

        return similarity_labels(options, golds, labeler)
    raise WowError(f"unknown labeler {labeler!r}; use one of {', '.join(LABELERS)}")
