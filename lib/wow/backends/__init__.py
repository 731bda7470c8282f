"""LLM engines behind one interface (see :mod:`wow.backends.base`), and the on-disk cache every call goes through.

Example::

    from wow.backends import ChatRequest, get_engine
    engine = get_engine("transformers", "smollm2-135m", cache="outputs/demo/cache.sqlite", batch_size=16)
    engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16)])
"""

from __future__ import annotations

import inspect
import threading
import weakref
from pathlib import Path

from wow import WowError
from wow.backends.base import ChatRequest, Completion, Engine, EngineError
from wow.backends.cache import CachedEngine, CallCache

__all__ = [
    "CachedEngine",
    "CallCache",
    "ChatRequest",
    "Completion",
    "Engine",
    "EngineError",
    "ENGINES",
    "get_engine",
    "process_usage",
]

#: Engine names -> "module:class" (imported on use: the openai engine does not need torch, nor the reverse).
ENGINES = {
    "transformers": "wow.backends.local.transformers_engine:TransformersEngine",
    "openai": "wow.backends.api.openai_engine:OpenAIEngine",
}


def get_engine(engine: str, model: str, cache: str | Path | None = None, **options) -> Engine:
    """Build an engine, wrapped in the on-disk cache when ``cache`` is given.

    Args:
        engine: ``transformers`` (local model) or ``openai`` (any OpenAI-compatible endpoint).
        model: model name (:func:`wow.backends.models.resolve` for local models; the endpoint's name for ``openai``).
        cache: path of the SQLite cache file; None calls the model every time.
        **options: engine options (see :class:`~wow.backends.local.transformers_engine.TransformersEngine` and
            :class:`~wow.backends.api.openai_engine.OpenAIEngine`).

    Returns:
        The engine; with ``cache``, a :class:`CachedEngine` (``.hits``, ``.misses``) around it.

    Raises:
        WowError: unknown engine or option.
    """
    if engine not in ENGINES:
        raise WowError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    module, cls_name = ENGINES[engine].split(":")
    cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise WowError(
            f"unknown option(s) {', '.join(unknown)} for the {engine} engine; it takes {', '.join(accepted)}."
        )
    built = cls(model, **options)
    if cache is None:
        return built
    cached = CachedEngine(built, CallCache(cache))
    _track(cached)
    return cached


# Usage of the cached engines built in this process, per cache file (one per run folder): live ones are read on
# demand; when one is garbage collected its counts move to _RETIRED under (cache file, model) (the finalizer holds the wrapped engine and cache, not the wrapper, so nothing is
# kept alive longer than it would be anyway).
_LIVE: weakref.WeakSet = weakref.WeakSet()
_RETIRED: dict[tuple[str, str], dict] = {}
_USAGE_LOCK = threading.RLock()  # re-entrant: a finalizer may run while the lock is held


def _track(engine: CachedEngine) -> None:
    _LIVE.add(engine)
    weakref.finalize(engine, _retire, engine.engine, engine.cache)


def _retire(inner: Engine, cache: CallCache) -> None:
    with _USAGE_LOCK:
        key = (_cache_key(cache.path), inner.model)
        _add_usage(_RETIRED.setdefault(key, {}), {**inner.usage(), **cache.stats()})


def _cache_key(path) -> str:
    return str(Path(path).resolve())


def _add_usage(total: dict, usage: dict) -> None:
    for key, value in usage.items():
        if key == "cost_usd" and (value is None or total.get(key, 0.0) is None):
            total[key] = None  # an API model without known prices: the total cost is unknown
        elif isinstance(value, int | float) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def process_usage(cache: str | Path | None = None) -> dict[str, dict]:
    """Calls, tokens, cache hits / misses and cost (API models) of the cached engines built in this process on the
    cache file ``cache`` (a run folder's ``cache.sqlite``: one run's usage, though a kernel or a test process has run
    others), or on any cache file (None).

    Returns:
        Per model name, the summed :meth:`~wow.backends.base.Engine.usage` of its engines (adapters included):
        ``calls``, ``prompt_tokens``, ``completion_tokens``, ``cache_hits``, ``cache_misses``, and ``cost_usd``
        for API engines (None when the model's prices are unknown). Tokens count model calls actually made;
        results served from the cache cost nothing.
    """
    wanted = None if cache is None else _cache_key(cache)
    out: dict[str, dict] = {}
    with _USAGE_LOCK:
        for (path, model), usage in _RETIRED.items():
            if wanted in (None, path):
                _add_usage(out.setdefault(model, {}), usage)
        for engine in list(_LIVE):
            if wanted in (None, _cache_key(engine.cache.path)):
                _add_usage(out.setdefault(engine.engine.model, {}), engine.usage())
    return dict(sorted(out.items()))
