"""A prefilled assistant turn continued by an OpenAI-compatible server, and next-token choices read from its logprobs.

OpenAI's own API cannot continue an assistant turn. Servers of open models can, in one of two ways
(:data:`PREFILL_MODES`, the ``api_prefill`` parameter):

* ``chat`` (vLLM): the chat request ends with an assistant message holding the prefill and asks for
  ``continue_final_message: true, add_generation_prompt: false`` (vLLM's chat-completion parameters);
* ``completions`` (llama.cpp, vLLM, any server of raw completions): the prompt is rendered here with the chat template
  of ``chat_template`` (a model name of :mod:`wow.backends.models`, a hub id or a local folder), exactly as the local
  engine renders it, plus the prefill, and sent to ``/v1/completions``.

With either, the ``openai`` engine continues prefills (the prefilled answer extraction) and reads next-token choices
(the ``logprob`` judge mode): one greedy token is asked for with the top :data:`TOP_LOGPROBS` candidates, and each
choice's logprob is read from them (:func:`choice_logprobs`).

Example::

    engine = OpenAIEngine("smollm2-135m", base_url="http://127.0.0.1:8080/v1", prefill="completions",
                          chat_template="smollm2-135m")
    engine.choice_logprobs([request], ["1", "2"])   # [{"1": -0.4, "2": -1.2}]
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

from wow import WowError

log = logging.getLogger(__name__)

PREFILL_MODES = ("none", "chat", "completions")
#: vLLM's chat-completion fields that continue the final assistant message.
CHAT_FIELDS = ("continue_final_message", "add_generation_prompt")
#: Candidates asked for per token (OpenAI's most ``top_logprobs``; llama.cpp's server keeps as many).
TOP_LOGPROBS = 20


def check_mode(mode: str, chat_template: str | None) -> None:
    """Refuse an unknown prefill mode, and ``completions`` without a chat template to render prompts with."""
    if mode not in PREFILL_MODES:
        raise WowError(f"prefill mode {mode!r} is not one of {', '.join(PREFILL_MODES)}.")
    if mode == "completions" and not chat_template:
        raise WowError(
            "prefill mode 'completions' renders prompts with a chat template: name the model whose template the "
            "server's model uses (api_chat_template, e.g. smollm2-135m or a hub id such as "
            "meta-llama/Meta-Llama-3-8B-Instruct)."
        )


class PromptRenderer:
    """Renders chat messages (and a prefill) as the local engine does: the tokenizer's chat template with the
    generation prompt, then the prefill. The tokenizer of ``chat_template`` is loaded on first use."""

    def __init__(self, chat_template: str):
        self.chat_template = chat_template
        self._tokenizer = None
        self._lock = threading.Lock()  # the engine's request threads render at once; one of them loads

    def render(self, messages: Sequence[Mapping], prefill: str | None) -> str:
        """The raw prompt of ``messages`` with ``prefill`` appended."""
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = _load_tokenizer(self.chat_template)
        text = self._tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
        )
        return text + (prefill or "")


def _load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from wow.backends import models

    source = name
    try:
        spec = models.resolve(name)
    except WowError:
        spec = None
    if spec is not None and spec.kind == "local":
        source = spec.source
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as e:
        raise WowError(
            f"api_chat_template {name!r}: no tokenizer with a chat template could be loaded ({e}); give a model "
            "name, a hub id or a local folder of the model the server runs."
        ) from None


def chat_messages(messages: Sequence[Mapping], prefill: str | None) -> tuple[list[dict], dict]:
    """The ``chat`` mode's messages (the prefill as a final assistant message) and the body fields that ask the
    server to continue it."""
    out = [dict(m) for m in messages]
    if not prefill:
        return out, {}
    return out + [{"role": "assistant", "content": prefill}], dict(zip(CHAT_FIELDS, (True, False), strict=True))


def read_text_completion(response, sentinel: float) -> tuple[str, list[float], str]:
    """``(text, token logprobs, finish reason)`` of a raw completion; logprobs at ``sentinel`` or below are skipped.

    Raises:
        ValueError: the response has no text (a malformed body: the engine retries it).
    """
    choice = (getattr(response, "choices", None) or [None])[0]
    text = getattr(choice, "text", None)
    if not isinstance(text, str):
        raise ValueError("the completion response has no text")
    lps = getattr(getattr(choice, "logprobs", None), "token_logprobs", None) or []
    return text, [float(lp) for lp in lps if lp is not None and lp > sentinel], choice.finish_reason or "stop"


def read_top_candidates(response) -> dict[str, float]:
    """The first generated token's top candidates ``{token: logprob}`` of a chat or a raw completion.

    Raises:
        ValueError: the response carries no top logprobs.
    """
    choice = (getattr(response, "choices", None) or [None])[0]
    logprobs = getattr(choice, "logprobs", None)
    if getattr(logprobs, "content", None):  # chat: a list of tokens, each with its top_logprobs
        return {t.token: float(t.logprob) for t in logprobs.content[0].top_logprobs or []}
    if getattr(logprobs, "top_logprobs", None):  # raw completion: a dict per token
        return {str(k): float(v) for k, v in (logprobs.top_logprobs[0] or {}).items()}
    raise ValueError("the response carries no top logprobs (does the server return them?)")


def choice_logprobs(top: Mapping[str, float], choices: Sequence[str], where: str = "") -> dict[str, float]:
    """Each choice's logprob among a token's top candidates ``{token text: logprob}``.

    A candidate matches a choice when its text is the choice, or is it with surrounding spaces (``" 1"``; the highest
    such). A choice outside the candidates gets the smallest candidate logprob, an upper bound of its own (logged:
    its probability is then overstated, never invented as zero).

    Raises:
        WowError: the server returned no candidates.
    """
    if not top:
        raise WowError(f"{where}: the server returned no top logprobs; it cannot serve the logprob judge mode.")
    floor = min(top.values())
    out, missing = {}, []
    for choice in choices:
        if choice in top:
            out[choice] = float(top[choice])
            continue
        near = [lp for token, lp in top.items() if token.strip() == choice]
        if near:
            out[choice] = float(max(near))
        else:
            out[choice] = float(floor)
            missing.append(choice)
    if missing:
        log.info("%s: %s outside the top %d candidates; given the smallest, %.2f", where, missing, len(top), floor)
    return out
