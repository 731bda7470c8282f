"""DPO: seconds per step and peak memory of ``wow.align.training.train`` against bare TRL ``DPOTrainer``.

Both train the default model with the same LoRA adapter (r 16, alpha 16, all linear projections), the same
preference pairs (shortest-path prompts as the pipeline builds them; chosen / rejected final answers of different
wrongness), the same settings (wow's :class:`~wow.align.align_config.AlignConfig` defaults: bf16 autocast on CPU, cosine schedule,
warm-up ratio 0.1, beta 0.1, sigmoid loss; a few steps) and the same seed. Each run is its own process (peak RSS is
``VmHWM``), runs alternate (wow, TRL, TRL, wow...: a load that drifts during the benchmark cancels out) and a
callback times every optimiser step; the first step is a warm-up and is not counted. Both runs see the same batches
in the same order, so their step times compare step by step.

Run: ``.venv/bin/python bench/bench_dpo.py`` (writes ``outputs/bench/dpo.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchlib import BENCH_DIR, loadavg, markdown_table, median, peak_rss_mb, ratio, rss_mb, run_child, write_result

MODEL = "smollm2-135m"


def preference_pairs(n_pairs: int = 16):
    """A small preference set in TRL's conversational format: real task prompts, two wrong final answers each."""
    from datasets import Dataset
    from wow import tasks

    task = tasks.get("shortest_path")
    questions = task.questions(n_pairs, seed=0, split_fractions=(1.0, 0.0, 0.0))
    rows = []
    for i, q in enumerate(questions):
        gold = q.gold if isinstance(q.gold, (int, float)) else 3
        near, far = int(gold) + 1, int(gold) + 7 + i % 3
        rows.append(
            {
                "prompt": task.messages(q, task.permutation(q, 0, 0)),
                "chosen": [{"role": "assistant", "content": f"Adding the edge weights, the total weight is {near}."}],
                "rejected": [{"role": "assistant", "content": f"Adding the edge weights, the total weight is {far}."}],
            }
        )
    return Dataset.from_list(rows)


def _step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of every optimiser step."""

        def __init__(self):
            self.steps: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.perf_counter() - self._t)

    return StepTimer()


def child(which: str, steps: int, batch_size: int, n_pairs: int) -> dict:
    """One training run in this process (``wow`` or ``trl``); returns step times and memory."""
    import torch
    from wow.align import align_config, training

    torch.manual_seed(0)
    ds = preference_pairs(n_pairs)
    config = align_config.AlignConfig(train_batch_size=batch_size, max_steps=steps, progress=False, logging_steps=1)
    timer = _step_timer()
    rss_start = rss_mb()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if which == "wow":
            res = training.train(ds, None, MODEL, "dpo", Path(tmp) / "run", config, callbacks=[timer])
            loss = res.train_loss
        else:
            loss = _bare_trl(ds, config, Path(tmp) / "run", timer)
    total = time.perf_counter() - t0
    counted = timer.steps[1:]
    return {
        "which": which,
        "steps": len(timer.steps),
        "step_seconds": timer.steps,
        "s_per_step": sum(counted) / len(counted) if counted else None,
        "total_seconds": total,
        "train_loss": loss,
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak_rss_mb(),
    }


def _bare_trl(ds, config, output_dir: Path, timer) -> float:
    """TRL's DPOTrainer used directly, with the same model folder, data and settings as ``wow.align.training.train``."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from wow.backends import models

    folder = models.resolve(MODEL).source
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model.config.use_cache = False
    args = DPOConfig(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        use_cpu=True,
        bf16=True,
        activation_checkpointing=False,
        disable_tqdm=True,
        max_length=config.max_length,
        beta=config.beta,
        loss_type="sigmoid",
    )
    peft_config = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[timer],
    )
    out = trainer.train()
    trainer.save_model(str(output_dir))
    return out.metrics.get("train_loss")


def bench_dpo(steps: int = 6, batch_size: int = 1, n_pairs: int = 16, reps: int = 2) -> dict:
    """Alternate ``reps`` wow and bare-TRL runs (one process each); compare seconds per step and peak memory.

    Args:
        steps: optimiser steps per run (the first is a warm-up, not counted).
        batch_size: pairs per step.
        n_pairs: preference pairs.
        reps: runs of each.
    """
    load_before = loadavg()
    runs = {"wow": [], "trl": []}
    for rep in range(reps):
        for which in ("wow", "trl") if rep % 2 == 0 else ("trl", "wow"):  # A B B A: a drifting load cancels out
            args = [str(BENCH_DIR / "bench_dpo.py"), "--child", which, "--steps", str(steps)]
            args += ["--batch-size", str(batch_size), "--pairs", str(n_pairs)]
            runs[which].append(run_child(args))
    rows = []
    for which, label in (("wow", "wow.align.training.train"), ("trl", "bare TRL DPOTrainer")):
        rs = runs[which]
        rows.append(
            {
                "method": label,
                "runs": len(rs),
                "s_per_step": median([r["s_per_step"] for r in rs]),
                "total_seconds": median([r["total_seconds"] for r in rs]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "train_loss": rs[0]["train_loss"],
            }
        )
    wow, trl = rows
    for r in rows:
        r["vs_trl_s_per_step"] = ratio(r["s_per_step"], trl["s_per_step"])
        r["vs_trl_peak_rss"] = ratio(r["peak_rss_mb"], trl["peak_rss_mb"])
    result = {
        "name": "dpo",
        "model": MODEL,
        "steps": steps,
        "counted_steps": steps - 1,
        "batch_size": batch_size,
        "pairs": n_pairs,
        "rows": rows,
        "runs": runs,
        "goal": "wow <= 1.05x bare TRL (s/step)",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("dpo", result)
    return result


COLUMNS = ["method", "runs", "s_per_step", "vs_trl_s_per_step", "total_seconds", "peak_rss_mb", "vs_trl_peak_rss"]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table (``--child`` runs one training, prints JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=["wow", "trl"], help="run one training in this process")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args(argv)
    if a.child:
        res = child(a.child, a.steps, a.batch_size, a.pairs)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    res = bench_dpo(a.steps, a.batch_size, a.pairs, a.reps)
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
