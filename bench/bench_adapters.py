"""Evaluating K adapters: one load of the base model for all of them vs one load per adapter.

Stage 04 samples the original model and each adapter on the test (and validation) questions. With an engine per
adapter (``evaluate_adapter(..., engine_options=...)``) every evaluation loads the base model again; with
:class:`wow.align.evaluate.AdapterEngines` the base model is loaded once and each adapter is merged into it in turn
(:class:`wow.backends.models.SharedBase`). Both run here side by side in one process, on the offline default model with K
random LoRA adapters (all linear layers, as :mod:`wow.align.training` trains them), over the same shortest-path test
questions; the rows of both must be identical. Load time is the time spent in :func:`wow.backends.models.load_model`.

Run: ``.venv/bin/python bench/bench_adapters.py`` (writes ``outputs/bench/adapters.json``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchlib import Timer, loadavg, machine, markdown_table, ratio, set_dtype, write_result

MODEL = "smollm2-135m"


def make_adapters(folder: Path, k: int) -> list[Path]:
    """``k`` saved LoRA adapters of the default model with random (non-zero) weights, seeds 1..k."""
    import torch
    from peft import LoraConfig, get_peft_model
    from wow.backends import models

    out = []
    for seed in range(1, k + 1):
        model, _ = models.load_model(MODEL, device="cpu")
        torch.manual_seed(seed)
        config = LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False)
        get_peft_model(model, config).save_pretrained(folder / f"lora_{seed}")
        out.append(folder / f"lora_{seed}")
    return out


class LoadTimer:
    """Counts and times the calls of :func:`wow.backends.models.load_model` (patched in place while it is active)."""

    def __init__(self):
        from wow.backends import models

        self.models, self.real = models, models.load_model
        self.calls, self.seconds = 0, 0.0

    def __enter__(self) -> LoadTimer:
        def timed(*args, **kwargs):
            with Timer() as t:
                out = self.real(*args, **kwargs)
            self.calls += 1
            self.seconds += t.seconds
            return out

        self.models.load = timed
        return self

    def __exit__(self, *exc) -> None:
        self.models.load = self.real


def bench_adapters(
    k: int = 3, n_questions: int = 20, n_samples: int = 2, max_tokens: int = 16, batch_size: int = 8
) -> dict:
    """Evaluate the original model and ``k`` adapters both ways; times, loads and whether the rows agree.

    Args:
        k: adapters.
        n_questions: shortest-path questions generated (the test split of them is evaluated).
        n_samples: answers per question.
        max_tokens: most tokens per answer.
        batch_size: rows per batch.
    """
    from wow import tasks
    from wow.align.evaluate import AdapterEngines, evaluate_adapter
    from wow.backends import models

    load_before = loadavg()
    task = tasks.get("shortest_path")
    questions = [q for q in task.questions(n_questions, seed=0) if q.split == "test"]
    options = {"dtype": set_dtype(), "batch_size": batch_size}
    kwargs = {"n_samples": n_samples, "max_tokens": max_tokens, "progress": False}
    with tempfile.TemporaryDirectory() as tmp:
        adapters = [None, *make_adapters(Path(tmp), k)]
        models.load_model(MODEL, dtype=set_dtype())  # warm-up: both ways then read the weights from the page cache
        results, rows = {}, []
        for method in ("one load per adapter", "one shared load"):
            with LoadTimer() as loads, Timer() as total:
                if method == "one shared load":
                    with AdapterEngines(MODEL, **options) as engines:
                        out = [
                            evaluate_adapter(task, questions, MODEL, a, engines=engines, **kwargs) for a in adapters
                        ]
                else:
                    out = [
                        evaluate_adapter(task, questions, MODEL, a, engine_options=options, **kwargs) for a in adapters
                    ]
            results[method] = out
            rows.append(
                {
                    "method": method,
                    "models_evaluated": len(adapters),
                    "answers": sum(len(r) for r in out),
                    "loads": loads.calls,
                    "load_seconds": loads.seconds,
                    "seconds": total.seconds,
                    "seconds_without_loads": total.seconds - loads.seconds,
                }
            )
    same = results["one load per adapter"] == results["one shared load"]
    for row in rows:
        row["vs_per_adapter"] = ratio(row["seconds"], rows[0]["seconds"])
        row["same_rows"] = same
    result = {
        "name": "adapters",
        "model": MODEL,
        "adapters": k,
        "test_questions": len(questions),
        "n_samples": n_samples,
        "max_tokens": max_tokens,
        "batch_size": batch_size,
        "rows": rows,
        "goal": "1 load of the base model for the original model and K adapters, rows bitwise identical",
        "note": (
            "models_evaluated = the original model + K adapters. On the 135M default model a load takes about a "
            "second; on an 8B model it takes minutes, so the saving grows with the model while the merge of each "
            "adapter (included in seconds_without_loads of the shared load) stays small."
        ),
        "machine": machine(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("adapters", result)
    return result


COLUMNS = [
    "method",
    "models_evaluated",
    "answers",
    "loads",
    "load_seconds",
    "seconds",
    "seconds_without_loads",
    "vs_per_adapter",
    "same_rows",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--adapters", type=int, default=3)
    p.add_argument("--questions", type=int, default=20, help="questions generated (their test split is evaluated)")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args(argv)
    res = bench_adapters(a.adapters, a.questions, a.samples, a.max_tokens, a.batch_size)
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
