"""Several llama.cpp servers behind one address: requests in flight at once are answered in parallel.

llama-cpp-python's server answers one request at a time (a global lock around its one model), and one server on two
threads decodes no faster than on one for a 135M model (measured 2026-12-05 on 2 cores of an Intel Xeon with
AVX512-BF16: 34 tokens/s with logprobs on one thread, 21 on two). :func:`serve_pool` starts ``workers`` servers
(:func:`wow.cli.llama_server.serve`, one thread each, ports of their own) and a front on ``port`` that hands each
request to a free server, waiting for one when all are busy. The ``openai`` engine sends ``concurrency`` requests at
once, so two servers on two cores answer about twice as many per second. Each request is answered whole by one server
(its seed, grammar and logprobs as a single server would), so which server answers does not change the reply; the
front forwards status, body and content type unchanged, so a dead server's diagnosis (HTTP 400, never retried)
reaches the client as it would from that server.

Example::

    with serve_pool(workers=2, stand_in=True) as pool:    # pool.url == "http://127.0.0.1:PORT"
        OpenAIEngine("gpt-4o", base_url=pool.url + "/v1", concurrency=4)
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import queue
import threading
from collections.abc import Iterator

from wow import WowError
from wow.cli import llama_server

log = logging.getLogger(__name__)

#: Seconds the front waits for a server's reply (a long judge reply on a busy machine takes a minute or two).
REPLY_TIMEOUT = 900.0


class Pool:
    """The front's ``url`` (without ``/v1``) and ``port``, the servers behind it and how many requests each answered
    (``answered``, by server port)."""

    def __init__(self, url: str, servers: list[llama_server.Server]):
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])
        self.servers = servers
        self.answered = {server.port: 0 for server in servers}

    def check(self) -> None:
        """Raise :class:`wow.cli.llama_server.ServerDied` when any server has exited."""
        for server in self.servers:
            server.check()


def _front(port: int, pool: Pool) -> http.server.ThreadingHTTPServer:
    """An HTTP server on ``port`` that forwards each request to a free server of the pool."""
    free: queue.Queue[llama_server.Server] = queue.Queue()
    for server in pool.servers:
        free.put(server)

    class Forward(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self):
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else None
            server = free.get()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=REPLY_TIMEOUT)
                try:
                    headers = {"content-type": self.headers.get("content-type", "application/json")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    reply = conn.getresponse()
                    status, data = reply.status, reply.read()
                    content_type = reply.getheader("content-type", "application/json")
                finally:
                    conn.close()
            except OSError as e:  # the server died mid-request: its diagnosis, as the server would have answered
                status, content_type = 400, "application/json"
                message = server.death() or f"the llama.cpp server on port {server.port} did not answer: {e}"
                data = json.dumps({"error": {"message": message, "type": "server_died", "code": 400}}).encode()
            finally:
                pool.answered[server.port] += 1
                free.put(server)
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _forward

        def log_message(self, *args):  # quiet
            pass

    front = http.server.ThreadingHTTPServer(("127.0.0.1", port), Forward)
    front.daemon_threads = True
    threading.Thread(target=front.serve_forever, name="llama-server-pool", daemon=True).start()
    return front


@contextlib.contextmanager
def serve_pool(
    workers: int = 2, threads: int = 1, n_ctx: int = 2048, stand_in: bool = False, port: int | None = None
) -> Iterator[Pool]:
    """Run ``workers`` llama.cpp servers and their front for the duration of the ``with`` block; yields the
    :class:`Pool`.

    Args:
        workers: servers (processes), each answering one request at a time.
        threads: llama.cpp threads of each server.
        n_ctx: context length of each server (prompt and reply).
        stand_in: each server adjusts requests as a rehearsal's stand-in (:func:`wow.cli.stand_in.stand_in_request`).
        port: the front's port when it is free (a rerun then reaches the same ``base_url``, which the call cache keys
            on); None or taken: any free port.

    Raises:
        WowError: ``workers`` below 1, llama_cpp not installed, or a server did not come up (its log is quoted).
    """
    if workers < 1:
        raise WowError(f"serve_pool: workers must be at least 1, not {workers}")
    port = llama_server.free_port(port)
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(llama_server.serve(threads=threads, n_ctx=n_ctx, stand_in=stand_in))
            for _ in range(workers)
        ]
        pool = Pool(f"http://127.0.0.1:{port}", servers)
        front = _front(port, pool)
        try:
            log.debug("llama.cpp server pool on port %d: %d server(s), ports %s", port, workers, list(pool.answered))
            yield pool
        finally:
            front.shutdown()
            front.server_close()
