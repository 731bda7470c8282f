"""The whole run's compute per stage, from its call cache: every call computed in the run, whichever invocation
computed it.

``usage.json`` holds what each stage's *last* process spent, so a rerun served from the cache (or a resumed one)
hides what the earlier invocations computed. The cache (``cache.sqlite``) keeps every computed call with the time it
was stored; the attempts of ``stages.json`` give each stage's time windows, so each stored call is attributed to
the stage attempt during which it was stored. Only reads: the cache is opened read-only
(:func:`wow.backends.cache.read_calls`).

Example::

    per_stage = stage_compute(Path("outputs/demo"), load_attempts("outputs/demo"))
    per_stage["02_elicitation"]["models"]["smollm2-135m"]["calls"]   # 4800, also after a warm rerun
"""

from __future__ import annotations

import bisect
import datetime as dt
import time
from pathlib import Path

from wow.backends import models
from wow.backends.cache import read_calls
from wow.layout import Layout

#: The stage of the calls stored outside every recorded attempt (a notebook run by hand, a run before stages.json).
NO_ATTEMPT = "(outside any recorded attempt)"
#: ``start`` and ``end`` of an attempt are written to the second, rounded down: a call stored in the last second of
#: an attempt may come after its recorded end.
END_SLACK_S = 1.0


def call_cost(engine: str, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """The cost in USD of API calls at the model's prices in :data:`wow.backends.models.API_MODELS` (None: prices unknown).

    Calls of the ``openai`` engine only (local engines cost nothing: the caller shows no cost for them). The Batch
    API's half price and prices given to the engine by hand are not known from the cache: these are list prices.
    """
    api_model = model.split(":", 1)[1] if model.startswith("openai:") else model
    prices = models.API_MODELS.get(api_model) if engine == "openai" else None
    if prices is None:
        return None
    return models.token_cost(prices, prompt_tokens, completion_tokens)


def _timestamp(value) -> float | None:
    """Unix time of an attempt's ISO 8601 ``start`` / ``end``; None when missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp.timestamp() if stamp.tzinfo else stamp.astimezone().timestamp()


def attempt_windows(attempts: dict[str, list[dict]], now: float | None = None) -> list[dict]:
    """Every attempt with a start, oldest first, with the time window of its calls.

    Returns:
        Dicts of ``stage, start, end, recorded_end, seconds`` (unix times): an attempt without an ``end`` (killed,
        or running) lasts until the next attempt of any stage starts, or until ``now``; ``seconds`` is its recorded
        wall time (None when it has none).
    """
    now = time.time() if now is None else now
    windows = []
    for stage, items in attempts.items():
        for attempt in items:
            start = _timestamp(attempt.get("start"))
            if start is None:
                continue
            seconds = attempt.get("seconds")
            windows.append(
                {
                    "stage": stage,
                    "start": start,
                    "recorded_end": _timestamp(attempt.get("end")),
                    "seconds": float(seconds) if isinstance(seconds, int | float) else None,
                }
            )
    windows.sort(key=lambda w: w["start"])
    for i, w in enumerate(windows):
        following = windows[i + 1]["start"] if i + 1 < len(windows) else now
        w["end"] = w["recorded_end"] + END_SLACK_S if w["recorded_end"] is not None else max(following, w["start"])
    return windows


def _attempt_seconds(window: dict, last_call: float) -> float:
    """Wall time of an attempt that computed calls: its recorded time, else start to end, else start to last call."""
    if window["seconds"] is not None:
        return window["seconds"]
    if window["recorded_end"] is not None:
        return max(window["recorded_end"] - window["start"], 0.0)
    return max(last_call - window["start"], 0.0)


def stage_compute(run_dir: str | Path, attempts: dict[str, list[dict]], now: float | None = None) -> dict:
    """Per stage, the calls of the run's cache stored during its attempts, per model, and the seconds they took.

    Args:
        run_dir: the run folder (its ``cache.sqlite``; a missing cache has no calls).
        attempts: every attempt per stage (:func:`wow.run_folder.stages.load_attempts`).
        now: the end of an unfinished last attempt (default: now).

    Returns:
        ``{stage: {"seconds": ..., "models": {model: usage}}}``: ``seconds`` the summed wall time of the stage's
        attempts that computed at least one call (a killed one: from its start to its last stored call); ``usage``
        ``calls`` (every kind), ``scored`` (``choice_logprobs`` calls, whose tokens the cache does not store),
        ``prompt_tokens``, ``completion_tokens`` and, for API models, ``cost_usd`` (None when prices are unknown).
        Calls stored outside every attempt count under :data:`NO_ATTEMPT`.

    Raises:
        WowError: the cache file is not a wow cache or cannot be read.
    """
    windows = attempt_windows(attempts, now)
    starts = [w["start"] for w in windows]
    out: dict[str, dict] = {}
    last_call: dict[int, float] = {}
    for call in read_calls(Layout(run_dir).cache):
        t = call["created"]
        i = bisect.bisect_right(starts, t) - 1  # the latest attempt started by then
        if i >= 0 and t <= windows[i]["end"]:
            stage = windows[i]["stage"]
            last_call[i] = max(last_call.get(i, t), t)
        else:
            stage = NO_ATTEMPT
        entry = out.setdefault(stage, {"seconds": 0.0, "models": {}})
        u = entry["models"].setdefault(
            call["model"], {"calls": 0, "scored": 0, "prompt_tokens": 0, "completion_tokens": 0}
        )
        u["calls"] += 1
        if call["kind"] == "generate":
            u["prompt_tokens"] += call["prompt_tokens"]
            u["completion_tokens"] += call["completion_tokens"]
            if call["engine"] == "openai":
                cost = call_cost(call["engine"], call["model"], call["prompt_tokens"], call["completion_tokens"])
                u["cost_usd"] = (
                    None if cost is None or u.get("cost_usd", 0.0) is None else u.get("cost_usd", 0.0) + cost
                )
        else:
            u["scored"] += 1
    for i, t in last_call.items():
        out[windows[i]["stage"]]["seconds"] += _attempt_seconds(windows[i], t)
    return out
