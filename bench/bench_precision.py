"""float32 against bfloat16 on the machine at hand: what ``dtype: auto`` chooses and whether the choice is right.

Measured side by side in one process, on the workloads the parameter sets run:

* ``matmul``: one thread, a 1024 x 1024 x 1024 matrix product, GFLOP/s (the raw arithmetic; bf16 is emulated on CPUs
  without AMX/AVX512-BF16);
* ``sampling``: :func:`wow.elicit.sampling.sample_answers` on the demo's questions at its samples per question, batch size
  and token budget (``parameters/demo.yaml``), generated tokens per second;
* ``prompt pass``: one batched forward pass over 16 judge-sized prompts (the shape of stage 02's logprob judges),
  prompt tokens per second.

The table states the CPU model, its bf16-relevant flags, the CPU family and what ``auto`` resolves to
(:mod:`wow.backends.precision`); ``auto is faster`` says whether the resolved precision is the faster one on each workload.

Run: ``.venv/bin/python bench/bench_precision.py [--questions 2] [--reps 2]`` (writes
``outputs/bench/precision.json``).
"""

from __future__ import annotations

import argparse

from benchlib import REPO, Timer, gemm_gflops, loadavg, markdown_table, median, write_result

MODEL = "smollm2-135m"
DTYPES = ("float32", "bfloat16")


def matmul_gflops(dtype: str, n: int = 1024, reps: int = 3) -> float:
    """One-thread GFLOP/s of an ``n x n`` matrix product in ``dtype``."""
    return gemm_gflops(n, n, n, dtype, threads=1, reps=reps)


def sampling_tok_s(dtype: str, n_questions: int, reps: int) -> float:
    """Generated tokens per second of the demo's sampling workload (its samples, batch size and token budget)."""
    import yaml
    from wow import tasks
    from wow.backends.local.transformers_engine import TransformersEngine
    from wow.elicit.sampling import sample_answers

    demo = yaml.safe_load((REPO / "parameters" / "demo.yaml").read_text())
    task = tasks.get(demo["tasks"][0], **demo.get("task_options", {}).get(demo["tasks"][0], {}))
    questions = task.questions(n_questions, seed=0)
    engine = TransformersEngine(MODEL, dtype=dtype, batch_size=demo["batch_size"])
    speeds = []
    for rep in range(reps + 1):  # the first repetition loads the model and warms up
        with Timer() as t:
            rows = sample_answers(
                task,
                questions,
                engine,
                "bench",
                n_samples=demo["n_samples"],
                temperature=1.0,
                max_tokens=demo["max_new_tokens"],
                seed=rep,
                extraction="direct",
                progress=False,
            )
        if rep:
            speeds.append(sum(r["n_tokens"] for r in rows) / t.seconds)
    engine.close()
    return median(speeds)


def prompt_pass_tok_s(dtype: str, rows: int = 16, length: int = 384, reps: int = 2) -> float:
    """Prompt tokens per second of one batched forward pass (``rows`` judge-sized prompts of ``length`` tokens)."""
    import torch
    from wow.backends import models

    model, _ = models.load_model(MODEL, dtype=dtype, device="cpu")
    ids = torch.randint(100, 10000, (rows, length))
    seconds = []
    with torch.inference_mode():
        for _ in range(reps + 1):
            with Timer() as t:
                model(input_ids=ids, logits_to_keep=1)
            seconds.append(t.seconds)
    return rows * length / median(seconds[1:])


def bench_precision(n_questions: int = 2, reps: int = 2) -> dict:
    """Every workload at both precisions; returns the rows, the machine's facts and the load average."""
    from wow.backends import precision

    load_before = loadavg()
    measures = {
        "matmul (GFLOP/s, 1 thread)": lambda d: matmul_gflops(d),
        "sampling (tok/s, demo workload)": lambda d: sampling_tok_s(d, n_questions, reps),
        "prompt pass (tok/s, 16 x 384)": lambda d: prompt_pass_tok_s(d),
    }
    auto = precision.resolve_dtype("auto")
    rows = []
    for name, fn in measures.items():
        values = {d: fn(d) for d in DTYPES}
        fastest = max(values, key=values.get)
        rows.append(
            {
                "workload": name,
                "float32": round(values["float32"], 1),
                "bfloat16": round(values["bfloat16"], 1),
                "bf16 / fp32": round(values["bfloat16"] / values["float32"], 2),
                "auto": auto,
                "auto is faster": "yes" if fastest == auto else "no",
            }
        )
    return {
        "rows": rows,
        "machine": precision.machine(),
        "cpu_family": precision.cpu_family(),
        "load_before": load_before,
        "load_after": loadavg(),
        "n_questions": n_questions,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure, print the table, write ``outputs/bench/precision.json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=2, help="demo questions in the sampling workload")
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args(argv)
    result = bench_precision(args.questions, args.reps)
    from wow.backends import precision

    print("CPU", precision.machine_line())
    print(markdown_table(result["rows"]))
    write_result("precision", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
