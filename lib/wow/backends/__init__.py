"""LLM engines behind one interface (see :mod:`wow.backends.base`), and the on-disk cache every call goes through."""

from wow.backends.base import ChatRequest, Completion, Engine, EngineError

__all__ = ["ChatRequest", "Completion", "Engine", "EngineError"]
