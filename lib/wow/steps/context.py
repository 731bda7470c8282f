"""The run context: one run's parameters, folder, engines and tasks, created once per notebook and passed to the
stage functions of :mod:`wow.steps.data_prep` that call models.

A model is loaded once per run (the first time a stage asks for it) and freed when the context closes; nothing is
kept in module-level state. An engine with an adapter (an aligned model) replaces the previous adapter engine of
the same base model, so a grid of many adapters never holds more than one of them in memory.

Example::

    from wow import params
    from wow.steps import data_prep
    from wow.steps.context import RunContext

    P = params.load("parameters/smoke.yaml")
    with RunContext(P) as run:
        questions = data_prep.make_questions(run)
        answers = data_prep.sample(run, questions)

A notebook creates it in its set-up cell, right after :func:`wow.run_folder.stage_setup.setup` (which takes the run
folder's lock), and closes it in its last cell.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from wow.backends import models
from wow.layout import REPO_ROOT, Layout
from wow.params import RunParams

log = logging.getLogger(__name__)

#: Task options that name a file: relative ones resolve against the repository root when the file exists there.
_FILE_OPTIONS = ("path", "db", "data_files")


@dataclass
class RunContext:
    """One run: its parameters, its folder's paths, and the engines and tasks built for it.

    Attributes:
        params: the validated parameters (:class:`wow.params.RunParams`).
    """

    params: RunParams
    _engines: dict[str, object] = field(default_factory=dict, repr=False)
    _tasks: dict[tuple, object] = field(default_factory=dict, repr=False)

    @property
    def run_dir(self) -> Path:
        """The run folder."""
        return self.params.run_dir

    @property
    def layout(self) -> Layout:
        """The artefact paths of the run folder."""
        return self.params.layout

    def local_engine_options(self) -> dict:
        """The options every local (transformers) engine of the run gets: the run's cache, dtype and batch size.
        :meth:`engine` and stage 04's adapter engines (:class:`wow.align.evaluate.AdapterEngines`) both take them from
        here, so their cache keys agree."""
        P = self.params
        return {"cache": P.cache_path, "dtype": P.dtype, "batch_size": P.batch_size}

    def engine(self, model: str):
        """The engine of ``model`` (an API model gets the ``openai`` engine, a local one ``transformers``), built on
        first use and kept until :meth:`close`. Aligned models (a base with a LoRA adapter) are stage 04's
        :class:`wow.align.evaluate.AdapterEngines`, which take :meth:`local_engine_options` from here."""
        from wow.backends import get_engine

        P = self.params
        if model in self._engines:
            return self._engines[model]
        spec = models.resolve(model)
        if spec.kind == "api":
            engine = get_engine(
                "openai",
                model=spec.source,
                cache=P.cache_path,
                base_url=P.base_url,
                concurrency=P.api_concurrency,
                prefill=P.api_prefill,
                chat_template=P.api_chat_template,
            )
        else:
            engine = get_engine("transformers", model=model, **self.local_engine_options())
        self._engines[model] = engine
        return engine

    def task(self, name: str):
        """The task ``name`` with its options from ``task_options`` (built once per run).

        An ``engine`` option given as a model name (e.g. the FActScore model of ``bio_generation``) is replaced by
        that model's engine. Relative file options (``path``, ``db``, ``data_files``) resolve against the
        repository root when the file exists there, so notebooks find them from any working folder.
        """
        from wow import tasks

        opts = dict(self.params.task_options.get(name, {}))
        for k in _FILE_OPTIONS:
            if isinstance(opts.get(k), str) and not Path(opts[k]).is_absolute() and (REPO_ROOT / opts[k]).exists():
                opts[k] = str(REPO_ROOT / opts[k])
        key = (name, repr(sorted(opts.items())))
        if key not in self._tasks:
            if isinstance(opts.get("engine"), str):
                opts["engine"] = self.engine(opts["engine"])
            self._tasks[key] = tasks.get(name, **opts)
        return self._tasks[key]

    def close(self) -> None:
        """Free every engine of the run (model memory); the context can be used again afterwards."""
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()
        self._tasks.clear()

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
