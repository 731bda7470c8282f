"""Stage 04 (notebook ``04_dpo_training``), the steps the notebook shows one by one: audit what the base answers
can teach, build the preference sets, train the grid and choose each setting's configuration on validation
questions, evaluate on test questions, the mechanism endpoint and the alignment table (``alignment.csv``). The
preference sets a run asks for are :mod:`wow.preferences.pref_spec`'s.

Steps that call models take the run context (:class:`wow.steps.context.RunContext`); the others take the parameters.

Example::

    from wow import params
    from wow.steps import data_prep, dpo_training, elicitation
    from wow.steps.context import RunContext
    P = params.load("parameters/smoke.yaml")
    with RunContext(P) as run:
        sets = dpo_training.build_preference_sets(P, data_prep.load_answers(P), *elicitation.load_judgements(P))
        trained = dpo_training.train_grids(run, sets, data_prep.load_questions(P))
        entries = dpo_training.evaluate_on_test(run, trained, sets, data_prep.load_questions(P))
        table = dpo_training.alignment_table(P, entries)
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from wow import WowError, io, schema
from wow.layout import seeded_name
from wow.params import RunParams
from wow.preferences.pref_spec import PrefSpec, pref_specs
from wow.steps.context import RunContext

log = logging.getLogger(__name__)


def build_preference_sets(
    P: RunParams, answers: list[dict], pairwise: list[dict], scores: list[dict]
) -> dict[tuple[str, PrefSpec], object]:
    """Build and save every (task, preference spec) set under ``preferences/<task>/<name>``.

    A set with no pairs is reported and left out (the message says why), never silently empty.
    """
    from wow import preferences
    from wow.elicit import scorers

    score_maps = scorers.judge_score_maps(scores)
    questions = io.read_jsonl(P.layout.questions) if any(s.pref_type == "gold" for s in pref_specs(P)) else None
    sets = {}
    for spec in pref_specs(P):
        column = schema.judge_score_column(spec.judge, P.pref_score_k, spec.mode) if spec.judge else None
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
                    both_orders=P.both_orders,
                    margin=spec.margin if spec.margin is not None else 0.5,
                    flip=spec.margin if spec.pref_type == "noisy" else None,
                    cap=P.max_pairs,
                    seed=P.seed,
                    protocol=P.protocol,
                    pairs_per_question=P.pairs_per_question,
                    stated_only=P.pairs_from_stated_answers,
                    questions=questions if spec.pref_type == "gold" else None,
                )
            except WowError as e:
                log.warning("no %s preference set for %s: %s", spec.setting(P), name, e)
                continue
            preferences.save_preferences(ds, P.layout.preferences(name, spec.setting(P)))
            sets[(name, spec)] = ds
    if not sets:
        raise WowError(
            "no preference set has any pair: every answer is correct, unparsed or tied. Sample more answers "
            "(n_samples), more questions, or a harder task."
        )
    return sets


@dataclass
class Trained:
    """One trained setting: a preference set of ``task`` trained with ``trainer`` over the grid."""

    task: str
    spec: PrefSpec
    trainer: str
    setting: str
    grid: object  # wow.align.grid.GridResult: every configuration and the one chosen on validation questions
    train_seed: int | None = None  # one of train_seeds; None: the run's seed, the only training of the setting


def _by_split(questions: list) -> dict[tuple[str, str], list]:
    by_split = defaultdict(list)
    for q in questions:
        by_split[(q.task, q.split)].append(q)
    return by_split


def _eval_engines(run: RunContext):
    """The engines of the policy model and its adapters on one loaded copy of it (:class:`wow.align.evaluate.AdapterEngines`),
    with the options and cache of the run's engines (:meth:`RunContext.local_engine_options`): same cache keys, so the
    original model's test answers are those of stage 01's."""
    from wow.align import evaluate

    return evaluate.AdapterEngines(run.params.policy_model, **run.local_engine_options())


def _eval_kwargs(run: RunContext, sets: dict, engines) -> dict:
    """What every evaluation of stage 04 shares: samples, seed, the engines, the sets trained on."""
    P = run.params
    return {
        "n_samples": P.eval_samples,
        "seed": P.seed,
        "max_tokens": P.max_new_tokens,
        "protocol": P.protocol,  # sampling and grading; Bio's evaluation samples (wow.protocol.eval_samples)
        "preference_sets": list(sets.values()),  # a test question in any of them is an error
        "engines": engines,
    }


def train_grids(run: RunContext, sets: dict, questions: list) -> list[Trained]:
    """Train every preference set with every trainer over the grid; each grid chooses its configuration by the mean
    correctness of answers sampled on the task's validation questions (by validation loss without them).

    Writes ``models/<task>/<setting>/`` (adapters, ``grid.json``, ``selection.json``, ``validation_answers/``).
    """
    from wow.align import align_config, evaluate, grid

    P = run.params
    by_split = _by_split(questions)
    config = align_config.AlignConfig(
        beta=P.beta,
        rpo_alpha=P.rpo_alpha,
        train_batch_size=P.train_batch_size,
        max_steps=P.max_steps,
        seed=P.seed,
        eval_steps=P.eval_steps,
        max_eval_pairs=P.max_eval_pairs,
        in_run_validation=P.in_run_validation,
        quantization=P.quantization,
        gradient_checkpointing=P.gradient_checkpointing,
        shared_prompts=P.shared_prompts,
        bf16=None if P.quantization == "4bit" else P.dtype == "bfloat16",
        report_to=list(P.report_to),
        reference_cache=str(P.layout.reference_cache),  # the reference's log-probabilities, shared by the arms
    )
    grid_axes = {
        "learning_rates": P.learning_rates,
        "epochs": P.epochs,
        "lr_schedulers": P.lr_schedulers,
        "weight_decays": P.weight_decays,
    }
    trainings = _trainings(P, sets, config)
    if P.train_backend == "ray":  # every grid point trained as a Ray task first; the grids below then only select
        from wow.align import ray_backend

        jobs = [
            ray_backend.TrainingJob(ds["train"], ds["validation"], P.policy_model, trainer, out_dir / name, point)
            for key, ds, trainer, out_dir, seeded, _seed in trainings
            for name, point in grid.grid_points(
                seeded, **grid_axes, selected_by_loss=not by_split[(key[0], "validation")]
            )
        ]
        ray_backend.train_all(jobs, address=P.ray_address, cpus=P.ray_cpus_per_training)
    trained, selects = [], {}
    with _eval_engines(run) as engines:  # every configuration's adapter evaluated on one loaded policy model
        for (name, spec), ds, trainer, out_dir, seeded, seed in trainings:
            if (name, spec) not in selects:
                val_qs = by_split[(name, "validation")]
                kwargs = _eval_kwargs(run, sets, engines)
                selects[(name, spec)] = (
                    evaluate.make_select_fn(run.task(name), val_qs, P.policy_model, **kwargs) if val_qs else None
                )
            result = grid.grid_search(
                ds["train"],
                ds["validation"],
                P.policy_model,
                trainer,
                out_dir,
                seeded,
                **grid_axes,
                select_fn=selects[(name, spec)],
            )
            trained.append(Trained(name, spec, trainer, spec.setting(P, trainer), result, seed))
    return trained


def _trainings(P: RunParams, sets: dict, config) -> list[tuple]:
    """``((task, spec), dataset, trainer, folder, config, seed)`` of every training grid of the run, in training order:
    per preference set, trainer and seed (``models/<task>/<setting>/`` or ``.../seed<k>/``; seed None: one run)."""
    out = []
    for (name, spec), ds in sets.items():
        for trainer in P.trainers:
            folder = P.layout.models(name, spec.setting(P, trainer))
            for seed in P.train_seeds or [None]:
                seeded = config if seed is None else dataclasses.replace(config, seed=seed)
                out_dir = folder if seed is None else folder / f"seed{seed}"
                out.append(((name, spec), ds, trainer, out_dir, seeded, seed))
    return out


def grid_table(trained: list[Trained]) -> pd.DataFrame:
    """Every configuration of every grid: its losses, its validation score and whether it was chosen."""
    cols = ["name", "learning_rate", "lr_scheduler", "weight_decay", "epochs", "train_loss", "val_loss"]
    rows = [
        {"task": t.task, "setting": t.setting, **{c: r.get(c) for c in cols}, "select_score": r.get("select_score")}
        | {"chosen": r["name"] == t.grid.best["name"]}
        for t in trained
        for r in t.grid.runs
    ]
    return pd.DataFrame(rows)


def evaluate_on_test(run: RunContext, trained: list[Trained], sets: dict, questions: list) -> list[dict]:
    """Sample the original model and each chosen adapter on the test questions of every evaluation task, and write
    ``eval/``. A model aligned on task ``name`` is evaluated on every task of ``eval_targets(name)`` (itself by
    default; ``eval_tasks`` maps e.g. ``com2`` to ``[com2, hellaswag]`` for the paper's Table 4).

    Returns:
        One entry per (setting, evaluation task): the before and after rows and the setting's description, the
        input of :func:`alignment_table`.
    """
    from wow.align import evaluate

    P = run.params
    by_split = _by_split(questions)
    with _eval_engines(run) as engines:  # the original model and every adapter on one loaded policy model
        kwargs = _eval_kwargs(run, sets, engines)
        base, entries = {}, []
        for t in trained:
            for target in P.eval_targets(t.task):
                test_qs = by_split[(target, "test")]
                if not test_qs:
                    raise WowError(f"task {target!r} has no test questions; raise n_questions or the test share.")
                if target not in base:
                    base[target] = evaluate.evaluate_adapter(run.task(target), test_qs, P.policy_model, None, **kwargs)
                    io.write_jsonl(P.layout.eval_answers(target), base[target])
                adapter = t.grid.best["output_dir"]
                after = evaluate.evaluate_adapter(run.task(target), test_qs, P.policy_model, adapter, **kwargs)
                io.write_jsonl(P.layout.eval_answers(target, t.setting, t.task, t.train_seed), after)
                entries.append(
                    {
                        "before_rows": base[target],
                        "after_rows": after,
                        "train_seed": t.train_seed,
                        "setting": t.setting,
                        "task": t.task,
                        "eval_task": target,
                        "pref_type": t.spec.pref_type,
                        "source": t.spec.source,
                        "trainer": t.trainer,
                        "judge": t.spec.judge if schema.needs_judge(t.spec.pref_type) else None,
                        "margin": t.spec.margin,
                        "config": t.grid.best["name"],
                    }
                )
    return entries


def audit_signal(P: RunParams, answers: list[dict]) -> dict:
    """The signal audit of the policy's train answers per aligned task (:mod:`wow.analysis.signal_audit`), before training:
    written to ``signal_audit.json`` with the verdict of :data:`wow.analysis.signal_audit.RULES`; a failed rule is logged as a
    warning (training still runs: the audit informs, the study's rules decide). With ``pairs_from_stated_answers`` it
    audits the answers the pairs come from (those whose text states their extracted value), and every answer under
    ``all_answers``.

    Returns:
        ``{task: {**audit, "passes": bool, "reasons": [...]}}``.
    """
    from wow.analysis import signal_audit

    out = {}
    for name in P.aligned_tasks:
        rows = [a for a in answers if a["task"] == name and a["generator"] == P.policy_model]
        try:  # the answers the pairs are built from
            result = signal_audit.audit(rows, stated_only=P.pairs_from_stated_answers)
            if P.pairs_from_stated_answers:
                result["all_answers"] = signal_audit.audit(rows)
        except WowError as e:
            log.warning("signal audit of %s: %s", name, e)
            continue
        passes, reasons = signal_audit.decide(result)
        out[name] = {**result, "passes": passes, "reasons": reasons}
        if not passes:
            log.warning("signal audit of %s: %s", name, "; ".join(reasons))
    io.write_json(P.layout.signal_audit, out)
    return out


def mechanism_endpoint(P: RunParams, trained: list[Trained], entries: list[dict]) -> pd.DataFrame:
    """What each chosen adapter learnt, read on the original model's test answers of its own task with forward passes
    only (:mod:`wow.align.mechanism`: held-out implicit-reward ranking accuracy, importance-weighted p_wrong with its
    effective sample size, KL to the base); writes ``mechanism.csv``, one row per (task, setting), and every base
    answer's implicit reward per setting to ``mechanism_rewards.csv`` (for intervals that resample questions)."""
    from wow.align import mechanism

    tables, reward_rows = [], []
    for task in dict.fromkeys(t.task for t in trained):
        base = next((e["before_rows"] for e in entries if e["eval_task"] == task), None)
        adapters = {seeded_name(t.setting, t.train_seed): t.grid.best["output_dir"] for t in trained if t.task == task}
        if not base or not adapters:
            continue
        rewards: dict = {}
        table = mechanism.mechanism_table(
            base, adapters, P.policy_model, dtype=P.dtype, batch_size=P.batch_size, rewards_out=rewards
        )
        tables.append(table.assign(task=task)[["task", *mechanism.COLUMNS]])
        reward_rows += [
            {"task": task, "setting": setting, "answer_id": answer_id, "reward": r}
            for setting, by_answer in rewards.items()
            for answer_id, r in by_answer.items()
        ]
    out = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["task", *mechanism.COLUMNS])
    io.write_text(P.layout.mechanism, out.to_csv(index=False))
    columns = ["task", "setting", "answer_id", "reward"]
    io.write_text(P.layout.mechanism_rewards, pd.DataFrame(reward_rows, columns=columns).to_csv(index=False))
    return out


def alignment_table(P: RunParams, entries: list[dict]) -> pd.DataFrame:
    """Before, after and the gains (Δ, paired bootstrap 95% CIs) per setting and evaluation task; writes
    ``alignment.csv``."""
    from wow.analysis import alignment_csv

    table = alignment_csv.build_alignment_table(entries, n_boot=P.n_boot, seed=P.seed, n_bins=P.n_bins)
    alignment_csv.write_alignment_csv(table, P.layout.alignment)
    return table


def align_and_evaluate(run: RunContext, sets: dict, questions: list) -> tuple[pd.DataFrame, dict]:
    """The steps of stage 04 after the preference sets, in one call (for scripts): :func:`train_grids`,
    :func:`evaluate_on_test`, :func:`alignment_table`.

    Returns:
        ``(alignment table, {(task, setting): {"before": rows, "after": rows}})``, plus keys
        ``(task, setting, eval task)`` for evaluations on another task; ``"seed<k>"`` appended for one of several
        training seeds.
    """
    trained = train_grids(run, sets, questions)
    entries = evaluate_on_test(run, trained, sets, questions)
    rows = {
        ((e["task"], e["setting"]) if e["eval_task"] == e["task"] else (e["task"], e["setting"], e["eval_task"]))
        + (() if e.get("train_seed") is None else (f"seed{e['train_seed']}",)): {
            "before": e["before_rows"],
            "after": e["after_rows"],
        }
        for e in entries
    }
    return alignment_table(run.params, entries), rows
