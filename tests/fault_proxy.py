"""A fault-injecting HTTP proxy for tests of clients of OpenAI-compatible servers (stdlib only).

It forwards requests to a real server and fails a configurable share of them, cycling through the fault kinds:

* ``429``: Too Many Requests with ``Retry-After``;
* ``500``: an internal server error with a JSON error body;
* ``timeout``: holds the connection for ``delay`` seconds, then closes it without answering;
* ``drop``: closes the connection without answering;
* ``malformed``: 200 with a truncated JSON body;
* ``401`` / ``400``: authentication / bad-request errors (not to be retried).

Which arrivals fail is drawn from a seeded RNG in arrival order, so a run is reproducible in how many faults it
sees. Example::

    with FaultProxy("http://127.0.0.1:8000", fail_share=0.3) as proxy:
        client = OpenAI(base_url=proxy.url + "/v1", api_key="x")
        ...
        proxy.injected  # Counter of faults injected
"""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("429", "500", "timeout", "drop", "malformed")


class FaultProxy:
    """A proxy in front of ``upstream`` that fails ``fail_share`` of the requests (see the module docstring).

    Args:
        upstream: base URL of the real server (``http://host:port``).
        fail_share: share of arrivals that fail, in [0, 1].
        faults: fault kinds, used in turn.
        seed: seed of the draw of which arrivals fail.
        delay: seconds a ``timeout`` fault holds the connection.
        retry_after: the ``Retry-After`` header of a 429, in seconds.
        paths: only requests whose path starts with one of these can fail.

    Attributes:
        url: the proxy's base URL.
        arrivals: requests received.
        injected: faults injected, by kind.
        events: ``(time.monotonic(), fault or None)`` per arrival, in order.
    """

    def __init__(
        self,
        upstream: str,
        fail_share: float = 0.25,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        delay: float = 5.0,
        retry_after: str = "1",
        paths: tuple[str, ...] = ("/v1/chat/completions",),
    ):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.fail_share = fail_share
        self.faults = tuple(faults)
        self.delay = delay
        self.retry_after = retry_after
        self.paths = paths
        self.arrivals = 0
        self.injected: Counter = Counter()
        self.events: list[tuple[float, str | None]] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _QuietServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _draw(self, path: str) -> str | None:
        """The fault for this arrival, or None to forward it."""
        with self._lock:
            self.arrivals += 1
            fault = None
            if path.startswith(self.paths) and self._rng.random() < self.fail_share:
                fault = self.faults[sum(self.injected.values()) % len(self.faults)]
                self.injected[fault] += 1
            self.events.append((time.monotonic(), fault))
            return fault

    def _handler(proxy):  # noqa: N805 - the handler class closes over the proxy
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                return

            def do_GET(self):
                self._serve(b"")

            def do_POST(self):
                self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

            def _serve(self, body: bytes):
                fault = proxy._draw(self.path)
                if fault is None:
                    return self._forward(body)
                if fault in ("timeout", "drop"):
                    if fault == "timeout":
                        time.sleep(proxy.delay)
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "malformed":
                    return self._reply(200, b'{"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"ind')
                status = int(fault)
                error = {"error": {"message": f"injected {fault}", "type": "fault_proxy", "code": status}}
                extra = {"Retry-After": proxy.retry_after} if status == 429 else {}
                self._reply(status, json.dumps(error).encode(), extra)

            def _forward(self, body: bytes):
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=600)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                self._reply(resp.status, data, {"Content-Type": resp.getheader("Content-Type", "application/json")})

            def _reply(self, status: int, data: bytes, headers: dict | None = None):
                try:
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its own timeout)
                    self.close_connection = True

        return Handler


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print tracebacks of connections the client dropped."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)
