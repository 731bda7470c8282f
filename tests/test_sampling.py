"""Sampling answers: schema of answers.jsonl, cache reruns, determinism, kill -9 resume, extraction paths."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cache import CountingEngine
from wow import WowError
from wow.backends import CachedEngine, get_engine
from wow.backends.api.openai_engine import OpenAIEngine
from wow.elicit.sampling import sample_answers, write_answers
from wow.tasks.base import UNPARSED, Extraction, Grade, Question, Task

HERE = Path(__file__).resolve().parent
# docs/artefacts.md, in order
COLUMNS = [
    "answer_id", "question_id", "task", "split", "generator", "sample_index", "permutation", "prompt_messages",
    "text", "n_tokens", "mean_logprob", "finish_reason", "extraction_method", "extraction_text", "extracted",
    "correctness", "raw_label", "is_correct",
]  # fmt: skip


class Addition(Task):
    """A tiny graded task: a + b, correctness 1 - |answer - gold| / 10 (floored at 0)."""

    name = "addition"
    version = "1"
    extraction = Extraction(
        instruction='What is the final number in your answer? Reply with one number only, starting with "The answer is".',
        prefix="The answer is",
        pattern=r"The answer is\s*\$?(-?\d+)",
    )

    def build(self, n, seed):
        rng = random.Random(seed)
        pairs = [(rng.randint(2, 9), rng.randint(2, 9)) for _ in range(n)]
        return [
            Question(id=f"addition/q{i}", task=self.name, split="", prompt=f"What is {a} + {b}? Be brief.", gold=a + b)
            for i, (a, b) in enumerate(pairs)
        ]

    def grade(self, question, extracted):
        if extracted is None:
            return UNPARSED
        diff = abs(extracted - question.gold)
        return Grade(correctness=max(0.0, 1 - diff / 10), raw_label=-float(diff), is_correct=diff == 0)


TASK = Addition()
QUESTIONS = TASK.questions(4, seed=0)
SETTINGS = dict(n_samples=3, max_tokens=24, seed=0)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sampling")
    engine = get_engine("transformers", "smollm2-135m", cache=folder / "cache.sqlite", batch_size=16)
    rows = sample_answers(TASK, QUESTIONS, engine, "smollm2-135m", **SETTINGS)
    write_answers(folder / "answers.jsonl", rows)
    return folder, rows, engine


def test_rows_follow_the_answers_schema(first_run):
    _, rows, _ = first_run
    assert len(rows) == 12
    for i, row in enumerate(rows):
        q, k = QUESTIONS[i // 3], i % 3
        assert list(row) == COLUMNS
        assert row["answer_id"] == f"{q.id}|smollm2-135m|{k}" and row["sample_index"] == k
        assert (row["question_id"], row["task"], row["split"]) == (q.id, "addition", q.split)
        assert row["prompt_messages"] == TASK.messages(q) and row["permutation"] is None
        assert 0 < row["n_tokens"] <= 24 and row["mean_logprob"] < 0 and row["finish_reason"] in ("stop", "length")
        assert row["extraction_method"] in ("prefill", "direct")
        if row["extracted"] is None:
            assert (row["raw_label"], row["correctness"], row["is_correct"]) == (None, 0.0, False)
        else:
            grade = TASK.grade(q, row["extracted"])
            assert (row["correctness"], row["raw_label"], row["is_correct"]) == (
                grade.correctness,
                grade.raw_label,
                grade.is_correct,
            )
    prefilled = [r for r in rows if r["extraction_method"] == "prefill"]
    assert prefilled and all(r["extraction_text"].startswith("The answer is") for r in prefilled)
    assert sum(r["extracted"] is not None for r in rows) >= 6
    assert len({r["text"] for r in rows}) > 4  # sampled answers vary


def test_rerun_is_served_from_the_cache_with_the_same_bytes(first_run):
    folder, rows, engine = first_run
    again = get_engine("transformers", "smollm2-135m", cache=folder / "cache.sqlite", batch_size=16)
    rerun = sample_answers(TASK, QUESTIONS, again, "smollm2-135m", **SETTINGS)
    assert again.engine.calls == 0 and again.engine._model is None and again.misses == 0
    write_answers(folder / "rerun.jsonl", rerun)
    assert (folder / "rerun.jsonl").read_bytes() == (folder / "answers.jsonl").read_bytes()


def test_same_seed_gives_byte_identical_answers_from_scratch(first_run, tmp_path):
    folder, _, engine = first_run
    fresh = CachedEngine(engine.engine, tmp_path / "fresh.sqlite")  # same loaded model, empty cache
    rows = sample_answers(TASK, QUESTIONS[::-1], fresh, "smollm2-135m", **SETTINGS)  # other order, other batches
    assert fresh.misses > 0
    write_answers(
        tmp_path / "answers.jsonl", sorted(rows, key=lambda r: (int(r["question_id"][10:]), r["sample_index"]))
    )
    assert (tmp_path / "answers.jsonl").read_bytes() == (folder / "answers.jsonl").read_bytes()


KILL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from test_cache import CountingEngine
from test_sampling import TASK, QUESTIONS
from wow.backends import CachedEngine
from wow.elicit.sampling import sample_answers, write_answers
engine = CachedEngine(CountingEngine(delay=0.05, log={log!r}), {cache!r})
write_answers({out!r}, sample_answers(TASK, QUESTIONS, engine, "fake", n_samples=10, progress=False))
"""


def test_killed_sampling_resumes_to_the_same_file_without_repeated_calls(tmp_path):
    cache, log, out = tmp_path / "c.sqlite", tmp_path / "calls.log", tmp_path / "answers.jsonl"
    script = KILL_SCRIPT.format(here=str(HERE), log=str(log), cache=str(cache), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not log.exists() or len(log.read_text().split()) < 25):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists() and 25 <= len(log.read_text().split()) < 80
    resumed = CachedEngine(CountingEngine(log=log), cache)
    write_answers(out, sample_answers(TASK, QUESTIONS, resumed, "fake", n_samples=10))
    calls = log.read_text().split()
    assert len(set(calls)) == 80 and len(calls) - len(set(calls)) <= 1  # at most the call in flight is repeated
    clean = sample_answers(TASK, QUESTIONS, CountingEngine(), "fake", n_samples=10)
    write_answers(tmp_path / "clean.jsonl", clean)
    assert out.read_bytes() == (tmp_path / "clean.jsonl").read_bytes()


def test_direct_extraction_makes_no_second_turn_and_bad_options_are_errors():
    engine = CountingEngine()
    rows = sample_answers(TASK, QUESTIONS[:2], engine, "fake", n_samples=2, extraction="direct")
    assert engine.calls == 4 and {r["extraction_method"] for r in rows} == {"direct"}
    with pytest.raises(WowError, match="cannot prefill"):
        sample_answers(
            TASK, QUESTIONS[:1], OpenAIEngine("m", base_url="http://127.0.0.1:9/v1"), "m", extraction="prefill"
        )
    with pytest.raises(WowError, match="extraction"):
        sample_answers(TASK, QUESTIONS[:1], engine, "fake", extraction="regex")
    with pytest.raises(WowError, match="n_samples"):
        sample_answers(TASK, QUESTIONS[:1], engine, "fake", n_samples=0)


def test_chat_api_uses_a_free_extraction_turn(llama_server, tmp_path):
    engine = get_engine(
        "openai", "smollm2-135m", cache=tmp_path / "c.sqlite", base_url=llama_server + "/v1", timeout=60
    )
    rows = sample_answers(TASK, QUESTIONS[:2], engine, "smollm2-135m-gguf", n_samples=2, max_tokens=24)
    assert [r["answer_id"] for r in rows][-1] == f"{QUESTIONS[1].id}|smollm2-135m-gguf|1"
    assert all(r["extraction_method"] in ("free", "direct") for r in rows)
    assert all(r["mean_logprob"] < 0 for r in rows)
    free = [r for r in rows if r["extraction_method"] == "free"]
    assert all(r["extraction_text"] != r["text"] for r in free)  # parsed from the second turn's reply
    assert engine.usage()["calls"] == 8  # 4 answers + 4 free extraction turns


def test_shortest_path_task_from_the_registry(first_run):
    import wow.tasks

    task = wow.tasks.get("shortest_path")
    questions = task.questions(2, seed=0)
    _, _, engine = first_run
    rows = sample_answers(task, questions, engine.engine, "smollm2-135m", n_samples=2, max_tokens=24)
    assert [r["answer_id"] for r in rows] == [f"{q.id}|smollm2-135m|{k}" for q in questions for k in range(2)]
    for row, q in zip(rows, [q for q in questions for _ in range(2)], strict=True):
        grade = task.grade(q, row["extracted"])
        assert row["correctness"] == grade.correctness and 0 <= row["correctness"] <= 1
        assert row["raw_label"] == (None if row["extracted"] is None else grade.raw_label)
    assert any(isinstance(r["extracted"], int) for r in rows)
