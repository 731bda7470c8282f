"""The task registry: ``get(name, **options)`` returns a task, ``names()`` lists them.

A task is one module holding one :class:`~wow.tasks.base.Task` subclass; :data:`REGISTRY` maps its name to
``"module:Class"`` and the module is imported on first use (so a task's heavy dependencies, e.g. python-chess or
``datasets``, load only when that task is asked for). Adding a task = one module, one line here, a fixture and a
test (docs/tasks.md).

Example::

    import wow.tasks
    task = wow.tasks.get("shortest_path", n_nodes=(5, 8), edge_prob=0.4, max_weight=9)
    questions = task.questions(100, seed=0)
"""

from __future__ import annotations

import importlib
import inspect

from wow import WowError
from wow.tasks.base import UNPARSED, Extraction, Grade, Question, Task

__all__ = [
    "REGISTRY",
    "UNPARSED",
    "Extraction",
    "Grade",
    "Question",
    "Task",
    "check_options",
    "get",
    "names",
    "task_class",
]

#: name -> "module:Class" (modules relative to ``wow.tasks``).
REGISTRY = {
    "shortest_path": "shortest_path:ShortestPath",
    "max_flow": "max_flow:MaxFlow",
    "matching": "matching:Matching",
    "knowledge_crosswords": "crosswords:KnowledgeCrosswords",
    "chess": "chess_moves:ChessMoves",
    "science": "science:Science",
    "mmlu_pro": "mmlu_pro:MMLUPro",
    "hellaswag": "hellaswag:HellaSwag",
    "medmcqa": "medmcqa:MedMCQA",
    "com2": "com2:COM2",
    "bio_generation": "bio:BioGeneration",
}


def names() -> list[str]:
    """The registered task names, sorted.

    Returns:
        the names accepted by :func:`get`.
    """
    return sorted(REGISTRY)


def task_class(name: str) -> type[Task]:
    """The task class registered under ``name``.

    Args:
        name: a registered name.

    Returns:
        the class (its module is imported now).

    Raises:
        WowError: unknown name, listing the known ones.
    """
    if name not in REGISTRY:
        raise WowError(f"unknown task {name!r}; known tasks: {', '.join(names())}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(f"wow.tasks.{module}"), cls)


def get(name: str, **options) -> Task:
    """A task instance.

    Args:
        name: a registered name (see :func:`names`).
        **options: the task's constructor options (difficulty, data paths, labelers; see docs/tasks.md).

    Returns:
        the task.

    Raises:
        WowError: unknown name (listing the known ones) or an option the task does not take (listing those it does).
    """
    check_options(name, options)
    return task_class(name)(**options)


def check_options(name: str, options: dict) -> None:
    """Check that task ``name`` takes every option in ``options`` (names only; values are checked on construction).

    Raises:
        WowError: unknown task, or an option it does not take (listing those it does).
    """
    params = inspect.signature(task_class(name).__init__).parameters
    accepted = [p for p in params if p != "self" and params[p].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        raise WowError(f"task {name!r} takes no option(s) {unknown}; its options are: {', '.join(accepted) or 'none'}")
