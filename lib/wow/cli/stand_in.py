"""How a rehearsal's stand-in server answers API requests: the seed offset per requested model, and replies shaped to
the form judge and FActScore prompts ask for.

A 135M stand-in model otherwise rarely ends its reply in the asked form (a rehearsal would build no judged preference
set) and writes fact lists until its token budget ends. The model still picks the verdicts, scores and facts; only
the form is fixed, with a llama.cpp (GBNF) grammar. :class:`StandIn` wraps the server app of
:mod:`wow.cli.llama_server` (``serve(stand_in=True)``).
"""

from __future__ import annotations

import json
import re
import zlib

_SCORE_DIGIT = "[0-5]"
_K_LINES = re.compile(r"end with (\d+) lines")
#: FActScore's replies: at most this many atomic facts per sentence, each one short line.
_MAX_FACTS = 3
_FACT = '"- " [^\\n]{1,80} "\\n"'


def reply_grammar(messages: list[dict]) -> str | None:
    """The llama.cpp (GBNF) grammar of the reply a judge or FActScore prompt asks for, or None for any other prompt.

    A pairwise prompt (``Preferred output: 1`` or ``2``) gets ``Preferred output: `` and one digit; a score prompt
    for one answer ``Score: `` and a digit 0-5; a score prompt for k answers k lines ``Score for answer i: n``, or
    ``Score: n`` when the prompt asks for that form (``protocol: paper``). FActScore's atomic-fact prompt
    (:data:`wow.tasks.factscore.ATOMIC_PROMPT`) gets one to three short ``- fact`` lines, its verification prompt
    ``True`` or ``False``.
    """
    from wow.tasks import factscore

    users = [m for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    if not users:
        return None
    text = users[-1]["content"]
    if text.startswith(factscore.ATOMIC_PROMPT.split("{sentence}")[0]):
        return f"root ::= {_FACT}" + f" ({_FACT})?" * (_MAX_FACTS - 1)
    if text.endswith(factscore.VERIFY_PROMPT.rsplit("{fact}", 1)[1]):
        return 'root ::= "True" | "False"'
    if '"Preferred output: 1"' in text and '"Preferred output: 2"' in text:
        return 'root ::= "Preferred output: " [12]'
    k_lines = _K_LINES.search(text)
    if k_lines and '"Score for answer i: n"' in text:
        lines = [f'"Score for answer {i}: " {_SCORE_DIGIT}' for i in range(1, int(k_lines.group(1)) + 1)]
    elif k_lines and '"Score: n"' in text:
        lines = [f'"Score: " {_SCORE_DIGIT}'] * int(k_lines.group(1))
    elif 'one last line that reads exactly "Score: n"' in text:
        lines = [f'"Score: " {_SCORE_DIGIT}']
    else:
        return None
    return "root ::= " + ' "\\n" '.join(lines)


class StandIn:
    """ASGI middleware: every chat completion request is adjusted by :func:`stand_in_request`; other requests pass
    unchanged."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/chat/completions"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        body = _stand_in_body(body)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def stand_in_request(request: dict) -> dict:
    """A chat completion request as the stand-in model answers it: the seed offset by the requested model's name
    (answers differ between the API models one stand-in serves, and stay reproducible), and the grammar of the reply a
    judge or FActScore prompt asks for (:func:`reply_grammar`) unless the request names one."""
    out = dict(request)
    if isinstance(out.get("seed"), int) and isinstance(out.get("model"), str):
        out["seed"] = (out["seed"] + zlib.crc32(out["model"].encode())) % 2**31
    if not out.get("grammar") and isinstance(out.get("messages"), list):
        grammar = reply_grammar(out["messages"])
        if grammar:
            out["grammar"] = grammar
    return out


def _stand_in_body(body: bytes) -> bytes:
    try:
        request = json.loads(body)
    except ValueError:
        return body  # the server answers a malformed body itself
    return json.dumps(stand_in_request(request)).encode() if isinstance(request, dict) else body
