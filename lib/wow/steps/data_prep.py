"""Stage glue for the notebooks: each function is one step of a stage, reading and writing the run folder.

The notebooks call these so that a notebook is a short story of calls and the same steps run from a script. Steps
that call models take the run context (:class:`wow.context.RunContext`: the parameters, the run folder, and the
engines and tasks of the run, each model loaded once); the others take the validated parameters ``P``
(:class:`wow.params.RunParams`). Every path comes from the run's layout (:mod:`wow.layout`), every name from
:mod:`wow.schema`.

Example::

    from wow import params, pipeline
    from wow.context import RunContext
    P = params.load("parameters/smoke.yaml")
    with RunContext(P) as run:
        questions = pipeline.make_questions(run)
        answers = pipeline.sample(run, questions)

Stages 04 and 05 (preference sets, the grid, the test evaluation, the gains) are in :mod:`wow.pipeline_align`; its
functions are named here too.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import pandas as pd

from wow import WowError, io
from wow.context import RunContext
from wow.params import RunParams

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
    from wow import sampling

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


def write_metrics(P: RunParams, stage: str, values: dict) -> Path:
    """Merge ``values`` under ``stage`` into the run's ``metrics.json``, and this process's model calls, tokens,
    cache hits and API cost per model (:func:`wow.backends.process_usage`) under ``stage`` into ``usage.json``."""
    from wow.backends import process_usage

    usage_path = P.layout.usage
    usage = io.read_json(usage_path) if usage_path.exists() else {}
    usage[stage] = process_usage()
    io.write_json(usage_path, usage)
    path = P.layout.metrics
    current = io.read_json(path) if path.exists() else {}
    current[stage] = values
    return io.write_json(path, current)


# -- stage 02: elicitation ----------------------------------------------------------------------------------------
def judge_all(run: RunContext, answers: list[dict]) -> tuple[list[dict], list[dict]]:
    """Run every judge in every mode: pairwise (both orders) and score-based; write ``judgements/``.

    The judges see the answers a later stage uses (:func:`wow.protocol.judged_answers`: under ``wow`` the train
    questions and those of ``acc_wow_split``), and the pair cap is drawn over their pairs.

    Returns:
        ``(pairwise rows, score rows)`` over all judges and modes.
    """
    from wow import judges, protocol

    P = run.params
    judged = protocol.judged_answers(P.protocol, answers, P.acc_wow_split)
    log.info("judges see %d of %d answers (protocol %s)", len(judged), len(answers), P.protocol)
    answers = judged
    pairwise, scores = [], []
    for judge in P.judges:
        engine = run.engine(judge)
        for mode in P.judge_modes:
            if mode == "logprob" and not engine.supports_prefill:
                log.warning("judge %s is served by an API: no next-token verdicts, skipping its logprob mode", judge)
                continue
            if P.pairwise:
                rows = judges.judge_pairwise(
                    engine,
                    answers,
                    judge,
                    mode,
                    max_pairs=protocol.judge_pair_cap(P.protocol, judge, P.max_judge_pairs),
                    seed=P.seed,
                    max_tokens=P.pairwise_reply_tokens,
                    protocol=P.protocol,
                )
                io.write_jsonl(P.layout.judgement("pairwise", judge, mode), rows)
                pairwise += rows
            for k in P.score_k:
                if mode == "logprob" and k != 1:
                    continue  # next-token scores read one answer per prompt
                rows = judges.judge_scores(
                    engine, answers, judge, k, mode, max_tokens=P.score_reply_tokens, protocol=P.protocol
                )
                io.write_jsonl(P.layout.judgement("score", judge, mode, k), rows)
                scores += rows
    return pairwise, scores


def judge_report(pairwise: list[dict], scores: list[dict]) -> pd.DataFrame:
    """Parse-failure and order-flip rates of every judge file, so unparseable replies never vanish silently."""
    from wow import judges

    out = []
    groups = defaultdict(list)
    for r in pairwise:
        groups[("pairwise", r["judge"], r["mode"], None)].append(r)
    for r in scores:
        groups[("score", r["judge"], r["mode"], r["k"])].append(r)
    for (kind, judge, mode, k), rows in groups.items():
        rates = judges.pairwise_rates(rows) if kind == "pairwise" else judges.score_parse_rate(rows)
        out.append({"kind": kind, "judge": judge, "mode": mode, "k": k, "rows": len(rows), **rates})
    return pd.DataFrame(out)


def load_judgements(P: RunParams) -> tuple[list[dict], list[dict]]:
    """All pairwise and score judgement rows of the run."""
    from wow import judges

    folder = P.layout.judgements
    if not folder.exists():
        return [], []
    return judges.read_judgements(folder, "pairwise"), judges.read_judgements(folder, "score")


def load_scores(P: RunParams) -> list[dict]:
    """Rows of ``scores.jsonl``."""
    return io.read_jsonl(P.layout.scores)


# stages 04-05 (wow.pipeline_align), by the names scripts and tests use
from wow.pipeline_align import (  # noqa: E402
    PrefSpec,
    Trained,
    align_and_evaluate,
    alignment_table,
    build_preference_sets,
    eval_answers,
    evaluate_on_test,
    grid_table,
    method_acc_wow,
    pref_specs,
    train_grids,
)

__all__ = [
    "PrefSpec",
    "Trained",
    "align_and_evaluate",
    "alignment_table",
    "answers_summary",
    "build_preference_sets",
    "eval_answers",
    "evaluate_on_test",
    "grid_table",
    "judge_all",
    "judge_report",
    "load_answers",
    "load_judgements",
    "load_questions",
    "load_scores",
    "make_questions",
    "method_acc_wow",
    "pref_specs",
    "questions_table",
    "sample",
    "train_grids",
    "write_metrics",
]
