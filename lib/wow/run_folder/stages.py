"""The attempts of a run's stages (``stages.json``): every attempt at every stage, oldest first, so that a failed
attempt never hides a later successful one (docs/artefacts.md). ``wow run`` records them; the report reads them.

Example::

    from wow.run_folder import stages
    stages.latest_attempts("outputs/demo")["01_data_prep"]["status"]   # "done"
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from wow import WowError, io
from wow.layout import Layout

log = logging.getLogger(__name__)


def load_attempts(run_dir: str | Path) -> dict[str, list[dict]]:
    """Every recorded attempt per stage (``stages.json``), oldest first; ``{}`` when there is none or it is damaged."""
    path = Layout(run_dir).stages
    if not path.exists():
        return {}
    try:
        data = io.read_json(path)
    except WowError as e:
        log.warning("%s; its attempts are ignored", e)
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [a for a in v if isinstance(a, dict)] for k, v in data.items() if isinstance(v, list)}


def latest_attempts(run_dir: str | Path) -> dict[str, dict]:
    """The latest attempt of each stage, with ``attempts``: how many there were."""
    return {
        stage: {**attempts[-1], "attempts": len(attempts)}
        for stage, attempts in load_attempts(run_dir).items()
        if attempts
    }


def start_attempt(run_dir: Path, stage: str, machine: dict | None = None) -> int:
    """Record a new attempt at ``stage`` as running, with ``machine``: what its wall time depends on (``wow run``
    passes :func:`wow.backends.precision.run_machine`); returns its index in the stage's list, for end_attempt."""
    data = load_attempts(run_dir)
    attempts = data.setdefault(stage, [])
    attempts.append(
        {
            "status": "running",
            "start": _now(),
            "end": None,
            "seconds": None,
            "pid": os.getpid(),
            "error": None,
            "machine": machine,
        }
    )
    io.write_json(Layout(run_dir).stages, data)
    return len(attempts) - 1


def end_attempt(
    run_dir: Path, stage: str, index: int, status: str, error: str | None, seconds: float | None = None
) -> None:
    """Record how attempt ``index`` of ``stage`` ended: ``done`` or ``failed`` (with the error)."""
    data = load_attempts(run_dir)
    attempts = data.setdefault(stage, [])
    if index >= len(attempts):  # stages.json was removed meanwhile: record the attempt again
        index = start_attempt(run_dir, stage)
        data = load_attempts(run_dir)
        attempts = data[stage]
    attempts[index].update(
        status=status, end=_now(), seconds=None if seconds is None else round(seconds, 2), error=error
    )
    io.write_json(Layout(run_dir).stages, data)


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")
