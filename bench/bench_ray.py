"""Stage 04 on Ray: the wall time of the demo's trainings with 2 Ray workers against 1, and against the plain loop.

The workload is what ``parameters/demo.yaml`` trains in stage 04: one DPO training per preference setting (4:
oracle, noisy@0.25, random, direct), each ``max_steps`` 4 at ``train_batch_size`` 2 with the in-run validation loss
on ``max_eval_pairs`` 8, the default model at the precision ``dtype: auto`` resolves to on this machine. The pairs
are shortest-path prompts with two wrong final answers (``bench_dpo.preference_pairs``). Three arms, each in a fresh
process, alternating over repetitions so that a drifting load cancels out:

- ``local``: ``wow.align.training.train`` called once per setting in one process with every core (what
  ``train_backend: local`` does);
- ``ray 1 worker``: :func:`wow.align.ray_backend.train_all` on a local Ray instance, each training asking for every
  core (one at a time);
- ``ray 2 workers``: the same with ``ray_cpus_per_training: 1`` on 2 cores (two trainings at a time).

The speed-up is ``ray 1 worker / ray 2 workers`` (the issue's measure) and ``local / ray 2 workers`` (what a user
gains over the default). On 2 CPU cores the bound is 2x only where one training cannot use both cores; a 135M
model's small matrices leave one thread of each training idle part of the time, which is what 2 workers fill.

Run: ``.venv/bin/python bench/bench_ray.py [--settings 4] [--reps 1]`` (writes ``outputs/bench/ray.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BENCH_DIR, loadavg, machine, markdown_table, median, ratio, run_child, set_dtype, write_result

MODEL = "smollm2-135m"
ARMS = {"local": None, "ray 1 worker": "all", "ray 2 workers": 1}


def _config(dtype: str, threads: int | None):
    """The demo set's stage-04 settings (as ``wow.steps.dpo_training.train_grids`` builds them), read through the
    parameter model, so a setting the set leaves to its default (``max_eval_pairs``, ``in_run_validation``) has it."""
    from wow import params
    from wow.align.align_config import AlignConfig

    demo = params.load(BENCH_DIR.parent / "parameters" / "demo.yaml")
    return AlignConfig(
        train_batch_size=demo.train_batch_size,
        max_steps=demo.max_steps,
        max_eval_pairs=demo.max_eval_pairs,
        in_run_validation=demo.in_run_validation,
        learning_rate=demo.learning_rates[0],
        epochs=demo.epochs[0],
        bf16=dtype == "bfloat16",
        cpu_threads=threads,
        progress=False,
    )


def child(arm: str, settings: int) -> dict:
    """One arm in this process: ``settings`` trainings; returns the wall time and each training's seconds."""
    sys.path.insert(0, str(BENCH_DIR))
    from bench_dpo import preference_pairs
    from wow.align import ray_backend, training

    cores = os.cpu_count() or 1
    per = ARMS[arm]
    threads = cores if per in (None, "all") else per
    config = _config(set_dtype(), threads)
    pairs = preference_pairs(16)
    train, validation = pairs, pairs.select(range(8))
    with tempfile.TemporaryDirectory() as tmp:
        folders = [Path(tmp) / f"setting{i}" for i in range(settings)]
        start = time.perf_counter()
        if per is None:
            results = [training.train(train, validation, MODEL, "dpo", f, config) for f in folders]
        else:
            jobs = [ray_backend.TrainingJob(train, validation, MODEL, "dpo", f, config) for f in folders]
            results = list(ray_backend.train_all(jobs, cpus=threads).values())
        wall = time.perf_counter() - start
    return {
        "arm": arm,
        "wall_seconds": wall,
        "training_seconds": [r.seconds for r in results],
        "steps": [r.steps for r in results],
        "threads_per_training": threads,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: run the arms and write ``outputs/bench/ray.json``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", type=int, default=4, help="trainings per arm (the demo trains 4 settings)")
    p.add_argument("--reps", type=int, default=1, help="repetitions of each arm (alternating)")
    p.add_argument("--child", choices=list(ARMS), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.settings)))
        return 0
    before = loadavg()
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for rep in range(a.reps):
        order = list(ARMS) if rep % 2 == 0 else list(reversed(ARMS))
        for arm in order:
            res = run_child([str(Path(__file__)), "--child", arm, "--settings", str(a.settings)], timeout=3000)
            runs[arm].append(res)
            print(f"{arm}: {res['wall_seconds']:.1f} s for {a.settings} trainings", flush=True)
    wall = {arm: median([r["wall_seconds"] for r in rs]) for arm, rs in runs.items()}
    rows = [
        {
            "arm": arm,
            "threads per training": runs[arm][0]["threads_per_training"],
            "trainings": a.settings,
            "wall s": round(wall[arm], 1),
            "s per training (median)": round(median([s for r in runs[arm] for s in r["training_seconds"]]), 1),
            "speed-up vs ray 1 worker": round(ratio(wall["ray 1 worker"], wall[arm]), 2),
            "speed-up vs local": round(ratio(wall["local"], wall[arm]), 2),
        }
        for arm in ARMS
    ]
    print(markdown_table(rows))
    result = {
        "name": "ray",
        "workload": f"demo stage 04: {a.settings} DPO trainings, max_steps 4, batch 2, 8 validation pairs, "
        f"{MODEL} at {set_dtype()}",
        "rows": rows,
        "speedup_2_over_1_worker": ratio(wall["ray 1 worker"], wall["ray 2 workers"]),
        "speedup_2_workers_over_local": ratio(wall["local"], wall["ray 2 workers"]),
        "runs": runs,
        "machine": machine(),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
    }
    write_result("ray", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
