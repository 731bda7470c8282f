"""The llama.cpp build runs on this CPU, and a server that dies is diagnosed at once (tests/llama_server.py)."""

import os
import signal

import pytest
from llama_server import ServerDied, decode_check, exit_description, serve
from wow.backends import ChatRequest, EngineError
from wow.backends.openai_engine import OpenAIEngine

pytestmark = pytest.mark.slow


def test_llama_cpp_build_decodes_a_multi_token_prompt():
    ok, message = decode_check()  # a build with this CPU's AMX kernels segfaults here on Intel Xeon machines
    assert ok, message


def test_exit_description_names_the_signal():
    assert exit_description(-11) == "signal SIGSEGV (-11)"
    assert exit_description(3) == "exit status 3"


def test_a_server_that_dies_is_diagnosed_at_once_with_its_signal_and_log():
    with serve() as server:
        engine = OpenAIEngine("smollm2-135m", base_url=server.url + "/v1", timeout=30, backoff=1.0, max_retries=6)
        request = ChatRequest(messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0.0)
        assert engine.generate([request])[0].text
        os.kill(server.proc.pid, signal.SIGSEGV)  # what a crash inside llama_decode looks like from outside
        server.proc.wait(timeout=10)
        with pytest.raises(ServerDied, match=r"exited with signal SIGSEGV \(-11\); the tail of its log"):
            server.check()
        with pytest.raises(EngineError) as failed:
            engine.generate([ChatRequest(messages=[{"role": "user", "content": "Again."}], max_tokens=4)])
        assert "SIGSEGV" in str(failed.value) and "not retried" in str(failed.value)
        # at most the attempts made before the diagnosis took the port over, not the whole retry budget
        assert engine.usage()["retries"] <= 2
