"""Evaluation of aligned models: sample held-out questions, grade, and compare before and after alignment.

* :func:`evaluate_model` samples answers of one engine (the original model, or the model with an adapter) on
  held-out questions through :func:`wow.sampling.sample_answers`; it refuses questions of another split and any
  question that appears in a preference set. :func:`evaluate_adapter` builds the engine for a base model and an
  adapter folder; :func:`make_select_fn` turns it into the grid-search selector of :func:`wow.align.grid_search`
  (mean correctness on the validation questions).
* :func:`summarize` gives mean correctness, p_wrong, accuracy and ECE (10 bins, confidence = exp(mean token
  logprob)); :func:`compare` gives before/after values and Δp_wrong = after - before, ΔAcc = after - before,
  -ΔECE = before - after (positive = better for all three), with paired bootstrap CIs that resample questions.
* :func:`reliability` gives reliability-diagram data; :func:`alignment_table` the rows of ``alignment.csv``.

All metric definitions come from :mod:`wow.metrics` (DESIGN.md section 6).

Example::

    from wow import evaluate
    before = evaluate.evaluate_adapter(task, test_questions, "smollm2-135m", None, cache="outputs/demo/cache.sqlite",
                                       preference_sets=["outputs/demo/preferences/self_oracle"])
    after = evaluate.evaluate_adapter(task, test_questions, "smollm2-135m", "outputs/demo/models/self_oracle_dpo",
                                      cache="outputs/demo/cache.sqlite")
    evaluate.compare(before, after)["d_p_wrong"]
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wow import WowError, io, layout

log = logging.getLogger(__name__)

#: metric name -> sign of "after - before" that counts as better (ECE: lower is better).
METRICS = {"mean_correctness": 1, "p_wrong": 1, "accuracy": 1, "ece": -1}
#: delta column per metric (positive = better for all).
DELTA_NAMES = {
    "mean_correctness": "d_mean_correctness",
    "p_wrong": "d_p_wrong",
    "accuracy": "d_acc",
    "ece": "neg_d_ece",
}
META_COLUMNS = ("setting", "task", "eval_task", "pref_type", "source", "trainer", "judge", "margin", "config")


# -- sampling -----------------------------------------------------------------------------------------------------
def _questions(questions: Iterable) -> list:
    from wow.tasks.base import Question

    return [q if isinstance(q, Question) else Question.from_dict(q) for q in questions]


def check_held_out(questions: Iterable, split: str = "test", preference_sets: Iterable = ()) -> None:
    """Raise unless every question is of ``split`` and none appears in any preference set.

    Args:
        questions: ``Question`` objects or ``questions.jsonl`` rows.
        split: the split they must belong to (``test``; ``validation`` for model selection).
        preference_sets: preference sets (``DatasetDict``, ``Dataset`` or saved folders) the model was trained on.

    Raises:
        WowError: naming the offending questions.
    """
    qs = _questions(questions)
    wrong_split = [q.id for q in qs if q.split != split]
    if wrong_split:
        raise WowError(
            f"{len(wrong_split)} question(s) are not of the {split!r} split (e.g. {wrong_split[:3]}); evaluate on "
            f"held-out {split} questions only."
        )
    from wow.preferences import question_ids

    leaked = sorted({q.id for q in qs} & question_ids(list(preference_sets)))
    if leaked:
        raise WowError(
            f"{len(leaked)} evaluation question(s) appear in a preference set (e.g. {leaked[:3]}); the evaluation "
            "would measure training questions. Rebuild the preference set from train-split answers only."
        )


def evaluate_model(
    task,
    questions: Iterable,
    engine,
    *,
    n_samples: int = 10,
    seed: int = 0,
    generator: str | None = None,
    split: str = "test",
    preference_sets: Iterable = (),
    temperature: float = 1.0,
    max_tokens: int = 256,
    **sampling_kwargs: Any,
) -> list[dict]:
    """Sample and grade answers of one model on held-out questions.

    Args:
        task: the :class:`wow.tasks.base.Task` of the questions.
        questions: ``Question`` objects or ``questions.jsonl`` rows, all of ``split``.
        engine: a :class:`wow.backends.base.Engine` (e.g. ``get_engine("transformers", model=..., adapter=...)``).
        n_samples: answers per question (the paper: 10).
        seed: sampling seed (use the same for before and after, so that only the model differs).
        generator: name recorded in the rows (default: the engine's model name).
        split: the split the questions must belong to (``test``; ``validation`` for model selection).
        preference_sets: the preference sets the model was trained on; a question in any of them is an error.
        temperature: sampling temperature (the paper: 1.0).
        max_tokens: most new tokens per answer.
        **sampling_kwargs: passed on to :func:`wow.sampling.sample_answers`; ``protocol="paper"`` also sets Bio's
            evaluation samples to the paper's 3 (:func:`wow.protocol.eval_samples`) and Science's accuracy to the
            paper's 5 % rule (:func:`wow.protocol.paper_evaluation_rows`).

    Returns:
        ``answers.jsonl``-style rows (see docs/artefacts.md).

    Raises:
        WowError: a question of another split, or one seen in training.
    """
    qs = _questions(questions)
    if not qs:
        raise WowError(f"no {split} questions to evaluate on; give the task a {split} split.")
    check_held_out(qs, split, preference_sets)
    from wow.protocol import eval_samples, paper_evaluation_rows
    from wow.sampling import sample_answers

    protocol = sampling_kwargs.get("protocol", "wow")
    n_samples = eval_samples(protocol, task.name, n_samples)
    rows = sample_answers(
        task,
        qs,
        engine,
        generator or engine.model,
        n_samples=n_samples,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        **sampling_kwargs,
    )
    rows = paper_evaluation_rows(protocol, task, rows)
    log.info("evaluated %s on %d %s questions: %s", generator or engine.model, len(qs), split, _short(summarize(rows)))
    return rows


def adapter_generator(base_model: str, adapter: str | os.PathLike | None) -> str:
    """The generator name of a model with an adapter: ``<base>@<setting>/<config>`` (no ``|``; ids use it)."""
    if adapter is None:
        return base_model
    p = Path(adapter)
    return f"{base_model}@{p.parent.name}/{p.name}"


def evaluate_adapter(
    task,
    questions: Iterable,
    base_model: str,
    adapter: str | os.PathLike | None,
    cache: str | os.PathLike | None = None,
    engine_options: dict | None = None,
    engines: Callable | None = None,
    **kwargs: Any,
) -> list[dict]:
    """:func:`evaluate_model` on the local ``transformers`` engine, with an adapter (or the original model).

    Args:
        task: the task.
        questions: held-out questions.
        base_model: base model name (see :mod:`wow.models`).
        adapter: adapter folder written by :func:`wow.align.train`, or None for the original model.
        cache: on-disk cache of model calls.
        engine_options: options of the transformers engine (``batch_size``, ``dtype``, ``device``...).
        engines: ``(model, adapter) -> engine``, e.g. :meth:`wow.context.RunContext.engine`: the engine comes from
            there (and stays open: its owner frees it) instead of being built here with ``cache`` and
            ``engine_options`` and closed after.
        **kwargs: passed to :func:`evaluate_model` (``n_samples``, ``seed``, ``split``, ``preference_sets``...).

    Returns:
        The graded answer rows.
    """
    kwargs.setdefault("generator", adapter_generator(base_model, adapter))
    if engines is not None:
        return evaluate_model(task, questions, engines(base_model, adapter), **kwargs)
    from wow.backends import get_engine

    engine_kwargs: dict[str, Any] = {**(engine_options or {}), "model": base_model}
    if cache is not None:
        engine_kwargs["cache"] = cache
    if adapter is not None:
        engine_kwargs["adapter"] = str(adapter)
    engine = get_engine("transformers", **engine_kwargs)
    try:
        return evaluate_model(task, questions, engine, **kwargs)
    finally:
        engine.close()


def make_select_fn(
    task,
    validation_questions: Iterable,
    base_model: str,
    cache: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Callable[[Path], float]:
    """A grid-search selector: mean correctness of answers sampled with an adapter on validation questions.

    The answers are also written to ``<setting folder>/validation_answers/<config>.jsonl`` (beside the adapter, not
    inside it: engines hash the adapter folder for their cache keys).

    Args:
        task: the task.
        validation_questions: questions of the ``validation`` split.
        base_model: base model name.
        cache: on-disk cache of model calls.
        **kwargs: passed to :func:`evaluate_adapter` (``engines`` or ``engine_options``, ``n_samples``, ``seed``,
            ``preference_sets``...).

    Returns:
        ``select(adapter_dir) -> float`` for :func:`wow.align.grid_search`.
    """
    qs = _questions(validation_questions)

    def select(adapter_dir: Path) -> float:
        rows = evaluate_adapter(task, qs, base_model, adapter_dir, cache, split="validation", **kwargs)
        adapter_dir = Path(adapter_dir)
        io.write_jsonl(adapter_dir.parent / layout.VALIDATION_ANSWERS_DIR / f"{adapter_dir.name}.jsonl", rows)
        return summarize(rows)["mean_correctness"]

    return select


# -- metrics ------------------------------------------------------------------------------------------------------
def _confidence(rows: Sequence[dict]) -> np.ndarray:
    """exp(mean token logprob) per row; NaN where the logprob is missing."""
    return np.array(
        [math.exp(r["mean_logprob"]) if r.get("mean_logprob") is not None else np.nan for r in rows], dtype=float
    )


def _metric(name: str, correctness: np.ndarray, is_correct: np.ndarray, confidence: np.ndarray) -> float:
    """One metric of :data:`METRICS` (ECE over the answers that have a confidence; NaN if none)."""
    from wow import metrics

    if name == "mean_correctness":
        return metrics.mean_correctness(correctness)
    if name == "p_wrong":
        return metrics.p_wrong(correctness, is_correct) if not is_correct.all() else float("nan")
    if name == "accuracy":
        return metrics.accuracy(is_correct)
    has_conf = np.isfinite(confidence)
    return metrics.ece(confidence[has_conf], is_correct[has_conf]) if has_conf.any() else float("nan")


def _arrays(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not rows:
        raise WowError("no answer rows to summarise; evaluate_model returned nothing.")
    correctness = np.array([np.nan if r.get("correctness") is None else r["correctness"] for r in rows], dtype=float)
    is_correct = np.array([bool(r["is_correct"]) for r in rows], dtype=bool)
    return correctness, is_correct, _confidence(rows)


def summarize(rows: Sequence[dict]) -> dict:
    """Evaluation metrics of graded answer rows.

    Args:
        rows: ``answers.jsonl``-style rows (``correctness``, ``is_correct``, ``mean_logprob``, ``extracted``).

    Returns:
        ``n`` (answers), ``n_questions``, ``mean_correctness``, ``p_wrong`` (mean correctness of wrong answers,
        unparsed at 0), ``accuracy``, ``ece`` (over the answers with a logprob; NaN if none), ``n_confidence``
        (answers with a logprob) and ``parse_rate``.
    """
    correctness, is_correct, confidence = _arrays(rows)
    n_conf = int(np.isfinite(confidence).sum())
    if n_conf < len(rows):
        log.warning("ECE over %d of %d answers: the others have no logprobs", n_conf, len(rows))
    return {
        "n": len(rows),
        "n_questions": len({r["question_id"] for r in rows}),
        **{name: _metric(name, correctness, is_correct, confidence) for name in METRICS},
        "n_confidence": n_conf,
        "parse_rate": float(np.mean([r.get("extracted") is not None for r in rows])),
    }


def compare(
    before_rows: Sequence[dict],
    after_rows: Sequence[dict],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Before/after metrics and their differences, with paired bootstrap CIs over questions.

    Only questions answered by both models are compared. Every bootstrap resample draws questions with replacement
    and takes all answers of a drawn question from both models, so the CIs of the differences are paired.

    Args:
        before_rows: answers of the original model.
        after_rows: answers of the aligned model (same questions, ideally the same seed).
        n_boot: bootstrap resamples (0: no CIs).
        seed: bootstrap seed.
        alpha: 1 - CI level.

    Returns:
        ``n_questions, n_before, n_after``; for each metric ``m`` of :data:`METRICS`: ``before_m``, ``after_m``
        (each with ``_ci_low`` / ``_ci_high``); the differences ``d_mean_correctness``, ``d_p_wrong``
        (after - before), ``d_acc`` (after - before) and ``neg_d_ece`` (before - after), each with CIs. Positive
        differences are improvements.
    """
    from wow import metrics

    common = {r["question_id"] for r in before_rows} & {r["question_id"] for r in after_rows}
    if not common:
        raise WowError("the before and after answers share no question; evaluate both on the same test questions.")
    before = [r for r in before_rows if r["question_id"] in common]
    after = [r for r in after_rows if r["question_id"] in common]
    if len(before) < len(before_rows) or len(after) < len(after_rows):
        log.warning("compare: only the %d questions answered by both models are compared", len(common))
    rows = before + after
    correctness, is_correct, confidence = _arrays(rows)
    is_after = np.array([False] * len(before) + [True] * len(after))
    groups = [r["question_id"] for r in rows]

    def value(which: str, name: str) -> Callable[..., float]:
        def fn(c, ok, conf, aft):
            sel = aft if which == "after" else ~aft
            if not sel.any():
                return float("nan")
            return _metric(name, c[sel], ok[sel], conf[sel])

        return fn

    def delta(name: str) -> Callable[..., float]:
        def fn(c, ok, conf, aft):
            b, a = value("before", name)(c, ok, conf, aft), value("after", name)(c, ok, conf, aft)
            return METRICS[name] * (a - b)

        return fn

    arrays = (correctness, is_correct, confidence, is_after)
    out: dict[str, Any] = {"n_questions": len(common), "n_before": len(before), "n_after": len(after)}
    for name in METRICS:
        stats = {
            f"before_{name}": value("before", name),
            f"after_{name}": value("after", name),
            DELTA_NAMES[name]: delta(name),
        }
        for key, fn in stats.items():
            out[key] = fn(*arrays)
            if n_boot > 0:
                lo, hi = metrics.bootstrap_ci(fn, *arrays, n_boot=n_boot, seed=seed, alpha=alpha, groups=groups)
            else:
                lo = hi = None
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = lo, hi
    return out


def reliability(rows_by_model: Mapping[str, Sequence[dict]], n_bins: int = 10):
    """Reliability-diagram data per model (answers without a logprob are left out).

    Args:
        rows_by_model: e.g. ``{"before": before_rows, "after": after_rows}``.
        n_bins: equal-width confidence bins.

    Returns:
        ``pandas.DataFrame``: ``model, bin, lo, hi, n, mean_conf, accuracy`` (see
        :func:`wow.metrics.reliability_bins`).
    """
    import pandas as pd

    from wow import metrics

    tables = []
    for model, rows in rows_by_model.items():
        _, is_correct, confidence = _arrays(rows)
        ok = np.isfinite(confidence)
        table = metrics.reliability_bins(confidence[ok], is_correct[ok], n_bins)
        table.insert(0, "model", model)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


# -- alignment.csv ------------------------------------------------------------------------------------------------
def alignment_row(
    before_rows: Sequence[dict],
    after_rows: Sequence[dict],
    *,
    setting: str,
    task: str,
    pref_type: str,
    source: str,
    trainer: str,
    judge: str | None = None,
    margin: float | None = None,
    config: str | dict | None = None,
    eval_task: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """One row of ``alignment.csv``: the setting's description plus :func:`compare` of before and after.

    Args:
        before_rows: answers of the original model on the test questions.
        after_rows: answers of the aligned model (the grid's best configuration) on the same questions.
        setting: setting name (:func:`wow.align.setting_name`).
        task: task name.
        pref_type: preference type.
        source: ``self`` or ``mix``.
        trainer: trainer name.
        judge: judge of ``direct``/``score`` types.
        margin: margin of ``score`` types.
        config: the chosen configuration (its folder name, or a dict written as JSON).
        eval_task: the task whose test questions were answered (None: ``task`` itself).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        A flat dict.
    """
    meta = {
        "setting": setting,
        "task": task,
        "eval_task": eval_task or task,
        "pref_type": pref_type,
        "source": source,
        "trainer": trainer,
        "judge": judge,
        "margin": margin,
        "config": json.dumps(config, sort_keys=True) if isinstance(config, dict) else config,
    }
    return meta | compare(before_rows, after_rows, n_boot=n_boot, seed=seed)


def alignment_table(entries: Iterable[Mapping], n_boot: int = 1000, seed: int = 0):
    """Rows of ``alignment.csv``, one per aligned setting.

    Args:
        entries: mappings with the keys of :func:`alignment_row`: ``before_rows``, ``after_rows`` and the setting
            description (``setting, task, pref_type, source, trainer``, optional ``judge, margin, config``).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.

    Returns:
        ``pandas.DataFrame``, description columns first.
    """
    import pandas as pd

    rows = []
    for e in entries:
        meta = {k: e.get(k) for k in META_COLUMNS}
        rows.append(alignment_row(e["before_rows"], e["after_rows"], **meta, n_boot=n_boot, seed=seed))
    return pd.DataFrame(rows)


def write_alignment_csv(table, path: str | os.PathLike) -> Path:
    """Write the alignment table as CSV, atomically.

    Args:
        table: the ``DataFrame`` of :func:`alignment_table`.
        path: e.g. ``outputs/<run>/alignment.csv``.

    Returns:
        The path.
    """
    return io.write_text(path, table.to_csv(index=False))


def _short(summary: dict) -> str:
    return ", ".join(f"{k} {summary[k]:.3f}" for k in METRICS)
