"""Stage glue for the notebooks: each function is one step of a stage, reading and writing the run folder.

The notebooks call these with the validated parameters ``P`` (:class:`wow.params.RunParams`), so that a notebook
is a short story of calls and the same steps run from a script. Engines are created once per (model, adapter)
and reused by every step in the same process, so a notebook never reloads a model between steps.

Example::

    from wow import params, pipeline
    P = params.load("parameters/smoke.yaml")
    questions = pipeline.make_questions(P)
    answers = pipeline.sample(P, questions)
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wow import WowError, io, models
from wow.params import RunParams, parse_pref_type

log = logging.getLogger(__name__)

_ENGINES: dict[tuple, object] = {}
_TASKS: dict[tuple, object] = {}


# -- engines and tasks --------------------------------------------------------------------------------------------
def engine_for(P: RunParams, model: str, adapter: str | Path | None = None):
    """The cached engine of ``model`` (an API model gets the ``openai`` engine, a local one ``transformers``)."""
    from wow.backends import get_engine

    key = (model, str(adapter) if adapter else None, str(P.cache_path), P.dtype, P.batch_size, P.base_url)
    if key not in _ENGINES:
        spec = models.resolve(model)
        if spec.kind == "api":
            if adapter:
                raise WowError(f"{model!r} is served by an API; adapters apply to local models only.")
            _ENGINES[key] = get_engine(
                "openai", model=spec.source, cache=P.cache_path, base_url=P.base_url, concurrency=P.api_concurrency
            )
        else:
            kwargs = {"adapter": str(adapter)} if adapter else {}
            _ENGINES[key] = get_engine(
                "transformers", model=model, cache=P.cache_path, dtype=P.dtype, batch_size=P.batch_size, **kwargs
            )
    return _ENGINES[key]


def close_engines() -> None:
    """Release every engine (frees model memory)."""
    for engine in _ENGINES.values():
        engine.close()
    _ENGINES.clear()


def task(P: RunParams, name: str):
    """The task ``name`` with its options from ``P.task_options`` (built once per process).

    An ``engine`` option given as a model name (e.g. the FActScore model of ``bio_generation``) is replaced by that
    model's cached engine. Relative file options (``path``, ``db``, ``data_files``) resolve against the
    repository root when the file exists there, so notebooks find them from any working folder.
    """
    from wow import tasks
    from wow.params import REPO_ROOT

    opts = dict(P.task_options.get(name, {}))
    for k in ("path", "db", "data_files"):
        if isinstance(opts.get(k), str) and not Path(opts[k]).is_absolute() and (REPO_ROOT / opts[k]).exists():
            opts[k] = str(REPO_ROOT / opts[k])
    key = (name, repr(sorted(opts.items())))
    if key not in _TASKS:
        if isinstance(opts.get("engine"), str):
            opts["engine"] = engine_for(P, opts["engine"])
        _TASKS[key] = tasks.get(name, **opts)
    return _TASKS[key]


# -- stage 01: questions and answers ------------------------------------------------------------------------------
def make_questions(P: RunParams) -> list:
    """Build every task's questions (seeded, split) and write ``questions.jsonl``."""
    questions = []
    for name in P.tasks:
        qs = task(P, name).questions(P.n_questions, seed=P.seed, split_fractions=tuple(P.split_fractions))
        if not qs:
            raise WowError(f"task {name!r} produced no questions; check its options and data file.")
        questions.extend(qs)
    io.write_jsonl(P.run_dir / "questions.jsonl", [q.to_dict() for q in questions])
    return questions


def load_questions(P: RunParams) -> list:
    """The questions of the run (``questions.jsonl``)."""
    from wow.tasks.base import Question

    return [Question.from_dict(r) for r in io.read_jsonl(P.run_dir / "questions.jsonl")]


def questions_table(questions: list) -> pd.DataFrame:
    """Questions per task and split."""
    df = pd.DataFrame([{"task": q.task, "split": q.split} for q in questions])
    return df.value_counts().unstack(fill_value=0).reindex(columns=["train", "validation", "test"], fill_value=0)


def sample(P: RunParams, questions: list, generators: list[str] | None = None) -> list[dict]:
    """Sample ``P.n_samples`` answers per question from every generator; extract, grade, write ``answers.jsonl``."""
    from wow import sampling

    rows = []
    by_task = defaultdict(list)
    for q in questions:
        by_task[q.task].append(q)
    for generator in generators or P.generators:
        engine = engine_for(P, generator)
        for name, qs in by_task.items():
            log.info("sampling %s on %s: %d questions x %d", generator, name, len(qs), P.n_samples)
            rows += sampling.sample_answers(
                task(P, name),
                qs,
                engine,
                generator,
                n_samples=P.n_samples,
                temperature=P.temperature,
                max_tokens=P.max_new_tokens,
                seed=P.seed,
                protocol=P.protocol,
            )
    sampling.write_answers(P.run_dir / "answers.jsonl", rows)
    sampling.check_parsed(rows, P.max_new_tokens)
    return rows


def load_answers(P: RunParams) -> list[dict]:
    """The graded answers of the run (``answers.jsonl``)."""
    return io.read_jsonl(P.run_dir / "answers.jsonl")


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

    usage_path = P.run_dir / "usage.json"
    usage = io.read_json(usage_path) if usage_path.exists() else {}
    usage[stage] = process_usage()
    io.write_json(usage_path, usage)
    path = P.run_dir / "metrics.json"
    current = io.read_json(path) if path.exists() else {}
    current[stage] = values
    return io.write_json(path, current)


# -- stage 02: elicitation ----------------------------------------------------------------------------------------
def judge_all(P: RunParams, answers: list[dict]) -> tuple[list[dict], list[dict]]:
    """Run every judge in every mode: pairwise (both orders) and score-based; write ``judgements/``.

    Returns:
        ``(pairwise rows, score rows)`` over all judges and modes.
    """
    from wow import judges, protocol

    pairwise, scores = [], []
    folder = P.run_dir / "judgements"
    for judge in P.judges:
        engine = engine_for(P, judge)
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
                io.write_jsonl(folder / judges.judgement_filename("pairwise", judge, mode), rows)
                pairwise += rows
            for k in P.score_k:
                if mode == "logprob" and k != 1:
                    continue  # next-token scores read one answer per prompt
                rows = judges.judge_scores(
                    engine, answers, judge, k, mode, max_tokens=P.score_reply_tokens, protocol=P.protocol
                )
                io.write_jsonl(folder / judges.judgement_filename("score", judge, mode, k), rows)
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

    folder = P.run_dir / "judgements"
    if not folder.exists():
        return [], []
    return judges.read_judgements(folder, "pairwise"), judges.read_judgements(folder, "score")


def load_scores(P: RunParams) -> list[dict]:
    """Rows of ``scores.jsonl``."""
    return io.read_jsonl(P.run_dir / "scores.jsonl")


# -- stage 04: preferences, alignment, evaluation -----------------------------------------------------------------
@dataclass(frozen=True)
class PrefSpec:
    """One preference set to build: type, score margin, judge, source, and the setting name it trains."""

    pref_type: str
    margin: float | None
    judge: str | None
    mode: str | None
    source: str = "self"

    def setting(self, P: RunParams, trainer: str | None = None) -> str:
        """Folder / row name of the setting (the paper's naming, source first: ``self_...`` and ``mix_...`` never
        collide); without a trainer, the preference set's name."""
        from wow import align

        needs_judge = self.pref_type.endswith(("direct", "score"))
        return align.setting_name(
            self.source,
            self.pref_type,
            trainer,
            judge=self.judge if needs_judge else None,
            margin=self.margin,
            check=P.pref_check,
        )

    def generators(self, P: RunParams) -> list[str]:
        """The generators whose answers the set is built from: the policy (``self``) or every generator (``mix``)."""
        return [P.policy_model] if self.source == "self" else list(P.generators)


def pref_specs(P: RunParams) -> list[PrefSpec]:
    """The preference sets the parameters ask for: every source of ``pref_source`` x every type of ``pref_types``."""
    judge = P.pref_judge or (P.judges[0] if P.judges else None)
    mode = P.pref_judge_mode or (P.judge_modes[0] if P.judge_modes else None)
    specs = []
    for source in P.pref_sources:
        for spec in P.pref_types:
            kind, margin = parse_pref_type(spec)
            if kind.endswith(("direct", "score")) and judge is None:
                raise WowError(f"preference type {spec!r} needs a judge: set judges or pref_judge.")
            specs.append(PrefSpec(kind, margin, judge, mode, source))
    return specs


def build_preference_sets(
    P: RunParams, answers: list[dict], pairwise: list[dict], scores: list[dict]
) -> dict[tuple[str, PrefSpec], object]:
    """Build and save every (task, preference spec) set under ``preferences/<task>/<name>``.

    A set with no pairs is reported and left out (the message says why), never silently empty.
    """
    from wow import elicit, preferences

    score_maps = elicit.judge_score_maps(scores)
    sets = {}
    for spec in pref_specs(P):
        column = elicit.judge_score_column(spec.judge, P.pref_score_k, spec.mode) if spec.judge else None
        judgements = [r for r in pairwise if r["judge"] == spec.judge and r["mode"] == spec.mode]
        for name in P.aligned_tasks:
            task_answers = [a for a in answers if a["task"] == name]
            try:
                ds = preferences.build_preferences(
                    task_answers,
                    spec.pref_type,
                    source=spec.source,
                    generators=spec.generators(P),
                    judgements=judgements,
                    scores=score_maps.get(column, {}) if column else None,
                    check=P.pref_check,
                    margin=spec.margin if spec.margin is not None else 0.5,
                    cap=P.max_pairs,
                    seed=P.seed,
                    protocol=P.protocol,
                )
            except WowError as e:
                log.warning("no %s preference set for %s: %s", spec.setting(P), name, e)
                continue
            folder = P.run_dir / "preferences" / name / spec.setting(P)
            preferences.save_preferences(ds, folder)
            sets[(name, spec)] = ds
    if not sets:
        raise WowError(
            "no preference set has any pair: every answer is correct, unparsed or tied. Sample more answers "
            "(n_samples), more questions, or a harder task."
        )
    return sets


def align_and_evaluate(P: RunParams, sets: dict, questions: list) -> tuple[pd.DataFrame, dict]:
    """Train every set with every trainer over the grid, pick the best configuration on validation questions,
    evaluate it and the original model on the test questions, and write ``alignment.csv`` and ``eval/``.

    A model aligned on task ``name`` is evaluated on the test questions of every task of ``P.eval_targets(name)``
    (itself by default; ``eval_tasks`` maps e.g. ``com2`` to ``[com2, hellaswag]`` for the paper's Table 4).
    ``alignment.csv`` has one row per setting and evaluation task (column ``eval_task``); the answers on another
    task go to ``eval/<eval task>/<task>__<setting>.jsonl``.

    Returns:
        ``(alignment table, {(task, setting): {"before": rows, "after": rows}})``, plus keys
        ``(task, setting, eval task)`` for evaluations on another task.
    """
    from wow import align, evaluate

    by_split = defaultdict(list)
    for q in questions:
        by_split[(q.task, q.split)].append(q)
    eval_kwargs = {
        "n_samples": P.eval_samples,
        "seed": P.seed,
        "max_tokens": P.max_new_tokens,
        # the engine settings of stage 01: the original model's test answers are then those it sampled there
        "engine_options": {"batch_size": P.batch_size, "dtype": P.dtype},
        "protocol": P.protocol,  # sampling and grading; Bio's evaluation samples (wow.protocol.eval_samples)
    }
    all_sets = list(sets.values())
    base = {}
    entries, rows_by_setting = [], {}
    config = align.AlignConfig(beta=P.beta, batch_size=P.train_batch_size, max_steps=P.max_steps, seed=P.seed)
    for (name, spec), ds in sets.items():
        val_qs = by_split[(name, "validation")]
        for target in P.eval_targets(name):
            if not by_split[(target, "test")]:
                raise WowError(f"task {target!r} has no test questions; raise n_questions or the test share.")
            if target not in base:
                base[target] = evaluate.evaluate_adapter(
                    task(P, target),
                    by_split[(target, "test")],
                    P.policy_model,
                    None,
                    P.cache_path,
                    preference_sets=all_sets,
                    **eval_kwargs,
                )
                io.write_jsonl(P.run_dir / "eval" / target / "original.jsonl", base[target])
        t = task(P, name)
        select = (
            evaluate.make_select_fn(t, val_qs, P.policy_model, P.cache_path, preference_sets=all_sets, **eval_kwargs)
            if val_qs
            else None
        )
        for trainer in P.trainers:
            setting = spec.setting(P, trainer)
            grid = align.grid_search(
                ds["train"],
                ds["validation"],
                P.policy_model,
                trainer,
                P.run_dir / "models" / name / setting,
                config,
                learning_rates=P.learning_rates,
                epochs=P.epochs,
                schedulers=P.lr_schedulers,
                weight_decays=P.weight_decays,
                select_fn=select,
            )
            for target in P.eval_targets(name):
                after = evaluate.evaluate_adapter(
                    task(P, target),
                    by_split[(target, "test")],
                    P.policy_model,
                    grid.best["output_dir"],
                    P.cache_path,
                    preference_sets=all_sets,
                    **eval_kwargs,
                )
                own = target == name
                io.write_jsonl(
                    P.run_dir / "eval" / target / (f"{setting}.jsonl" if own else f"{name}__{setting}.jsonl"), after
                )
                rows_by_setting[(name, setting) if own else (name, setting, target)] = {
                    "before": base[target],
                    "after": after,
                }
                entries.append(
                    {
                        "before_rows": base[target],
                        "after_rows": after,
                        "setting": setting,
                        "task": name,
                        "eval_task": target,
                        "pref_type": spec.pref_type,
                        "source": spec.source,
                        "trainer": trainer,
                        "judge": spec.judge if spec.pref_type.endswith(("direct", "score")) else None,
                        "margin": spec.margin,
                        "config": grid.best["name"],
                    }
                )
    table = evaluate.alignment_table(entries, n_boot=P.n_boot, seed=P.seed)
    evaluate.write_alignment_csv(table, P.run_dir / "alignment.csv")
    return table, rows_by_setting


def method_acc_wow(P: RunParams, acc_table: pd.DataFrame, alignment: pd.DataFrame) -> pd.DataFrame:
    """Join each aligned setting with the Acc_WoW of the preferences it was trained on (paper Fig 3's x-axis).

    The Acc_WoW is taken over the pairs the set was built from: a ``self`` set from the policy's rows of
    ``acc_wow.csv`` only; a ``mix`` set from the rows of every generator it pooled, as hits summed over pairs
    summed (the pooled pairs, not an unweighted mean of per-generator values). Oracle preferences count as
    Acc_WoW = 1.0; ``direct`` sets take the pairwise judge's Acc_WoW at M = 1.0 (with the both-orders check when
    ``pref_check``); ``score@M`` sets take the score judge's Acc_WoW at margin M, which scores exactly the pairs the
    set trains on (:mod:`wow.pairs`). Sets with right-over-wrong pairs (``row*``) have no wrong-over-wrong accuracy
    and are left out.

    Returns:
        The alignment rows kept, plus ``method`` (e.g. ``score@0.1``), ``acc_wow`` and ``acc_wow_pairs`` (the pairs
        it is computed over; NaN for oracle).
    """
    from wow import elicit

    mode = P.pref_judge_mode or (P.judge_modes[0] if P.judge_modes else None)
    out = []
    for _, row in alignment.iterrows():
        if pd.notna(row.get("eval_task")) and row["eval_task"] != row["task"]:
            continue  # generalisation rows (eval_tasks): the preferences' Acc_WoW is about the training task
        kind = row["pref_type"]
        margin = row["margin"] if pd.notna(row["margin"]) else None
        source = row["source"] if pd.notna(row.get("source")) else "self"
        if kind == "oracle":
            acc, n_pairs = 1.0, float("nan")
        elif kind in ("direct", "score") and pd.notna(row.get("judge")) and mode is not None:
            generators = PrefSpec(kind, margin, row["judge"], mode, source).generators(P)
            sel = acc_table[
                (acc_table["task"] == row["task"])
                & (acc_table["judge"] == row["judge"])
                & acc_table["generator"].isin(generators)
            ]
            if kind == "direct":
                check = "both_orders" if P.pref_check else "none"
                sel = sel[(sel["method"] == f"pairwise_{mode}") & (sel["check"] == check) & (sel["margin"] == 1.0)]
            else:
                _, k, m = elicit.parse_judge_score_column(
                    elicit.judge_score_column(row["judge"], P.pref_score_k, mode)
                )
                method = f"score_k{k}" + ("_logprob" if m == "logprob" else "")
                sel = sel[(sel["method"] == method) & ((sel["margin"] - margin).abs() < 1e-9)]
            n_pairs = float(sel["n_pairs"].sum())
            acc = float(sel["n_hits"].sum()) / n_pairs if n_pairs else float("nan")
        else:
            continue
        label = kind + (f"@{margin:g}" if margin is not None else "")
        out.append({**row.to_dict(), "method": label, "acc_wow": acc, "acc_wow_pairs": n_pairs})
    columns = [*alignment.columns, "method", "acc_wow", "acc_wow_pairs"]
    return pd.DataFrame(out, columns=columns)
