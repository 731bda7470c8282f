"""Engines of models behind an OpenAI-compatible API: chat completions with logprobs and seeds
(:mod:`wow.backends.api.openai_engine`) and the Batch API (:mod:`wow.backends.api.batch_api`)."""
