"""``wow run SET --fast-dev-run``: a rehearsal of a parameter set, every stage and figure of it at small sizes.

A rehearsal keeps every setting of the set (tasks, protocol, generators, judges and their modes, preference types
and sources, trainers, grid axes, ``eval_tasks``, the training regime) and shrinks only sizes (:func:`wow.cli.rehearsal_sizes.shrink`): the
fewest questions that give every split of every task a question, 2 samples (more only where a set's score margin
needs them to keep a pair), a few judged pairs, 2 training steps, short replies, 2 evaluation samples, a small
bootstrap and 2 grid points (:func:`wow.cli.rehearsal_sizes.shrink_grid`). It writes its own run folder, ``<run_name>_fast_dev_run``, so it
never mixes with the real run.

What this machine cannot run as the set says is replaced (:func:`substitute`): ``quantization: 4bit`` without CUDA
becomes ``none``, ``dtype: bfloat16`` without native bf16 ``auto``, and a data file the machine lacks the sample of
its format under ``data/samples/`` (data/README.md). With ``stand_ins`` (offline, ``--stand-ins``) local models
become the offline default :data:`wow.backends.models.DEFAULT_MODEL`; API models keep their names and are served by a local
llama.cpp server (:mod:`wow.cli.llama_server`; one per core behind one address, :mod:`wow.cli.server_pool`) that
the rehearsal starts and stops, so the ``openai`` engine, its
retries and the judges' API path run for real (a placeholder ``OPENAI_API_KEY`` is set in this process's
environment only, for the run's length); hub datasets become the sample files; the Vera and OpenAI-embedding
labelers become the offline MiniLM labeler. Nothing is replaced silently: every change is logged, one line each,
and written to ``rehearsal.json`` in the run folder.

Example::

    from wow.cli import rehearsal, run
    plan = rehearsal.plan("parameters/paper/fig3_alignment.yaml", stand_ins=True)
    print("\\n".join(plan.lines()))
    run.run("parameters/paper/fig3_alignment.yaml", fast_dev_run=True, stand_ins=True)  # wow run SET --fast-dev-run
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wow import io, layout, params
from wow.backends import models
from wow.cli.rehearsal_sizes import Change, shrink

log = logging.getLogger(__name__)

#: Where the sample data files live (relative to the repository root, as the sets name their files).
SAMPLES = "data/samples"
#: Per task: the sample files standing in for its data, by task option (data/README.md describes them).
SAMPLE_FILES = {
    "knowledge_crosswords": {"path": "KC.jsonl"},
    "shortest_path": {"path": "NLGraph_shortest_path.json"},
    "max_flow": {"path": "NLGraph_maximum_flow.json"},
    "matching": {"path": "NLGraph_matching.json"},
    "com2": {"path": "COM2.csv"},
    "bio_generation": {"path": "BioGeneration.jsonl", "db": "enwiki-sample.db"},
    "hellaswag": {"data_files": "hellaswag.jsonl"},
    "mmlu_pro": {"data_files": "mmlu_pro.jsonl"},
    "medmcqa": {"data_files": "medmcqa.jsonl"},
    "science": {"data_files": "scibench.jsonl"},
    "chess": {"data_files": "lichess_puzzles.csv"},
}
_FILE_KEYS = ("path", "data_files", "db")
#: Labelers that need a hub model or an API, and the offline one standing in for them.
ONLINE_LABELERS = ("vera", "openai")
OFFLINE_LABELER = "minilm"
#: The stand-in server's port when it is free: a rerun then reaches the same base_url, which the call cache keys on.
SERVER_PORT = 8642
#: What the engines find in OPENAI_API_KEY while a stand-in server answers (never written anywhere).
PLACEHOLDER_KEY = "placeholder-key-of-the-local-stand-in-server"


@dataclass(frozen=True)
class Machine:
    """What a substitution depends on: a CUDA GPU, native bf16, and whether the hub can be reached."""

    cuda: bool
    native_bf16: bool
    offline: bool

    @classmethod
    def here(cls) -> Machine:
        """This machine (:mod:`wow.backends.precision`; offline when ``HF_HUB_OFFLINE`` is set or the hub does not answer)."""
        from wow.backends import precision

        gpu = precision.cuda_bf16()
        native = gpu if gpu is not None else precision.cpu_native_bf16()
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or not models._hub_reachable()
        return cls(cuda=gpu is not None, native_bf16=bool(native), offline=offline)


@dataclass
class Plan:
    """A rehearsal of a set: the values it runs with, what was shrunk and what was substituted."""

    param_file: str
    values: dict
    shrunk: list[Change] = field(default_factory=list)
    substituted: list[Change] = field(default_factory=list)
    stand_ins: bool = False

    @property
    def api_models(self) -> list[str]:
        """The API models the run calls (generators, judges, a task's engine), in order of first mention."""
        return _api_models(self.values)

    @property
    def needs_server(self) -> bool:
        """Whether the run needs the stand-in server (``stand_ins`` and an API model)."""
        return self.stand_ins and bool(self.api_models)

    @property
    def run_dir(self) -> Path:
        """The rehearsal's run folder (``<output_root>/<run_name>_fast_dev_run``)."""
        return params.validate(self.values, source=self.param_file).run_dir

    def lines(self) -> list[str]:
        """Every change, one line each: the shrunk sizes, then the substitutions."""
        return [f"shrunk {c.line()}" for c in self.shrunk] + [f"substituted {c.line()}" for c in self.substituted]

    def to_dict(self) -> dict:
        """What ``rehearsal.json`` records: the set, whether stand-ins ran, every change."""
        return {
            "param_file": self.param_file,
            "stand_ins": self.stand_ins,
            "shrunk": [c.to_dict() for c in self.shrunk],
            "substituted": [c.to_dict() for c in self.substituted],
        }


# -- substitutions -----------------------------------------------------------------------------------------------
def _exists(value: str) -> bool:
    p = Path(value).expanduser()
    return p.exists() if p.is_absolute() else (layout.REPO_ROOT / p).exists() or p.exists()


def _is_hub_id(value: str) -> bool:
    from wow.cli import datacheck

    return datacheck._is_hub_id(value, layout.REPO_ROOT)


def _api_models(values: dict) -> list[str]:
    names = [*values.get("generators", []), *values.get("judges", [])]
    names += [o["engine"] for o in values.get("task_options", {}).values() if isinstance(o.get("engine"), str)]
    return list(dict.fromkeys(n for n in names if models.resolve_kind(n) == "api"))


def _stand_in_model(name: str) -> str:
    """The offline default for a local model, the name itself for the default and for API models."""
    return name if models.resolve_kind(name) == "api" else models.DEFAULT_MODEL


def substitute(values: dict, stand_ins: bool = False, machine: Machine | None = None) -> tuple[dict, list[Change]]:
    """The set's values with what this machine cannot run replaced (see the module docstring).

    Args:
        values: a parameter mapping (not changed).
        stand_ins: also replace models, hub datasets and online labelers (offline rehearsal).
        machine: what the machine has (default: :meth:`Machine.here`).

    Returns:
        ``(values, changes)``.
    """
    out = copy.deepcopy(values)
    P = params.validate(out, source="the parameter set")
    changes: list[Change] = []
    machine = machine or Machine.here()
    if P.quantization == "4bit" and not machine.cuda:
        out["quantization"] = "none"
        changes.append(Change("quantization", "4bit", "none", "4-bit QLoRA needs a CUDA GPU; LoRA here"))
    if P.dtype == "bfloat16" and not machine.native_bf16:
        out["dtype"] = "auto"
        changes.append(Change("dtype", "bfloat16", "auto", "bf16 is not fast here; auto picks float32"))
    changes += _substitute_data(out, stand_ins or machine.offline, stand_ins)
    if stand_ins:
        changes += _substitute_models(out)
    return out, changes


def _substitute_data(out: dict, offline: bool, stand_ins: bool) -> list[Change]:
    """Sample files for missing data files (and for hub datasets when offline); offline labelers for online ones."""
    changes = []
    options = out.setdefault("task_options", {})
    for task in out.get("tasks", []):
        opts = options.get(task, {})
        files = {k: v for k, v in opts.items() if k in _FILE_KEYS and isinstance(v, str)}
        hub = [v for v in files.values() if _is_hub_id(v)]
        missing = [v for v in files.values() if v not in hub and not _exists(v)]
        if files and task in SAMPLE_FILES and (missing or (hub and offline)):
            new = {k: v for k, v in opts.items() if k not in _FILE_KEYS}
            new |= {k: f"{SAMPLES}/{name}" for k, name in SAMPLE_FILES[task].items()}
            why = "; ".join(
                [f"{', '.join(missing)} missing here"] * bool(missing)
                + [f"hub dataset {', '.join(hub)} offline"] * bool(hub and offline)
            )
            changes.append(
                Change(
                    f"task_options.{task}",
                    files,
                    {k: new[k] for k in SAMPLE_FILES[task]},
                    why + ": the sample file of its format",
                )
            )
            options[task] = opts = new
        if stand_ins and opts.get("labeler") in ONLINE_LABELERS:
            changes.append(
                Change(
                    f"task_options.{task}.labeler",
                    opts["labeler"],
                    OFFLINE_LABELER,
                    "needs a hub model or an API; the offline embedding labeler",
                )
            )
            options[task] = {**opts, "labeler": OFFLINE_LABELER}
    return changes


def _substitute_models(out: dict) -> list[Change]:
    """Local models -> the offline default; API models stay, served by the stand-in server (``base_url``)."""
    changes = []
    for key in ("generators", "judges"):
        old = list(out.get(key, params.RunParams.model_fields[key].default))
        new = list(dict.fromkeys(_stand_in_model(m) for m in old))
        if new != old:
            out[key] = new
            changes.append(
                Change(key, old, new, f"local models stand in as the offline default {models.DEFAULT_MODEL}")
            )
    for key in ("policy_model", "pref_judge"):
        old = out.get(key)
        if isinstance(old, str) and _stand_in_model(old) != old:
            out[key] = _stand_in_model(old)
            changes.append(Change(key, old, out[key], "the offline default stands in"))
    for task, opts in out.get("task_options", {}).items():
        engine = opts.get("engine")
        if isinstance(engine, str) and _stand_in_model(engine) != engine:
            opts["engine"] = _stand_in_model(engine)
            changes.append(
                Change(f"task_options.{task}.engine", engine, opts["engine"], "the offline default stands in")
            )
    api = _api_models(out)
    if api:
        served = (
            f"a local llama.cpp server running {models.DEFAULT_MODEL} ({models.GGUF_FILE}), seeds offset by model name"
        )
        changes.append(
            Change("base_url", out.get("base_url"), "(the stand-in server)", f"{', '.join(api)} served by {served}")
        )
        modes = out.get("judge_modes", params.RunParams.model_fields["judge_modes"].default)
        judges = [j for j in out.get("judges", []) if j in api] if "text" in modes else []
        engines = [o["engine"] for o in out.get("task_options", {}).values() if o.get("engine") in api]
        shaped = [f"{', '.join(judges)}'s judge replies (verdict and score lines)"] * bool(judges)
        shaped += [
            f"{', '.join(dict.fromkeys(engines))}'s FActScore replies (a few '- fact' lines; True/False)"
        ] * bool(engines)
        if shaped:
            changes.append(
                Change(
                    "reply formats",
                    "free text",
                    "the lines the prompt asks for",
                    f"the stand-in server shapes {' and '.join(shaped)} with a grammar; the stand-in model picks "
                    "the verdicts, scores and facts",
                )
            )
    return changes


# -- the rehearsal -----------------------------------------------------------------------------------------------
def plan(param_file: str | Path, stand_ins: bool = False, machine: Machine | None = None, **overrides) -> Plan:
    """The rehearsal of a parameter set: its values (``overrides`` replace the file's first), substituted
    (:func:`substitute`) and shrunk (:func:`wow.cli.rehearsal_sizes.shrink`).

    Raises:
        WowError: the set, or the rehearsal's values, are not valid.
    """
    values = {**params.read_set(param_file), **overrides}
    params.validate(values, source=str(param_file))
    values, substituted = substitute(values, stand_ins=stand_ins, machine=machine)
    values, shrunk = shrink(values)
    params.validate(values, source=f"the rehearsal of {param_file}")
    return Plan(str(param_file), values, shrunk, substituted, stand_ins)


@contextlib.contextmanager
def prepared(param_file: str | Path, stand_ins: bool = False, **overrides) -> Iterator[dict]:
    """The rehearsal of a parameter set (:func:`plan`), ready to run: yields the values for :func:`wow.cli.run.run`.

    For the block it holds the folder's write lock (so a second rehearsal of the set is refused before it starts a
    server) and, with ``stand_ins`` and an API model, runs the stand-in servers (:func:`wow.cli.server_pool.serve_pool`) with
    ``base_url`` pointing at it. It logs every change, one line each, and writes them to ``rehearsal.json``.

    Raises:
        WowError: the set or the rehearsal's values are not valid, another process writes the folder, or the
            server does not start.
    """
    from wow.run_folder import lock

    rehearsal = plan(param_file, stand_ins=stand_ins, **overrides)
    run_dir = rehearsal.run_dir
    with lock.hold(run_dir), contextlib.ExitStack() as stack:
        record = rehearsal.to_dict()
        if rehearsal.needs_server:
            url = stack.enter_context(_stand_in_server()) + "/v1"
            rehearsal.values["base_url"] = url
            rehearsal.substituted = [
                Change(c.key, c.old, url, c.why) if c.key == "base_url" else c for c in rehearsal.substituted
            ]
            record = rehearsal.to_dict() | {"server": {"model": models.GGUF_FILE, "base_url": url}}
        log.info(
            "fast-dev-run of %s into %s: %d sizes shrunk, %d substitutions",
            param_file,
            run_dir,
            len(rehearsal.shrunk),
            len(rehearsal.substituted),
        )
        for line in rehearsal.lines():
            log.info("  %s", line)
        io.write_json(layout.Layout(run_dir).rehearsal, record)
        yield rehearsal.values


@contextlib.contextmanager
def _stand_in_server() -> Iterator[str]:
    """The stand-in server's URL for the block, with a placeholder ``OPENAI_API_KEY`` in this process's
    environment (the notebook kernels inherit it); the previous value is restored after."""
    from wow.cli import server_pool

    workers = max(1, min(4, os.cpu_count() or 2))
    saved = os.environ.get("OPENAI_API_KEY")
    with server_pool.serve_pool(workers=workers, n_ctx=4096, stand_in=True, port=SERVER_PORT) as server:
        log.info("stand-in server %s: %s, %d server(s) of one thread each", server.url, models.GGUF_FILE, workers)
        os.environ["OPENAI_API_KEY"] = PLACEHOLDER_KEY
        try:
            yield server.url
        finally:
            if saved is None:
                os.environ.pop("OPENAI_API_KEY", None)
            else:
                os.environ["OPENAI_API_KEY"] = saved
