"""The on-disk call cache: hits on rerun, resume after kill -9, clear errors on bad files, key hygiene."""

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wow import WowError
from wow.backends import CachedEngine, CallCache, ChatRequest, Completion, Engine
from wow.backends.cache import cache_key

HERE = Path(__file__).resolve().parent


class CountingEngine(Engine):
    """A deterministic engine (text = hash of the request) that counts and logs its calls, optionally slowly."""

    name = "counting"
    supports_prefill = True
    streams_results = True

    def __init__(self, model="fake", delay=0.0, log=None):
        super().__init__(model)
        self.delay, self.log, self.calls = delay, log, 0

    def _generate(self, requests, progress=False, on_result=None):
        out = []
        for i, r in enumerate(requests):
            time.sleep(self.delay)
            self.calls += 1
            digest = hashlib.sha256(json.dumps(r.key_fields(), sort_keys=True).encode()).hexdigest()
            if self.log:
                with open(self.log, "a") as f:
                    f.write(digest + "\n")
            number = int(digest[:4], 16) % 20
            c = Completion(f" {number}. ({digest[:8]})", [-0.5, -0.25 - number / 100], 7, 2, "stop")
            out.append(c)
            if on_result is not None:
                on_result(i, c)
        return out

    def _choice_logprobs(self, requests, choices):
        self.calls += len(requests)
        return [{c: -1.0 - k for k, c in enumerate(choices)} for _ in requests]


def requests(n, **kw):
    return [
        ChatRequest(messages=[{"role": "user", "content": f"question {i // 3}"}], sample_index=i % 3, **kw)
        for i in range(n)
    ]


def test_rerun_is_served_from_the_cache(tmp_path):
    first = CachedEngine(CountingEngine(), tmp_path / "c.sqlite")
    a = first.generate(requests(6))
    assert (first.engine.calls, first.misses, first.hits) == (6, 6, 0)
    first.close()
    again = CachedEngine(CountingEngine(), tmp_path / "c.sqlite")
    b = again.generate(requests(6))
    assert again.engine.calls == 0 and (again.hits, again.misses) == (6, 0)
    assert [c.to_dict() for c in a] == [c.to_dict() for c in b] and all(c.cached for c in b)
    assert again.usage()["cache_hits"] == 6


def test_identical_requests_in_one_batch_are_computed_once(tmp_path):
    engine = CachedEngine(CountingEngine(), tmp_path / "c.sqlite")
    out = engine.generate(requests(2) + requests(2))
    assert engine.engine.calls == 2 and out[0].text == out[2].text


def test_choice_logprobs_are_cached(tmp_path):
    engine = CachedEngine(CountingEngine(), tmp_path / "c.sqlite")
    first = engine.choice_logprobs(requests(3), ["1", "2"])
    second = engine.choice_logprobs(requests(3), ["1", "2"])
    assert first == second == [{"1": -1.0, "2": -2.0}] * 3 and engine.engine.calls == 3
    engine.choice_logprobs(requests(1), ["2", "1"])  # other choices: another key
    assert engine.engine.calls == 4


def test_key_covers_every_field_and_the_engine_identity():
    base = ChatRequest(messages=[{"role": "user", "content": "q"}])
    ident = {"engine": "transformers", "model": "m", "dtype": "bfloat16"}
    key = cache_key(ident, "generate", base.key_fields())
    changes = dict(
        messages=[{"role": "user", "content": "q2"}], max_tokens=7, temperature=0.5, top_p=0.9, seed=1,
        sample_index=1, prefill="The answer is", logprobs=False, template_version="task/2", stop=["\n"],
    )  # fmt: skip
    for field, value in changes.items():
        other = ChatRequest(**{**base.key_fields(), field: value})
        assert cache_key(ident, "generate", other.key_fields()) != key, field
    assert cache_key({**ident, "adapter_sha256": "ab"}, "generate", base.key_fields()) != key
    assert cache_key({**ident, "dtype": "float32"}, "generate", base.key_fields()) != key
    assert cache_key(ident, "choice_logprobs", base.key_fields()) != key
    assert cache_key(dict(reversed(ident.items())), "generate", base.key_fields()) == key  # canonical JSON


KILL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_cache import CountingEngine, requests
from wow.backends import CachedEngine
engine = CachedEngine(CountingEngine(delay=0.05, log={log!r}), {cache!r})
engine.generate(requests(60))
"""


def test_killed_run_resumes_without_repeating_finished_calls(tmp_path):
    cache, log = tmp_path / "c.sqlite", tmp_path / "calls.log"
    script = KILL_SCRIPT.format(here=str(HERE), log=str(log), cache=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().split()) < 15):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = log.read_text().split()
    assert 15 <= len(done_before) < 60
    resumed = CachedEngine(CountingEngine(log=log), cache)
    out = resumed.generate(requests(60))
    calls = log.read_text().split()
    assert len(calls) - len(set(calls)) <= 1  # at most the one call in flight at the kill is made again
    assert resumed.hits >= len(done_before) - 1 and len(set(calls)) == 60
    clean = CachedEngine(CountingEngine(), tmp_path / "clean.sqlite").generate(requests(60))
    assert [c.to_dict() for c in out] == [c.to_dict() for c in clean]


class BatchDependentEngine(Engine):
    """An engine that batches and whose results depend on the batch (as a local model's last bits may on CPU).

    Its plan sorts the requests by prompt (as a local engine sorts by length) and cuts batches of ``size``; each
    result names the members of its batch. ``fail_after`` results delivered, it raises (a kill mid-batch).
    """

    name = "batchy"
    streams_results = True

    def __init__(self, size=3, fail_after=None):
        super().__init__("fake")
        self.size, self.fail_after, self.delivered, self.decoded = size, fail_after, 0, []

    def plan(self, requests, kind="generate"):
        order = sorted(range(len(requests)), key=lambda i: (requests[i].messages[0]["content"], i))
        return [order[s : s + self.size] for s in range(0, len(order), self.size)]

    def _members(self, requests, idx):
        return "+".join(f"{requests[i].messages[0]['content'][-1]}.{requests[i].sample_index}" for i in idx)

    def _generate(self, requests, progress=False, on_result=None, batches=None):
        out = [None] * len(requests)
        for idx in self.plan(requests) if batches is None else batches:
            self.decoded.append(len(idx))
            members = self._members(requests, idx)
            for i in idx:
                if self.fail_after is not None and self.delivered >= self.fail_after:
                    raise RuntimeError("killed")
                self.delivered += 1
                out[i] = Completion(f"{self._members(requests, [i])} in [{members}]", [-0.5], 3, 1, "stop")
                if on_result is not None:
                    on_result(i, out[i])
        return out

    def _choice_logprobs(self, requests, choices, batches=None):
        out = [None] * len(requests)
        for idx in self.plan(requests) if batches is None else batches:
            if self.fail_after is not None and self.delivered >= self.fail_after:
                raise RuntimeError("killed")
            self.delivered += len(idx)
            for i in idx:
                out[i] = {c: -float(len(self._members(requests, idx))) - k for k, c in enumerate(choices)}
        return out


def test_a_resumed_run_decodes_the_batches_of_an_uninterrupted_one(tmp_path):
    reqs = requests(8)[::-1]  # the plan reorders them
    clean = CachedEngine(BatchDependentEngine(), tmp_path / "clean.sqlite").generate(reqs)
    assert [c.text for c in clean] == [c.text for c in BatchDependentEngine().generate(reqs)]
    # killed after 4 results: the first batch of 3 is stored, the half-done second batch is not
    cache = tmp_path / "killed.sqlite"
    with pytest.raises(RuntimeError, match="killed"):
        CachedEngine(BatchDependentEngine(fail_after=4), cache).generate(reqs)
    assert len(CallCache(cache)) == 3
    resumed_engine = BatchDependentEngine()
    resumed = CachedEngine(resumed_engine, cache)
    assert [c.text for c in resumed.generate(reqs)] == [c.text for c in clean]
    assert resumed_engine.decoded == [3, 2]  # the remaining planned batches, not one batch of the remaining 5
    assert resumed.cache.computed_twice() == {}
    # a stored result inside a batch to recompute is kept, never stored twice
    cache2 = CallCache(tmp_path / "one.sqlite")
    CachedEngine(BatchDependentEngine(), cache2).generate(reqs[:1])
    again = CachedEngine(BatchDependentEngine(), cache2).generate(reqs)
    assert [c.text for c in again][1:] == [c.text for c in clean][1:] and cache2.computed_twice() == {}


def test_choice_logprobs_of_a_resumed_run_come_from_the_same_batches(tmp_path):
    reqs = requests(7)
    clean = CachedEngine(BatchDependentEngine(), tmp_path / "clean.sqlite").choice_logprobs(reqs, ["1", "2"])
    cache = tmp_path / "killed.sqlite"
    with pytest.raises(RuntimeError, match="killed"):
        CachedEngine(BatchDependentEngine(fail_after=3), cache).choice_logprobs(reqs, ["1", "2"])
    assert len(CallCache(cache)) == 3
    assert CachedEngine(BatchDependentEngine(), cache).choice_logprobs(reqs, ["1", "2"]) == clean


def test_garbage_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    before = path.read_bytes()
    with pytest.raises(WowError, match=r"c\.sqlite.*not a SQLite file.*move it away"):
        CallCache(path)
    assert path.read_bytes() == before


def test_damaged_cache_is_reported(tmp_path):
    path = tmp_path / "c.sqlite"
    engine = CachedEngine(CountingEngine(), path)
    engine.generate(requests(30))
    engine.close()
    data = bytearray(path.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # keep the header, wreck every page
    path.write_bytes(bytes(data))
    with pytest.raises(WowError, match=r"c\.sqlite.*(corrupted|cannot be read)"):
        CachedEngine(CountingEngine(), path).generate(requests(30))
    assert path.read_bytes() == bytes(data)


def test_a_cache_sqlite_cannot_open_is_not_called_corrupted(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    engine = CachedEngine(CountingEngine(), path)
    engine.generate(requests(3))
    engine.close()
    before = path.read_bytes()

    def io_error(*args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr("wow.backends.cache.sqlite3.connect", io_error)
    with pytest.raises(
        WowError, match=r"c\.sqlite could not be opened \(SQLite: disk I/O error\).*another process"
    ) as e:
        CallCache(path)
    assert "corrupted" not in str(e.value)
    assert path.read_bytes() == before


def test_foreign_sqlite_file_is_reported_and_left_alone(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ada')")
    db.commit()
    db.close()
    with pytest.raises(WowError, match="another program"):
        CallCache(path)
    assert sqlite3.connect(path).execute("SELECT name FROM users").fetchall() == [("ada",)]


def test_other_schema_version_is_reported(tmp_path):
    path = tmp_path / "c.sqlite"
    CallCache(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(WowError, match="schema version 99"):
        CallCache(path)


def test_cache_is_sqlite_in_wal_mode_with_a_schema_version(tmp_path):
    path = tmp_path / "c.sqlite"
    CachedEngine(CountingEngine(), path).generate(requests(2))
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(db.execute("SELECT key, value FROM meta").fetchall())["schema_version"] == "1"
    assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 2
