"""Sampling of the models to evaluate: the original model and each aligned one (base model + LoRA adapter) answer
held-out questions, graded.

* :func:`evaluate_model` samples answers of one engine on held-out questions through
  :func:`wow.elicit.sampling.sample_answers`; it refuses questions of another split and any question that appears in a
  preference set (:func:`check_held_out`).
* :func:`evaluate_adapter` runs it on a base model with an adapter (or none: the original model), on an engine of
  its own or one from ``engines``; :func:`make_select_fn` turns it into the grid-search selector of
  :func:`wow.align.grid.grid_search` (mean correctness on the validation questions).
* :class:`AdapterEngines` gives the engines of one base model and any of its adapters on one loaded copy of the
  base model (:class:`wow.backends.models.SharedBase`): evaluating N adapters loads the model once, not N times.

The metrics of the answer rows are in :mod:`wow.analysis.eval_metrics` (:func:`summarize` is also here: the log line of
each evaluation and the selector's score), the alignment table in :mod:`wow.analysis.alignment_csv`.

Example::

    from wow.align import evaluate
    from wow.analysis import eval_metrics
    with evaluate.AdapterEngines("smollm2-135m", cache="outputs/demo/cache.sqlite") as engines:
        before = evaluate.evaluate_adapter(task, test_questions, "smollm2-135m", None, engines=engines,
                                           preference_sets=["outputs/demo/preferences/self_oracle"])
        after = evaluate.evaluate_adapter(task, test_questions, "smollm2-135m", "outputs/demo/models/self_oracle_dpo",
                                          engines=engines)
    eval_metrics.compare_before_after(before, after)["d_p_wrong"]
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from wow import WowError, io, layout
from wow.analysis.eval_metrics import METRICS, summarize
from wow.backends import models

__all__ = [
    "AdapterEngines",
    "adapter_generator",
    "check_held_out",
    "evaluate_adapter",
    "evaluate_model",
    "make_select_fn",
]

log = logging.getLogger(__name__)


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
        **sampling_kwargs: passed on to :func:`wow.elicit.sampling.sample_answers`; ``protocol="paper"`` also sets Bio's
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
    from wow.elicit.sampling import sample_answers
    from wow.protocol import eval_samples, paper_evaluation_rows

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
        base_model: base model name (see :mod:`wow.backends.models`).
        adapter: adapter folder written by :func:`wow.align.training.train`, or None for the original model.
        cache: on-disk cache of model calls.
        engine_options: options of the transformers engine (``batch_size``, ``dtype``, ``device``...).
        engines: ``(model, adapter) -> engine``, e.g. an :class:`AdapterEngines` (every adapter on one loaded base
            model) or :meth:`wow.steps.context.RunContext.engine`: the engine comes from there (and stays open: its owner
            frees it) instead of being built here with ``cache`` and ``engine_options`` (loading the base model)
            and closed after.
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
            ``preference_sets``...); ``engines=AdapterEngines(base_model, cache, ...)`` loads the base model once
            for the whole grid instead of once per adapter.

    Returns:
        ``select(adapter_dir) -> float`` for :func:`wow.align.grid.grid_search`.
    """
    qs = _questions(validation_questions)

    def select(adapter_dir: Path) -> float:
        rows = evaluate_adapter(task, qs, base_model, adapter_dir, cache, split="validation", **kwargs)
        adapter_dir = Path(adapter_dir)
        io.write_jsonl(adapter_dir.parent / layout.VALIDATION_ANSWERS_DIR / f"{adapter_dir.name}.jsonl", rows)
        return summarize(rows)["mean_correctness"]

    return select


class AdapterEngines:
    """``engines(model, adapter) -> engine`` for one base model and any of its adapters, on one loaded copy of it.

    Every engine runs on one :class:`wow.backends.models.SharedBase`: the base model is loaded once (on first use), and each
    adapter is merged into it when its engine runs, the original model (``adapter=None``) being the base with no
    adapter. Results and cache keys are bitwise those of engines that load a model each
    (``get_engine("transformers", model=..., adapter=...)``). Like :class:`wow.steps.context.RunContext`, it keeps the
    original model's engine and the last adapter's (an adapter's engine replaces the previous one's).

    Pass it as ``engines`` to :func:`evaluate_adapter` or :func:`make_select_fn`; the caller owns it and frees the
    model with :meth:`close` (or a ``with`` block).

    Args:
        base_model: the local base model's name (:mod:`wow.backends.models`).
        cache: on-disk cache of model calls (None: none).
        **engine_options: options of the transformers engine (``dtype``, ``batch_size``, ``device``...), the same
            for every adapter.
    """

    def __init__(self, base_model: str, cache: str | os.PathLike | None = None, **engine_options: Any):
        from wow.backends.local.transformers_engine import TransformersEngine

        if "adapter" in engine_options or "base" in engine_options:
            raise WowError("AdapterEngines takes the adapter per call (engines(model, adapter)), not as an option.")
        defaults = inspect.signature(TransformersEngine).parameters
        dtype = engine_options.get("dtype", defaults["dtype"].default)
        self.base_model, self.cache, self.engine_options = base_model, cache, dict(engine_options)
        self.base = models.SharedBase(base_model, dtype=dtype, device=engine_options.get("device"))
        self._engines: dict[str | None, Any] = {}

    def __call__(self, model: str, adapter: str | os.PathLike | None = None):
        """The engine of ``model`` (the base model) with ``adapter`` (None: the original model)."""
        from wow.backends import get_engine

        if model != self.base_model:
            raise WowError(f"these engines run {self.base_model!r}, not {model!r}.")
        key = str(Path(adapter).expanduser().resolve()) if adapter is not None else None
        if key not in self._engines:
            if key is not None:  # one adapter engine at a time
                for old in [k for k in self._engines if k is not None]:
                    self._engines.pop(old).close()
            options = {**self.engine_options, "base": self.base, **({"adapter": key} if key else {})}
            self._engines[key] = get_engine("transformers", model=model, cache=self.cache, **options)
        return self._engines[key]

    @property
    def loads(self) -> int:
        """How many times the base model was loaded."""
        return self.base.loads

    def close(self) -> None:
        """Close the engines and free the base model."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self.base.close()

    def __enter__(self) -> AdapterEngines:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _short(summary: dict) -> str:
    return ", ".join(f"{k} {summary[k]:.3f}" for k in METRICS)
