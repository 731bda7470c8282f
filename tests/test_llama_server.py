"""The llama.cpp build runs on this CPU, and a server that dies is diagnosed at once (tests/llama_server.py)."""

import ast
import inspect
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from llama_server import ServerDied, decode_check, exit_description, serve
from wow.backends import ChatRequest, EngineError
from wow.backends.api.openai_engine import OpenAIEngine
from wow.cli.llama_server import MAX_TOP_LOGPROBS, top_candidates
from wow.cli.server_pool import serve_pool

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


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


def _make_plan(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    return subprocess.run(
        ["make", "-n", "--no-print-directory", "install-dev", *args], cwd=ROOT, env=env, capture_output=True, text=True
    ).stdout


def test_makefile_builds_llama_cpp_portably_and_rebuilds_when_its_options_change():
    plan = _make_plan("LLAMA_STAMP=.venv/.llama-not-built-yet")
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF' in plan and "--no-cache-dir" in plan  # no wheel cached from another build
    assert "tests/llama_server.py --check" in plan
    changed = _make_plan("LLAMA_CMAKE_ARGS=-DGGML_NATIVE=OFF -DGGML_AVX512=ON")
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON"' in changed  # another stamp name: a rebuild
    # new runtime packages (requirements.txt or pyproject.toml changed) are reinstalled; llama.cpp is not rebuilt
    assert "CMAKE_ARGS" not in _make_plan("-W", ".venv/.runtime")


def test_top_candidates_are_the_first_of_the_full_sort_ties_included():
    rng = np.random.default_rng(0)
    for row in (rng.normal(size=49152).astype(np.float32), np.round(rng.normal(size=5000), 1).tolist()):
        # how llama-cpp-python ranks a token's candidates: (logprob, token id) pairs
        full = sorted(zip(row, range(len(row)), strict=True), reverse=True)
        assert top_candidates(zip(row, range(len(row)), strict=True), reverse=True) == full[:MAX_TOP_LOGPROBS]
    assert top_candidates([3, 1, 2]) == [1, 2, 3]  # any other sort is a sort
    assert top_candidates(["bb", "a"], key=len, reverse=True) == ["bb", "a"]


def test_llama_cpp_sorts_only_logprob_candidates_and_keeps_at_most_top_logprobs_of_them():
    """The server gives llama_cpp.llama :func:`top_candidates` as its ``sorted``: that is exact only while every
    ``sorted`` call there ranks ``zip(logprobs, range(n))`` in descending order and the result is only read as
    ``[:logprobs]`` (a llama-cpp-python upgrade that changes this fails here)."""
    import llama_cpp.llama

    tree = ast.parse(inspect.getsource(llama_cpp.llama))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "sorted"]
    assert len(calls) == 3
    for call in calls:
        (ranked,) = call.args
        assert ranked.func.id == "zip" and ast.unparse(ranked.args[1]).startswith("range(len(")
        assert [(k.arg, ast.unparse(k.value)) for k in call.keywords] == [("reverse", "True")]
    reads = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Name) and n.id == "sorted_logprobs" and isinstance(n.ctx, ast.Load)
    ]
    parents = {id(c): p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    assert reads and all(ast.unparse(parents[id(n)]) == "sorted_logprobs[:logprobs]" for n in reads)


def test_logprobs_come_back_from_the_server_with_their_top_candidates():
    with serve() as server:
        engine = OpenAIEngine("smollm2-135m", base_url=server.url + "/v1", timeout=60)
        request = ChatRequest(
            messages=[{"role": "user", "content": "Count to three."}], max_tokens=6, temperature=0.0, logprobs=True
        )
        (reply,) = engine.generate([request])
    assert len(reply.token_logprobs) == reply.completion_tokens and all(lp <= 0.0 for lp in reply.token_logprobs)


def test_a_pool_of_servers_answers_requests_in_parallel_as_one_server_would():
    """Each request is answered whole by one server of the pool, so its reply is the single server's (same seed, same
    text and logprobs); two requests in flight are decoded by two servers at once."""
    requests = [
        ChatRequest(messages=[{"role": "user", "content": f"Name a fruit, {i}."}], max_tokens=8, seed=i, logprobs=True)
        for i in range(4)
    ]
    with serve() as one:
        alone = OpenAIEngine("smollm2-135m", base_url=one.url + "/v1", concurrency=1).generate(requests)
    with serve_pool(workers=2) as pool:
        assert len({s.port for s in pool.servers} | {pool.port}) == 3
        engine = OpenAIEngine("smollm2-135m", base_url=pool.url + "/v1", concurrency=4)
        pooled = engine.generate(requests)
        assert sum(pool.answered.values()) == 4 and min(pool.answered.values()) >= 1  # both servers answered
    assert [(c.text, c.token_logprobs) for c in pooled] == [(c.text, c.token_logprobs) for c in alone]


def test_a_pool_passes_a_dead_servers_diagnosis_on_at_once():
    with serve_pool(workers=2) as pool:
        engine = OpenAIEngine("smollm2-135m", base_url=pool.url + "/v1", timeout=30, backoff=1.0, max_retries=6)
        for server in pool.servers:
            os.kill(server.proc.pid, signal.SIGSEGV)
            server.proc.wait(timeout=10)
        with pytest.raises(ServerDied, match="SIGSEGV"):
            pool.check()
        with pytest.raises(EngineError) as failed:
            engine.generate([ChatRequest(messages=[{"role": "user", "content": "Hi."}], max_tokens=4)])
        assert "SIGSEGV" in str(failed.value) and "not retried" in str(failed.value)
