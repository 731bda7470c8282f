"""A real llama.cpp OpenAI-compatible server serving the offline default model's GGUF file, for tests.

``serve()`` starts ``python -m llama_cpp.server`` on a free port of 127.0.0.1 (``--logits_all true`` so logprobs
work), waits until ``/v1/models`` answers, yields the base URL and stops the server. ``llama-cpp-python[server]``
is a declared dev dependency (requirements-dev.txt): when it is missing the tests fail, they do not skip.

Example::

    with serve() as base_url:      # "http://127.0.0.1:PORT"
        OpenAIEngine("smollm2-135m", base_url=base_url + "/v1")
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT = 120.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(threads: int = 1) -> Iterator[str]:
    """Run the server for the duration of the ``with`` block; yields its base URL (without ``/v1``).

    Raises:
        RuntimeError: llama_cpp is not installed, or the server did not come up (its log is quoted).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError(
            "llama-cpp-python[server] is not installed; it is a dev dependency: run `make install-dev` "
            "(pip install -r requirements-dev.txt)."
        )
    from wow import models

    gguf = models._gguf_dir() / models.GGUF_FILE
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
        "--logits_all", "true", "--n_threads", str(threads), "--n_ctx", "2048", "--verbose", "false",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.unlink(missing_ok=True)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama.cpp server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                if json.load(resp).get("data"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama.cpp server did not answer within {STARTUP_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}")
