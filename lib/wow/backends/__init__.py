"""LLM engines behind one interface (see :mod:`wow.backends.base`), and the on-disk cache every call goes through.

Example::

    from wow.backends import ChatRequest, get_engine
    engine = get_engine("transformers", "smollm2-135m", cache="outputs/demo/cache.sqlite", batch_size=16)
    engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16)])
"""

from __future__ import annotations

import inspect
from pathlib import Path

from wow import WowError
from wow.backends.base import ChatRequest, Completion, Engine, EngineError
from wow.backends.cache import CachedEngine, CallCache

__all__ = ["CachedEngine", "CallCache", "ChatRequest", "Completion", "Engine", "EngineError", "ENGINES", "get_engine"]

#: Engine names -> "module:class" (imported on use: the openai engine does not need torch, nor the reverse).
ENGINES = {
    "transformers": "wow.backends.transformers_engine:TransformersEngine",
    "openai": "wow.backends.openai_engine:OpenAIEngine",
}


def get_engine(engine: str, model: str, cache: str | Path | None = None, **options) -> Engine:
    """Build an engine, wrapped in the on-disk cache when ``cache`` is given.

    Args:
        engine: ``transformers`` (local model) or ``openai`` (any OpenAI-compatible endpoint).
        model: model name (:func:`wow.models.resolve` for local models; the endpoint's name for ``openai``).
        cache: path of the SQLite cache file; None calls the model every time.
        **options: engine options (see :class:`~wow.backends.transformers_engine.TransformersEngine` and
            :class:`~wow.backends.openai_engine.OpenAIEngine`).

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
    return CachedEngine(built, CallCache(cache)) if cache is not None else built
