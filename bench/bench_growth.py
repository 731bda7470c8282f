"""Growth: time and peak memory of sampling and elicitation at 1x, 4x and 16x questions.

Each size runs in its own process (peak memory is the process's ``VmHWM``, reset after the model is loaded so that
it is the peak of the work; torch allocations escape tracemalloc):
load the default model, sample and extract ``n_samples`` answers per shortest-path question
(:func:`wow.elicit.sampling.sample_answers`, prefilled extraction), then elicit (:func:`wow.elicit.scorers.score_answers`, the
pairwise judge in both orders and the k=1 score judge, both read from next-token probabilities). Goal: time grows
linearly with the questions (seconds per question flat or falling), memory stays flat.

Run: ``.venv/bin/python bench/bench_growth.py`` (writes ``outputs/bench/growth.json``).
"""

from __future__ import annotations

import argparse
import json
import sys

from benchlib import (
    BENCH_DIR,
    Timer,
    loadavg,
    markdown_table,
    peak_rss_mb,
    ratio,
    reset_peak_rss,
    rss_mb,
    run_child,
    set_dtype,
    write_result,
)

MODEL = "smollm2-135m"


def child(n_questions: int, n_samples: int, max_tokens: int, batch_size: int) -> dict:
    """One size in this process: sampling, then elicitation; times and memory."""
    from wow import pairs, tasks
    from wow.backends.local.transformers_engine import TransformersEngine
    from wow.elicit import judges, scorers
    from wow.elicit.sampling import sample_answers

    task = tasks.get("shortest_path")
    questions = task.questions(n_questions, seed=0, split_fractions=(1.0, 0.0, 0.0))
    engine = TransformersEngine(MODEL, dtype=set_dtype(), batch_size=batch_size)
    engine._load()
    peak_load = peak_rss_mb()
    rss_loaded = rss_mb()
    reset = reset_peak_rss()  # from here on the peak is that of the work, not of loading the model
    with Timer() as ts:
        answers = sample_answers(
            task, questions, engine, MODEL, n_samples=n_samples, max_tokens=max_tokens, seed=0, progress=False
        )
    peak_sampling = peak_rss_mb()
    with Timer() as te:
        pairwise = judges.judge_pairwise(engine, answers, MODEL, "logprob")
        scores = judges.judge_scores(engine, answers, MODEL, 1, "logprob")
        scorers.score_answers(answers, scorers.judge_score_maps(scores))
    return {
        "questions": len(questions),
        "answers": len(answers),
        "pairs": len(pairs.candidate_pairs(answers)),
        "judged_pairs": len(pairwise),
        "sampling_seconds": ts.seconds,
        "elicitation_seconds": te.seconds,
        "peak_rss_load_mb": peak_load,
        "rss_after_load_mb": rss_loaded,
        "peak_reset": reset,
        "peak_rss_sampling_mb": peak_sampling,
        "peak_rss_mb": peak_rss_mb(),
        "usage": engine.usage(),
    }


def bench_growth(
    sizes: tuple[int, ...] = (1, 4, 16), n_samples: int = 2, max_tokens: int = 16, batch_size: int = 16
) -> dict:
    """Run every size in a fresh process; report time per question and peak memory against the smallest size."""
    load_before = loadavg()
    runs = []
    for n in sizes:
        args = [str(BENCH_DIR / "bench_growth.py"), "--child", str(n), "--samples", str(n_samples)]
        args += ["--max-tokens", str(max_tokens), "--batch-size", str(batch_size)]
        runs.append(run_child(args))
    base = runs[0]
    rows = []
    for r in runs:
        total = r["sampling_seconds"] + r["elicitation_seconds"]
        base_total = base["sampling_seconds"] + base["elicitation_seconds"]
        scale = r["questions"] / base["questions"]
        rows.append(
            {
                "questions": r["questions"],
                "answers": r["answers"],
                "judged_pairs": r["judged_pairs"],
                "sampling_s": r["sampling_seconds"],
                "elicitation_s": r["elicitation_seconds"],
                "s_per_question": total / r["questions"],
                "time_vs_linear": ratio(total, base_total * scale),
                "peak_rss_mb": r["peak_rss_mb"],
                "peak_above_loaded_mb": r["peak_rss_mb"] - r["rss_after_load_mb"],
                "load_peak_mb": r["peak_rss_load_mb"],
                "peak_vs_smallest": ratio(r["peak_rss_mb"], base["peak_rss_mb"]),
            }
        )
    result = {
        "name": "growth",
        "model": MODEL,
        "samples_per_question": n_samples,
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "rows": rows,
        "runs": runs,
        "goal": "linear time (time_vs_linear <= 1), flat memory (peak_vs_smallest ~ 1)",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("growth", result)
    return result


COLUMNS = [
    "questions",
    "answers",
    "judged_pairs",
    "sampling_s",
    "elicitation_s",
    "s_per_question",
    "time_vs_linear",
    "peak_rss_mb",
    "peak_above_loaded_mb",
    "peak_vs_smallest",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table (``--child N`` runs one size, prints JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", type=int, help="run one size (questions) in this process")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args(argv)
    if a.child:
        sys.stdout.write(json.dumps(child(a.child, a.samples, a.max_tokens, a.batch_size)) + "\n")
        return 0
    res = bench_growth(tuple(a.sizes), a.samples, a.max_tokens, a.batch_size)
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
