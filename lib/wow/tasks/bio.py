"""``bio_generation``: write a biography of a person; graded by FActScore against a passage database.

Source: the BioGeneration jsonl the user supplies (``path=...``; fields ``topic`` = the person's exact title in the
passage database, and optionally ``input`` = the prompt, default "Tell me a bio of <topic>."). The task is
free-text (``free_text = True``, no extraction turn): ``parse_direct`` scores an answer with
:class:`~wow.tasks.factscore.FactScorer` and returns its FActScore, which ``grade`` turns into a grade:

* ``correctness = raw_label = FActScore`` (supported-fact share x length penalty), in [0, 1];
* ``is_correct``: FActScore >= 0.9 (the paper's threshold);
* an answer with no atomic facts scores None and grades as unparsed.

The answer's canonical ``extracted`` value is therefore its grade: self-consistency cannot count equal answers here
(it would count equal labels), so :func:`wow.elicit.scorers.consistency` uses the token-logprob signal for free-text tasks, as
the paper's code does.

Scoring needs ``db=`` (the passage SQLite file) and ``engine=`` (a :class:`wow.backends.base.Engine` for the LLM
steps); the questions themselves do not. Use :meth:`BioGeneration.score_answers` to score many answers in two
batched engine calls.

Example::

    task = wow.tasks.get("bio_generation", path="BioGeneration.jsonl", db="enwiki-20230401.db", engine=engine)
    q = task.questions(10)[0]
    task.grade(q, task.parse_direct(answer_text, q))
"""

from __future__ import annotations

from wow import WowError
from wow.tasks.base import UNPARSED, Grade, Question, Task
from wow.tasks.factscore import FactScorer, PassageDB
from wow.tasks.sources import field, read_jsonl_rows, seeded_sample

THRESHOLD = 0.9
WHAT = "the BioGeneration jsonl (fields topic and optionally input)"


class BioGeneration(Task):
    """Biographies graded by FActScore.

    Args:
        path: the BioGeneration jsonl.
        db: the passage database (needed to score answers).
        engine: the engine for the FActScore LLM steps (needed to score answers).
        k: passages per verification prompt.
        gamma: FActScore's length-penalty constant.
        threshold: FActScore at or above which an answer counts as correct.
    """

    name = "bio_generation"
    version = "1"
    free_text = True
    extraction = None

    def __init__(
        self,
        path: str = "BioGeneration.jsonl",
        db=None,
        engine=None,
        k: int = 5,
        gamma: int = 10,
        threshold: float = THRESHOLD,
    ):
        self.path, self.threshold = path, threshold
        self.db = None if db is None else (db if isinstance(db, PassageDB) else PassageDB(db))
        self.scorer = (
            FactScorer(engine, self.db, k=k, gamma=gamma) if self.db is not None and engine is not None else None
        )

    def build(self, n: int, seed: int) -> list[Question]:
        """A seeded sample of ``n`` topics; with a database, every topic must be one of its titles.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        pool = []
        for row in read_jsonl_rows(self.path, WHAT):
            topic = field(row, "topic", str).strip()
            if self.db is not None and not self.db.has(topic):
                raise WowError(
                    f"{row.where}: topic {topic!r} is not a title in {self.db.path}; fix the topic or the database."
                )
            text = str(row.data.get("input") or f"Tell me a bio of {topic}.").strip()
            pool.append(
                Question(
                    id=f"{self.name}/line{row.index + 1}",
                    task=self.name,
                    split="",
                    prompt=text + "\n",
                    gold=None,
                    meta={"source": str(self.path), "topic": topic},
                )
            )
        return seeded_sample(pool, n, seed, self.path)

    def score_answers(self, questions: list[Question], answers: list[str]) -> list[float | None]:
        """FActScores of many answers (two batched engine calls).

        Args:
            questions: per answer, its question.
            answers: the answer texts.

        Returns:
            per answer, the FActScore, or None when it has no atomic facts.
        """
        if self.scorer is None:
            raise WowError(
                "bio_generation scores answers with FActScore: pass db=<passage SQLite file> and engine=<wow engine>"
            )
        return [s.score for s in self.scorer.score([q.meta["topic"] for q in questions], list(answers))]

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None) -> float | None:
        """The answer's FActScore (its canonical form), or None when it states no facts."""
        return self.score_answers([question], [answer])[0]

    def parse(self, text: str, question: Question, permutation: list[int] | None = None) -> float | None:
        """Same as :meth:`parse_direct`: a biography has no extraction turn."""
        return self.parse_direct(text, question, permutation)

    def grade(self, question: Question, extracted: float | None) -> Grade:
        """Grade a FActScore.

        Args:
            question: the question.
            extracted: the FActScore or None.

        Returns:
            the grade; :data:`UNPARSED` for None.
        """
        if extracted is None:
            return UNPARSED
        s = float(extracted)
        return Grade(correctness=min(1.0, max(0.0, s)), raw_label=s, is_correct=s >= self.threshold)
