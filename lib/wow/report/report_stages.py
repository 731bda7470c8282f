"""The stages of a run folder as a report shows them: status, wall time, model calls, tokens, compute and cost.

Each stage's status and wall time come from its latest attempt in ``stages.json`` (for runs written before it,
papermill's metadata in the executed notebook and ``timings.json``). The model calls, tokens, compute time and API
cost per stage and model are the whole run's, from its call cache (:mod:`wow.report.report_compute`: every call computed
in the run, whichever invocation computed it); the cache hits are those of each stage's last invocation, from
``usage.json``, which also stands in for the cache of a run folder without one. Only reads the run folder, so it
works while a run holds the folder's lock.

Example::

    missing = []
    stages, usage_rows, total, note = stage_rows(Path("outputs/demo"), missing)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import quote

from wow import WowError, io, layout
from wow.report import report_format as fmt
from wow.report.report_compute import stage_compute
from wow.run_folder.stages import latest_attempts, load_attempts

log = logging.getLogger(__name__)


def _stage_names(run_dir: Path) -> list[str]:
    try:
        names = [nb.stem for nb in layout.notebooks()]
    except WowError:
        names = []
    extra = sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb") if p.stem not in names)
    return names + extra


def _notebook_status(path: Path) -> tuple[str, str]:
    """(status, css class) of an executed notebook, from papermill's metadata."""
    try:
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, ValueError) as e:
        return f"unreadable notebook ({e.__class__.__name__})", "failed"
    if meta.get("exception"):
        return "failed (see the notebook)", "failed"
    if meta and not meta.get("end_time"):
        return "running, or stopped before its end", "other"
    return "done", "done"


def _attempt_status(latest: dict, holder: dict | None) -> tuple[str, str]:
    """(status, css class) of a stage from its latest attempt in ``stages.json``."""
    status = latest.get("status")
    n = latest.get("attempts", 1)
    which = f" (attempt {n} of {n})" if n > 1 else ""
    if status == "done":
        return f"done{which}", "done"
    if status == "failed":
        error = fmt.text(latest.get("error") or "see the notebook")
        return f"failed{which}: {error if len(error) <= 300 else error[:297] + '...'}", "failed"
    if status == "running":
        if holder and holder.get("pid") == latest.get("pid"):
            return f"running{which} (pid {latest.get('pid')}, since {latest.get('start')})", "other"
        return f"stopped before its end{which}: pid {latest.get('pid')} is gone (killed?); rerun to resume", "failed"
    return f"unknown status {status!r}{which}", "other"


CACHE_NOTE = (
    "From the run's call cache (cache.sqlite): every call computed in the run, whichever invocation computed it; "
    "compute time: the wall time of the attempts that computed them; choice-logprob calls store no tokens; "
    "cache hits: the last invocation's."
)
USAGE_NOTE = (
    "No call cache (cache.sqlite) in the run folder: calls, tokens, cost and cache hits are those of each stage's "
    "last invocation (usage.json); calls served from the cache count as cache hits, not calls."
)


def stage_rows(run_dir: Path, missing: list[str]) -> tuple[list[dict], list[dict], dict, str]:
    """Status, wall time, model calls, tokens, compute time and API cost of each stage, per model, and their totals.

    Calls, tokens, compute time and cost are the whole run's, from the call cache (:mod:`wow.report.report_compute`);
    without a cache, those of each stage's last invocation in ``usage.json``. Cache hits are always the last
    invocation's.

    Args:
        run_dir: the run folder.
        missing: what the run lacks; a stage not run, failed or still running is appended.

    Returns:
        ``(stages, usage_rows, total, note)``: one dict per stage (``name, status, status_class, time, compute,
        calls, tokens, cost, hits``, ``notebook``: whether ``notebooks/<name>.ipynb`` exists, ``ipynb``: its path
        relative to the run folder or None, ``html``: None, set by a renderer that renders the notebook), one per
        stage and model (``stage, model, calls, scored, prompt, completion, cost, hits, misses``), the totals
        (``time, compute, calls, tokens, cost, hits``) and one line on where the numbers come from. Every value is
        text (:mod:`wow.report.report_format`).
    """
    from wow.run_folder import lock

    run = layout.Layout(run_dir)
    timings = read_json_or_empty(run.timings)
    usage = read_json_or_empty(run.usage)
    every_attempt = load_attempts(run_dir)
    attempts = latest_attempts(run_dir)
    holder = lock.holder(run_dir) if any(a.get("status") == "running" for a in attempts.values()) else None
    compute, note, from_cache = _whole_run(run_dir, every_attempt, usage, missing)
    stages, usage_rows = [], []
    used = _params_used(run_dir)
    sums = {"time": 0.0, "compute": 0.0, "calls": 0, "tokens": 0, "hits": 0, "cost": None, "cost_unknown": False}
    names = _stage_names(run_dir)
    for name in names + sorted(set(compute) - set(names)):
        nb = run.notebook(name)
        ipynb = None
        latest = attempts.get(name)
        if name not in names:  # calls of a stage no notebook lists, or stored outside every attempt
            status, status_class = "", "other"
        elif nb.exists():
            status, status_class = _attempt_status(latest, holder) if latest else _notebook_status(nb)
            ipynb = f"notebooks/{quote(name)}.ipynb"
            if status_class != "done":
                missing.append(f"{name}: {status}")
        elif latest:
            status, status_class = _attempt_status(latest, holder)
            missing.append(f"{name}: {status} (no executed notebook in notebooks/)")
        else:
            status, status_class = "not run (no executed notebook)", "other"
            missing.append(f"{name}: not run (no executed notebook in notebooks/)")
        seconds = latest.get("seconds") if latest else timings.get(name)  # the latest attempt's, not an older one's
        seconds = seconds if isinstance(seconds, int | float) else None
        stage = compute.get(name)
        row = _usage_sums(name, stage, usage.get(name), usage_rows, from_cache)
        stages.append(
            {
                "name": name,
                "status": status,
                "status_class": status_class,
                "time": fmt.wall_time(seconds),
                **row["text"],
                "params": used.get(name, "not recorded"),
                "notebook": ipynb is not None,
                "ipynb": ipynb,
                "html": None,
            }
        )
        sums["time"] += seconds or 0.0
        sums["compute"] += (stage or {}).get("seconds") or 0.0
        for key in ("calls", "tokens", "hits"):
            sums[key] += row[key]
        if row["cost"] is not None:
            sums["cost"] = (sums["cost"] or 0.0) + row["cost"]
        sums["cost_unknown"] |= row["cost_unknown"]
    known = from_cache or bool(compute) or bool(usage)
    total = {
        "time": fmt.wall_time(sums["time"]) if timings or attempts else "",
        "compute": fmt.wall_time(sums["compute"]) if compute else "",
        "calls": fmt.count(sums["calls"]) if known else "",
        "tokens": fmt.count(sums["tokens"]) if known else "",
        "hits": fmt.count(sums["hits"]) if usage else "",
        "cost": fmt.cost(sums["cost"], sums["cost"] is not None or sums["cost_unknown"], sums["cost_unknown"])
        if known
        else "",
    }
    return stages, usage_rows, total, note


def machine_note(run_dir: Path) -> str:
    """Where the stages' latest attempts ran, one sentence: the machine and thread settings each recorded
    (:func:`wow.backends.precision.describe_machine`), with the stages of each where they differ; empty where no
    attempt recorded one (a run folder from before the record)."""
    from wow.backends import precision

    where: dict[str, list[str]] = {}
    for stage, attempt in sorted(latest_attempts(run_dir).items()):
        record = attempt.get("machine")
        if isinstance(record, dict):
            where.setdefault(precision.describe_machine(record), []).append(stage[:2])
    if not where:
        return ""
    if len(where) == 1:
        return f"Wall times measured on {next(iter(where))}."
    parts = [f"{', '.join(stages)} on {line}" for line, stages in where.items()]
    return f"Wall times measured on more than one machine: {'; '.join(parts)}."


def _whole_run(run_dir: Path, attempts: dict, usage: dict, missing: list[str]) -> tuple[dict, str, bool]:
    """``(per stage, note, from_cache)``: the whole run's compute per stage from the cache, or, without a readable
    cache, each stage's last invocation from ``usage.json``."""
    if layout.Layout(run_dir).cache.exists():
        try:
            return stage_compute(run_dir, attempts), CACHE_NOTE, True
        except WowError as e:
            log.warning("report: %s", e)
            missing.append(f"cache.sqlite could not be read ({e}): the cost table shows usage.json's numbers")
    last = {
        stage: {"seconds": None, "models": {m: u for m, u in per_model.items() if isinstance(u, dict)}}
        for stage, per_model in usage.items()
        if isinstance(per_model, dict)
    }
    return {k: v for k, v in last.items() if v["models"]}, USAGE_NOTE, False


def _usage_sums(name: str, stage: dict | None, last: dict | None, usage_rows: list[dict], from_cache: bool) -> dict:
    """A stage's calls, tokens, cost and cache hits (numbers and their text); appends its rows per model."""
    models = (stage or {}).get("models", {})
    last = last if isinstance(last, dict) else {}
    calls = tokens = hits = 0
    cost, cost_unknown = None, False
    for model in sorted(set(models) | {m for m, u in last.items() if isinstance(u, dict)}):
        u, hit = models.get(model, {}), last.get(model) if isinstance(last.get(model), dict) else {}
        calls += fmt.as_int(u.get("calls"))
        tokens += fmt.as_int(u.get("prompt_tokens")) + fmt.as_int(u.get("completion_tokens"))
        hits += fmt.as_int(hit.get("cache_hits"))
        if "cost_usd" in u:
            if u["cost_usd"] is None:
                cost_unknown = True
            else:
                cost = (cost or 0.0) + float(u["cost_usd"])
        usage_rows.append(
            {
                "stage": name,
                "model": model,
                "calls": fmt.count(u.get("calls", 0)),
                "scored": fmt.count(u.get("scored")),
                "prompt": fmt.count(u.get("prompt_tokens", 0)),
                "completion": fmt.count(u.get("completion_tokens", 0)),
                "cost": fmt.cost(u.get("cost_usd"), "cost_usd" in u, u.get("cost_usd") is None),
                "hits": fmt.count(hit.get("cache_hits")),
                "misses": fmt.count(hit.get("cache_misses")),
            }
        )
    recorded = from_cache or stage is not None or bool(last)
    seconds = (stage or {}).get("seconds")
    text = {
        "compute": fmt.wall_time(seconds) if seconds else "",
        "calls": fmt.count(calls) if recorded else "not recorded",
        "tokens": fmt.count(tokens) if recorded else "not recorded",
        "cost": fmt.cost(cost, cost is not None or cost_unknown, cost_unknown) if recorded else "not recorded",
        "hits": fmt.count(hits) if last else "",
    }
    return {"calls": calls, "tokens": tokens, "hits": hits, "cost": cost, "cost_unknown": cost_unknown, "text": text}


def _params_used(run_dir: Path) -> dict[str, str]:
    """Per stage, the parameters it used as the report shows them: their hash, and whether they equal ``run.yaml``
    (``stage_params.json``, written by each stage's set-up cell; :mod:`wow.run_folder`)."""
    from wow import run_folder

    try:
        records = run_folder.stage_records(run_dir)
        run = run_folder.read_run_yaml(run_dir)
    except (WowError, ValueError, OSError) as e:
        log.warning("stage parameters unreadable in %s: %s", run_dir, e)
        return {}
    out = {}
    for stage, rec in records.items():
        same = run is not None and rec.get("sha256") == run_folder.params_sha(run)
        out[stage] = f"{rec.get('sha256', '?')} ({'= run.yaml' if same else 'differs from run.yaml'})"
    return out


def read_json_or_empty(path: Path) -> dict:
    """A JSON object file; ``{}`` when it is missing, damaged (logged) or no object."""
    if not path.exists():
        return {}
    try:
        value = io.read_json(path)
    except Exception as e:  # noqa: BLE001 - a damaged file is treated as missing, and logged
        log.warning("report: cannot read %s: %s", path, e)
        return {}
    return value if isinstance(value, dict) else {}
