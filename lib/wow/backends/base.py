"""The one LLM interface every engine implements.

A batch of :class:`ChatRequest` goes in, one :class:`Completion` per request comes out, in order. Engines never
return an empty completion for a failed call: they raise :class:`EngineError` naming the request and the cause.

Example::

    from wow.backends import get_engine
    engine = get_engine("transformers", model="smollm2-135m", cache="outputs/cache.sqlite")
    [c] = engine.generate([ChatRequest(messages=[{"role": "user", "content": "2+3?"}], max_tokens=16)])
    c.text, c.mean_logprob
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from wow import WowError


class EngineError(WowError):
    """A model call failed for good (after retries where retrying makes sense)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat call.

    Attributes:
        messages: chat messages (``role``/``content``).
        max_tokens: most new tokens.
        temperature: 0 means greedy.
        top_p: nucleus sampling.
        seed: run seed; with ``sample_index`` it fixes the sampled answer (same inputs -> same answer).
        sample_index: which of the N samples this is.
        prefill: text the assistant turn starts with (local engines continue it; chat APIs ignore it and the
            caller falls back to a free reply); the completion text excludes it.
        logprobs: return per-token logprobs.
        template_version: version of the prompt template that built ``messages`` (part of the cache key).
        stop: extra stop strings.
    """

    messages: tuple | list
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    sample_index: int = 0
    prefill: str | None = None
    logprobs: bool = True
    template_version: str = ""
    stop: tuple | list | None = None

    def key_fields(self) -> dict:
        """Everything that determines the result (the engine adds its name and model)."""
        d = asdict(self)
        d["messages"] = [dict(m) for m in self.messages]
        d["stop"] = list(self.stop) if self.stop else None
        return d

    def sample_seed(self) -> int:
        """The seed of this one sample: a hash of (seed, sample_index, messages, prefill), below 2**31.

        Engines seed each sample with it, so a sample does not depend on which other requests share its batch
        (local engines) and the N samples of one prompt differ (servers that take a ``seed``).
        """
        blob = json.dumps(
            [self.seed, self.sample_index, [dict(m) for m in self.messages], self.prefill],
            sort_keys=True,
            ensure_ascii=False,
        )
        return int(hashlib.sha256(blob.encode("utf-8")).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class Completion:
    """The result of one chat call.

    Attributes:
        text: generated text (without the prefill).
        token_logprobs: log-probability of each generated token (empty when not requested or unavailable).
        prompt_tokens: tokens in the prompt.
        completion_tokens: tokens generated.
        finish_reason: ``stop`` or ``length``.
        cached: served from the on-disk cache (not stored).
    """

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    cached: bool = False

    @property
    def mean_logprob(self) -> float | None:
        """Mean token log-probability (the paper's confidence source); None without logprobs."""
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def confidence(self) -> float | None:
        """exp(mean token logprob): the geometric-mean token probability, in (0, 1]."""
        m = self.mean_logprob
        return None if m is None else math.exp(m)

    def to_dict(self) -> dict:
        """Serialisable form (for the cache)."""
        d = asdict(self)
        d.pop("cached")
        return d


#: Called as ``on_result(i, completion)`` as soon as the completion of request ``i`` is known.
ResultCallback = Callable[[int, Completion], None]


class Engine:
    """Base class of engines. Subclasses implement ``_generate`` (and optionally ``_choice_logprobs``).

    Attributes:
        name: engine name (``transformers``, ``openai``).
        model: model name as given.
        supports_prefill: the engine continues ``ChatRequest.prefill`` (local engines); chat APIs ignore it.
        streams_results: ``_generate`` takes an ``on_result`` callback and calls it as each result arrives
            (otherwise :meth:`generate` calls it after the whole batch).
    """

    name: str = ""
    supports_prefill: bool = False
    streams_results: bool = False

    def __init__(self, model: str):
        self.model = model

    def plan(self, requests: list[ChatRequest], kind: str = "generate") -> list[list[int]] | None:
        """The batches (lists of request indices, in decoding order) this engine would run ``requests`` in.

        None (the default, as for chat APIs): each result is independent of which other requests are computed with
        it, so results may be computed and stored one at a time. An engine that batches (a local model) returns its
        batches: a result may then depend, in its last bits, on its batch, so the cache computes and stores whole
        batches of the full request list and a resumed run decodes exactly the batches an uninterrupted run does
        (:class:`wow.backends.cache.CachedEngine`). ``kind`` is ``generate`` or ``choice_logprobs``.
        """
        return None

    def generate(
        self,
        requests: list[ChatRequest],
        progress: bool = False,
        on_result: ResultCallback | None = None,
        batches: list[list[int]] | None = None,
    ) -> list[Completion]:
        """Run a batch of chat requests; one completion per request, in order.

        Args:
            requests: the chat requests.
            progress: show a progress bar.
            on_result: called as ``on_result(i, completion)`` when request ``i`` is done (the cache writes each
                result from it, so a killed run keeps everything finished before the kill).
            batches: decode in exactly these batches (a partition of the request indices, each in decoding order,
                as :meth:`plan` gives); only for engines whose :meth:`plan` is not None.

        Returns:
            One :class:`Completion` per request, in order.
        """
        if not requests:
            return []
        requests = list(requests)
        extra = {} if batches is None else {"batches": _checked_batches(batches, len(requests), self.name)}
        if on_result is not None and self.streams_results:
            return self._generate(requests, progress=progress, on_result=on_result, **extra)
        out = self._generate(requests, progress=progress, **extra)
        if on_result is not None:
            for i, c in enumerate(out):
                on_result(i, c)
        return out

    def choice_logprobs(
        self, requests: list[ChatRequest], choices: list[str], batches: list[list[int]] | None = None
    ) -> list[dict[str, float]]:
        """Log-probability of each choice string as the next token after each request's prompt (+ prefill).

        Used by local judges to read a verdict ("1" vs "2", or a score 0-5) from the next-token distribution.
        Engines that cannot do it raise :class:`EngineError`. ``batches`` as in :meth:`generate`.
        """
        if not requests:
            return []
        if batches is None:
            return self._choice_logprobs(list(requests), list(choices))
        batches = _checked_batches(batches, len(requests), self.name)
        return self._choice_logprobs(list(requests), list(choices), batches=batches)

    def _generate(self, requests: list[ChatRequest], progress: bool) -> list[Completion]:
        raise NotImplementedError

    def _choice_logprobs(self, requests: list[ChatRequest], choices: list[str]) -> list[dict[str, float]]:
        raise EngineError(f"the {self.name} engine cannot read next-token distributions; use the free-text judge.")

    def identity(self) -> dict:
        """What, besides the request, determines a result (part of every cache key; never holds a secret)."""
        return {"engine": self.name, "model": self.model}

    def usage(self) -> dict:
        """Token and call counts (and cost where known) of this engine so far."""
        return {}

    def close(self) -> None:
        """Release resources."""


def _checked_batches(batches: list[list[int]], n: int, engine: str) -> list[list[int]]:
    """``batches`` as lists, checked to be a partition of ``range(n)`` (an internal error otherwise)."""
    batches = [list(b) for b in batches]
    if sorted(i for b in batches for i in b) != list(range(n)) or not all(batches):
        raise EngineError(f"internal: the batches given to the {engine} engine are not a partition of its requests.")
    return batches
