"""The ``openai`` engine: any OpenAI-compatible chat endpoint (OpenAI, a vLLM server, a llama.cpp server).

* One HTTP request per sample (llama.cpp ignores ``n``), sent by a thread pool of ``concurrency`` workers; each
  carries ``seed = request.sample_seed()``, so the N samples of one prompt differ and a seeded server repeats them.
* Bounded retries with exponential backoff and jitter on 429, 408/409, 5xx, timeouts, dropped connections and
  malformed bodies, honouring ``Retry-After``; then an :class:`EngineError` naming the request (model, sample index,
  start of the last message) and the cause. Authentication, permission and bad-request errors are not retried. A
  failed call never becomes an empty answer: results that did arrive are handed on (and cached) before the error.
* Logprobs where the server gives them (``logprobs=True, top_logprobs=1``); tokens at the -9999 sentinel are
  skipped, as in the paper's code.
* ``prefill`` is not a chat-API feature: it is ignored (``supports_prefill`` is False; the sampling code then asks
  for a free extraction turn), unless the server continues assistant turns (``prefill="chat"`` for vLLM,
  ``"completions"`` for a raw prompt on ``/v1/completions``, :mod:`wow.backends.api.continuation`); then prefills are
  continued and :meth:`~wow.backends.base.Engine.choice_logprobs` reads next-token choices (the ``logprob`` judge).
* Token and cost accounting (:meth:`OpenAIEngine.usage`); prices from ``prices`` or :data:`wow.backends.models.API_MODELS`.
* ``batch=True`` sends everything through the Batch API instead (:mod:`wow.backends.api.batch_api`).

The API key comes from ``api_key`` or ``$OPENAI_API_KEY``; it is never logged and never part of a cache key.

Example::

    engine = OpenAIEngine("gpt-4o-mini", concurrency=8)
    engine = OpenAIEngine("smollm2-135m", base_url="http://127.0.0.1:8000/v1")  # a local llama.cpp server
"""

from __future__ import annotations

import dataclasses
import email.utils
import logging
import os
import random
import threading
import time
from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed

from wow import WowError
from wow.backends import models
from wow.backends.api import continuation
from wow.backends.base import ChatRequest, Completion, Engine, EngineError, ResultCallback
from wow.progress import bar as progress_bar

log = logging.getLogger(__name__)

#: OpenAI's logprob for tokens it has none for.
LOGPROB_SENTINEL = -9999.0
RETRY_STATUS = {408, 409, 429}


class MalformedResponse(Exception):
    """The server answered, but not with a usable chat completion."""


class OpenAIEngine(Engine):
    """Chat completions from an OpenAI-compatible endpoint.

    Args:
        model: the model name the endpoint expects (an ``openai:`` prefix is dropped).
        base_url: endpoint, e.g. ``http://127.0.0.1:8000/v1``; default: OpenAI.
        api_key: default ``$OPENAI_API_KEY`` (a local server without one gets a placeholder).
        concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt.
        timeout: seconds per attempt.
        prices: USD per 1M (input, output) tokens; default from :data:`wow.backends.models.API_MODELS` when known.
        backoff: first backoff in seconds (doubled per retry, with jitter), capped at ``max_backoff``.
        max_backoff: longest wait between attempts, ``Retry-After`` included.
        extra_body: extra JSON fields for every request (e.g. ``{"repeat_penalty": 1.0}`` for llama.cpp); part of
            the cache key.
        token_limit_param: ``max_tokens`` or ``max_completion_tokens`` (newer OpenAI models).
        batch: use the Batch API (half price, hours of latency) instead of live calls.
        poll_interval: seconds between Batch API status polls.
        batch_dir: folder for Batch API input files and the id of each submitted batch (resumed on rerun).
        client: an OpenAI client object to use instead of building one (tests pass a fake here).
        prefill: how the server continues a prefilled assistant turn: ``none`` (OpenAI: it cannot), ``chat``
            (vLLM's ``continue_final_message``) or ``completions`` (a raw prompt rendered with ``chat_template``).
        chat_template: the model whose tokenizer's chat template renders ``completions`` prompts (the served model).
    """

    name = "openai"
    supports_prefill = False
    streams_results = True

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 4,
        max_retries: int = 6,
        timeout: float = 120.0,
        prices: tuple[float, float] | None = None,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        extra_body: dict | None = None,
        token_limit_param: str = "max_tokens",
        batch: bool = False,
        poll_interval: float = 30.0,
        batch_dir: str | None = None,
        client=None,
        prefill: str = "none",
        chat_template: str | None = None,
    ):
        super().__init__(model)
        self.api_model = model.split(":", 1)[1] if model.startswith("openai:") else model
        if concurrency < 1 or max_retries < 0:
            raise WowError(f"concurrency ({concurrency}) must be >= 1 and max_retries ({max_retries}) >= 0.")
        if token_limit_param not in ("max_tokens", "max_completion_tokens"):
            raise WowError(f"token_limit_param {token_limit_param!r} is not max_tokens or max_completion_tokens.")
        self.base_url = base_url
        self.concurrency = int(concurrency)
        self.max_retries = int(max_retries)
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.extra_body = dict(extra_body) if extra_body else None
        self.token_limit_param = token_limit_param
        self.batch = bool(batch)
        self.poll_interval = float(poll_interval)
        self.batch_dir = batch_dir
        self.prices = tuple(prices) if prices else models.API_MODELS.get(self.api_model)
        continuation.check_mode(prefill, chat_template)
        self.prefill, self.chat_template = prefill, chat_template
        self.supports_prefill = prefill != "none"
        self._renderer = continuation.PromptRenderer(chat_template) if prefill == "completions" else None
        self.client = client if client is not None else self._make_client(api_key)
        self._lock = threading.Lock()
        self._jitter = random.Random()
        self._usage = {"calls": 0, "retries": 0, "failures": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self._cost = 0.0

    def _make_client(self, api_key: str | None):
        import openai

        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url is None:
                raise WowError("the openai engine needs an API key: set OPENAI_API_KEY in the environment.")
            key = "no-key"  # local servers (llama.cpp, vLLM) accept any key
        return openai.OpenAI(api_key=key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

    def identity(self) -> dict:
        """Engine, model, endpoint and extra body fields (never the API key)."""
        return {
            "engine": self.name,
            "model": self.api_model,
            "base_url": self.base_url or "https://api.openai.com/v1",
            "extra_body": self.extra_body,
            **({"prefill": self.prefill, "chat_template": self.chat_template} if self.supports_prefill else {}),
        }

    # -- requests -------------------------------------------------------------------------------------------
    def body(self, request: ChatRequest) -> dict:
        """The JSON body of one chat completion request (``extra_body`` merged in)."""
        return {**self._standard_body(request), **(self.extra_body or {})}

    def _standard_body(self, request: ChatRequest, top: bool = False) -> dict:
        """The body of a chat request, or of a raw completion for a prefill under ``prefill="completions"``; ``top``:
        one greedy token with its top candidates (:meth:`choice_logprobs`)."""
        prefill = request.prefill if self.supports_prefill else None
        if top:
            request = dataclasses.replace(request, max_tokens=1, temperature=0.0, logprobs=False)
        body = {
            "model": self.api_model,
            self.token_limit_param: request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.sample_seed(),
        }
        if self.prefill == "completions" and (prefill or top):
            body["prompt"] = self._renderer.render(request.messages, prefill)
            body["max_tokens"] = body.pop(self.token_limit_param)
            if request.logprobs or top:
                body["logprobs"] = continuation.TOP_LOGPROBS if top else 1
        else:
            body["messages"], asks = continuation.chat_messages(request.messages, prefill)
            body.update(asks)
            if request.logprobs or top:
                body.update(logprobs=True, top_logprobs=continuation.TOP_LOGPROBS if top else 1)
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    def describe(self, index: int, request: ChatRequest) -> str:
        """How an error names a request: model, sample index, start of the last message."""
        last = str(request.messages[-1].get("content", "")) if request.messages else ""
        last = " ".join(last.split())
        return (
            f"{self.name} request #{index} (model {self.api_model!r}, sample_index {request.sample_index}, "
            f"last message {last[:60]!r}{'...' if len(last) > 60 else ''})"
        )

    def completion(self, response, request: ChatRequest, price_factor: float = 1.0) -> Completion:
        """Turn a chat completion (object or dict) into a :class:`Completion`, counting its tokens and cost.

        Raises:
            MalformedResponse: no choices, no message text, or a body that is not a chat completion.
        """
        if isinstance(response, dict):
            from openai.types.chat import ChatCompletion

            try:
                response = ChatCompletion.model_validate(response)
            except Exception as e:
                raise MalformedResponse(f"not a chat completion ({type(e).__name__})") from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise MalformedResponse(f"no choices in the response body ({str(response)[:80]!r})")
        choice = choices[0]
        text = getattr(getattr(choice, "message", None), "content", None)
        if not isinstance(text, str):
            raise MalformedResponse("the response has no message text")
        lps = []
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        if request.logprobs and content:
            lps = [float(t.logprob) for t in content if t.logprob is not None and t.logprob > LOGPROB_SENTINEL]
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0) or len(lps)
        self._count(prompt_tokens, completion_tokens, price_factor)
        return Completion(text, lps, prompt_tokens, completion_tokens, choice.finish_reason or "stop")

    def _text_completion(self, response, request: ChatRequest) -> Completion:
        """A raw completion (``/v1/completions``, a continued prefill) as a :class:`Completion`, counted."""
        text, lps, finish = continuation.read_text_completion(response, LOGPROB_SENTINEL)
        completion = Completion(text, lps if request.logprobs else [], 0, 0, finish)
        return self._counted(response, completion, len(completion.token_logprobs))

    def _top_candidates(self, response, request: ChatRequest) -> dict[str, float]:
        """The first generated token's top candidates ``{token: logprob}``, counted."""
        top = continuation.read_top_candidates(response)
        self._counted(response, None, 1)
        return top

    def _counted(self, response, completion: Completion | None, fallback_tokens: int):
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0) or fallback_tokens
        self._count(prompt_tokens, completion_tokens, 1.0)
        if completion is None:
            return None
        return dataclasses.replace(completion, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _choice_logprobs(self, requests: list[ChatRequest], choices: list[str]) -> list[dict[str, float]]:
        if not self.supports_prefill:
            raise EngineError(
                f"the {self.name} engine of {self.api_model!r} reads next-token choices only from a server that "
                "continues a prefilled turn: set api_prefill (chat for vLLM, completions for llama.cpp)."
            )
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._call, i, r, True) for i, r in enumerate(requests)]
            tops = [f.result() for f in futures]
        return [
            continuation.choice_logprobs(t, choices, self.describe(i, r))
            for i, (t, r) in enumerate(zip(tops, requests, strict=True))
        ]

    def _count(self, prompt_tokens: int, completion_tokens: int, price_factor: float) -> None:
        with self._lock:
            self._usage["calls"] += 1
            self._usage["prompt_tokens"] += prompt_tokens
            self._usage["completion_tokens"] += completion_tokens
            if self.prices:
                self._cost += price_factor * models.token_cost(self.prices, prompt_tokens, completion_tokens)

    # -- live calls -----------------------------------------------------------------------------------------
    def _generate(
        self, requests: list[ChatRequest], progress: bool = False, on_result: ResultCallback | None = None
    ) -> list[Completion]:
        if self.batch:
            from wow.backends.api.batch_api import run_batch

            return run_batch(self, requests, on_result)
        results: list[Completion | None] = [None] * len(requests)
        errors: list[tuple[int, EngineError]] = []
        bar = progress_bar(len(requests), "call", self.api_model, disable=not progress)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._call, i, r): i for i, r in enumerate(requests)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    completion = fut.result()
                except CancelledError:
                    continue
                except EngineError as e:
                    if not errors:  # stop starting new calls; the ones in flight still finish and are kept
                        for other in futures:
                            other.cancel()
                    errors.append((i, e))
                    continue
                results[i] = completion
                if on_result is not None:
                    on_result(i, completion)
                bar.update(1)
        bar.close()
        if errors:
            i, first = min(errors, key=lambda x: x[0])
            done = sum(r is not None for r in results)
            raise EngineError(f"{first} ({len(errors)} request(s) failed; {done} of {len(requests)} completed.)")
        return results

    def _send(self, body: dict):
        """Send one body: a raw completion (``prompt``) or a chat completion, fields the SDK does not know (and
        ``extra_body``) as extra JSON."""
        body = dict(body)
        extra = {**(self.extra_body or {}), **{k: body.pop(k) for k in continuation.CHAT_FIELDS if k in body}}
        create = self.client.completions.create if "prompt" in body else self.client.chat.completions.create
        return create(**body, extra_body=extra or None)

    def _call(self, index: int, request: ChatRequest, top: bool = False):
        """One request with bounded retries (see the module docstring): its :class:`Completion`, or with ``top`` the
        next token's candidates ``{token: logprob}``."""
        import openai

        body = self._standard_body(request, top=top)
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                wait = self._wait(attempt - 1, last)
                log.warning(
                    "%s: %s; retry %d/%d in %.1fs",
                    self.describe(index, request),
                    _why(last),
                    attempt,
                    self.max_retries,
                    wait,
                )
                with self._lock:
                    self._usage["retries"] += 1
                time.sleep(wait)
            try:
                response = self._send(body)
                if top:
                    return self._top_candidates(response, request)
                if "prompt" in body:
                    return self._text_completion(response, request)
                return self.completion(response, request)
            except openai.APIStatusError as e:
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    self._fail()
                    raise EngineError(f"{self.describe(index, request)} failed: {_why(e)} (not retried).") from None
                last = e
            except (openai.APIConnectionError, openai.APIResponseValidationError, MalformedResponse, ValueError) as e:
                last = e  # ValueError covers a body that is not JSON at all
        self._fail()
        raise EngineError(
            f"{self.describe(index, request)} failed after {self.max_retries + 1} attempts; last error: {_why(last)}."
        )

    def _fail(self) -> None:
        with self._lock:
            self._usage["failures"] += 1

    def _wait(self, retry: int, error: Exception | None) -> float:
        """Seconds before the next attempt: the server's Retry-After, else exponential backoff with jitter."""
        asked = _retry_after(error)
        if asked is not None:
            return min(max(asked, 0.0), self.max_backoff)
        return min(self.backoff * 2**retry * self._jitter.uniform(0.5, 1.5), self.max_backoff)

    def usage(self) -> dict:
        """Calls, retries, failures, tokens and cost in USD (None when the model's prices are unknown)."""
        with self._lock:
            return {**self._usage, "cost_usd": self._cost if self.prices else None}

    def close(self) -> None:
        """Close the HTTP client."""
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


def _retry_after(error: Exception | None) -> float | None:
    """The wait a 429/503 asks for (``retry-after-ms`` or ``Retry-After`` in seconds or as an HTTP date)."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    if not headers:
        return None
    if headers.get("retry-after-ms"):
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp() - time.time()
    except (TypeError, ValueError):
        return None


def _why(error: Exception | None) -> str:
    if error is None:
        return "unknown error"
    status = getattr(error, "status_code", None)
    text = " ".join(str(error).split())[:200]
    return f"{type(error).__name__}" + (f" {status}" if status else "") + (f": {text}" if text else "")
