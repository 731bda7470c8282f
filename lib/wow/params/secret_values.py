"""Keys and tokens never enter parameters: the names and the value shapes that give a secret away.

Keys come from the environment only (``OPENAI_API_KEY``, ``HF_TOKEN``); a parameter set that holds one would copy it
into ``run.yaml``, the executed notebooks and the report.

Example::

    secret_values.refuse({"task_options": {"x": {"note": "sk-..."}}}, "set.yaml")   # WowError naming the key
"""

from __future__ import annotations

import re

from wow import WowError

#: Option names that hold a secret.
SECRET_NAMES = ("api_key", "openai_api_key", "hf_token", "token", "password", "secret")
#: Values that look like an API key or access token (OpenAI, Hugging Face, bearer tokens).
SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_-]{16,}|hf_[A-Za-z0-9]{20,}|Bearer\s+\S{16,})")


def refuse(values, source: str, where: str = "") -> None:
    """Raise when a parameter value looks like an API key or token (it would land in run.yaml and notebooks)."""
    if isinstance(values, dict):
        for k, v in values.items():
            refuse(v, source, f"{where}.{k}" if where else str(k))
    elif isinstance(values, list | tuple):
        for i, v in enumerate(values):
            refuse(v, source, f"{where}[{i}]")
    elif isinstance(values, str) and SECRET_VALUE.search(values):
        raise WowError(
            f"{source}: {where} looks like an API key or token; keys come from the environment only "
            f"(OPENAI_API_KEY, HF_TOKEN), never from parameters. Remove it from the parameters."
        )
