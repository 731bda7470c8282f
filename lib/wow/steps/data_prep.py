"""Stage 01 (notebook ``01_data_prep``): the run's questions (``questions.jsonl``) and every generator's sampled,
extracted and graded answers (``answers.jsonl``), with the loaders later stages read them through.

Each function of :mod:`wow.steps` is one step of its notebook, reading and writing the run folder, so that a
notebook is a short story of calls and the same steps run from a script. Steps that call models take the run
context (:class:`wow.steps.context.RunContext`: the parameters, the run folder, and the engines and tasks of the
run, each model loaded once); the others take the validated parameters ``P`` (:class:`wow.params.RunParams`).
Every path comes from the run's layout (:mod:`wow.layout`), every name from :mod:`wow.schema`.

Example::

    from wow import params
    from wow.steps import data_prep
    from wow.steps.context import RunContext
    P = params.load("parameters/smoke.yaml")
    with RunContext(P) as run:
        questions = data_prep.make_questions(run)
        answers = data_prep.sample(run, questions)
"""

from __future__ import annotations

import logging
from collections import defaultdict

import pandas as pd

from wow import WowError, io
from wow.params import RunParams
from wow.steps.context import RunContext

log = logging.getLogger(__name__)


# -- stage 01: questions and answers ------------------------------------------------------------------------------
def make_questions(run: RunContext) -> list:
    """Build every task's questions (seeded, split) and write ``questions.jsonl``."""
    P = run.params
    questions = []
    for name in P.tasks:
        qs = run.task(name).questions(P.n_questions, seed=P.seed, split_fractions=tuple(P.split_fractions))
        if not qs:
            raise WowError(f"task {name!r} produced no questions; check its options and data file.")
        questions.extend(qs)
    io.write_jsonl(P.layout.questions, [q.to_dict() for q in questions])
    return questions


def load_questions(P: RunParams) -> list:
    """The questions of the run (``questions.jsonl``)."""
    from wow.tasks.base import Question

    return [Question.from_dict(r) for r in io.read_jsonl(P.layout.questions)]


def questions_table(questions: list) -> pd.DataFrame:
    """Questions per task and split."""
    df = pd.DataFrame([{"task": q.task, "split": q.split} for q in questions])
    return df.value_counts().unstack(fill_value=0).reindex(columns=["train", "validation", "test"], fill_value=0)


def sample(run: RunContext, questions: list, generators: list[str] | None = None) -> list[dict]:
    """Sample ``n_samples`` answers per question from every generator; extract, grade, write ``answers.jsonl``."""
    from wow.elicit import sampling

    P = run.params
    rows = []
    by_task = defaultdict(list)
    for q in questions:
        by_task[q.task].append(q)
    for generator in generators or P.generators:
        engine = run.engine(generator)
        for name, qs in by_task.items():
            log.info("sampling %s on %s: %d questions x %d", generator, name, len(qs), P.n_samples)
            rows += sampling.sample_answers(
                run.task(name),
                qs,
                engine,
                generator,
                n_samples=P.n_samples,
                temperature=P.temperature,
                max_tokens=P.max_new_tokens,
                seed=P.seed,
                protocol=P.protocol,
            )
    sampling.write_answers(P.layout.answers, rows)
    sampling.check_parsed(rows, P.max_new_tokens)
    return rows


def load_answers(P: RunParams) -> list[dict]:
    """The graded answers of the run (``answers.jsonl``)."""
    return io.read_jsonl(P.layout.answers)


def answers_summary(answers: list[dict]) -> pd.DataFrame:
    """Per task and generator: answers, parse rate, accuracy, mean correctness, distinct wrong labels, confidence."""
    import numpy as np

    df = pd.DataFrame(answers)
    df["parsed"] = df["extracted"].notna()
    df["confidence"] = np.exp(df["mean_logprob"].astype(float))
    wrong = df[df["parsed"] & ~df["is_correct"]]
    out = df.groupby(["task", "generator"]).agg(
        answers=("answer_id", "size"),
        parse_rate=("parsed", "mean"),
        accuracy=("is_correct", "mean"),
        mean_correctness=("correctness", "mean"),
        confidence=("confidence", "mean"),
    )
    out["wrong_labels"] = wrong.groupby(["task", "generator"])["raw_label"].nunique()
    out["extraction"] = df.groupby(["task", "generator"])["extraction_method"].agg(
        lambda s: ", ".join(f"{k} {v}" for k, v in s.value_counts().items())
    )
    return out.fillna({"wrong_labels": 0})
