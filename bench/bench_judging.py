"""Judging cost: model calls and tokens per pair (pairwise, both orders) and per question (score-based, k = 1-10).

A small answer set (shortest-path questions x 10 sampled answers, extracted and graded as the pipeline does) is
judged by the default model through :mod:`wow.elicit.judges`, in both modes: ``text`` (a free greedy reply, parsed) and
``logprob`` (the verdict read from the next-token distribution after a prefill). Calls and tokens come from the
engine's own usage counters (``calls``, ``prompt_tokens``, ``completion_tokens``), read before and after each
judge; ``batch_fill`` is the share of the engine's batch rows that held a request (with fixed shapes, only prompts of
one padded length share a batch, and the rest of its ``batch_size`` rows are filler). The pairwise logprob judge is
then run again through the on-disk cache: a rerun must make no call.

Run: ``.venv/bin/python bench/bench_judging.py`` (writes ``outputs/bench/judging.json``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import Timer, loadavg, markdown_table, set_dtype, write_result

MODEL = "smollm2-135m"


def _count_batches(engine) -> dict:
    """Count the engine's batches and their real rows (a wrapper around its per-batch prompt pass)."""
    counts = {"batches": 0, "rows": 0}
    inner = engine._prompt_pass

    def counted(prompts, *args, **kwargs):  # generation passes the rows' token budgets too
        counts["batches"] += 1
        counts["rows"] += len(prompts)
        return inner(prompts, *args, **kwargs)

    engine._prompt_pass = counted
    return counts


def _delta(before: dict, after: dict) -> dict:
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("calls", "prompt_tokens", "completion_tokens")}


def bench_judging(
    n_questions: int = 1,
    n_samples: int = 10,
    max_tokens: int = 24,
    judge_max_tokens: int = 32,
    max_pairs: int = 4,
    ks: tuple[int, ...] = (1, 2, 5, 10),
    batch_size: int = 16,
) -> dict:
    """Judge a small answer set with every judge and mode; count calls and tokens.

    Args:
        n_questions: shortest-path questions.
        n_samples: answers per question (k up to ``n_samples`` makes sense).
        max_tokens: most tokens per sampled answer.
        judge_max_tokens: reply budget of the text-mode judges (the smoke parameter set's value).
        max_pairs: cap on judged pairs (seeded subsample, as ``max_judge_pairs``).
        ks: answers per score prompt.
        batch_size: engine batch size.
    """
    from wow import tasks
    from wow.backends import CachedEngine, CallCache
    from wow.backends.local.transformers_engine import TransformersEngine
    from wow.elicit import judges
    from wow.elicit.sampling import sample_answers
    from wow.pairs import candidate_pairs, subsample_pairs

    load_before = loadavg()
    task = tasks.get("shortest_path")
    questions = task.questions(n_questions, seed=0, split_fractions=(1.0, 0.0, 0.0))
    engine = TransformersEngine(MODEL, dtype=set_dtype(), batch_size=batch_size)
    answers = sample_answers(
        task, questions, engine, MODEL, n_samples=n_samples, max_tokens=max_tokens, seed=0, progress=False
    )
    candidates = candidate_pairs(answers)
    batches = _count_batches(engine)
    rows = []

    def record(kind: str, mode: str, k, units: int, unit: str, fn) -> list[dict]:
        before = dict(engine.usage())
        batches.update(batches=0, rows=0)
        with Timer() as t:
            out = fn()
        d = _delta(before, engine.usage())
        if kind == "pairwise":
            rate = judges.pairwise_rates(out)["parse_fail_rate"]
            requests = 2 * len(out)
            pair_ids = [r["pair_id"] for r in out]
            assert len(set(pair_ids)) == len(pair_ids), "a pair was judged twice"
        else:
            rate = judges.score_parse_rate(out)["parse_fail_rate"]
            requests = len(out)
        rows.append(
            {
                "judge": kind,
                "mode": mode,
                "k": k,
                "unit": unit,
                "units": units,
                "requests": requests,
                "calls": d["calls"],
                "calls_per_unit": d["calls"] / max(units, 1),
                "prompt_tokens_per_unit": d["prompt_tokens"] / max(units, 1),
                "completion_tokens_per_unit": d["completion_tokens"] / max(units, 1),
                "seconds": round(t.seconds, 2),
                "parse_fail_rate": rate,
                "batches": batches["batches"],
                "batch_fill": batches["rows"] / max(batches["batches"] * engine.batch_size, 1),
            }
        )
        return out

    pairs = subsample_pairs(candidates, max_pairs, seed=0)
    for mode in ("text", "logprob"):
        record(
            "pairwise",
            mode,
            None,
            len(pairs),
            "pair",
            lambda mode=mode: judges.judge_pairwise(
                engine, answers, MODEL, mode, pairs=pairs, max_tokens=judge_max_tokens
            ),
        )
    for k in ks:
        record(
            "score",
            "text",
            k,
            len(questions),
            "question",
            lambda k=k: judges.judge_scores(engine, answers, MODEL, k, "text", max_tokens=judge_max_tokens),
        )
    record(
        "score",
        "logprob",
        1,
        len(questions),
        "question",
        lambda: judges.judge_scores(engine, answers, MODEL, 1, "logprob"),
    )

    # the same pairwise judge through the on-disk cache: the first run computes, a rerun makes no call
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedEngine(engine, CallCache(Path(tmp) / "cache.sqlite"))
        runs = []
        for _ in range(2):
            before = dict(engine.usage())
            judges.judge_pairwise(cached, answers, MODEL, "logprob", pairs=pairs)
            runs.append(_delta(before, engine.usage())["calls"])
        cache_stats = {"calls_first_run": runs[0], "calls_rerun": runs[1], **cached.cache.stats()}
        cached.cache.close()
    result = {
        "name": "judging",
        "model": MODEL,
        "answers": len(answers),
        "questions": len(questions),
        "candidate_pairs": len(candidates),
        "judged_pairs": len(pairs),
        "judge_max_tokens": judge_max_tokens,
        "rows": rows,
        "cache": cache_stats,
        "note": (
            "Pairwise: two requests per pair (both orders), never more. Score: ceil(answers/k) prompts per question. "
            "logprob mode reads the verdict from one prompt pass: no generated tokens."
        ),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("judging", result)
    return result


COLUMNS = [
    "judge",
    "mode",
    "k",
    "unit",
    "units",
    "calls",
    "calls_per_unit",
    "prompt_tokens_per_unit",
    "completion_tokens_per_unit",
    "seconds",
    "parse_fail_rate",
    "batch_fill",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=1)
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--max-pairs", type=int, default=4)
    p.add_argument("--judge-max-tokens", type=int, default=32)
    a = p.parse_args(argv)
    res = bench_judging(a.questions, a.samples, judge_max_tokens=a.judge_max_tokens, max_pairs=a.max_pairs)
    print(markdown_table(res["rows"], COLUMNS))
    c = res["cache"]
    print(f"cached pairwise judge: {c['calls_first_run']} calls, rerun {c['calls_rerun']} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
