"""The tests' llama.cpp server: :mod:`wow.cli.llama_server` (a real OpenAI-compatible server serving the offline default
model's GGUF file), under the names the tests import.

``python tests/llama_server.py --check`` decodes a multi-token prompt in a child process and reports a crash of the
llama.cpp build (the Makefile runs it right after building llama-cpp-python).

Example::

    with serve() as server:      # server.url == "http://127.0.0.1:PORT"
        OpenAIEngine("smollm2-135m", base_url=server.url + "/v1")
"""

from __future__ import annotations

import sys

from wow.cli.llama_server import Server, ServerDied, decode_check, exit_description, free_port, gguf_path, serve

__all__ = ["Server", "ServerDied", "decode_check", "exit_description", "free_port", "gguf_path", "serve"]

if __name__ == "__main__":
    if sys.argv[1:] != ["--check"]:
        sys.exit("usage: python tests/llama_server.py --check")
    ok, message = decode_check()
    print(message, file=sys.stdout if ok else sys.stderr)
    sys.exit(0 if ok else 1)
