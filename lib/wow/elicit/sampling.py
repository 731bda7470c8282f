"""Sample N answers per question, extract the final answer, grade it: the rows of ``answers.jsonl``.

For each question and sample index k: the task fixes the option order shown (:meth:`Task.permutation`) and the
messages; the engine generates the answer (sampled, with the request's per-sample seed). Then the final answer is
read in a second turn, as in the paper: the answer, then the task's extraction instruction, and

* ``prefill`` (engines that continue an assistant turn, i.e. local models): the assistant turn starts with the
  task's answer prefix ("The total weight is") and a few greedy tokens follow; ``prefix + reply`` is parsed;
* ``free`` (chat APIs): a free greedy reply of up to 32 tokens, parsed with the same tolerant pattern;
* ``direct``: when the turn gives nothing, the task's regex on the answer itself (free-text tasks use only this).

Under ``protocol="paper"`` every engine, local ones included, gets the free 32-token turn (multiple choice: asked
for the option letter alone, :func:`wow.protocol.paper_extraction_instruction`), read with the paper's strict
first-match regex (:func:`wow.protocol.paper_parse`) and never with the direct fallback (no match: None);
graph and Science answers are graded the paper's way (:func:`wow.protocol.paper_grade`).

Every answer is graded by ``task.grade``. All first turns go to the engine in one call (the engine batches them),
then all extraction turns; with a cached engine a rerun makes no model call and writes the same bytes.

Example::

    engine = get_engine("transformers", "smollm2-135m", cache="outputs/demo/cache.sqlite")
    rows = sample_answers(task, questions, engine, generator="smollm2-135m", n_samples=10)
    write_answers("outputs/demo/answers.jsonl", rows)
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from pathlib import Path

from wow import WowError, io
from wow.backends.base import ChatRequest, Completion, Engine
from wow.progress import bar as progress_bar
from wow.protocol import is_paper, paper_extraction_instruction, paper_grade, paper_parse
from wow.tasks.base import Question, Task

log = logging.getLogger(__name__)

EXTRACTIONS = ("auto", "prefill", "free", "direct")
#: Tokens of a free (non-prefilled) extraction reply, as the paper's extraction mode.
FREE_EXTRACT_MAX_TOKENS = 32


def sample_answers(
    task: Task,
    questions: list[Question],
    engine: Engine,
    generator: str,
    n_samples: int = 10,
    temperature: float = 1.0,
    max_tokens: int = 256,
    seed: int = 0,
    extract_max_tokens: int = 8,
    extraction: str = "auto",
    progress: bool = True,
    protocol: str = "wow",
) -> list[dict]:
    """Sample, extract and grade ``n_samples`` answers per question.

    Args:
        task: the task (prompts, extraction, grading).
        questions: its questions.
        engine: any engine, normally cache-wrapped (:func:`wow.backends.get_engine` with ``cache``).
        generator: the generator's name written in the rows and the answer ids.
        n_samples: answers per question.
        temperature: sampling temperature of the answers (extraction is greedy).
        max_tokens: most tokens per answer.
        seed: run seed (with the sample index, fixes each answer and each option order).
        extract_max_tokens: tokens generated after the prefilled answer prefix.
        extraction: ``auto`` (``prefill`` when the engine supports it, else ``free``), ``prefill``, ``free`` or
            ``direct`` (no second turn).
        progress: show progress bars (answers/s).
        protocol: ``paper``: the free turn for every engine, the paper's strict regex, no fallback, the paper's
            grading (see the module docs); ``extraction`` must then be ``auto`` or ``free``.

    Returns:
        One row per answer, in question order then sample index, with the keys of ``answers.jsonl``
        (docs/artefacts.md).

    Raises:
        WowError: a bad ``extraction`` or ``n_samples``, or ``prefill`` on an engine that cannot prefill.
    """
    paper = is_paper(protocol)
    if paper and extraction not in ("auto", "free"):
        raise WowError(f"protocol paper extracts with the free turn; extraction={extraction!r} contradicts it.")
    method = _method(task, engine, "free" if paper and extraction == "auto" else extraction)
    if n_samples < 1:
        raise WowError(f"n_samples must be at least 1, got {n_samples}.")
    version = f"{task.name}/{task.version}"
    items = []  # (question, sample_index, permutation, messages)
    for q in questions:
        for k in range(n_samples):
            perm = task.permutation(q, k, seed)
            items.append((q, k, perm, task.messages(q, perm)))
    first = [
        ChatRequest(
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            sample_index=k,
            template_version=version,
        )
        for _q, k, _perm, messages in items
    ]
    started = time.perf_counter()
    answers = _run(engine, first, f"sampling {generator}", progress)
    extractions: list[Completion | None] = [None] * len(items)
    if method != "direct":
        second = [
            _extraction_request(task, messages, a.text, method, extract_max_tokens, seed, k, version, paper)
            for (_q, k, _p, messages), a in zip(items, answers, strict=True)
        ]
        extractions = _run(engine, second, f"extracting {generator}", progress)
    rows = [
        _row(task, generator, item, answer, method, ext, paper)
        for item, answer, ext in zip(items, answers, extractions, strict=True)
    ]
    _log_summary(rows, time.perf_counter() - started, generator)
    return rows


def write_answers(path: str | Path, rows: list[dict]) -> Path:
    """Write ``answers.jsonl`` atomically (stable key order: same rows, same bytes).

    Args:
        path: the file.
        rows: rows from :func:`sample_answers`.

    Returns:
        The path written.
    """
    return io.write_jsonl(path, rows)


def _method(task: Task, engine: Engine, extraction: str) -> str:
    if extraction not in EXTRACTIONS:
        raise WowError(f"extraction {extraction!r} is not one of {', '.join(EXTRACTIONS)}.")
    if getattr(task, "extraction", None) is None:
        return "direct"  # free-text tasks are graded whole
    if extraction == "auto":
        return "prefill" if engine.supports_prefill else "free"
    if extraction == "prefill" and not engine.supports_prefill:
        raise WowError(f"the {engine.name} engine cannot prefill the assistant turn; use extraction='free' or 'auto'.")
    return extraction


def _extraction_request(
    task, messages, answer, method, extract_max_tokens, seed, k, version, paper: bool = False
) -> ChatRequest:
    """The second turn that asks for the final answer (under ``paper`` the paper's request,
    :func:`wow.protocol.paper_extraction_instruction`)."""
    instruction = paper_extraction_instruction(task) if paper else task.extraction.instruction
    turn = [
        *messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": instruction},
    ]
    prefill = method == "prefill"
    return ChatRequest(
        messages=turn,
        max_tokens=extract_max_tokens if prefill else FREE_EXTRACT_MAX_TOKENS,
        temperature=0.0,
        seed=seed,
        sample_index=k,
        prefill=task.extraction.prefix if prefill else None,
        logprobs=False,
        template_version=version,
    )


def _run(engine: Engine, requests: list[ChatRequest], desc: str, progress: bool) -> list[Completion]:
    bar = progress_bar(len(requests), "answer", desc, disable=None if progress else True)
    try:
        return engine.generate(requests, on_result=lambda _i, _c: bar.update(1))
    finally:
        bar.close()


def _row(
    task: Task, generator: str, item, answer: Completion, method: str, ext: Completion | None, paper: bool = False
) -> dict:
    q, k, perm, messages = item
    extracted, used, text = None, method, answer.text
    if ext is not None:
        text = (task.extraction.prefix + ext.text) if method == "prefill" else ext.text
        extracted = paper_parse(task, text, q, perm) if paper else task.parse(text, q, perm)
    if extracted is None and not (paper and method != "direct"):
        direct = task.parse_direct(answer.text, q, perm)
        if direct is not None or method == "direct":
            extracted, used, text = direct, "direct", answer.text
    grade = paper_grade(task, q, extracted) if paper else task.grade(q, extracted)
    raw = grade.raw_label if extracted is not None and math.isfinite(grade.raw_label) else None
    return {
        "answer_id": f"{q.id}|{generator}|{k}",
        "question_id": q.id,
        "task": q.task,
        "split": q.split,
        "generator": generator,
        "sample_index": k,
        "permutation": perm,
        "prompt_messages": [dict(m) for m in messages],
        "text": answer.text,
        "n_tokens": answer.completion_tokens,
        "mean_logprob": answer.mean_logprob,
        "finish_reason": answer.finish_reason,
        "extraction_method": used,
        "extraction_text": text,
        "extracted": extracted,
        "correctness": float(grade.correctness),
        "raw_label": raw,
        "is_correct": bool(grade.is_correct),
    }


def _log_summary(rows: list[dict], seconds: float, generator: str) -> None:
    parsed = Counter(r["extraction_method"] for r in rows if r["extracted"] is not None)
    n_parsed = sum(parsed.values())
    log.info(
        "%s: %d answers in %.1fs (%.2f answers/s); parsed %d (%s); correct %d",
        generator,
        len(rows),
        seconds,
        len(rows) / max(seconds, 1e-9),
        n_parsed,
        ", ".join(f"{m} {n}" for m, n in sorted(parsed.items())) or "none",
        sum(r["is_correct"] for r in rows),
    )
    unparsed = sorted(
        {r["question_id"] for r in rows} - {r["question_id"] for r in rows if r["extracted"] is not None}
    )
    if unparsed:
        log.warning(
            "%s: %d question(s) have no parsable answer (their answers all grade as wrong), e.g. %s",
            generator,
            len(unparsed),
            ", ".join(unparsed[:3]),
        )


def check_parsed(rows: list[dict], max_tokens: int) -> None:
    """Refuse a task whose answers from a generator all failed to parse: nothing downstream would mean anything.

    Raises:
        WowError: names the task and generator, shows one reply, and says what to change.
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["generator"]), []).append(r)
    for (task, generator), group in groups.items():
        if group and all(r["extracted"] is None for r in group):
            example = " ".join(group[0]["text"].split())[:120]
            raise WowError(
                f"none of the {len(group)} answers of {generator} on {task} could be parsed (e.g. {example!r}); "
                f"raise max_new_tokens (now {max_tokens}) or use a stronger generator. answers.jsonl keeps them."
            )
