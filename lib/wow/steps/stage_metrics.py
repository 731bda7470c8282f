"""A stage's numbers (``metrics.json``) and this process's model calls, tokens, cache hits and cost per model
(``usage.json``), written by every notebook's last step.
"""

from __future__ import annotations

import logging
from pathlib import Path

from wow import io
from wow.params import RunParams

log = logging.getLogger(__name__)


# -- stage 01: questions and answers ------------------------------------------------------------------------------


def write_metrics(P: RunParams, stage: str, values: dict) -> Path:
    """Merge ``values`` under ``stage`` into the run's ``metrics.json``, and this process's model calls, tokens,
    cache hits and API cost per model on the run's cache (:func:`wow.backends.process_usage`) under ``stage`` into
    ``usage.json``."""
    from wow.backends import process_usage

    usage_path = P.layout.usage
    usage = io.read_json(usage_path) if usage_path.exists() else {}
    usage[stage] = process_usage(P.layout.cache)
    io.write_json(usage_path, usage)
    path = P.layout.metrics
    current = io.read_json(path) if path.exists() else {}
    current[stage] = values
    return io.write_json(path, current)
