"""The openai engine against a real llama.cpp server (and a fault-injecting proxy), and the Batch API mode."""

import json
import re

import pytest
from fault_proxy import FAULTS, FaultProxy
from wow import WowError
from wow.backends import CachedEngine, ChatRequest, EngineError, get_engine
from wow.backends.api.openai_engine import OpenAIEngine

WORDS = ["cats", "dogs", "rain", "sun", "trees", "cars", "bread", "ice"]


def greedy(words=WORDS, **kw):
    return [
        ChatRequest(
            messages=[{"role": "user", "content": f"Say a word about {w}."}], max_tokens=8, temperature=0.0, **kw
        )
        for w in words
    ]


@pytest.fixture(scope="module")
def base_url(llama_server):
    return llama_server + "/v1"


@pytest.fixture(scope="module")
def clean(base_url):
    """Greedy completions of the WORDS requests, straight from the server."""
    return OpenAIEngine("smollm2-135m", base_url=base_url, concurrency=2, timeout=60).generate(greedy())


def test_server_completions_with_logprobs_seeds_usage_and_cost(base_url, clean):
    engine = OpenAIEngine("openai:smollm2-135m", base_url=base_url, concurrency=2, timeout=60, prices=(1.0, 2.0))
    story = [{"role": "user", "content": "Tell me a very short story."}]
    samples = [ChatRequest(messages=story, max_tokens=8, temperature=1.0, sample_index=k) for k in range(3)]
    prefilled = ChatRequest(messages=story, max_tokens=4, temperature=0.0, prefill="Once")
    out = engine.generate(samples + [prefilled])
    assert all(c.text and len(c.token_logprobs) == c.completion_tokens > 0 for c in out)
    assert all(lp <= 0 for c in out for lp in c.token_logprobs)
    assert len({c.text for c in out[:3]}) > 1  # one request per sample, each with its own seed
    assert engine.supports_prefill is False and not out[3].text.startswith("Once")  # prefill is ignored
    usage = engine.usage()
    assert usage["calls"] == 4 and usage["failures"] == 0
    assert usage["prompt_tokens"] == sum(c.prompt_tokens for c in out) > 0
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected)
    assert all(c.text for c in clean)


def test_share_of_failures_gives_the_clean_results(llama_server, clean, tmp_path):
    # seed 3 at a 30% share fails 5 of the 13 arrivals: each fault kind once
    with FaultProxy(llama_server, fail_share=0.3, seed=3, delay=5.0, retry_after="1") as proxy:
        engine = OpenAIEngine(
            "smollm2-135m", base_url=proxy.url + "/v1", concurrency=1, timeout=4, backoff=0.05, max_retries=8
        )
        cached = CachedEngine(engine, tmp_path / "c.sqlite")
        out = cached.generate(greedy())
    assert set(proxy.injected) == set(FAULTS)
    assert [(c.text, c.token_logprobs) for c in out] == [(c.text, c.token_logprobs) for c in clean]
    assert engine.usage()["retries"] >= sum(proxy.injected.values()) and engine.usage()["failures"] == 0
    after_429 = [i for i, (_, fault) in enumerate(proxy.events) if fault == "429"][0]
    assert proxy.events[after_429 + 1][0] - proxy.events[after_429][0] >= 0.9  # Retry-After: 1 was honoured
    assert len(cached.cache) == len(WORDS)


def test_a_fifth_of_calls_failing_gives_the_clean_results(llama_server, clean, tmp_path):
    # seed 4 at a 20% share fails 3 of the first 5 arrivals (a 429, a 500 and a timeout)
    with FaultProxy(llama_server, fail_share=0.2, seed=4, delay=5.0, retry_after="1") as proxy:
        engine = OpenAIEngine(
            "smollm2-135m", base_url=proxy.url + "/v1", concurrency=2, timeout=4, backoff=0.05, max_retries=8
        )
        out = CachedEngine(engine, tmp_path / "c.sqlite").generate(greedy())
    assert sum(proxy.injected.values()) >= 3
    assert [(c.text, c.token_logprobs) for c in out] == [(c.text, c.token_logprobs) for c in clean]
    assert engine.usage()["failures"] == 0


def test_endpoint_that_always_fails_ends_in_a_clear_error_and_loses_nothing(llama_server, tmp_path):
    cache = tmp_path / "c.sqlite"
    with FaultProxy(
        llama_server, fail_share=0.0, faults=("500", "429", "drop", "malformed"), retry_after="0"
    ) as proxy:
        url = proxy.url + "/v1"
        engine = get_engine(
            "openai", "smollm2-135m", cache=cache, base_url=url, backoff=0.01, max_retries=2, timeout=20
        )
        first = engine.generate(greedy(WORDS[:2]))
        proxy.fail_share = 1.0
        with pytest.raises(EngineError) as err:
            engine.generate(greedy(WORDS[:4]))
        message = str(err.value)
        assert "sample_index 0" in message and "Say a word about rain" in message
        assert re.search(
            r"failed after 3 attempts; last error: (InternalServerError 500|RateLimitError 429|"
            r"APIConnectionError|JSONDecodeError)",
            message,
        )
        assert len(engine.cache) == 2 and engine.engine.usage()["failures"] >= 1
        proxy.fail_share, arrivals = 0.0, proxy.arrivals
        again = engine.generate(greedy(WORDS[:4]))
        assert proxy.arrivals - arrivals == 2  # only the two that never succeeded are sent again
    assert [c.text for c in again[:2]] == [c.text for c in first] and all(c.text for c in again)


@pytest.mark.parametrize("status", ["401", "400"])
def test_auth_and_bad_request_errors_are_not_retried(llama_server, status):
    with FaultProxy(llama_server, fail_share=1.0, faults=(status,)) as proxy:
        engine = OpenAIEngine("smollm2-135m", base_url=proxy.url + "/v1", backoff=0.01, max_retries=5)
        with pytest.raises(EngineError, match=f"{status}.*not retried"):
            engine.generate(greedy(WORDS[:1]))
    assert proxy.arrivals == 1


def test_api_key_is_never_written(base_url, tmp_path, monkeypatch):
    secret = "sk-test-DO-NOT-STORE-1234"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    engine = get_engine("openai", "smollm2-135m", cache=tmp_path / "c.sqlite", base_url=base_url)
    engine.generate(greedy(WORDS[:1]))
    assert secret not in json.dumps(engine.identity())
    engine.close()
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes(), path


def test_missing_api_key_for_openai_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(WowError, match="OPENAI_API_KEY"):
        OpenAIEngine("gpt-4o-mini")


# -- Batch API ------------------------------------------------------------------------------------------------
class FakeBatchAPI:
    """The parts of the OpenAI client the Batch API mode uses, answering every line from its body."""

    def __init__(self, fail_ids=(), polls_before_done=2, fail_first_retrieve=False):
        self.files = self
        self.batches = self
        self.store, self.state, self.created = {}, {}, 0
        self.fail_ids, self.polls_before_done, self.fail_first_retrieve = (
            set(fail_ids),
            polls_before_done,
            fail_first_retrieve,
        )
        self.input_lines = []

    # files
    def create(self, file=None, purpose=None, input_file_id=None, endpoint=None, completion_window=None):
        if file is not None:  # files.create
            fid = f"file-{len(self.store)}"
            self.store[fid] = file.read().decode()
            return _Obj(id=fid)
        self.created += 1  # batches.create
        bid = f"batch-{self.created}"
        self.state[bid] = {"input": input_file_id, "polls": 0}
        assert endpoint == "/v1/chat/completions" and completion_window == "24h"
        return self._batch(bid)

    def content(self, file_id):
        return _Obj(text=self.store[file_id])

    # batches
    def retrieve(self, batch_id):
        if self.fail_first_retrieve:
            self.fail_first_retrieve = False
            raise KeyboardInterrupt("the process was stopped while polling")
        self.state[batch_id]["polls"] += 1
        return self._batch(batch_id)

    def _batch(self, bid):
        st = self.state[bid]
        if st["polls"] < self.polls_before_done:
            return _Obj(id=bid, status="in_progress", output_file_id=None, error_file_id=None, errors=None)
        out, err = [], []
        self.input_lines = [json.loads(line) for line in self.store[st["input"]].splitlines()]
        for line in self.input_lines:
            if line["custom_id"] in self.fail_ids:
                err.append(
                    {
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": "server_error", "message": "boom"},
                    }
                )
                continue
            text = "reply to " + line["body"]["messages"][-1]["content"]
            body = {
                "id": "c", "object": "chat.completion", "created": 0, "model": line["body"]["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text},
                             "logprobs": {"content": [{"token": "r", "logprob": -0.5, "bytes": None, "top_logprobs": []}]}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
            }  # fmt: skip
            out.append({"custom_id": line["custom_id"], "response": {"status_code": 200, "body": body}, "error": None})
        self.store[bid + "-out"] = "".join(json.dumps(r) + "\n" for r in out)
        self.store[bid + "-err"] = "".join(json.dumps(r) + "\n" for r in err)
        return _Obj(id=bid, status="completed", output_file_id=bid + "-out", error_file_id=bid + "-err", errors=None)


class _Obj:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def batch_engine(client, tmp_path, **kw):
    return OpenAIEngine("gpt-4o-mini", batch=True, client=client, poll_interval=0, batch_dir=str(tmp_path / "b"), **kw)


def test_batch_mode_writes_uploads_polls_and_collects(tmp_path):
    client = FakeBatchAPI()
    engine = CachedEngine(batch_engine(client, tmp_path), tmp_path / "c.sqlite")
    out = engine.generate(greedy(WORDS[:3]))
    assert [c.text for c in out] == [f"reply to Say a word about {w}." for w in WORDS[:3]]
    assert all(c.token_logprobs == [-0.5] for c in out)
    line = client.input_lines[1]
    assert line["custom_id"] == "request-1" and line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"]["logprobs"] is True and line["body"]["seed"] == greedy(WORDS[:3])[1].sample_seed()
    usage = engine.usage()
    assert usage["calls"] == 3 and usage["cost_usd"] == pytest.approx(0.5 * 3 * (10 * 0.15 + 1 * 0.60) / 1e6)
    assert len(engine.cache) == 3 and not list((tmp_path / "b").glob("*.id"))


def test_batch_mode_reports_failed_lines_after_keeping_the_others(tmp_path):
    engine = CachedEngine(batch_engine(FakeBatchAPI(fail_ids={"request-1"}), tmp_path), tmp_path / "c.sqlite")
    with pytest.raises(EngineError, match=r"request #1 .*failed in batch batch-1: server_error: boom \(1 of 3"):
        engine.generate(greedy(WORDS[:3]))
    assert len(engine.cache) == 2


def test_batch_mode_attaches_to_a_running_batch_after_a_kill(tmp_path):
    client = FakeBatchAPI(fail_first_retrieve=True)
    with pytest.raises(KeyboardInterrupt):
        batch_engine(client, tmp_path).generate(greedy(WORDS[:2]))
    out = batch_engine(client, tmp_path).generate(greedy(WORDS[:2]))
    assert client.created == 1 and [c.text for c in out] == [f"reply to Say a word about {w}." for w in WORDS[:2]]
