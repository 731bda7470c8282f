"""Checks ``wow run`` makes before any kernel starts: what would otherwise fail minutes or hours into a run.

Each refusal is one line that names the fix: the data files the set names exist and parse (``wow data check``), the
models the set names as API models have a key (or a ``base_url``), the aligned model is a local one, and the
training regime (``quantization: 4bit``) runs on this machine. None of them loads a model.

Example::

    from wow import params
    from wow.cli import preflight
    preflight.check_before_run(params.load("parameters/paper/fig3_alignment.yaml"))   # WowError naming what is missing
"""

from __future__ import annotations

import logging
import os

from wow import WowError
from wow.backends import models

log = logging.getLogger(__name__)

#: Stages whose work needs the alignment parameters (training and evaluation).
ALIGN_STAGES = ("04",)


def problems(P, stages: list[str] | None = None) -> list[str]:
    """Every reason the run of ``P`` would fail on this machine, one line each ([] when it can start).

    Args:
        P: the run's parameters.
        stages: the two-digit prefixes of the stages that will run (None: all).
    """
    stages = stages or ["01", "02", "03", "04", "05"]
    found = []
    if any(s in ALIGN_STAGES for s in stages):
        found += _training(P)
    if any(s in ("01", "02", "04") for s in stages):
        found += _api_keys(P, stages)
    if "01" in stages:
        found += _data(P)
    return found


def check_before_run(P, stages: list[str] | None = None) -> None:
    """Raise :class:`wow.WowError` with every :func:`problems` line, or return when the run can start."""
    found = problems(P, stages)
    if found:
        raise WowError("the run cannot start here:\n  - " + "\n  - ".join(found))


def estimated_api_cost(P, stages: list[str] | None = None) -> float:
    """The estimated API bill (USD, list prices) of the stages that will run, when the API is OpenAI's (a
    ``base_url`` names another server, whose price this project does not know: 0)."""
    if P.base_url:
        return 0.0
    from wow.cli import estimate

    return sum(line.cost_usd or 0.0 for line in estimate.estimate(P, only=stages))


def _training(P) -> list[str]:
    found = []
    if models.resolve_kind(P.policy_model) == "api":
        found.append(
            f"policy_model {P.policy_model!r} is served by an API and cannot be trained; name a local model "
            f"(e.g. {models.DEFAULT_MODEL!r} or a hub id such as meta-llama/Meta-Llama-3-8B-Instruct)."
        )
    import importlib.util

    for tracker, package in (("tensorboard", "tensorboard"), ("wandb", "wandb")):
        if tracker in P.report_to and importlib.util.find_spec(package) is None:
            found.append(f"report_to names {tracker}, which is not installed: `pip install {package}`, or drop it.")
    if P.quantization == "4bit":
        from wow.backends import precision

        if precision.cuda_bf16() is None:
            found.append(
                "quantization: 4bit needs a CUDA GPU (bitsandbytes) and this machine has none; set quantization: none "
                "(LoRA on the unquantised model), e.g. `wow run SET --set quantization=none`."
            )
    return found


def _api_keys(P, stages: list[str]) -> list[str]:
    names = set()
    if "01" in stages or "04" in stages:
        names |= set(P.generators)
    if "02" in stages:
        names |= set(P.judges)
    api = sorted(n for n in names if models.resolve_kind(n) == "api")
    if api and not P.base_url and not os.environ.get("OPENAI_API_KEY"):
        return [
            f"{', '.join(api)} {'is an API model' if len(api) == 1 else 'are API models'} and OPENAI_API_KEY is not "
            "set; export it (it is read from the environment only), or set base_url to an OpenAI-compatible server."
        ]
    return []


def _data(P) -> list[str]:
    from wow.cli import datacheck

    return [
        f"{r.task}.{r.key} = {r.source}: {r.message} (wow data check)" for r in datacheck.check_data(P) if not r.ok
    ]
