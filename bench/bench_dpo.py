"""DPO: seconds per step and peak memory of ``wow.align.training.train`` against bare TRL ``DPOTrainer`` and
against the compute ceiling of this machine.

Five arms train the default model with the same LoRA adapter (r 16, alpha 16, all linear projections), the same
preference pairs (shortest-path prompts as the pipeline builds them; chosen / rejected final answers of different
wrongness), the same settings (the demo's stage 04: 2 pairs a step, wow's :class:`~wow.align.align_config.AlignConfig`
defaults otherwise: the precision ``dtype: auto`` resolves to, cosine schedule, warm-up ratio 0.1, beta 0.1, sigmoid
loss) and the same seed:

- ``wow``: :func:`wow.align.training.train`, which on a CPU projects only the answer tokens onto the vocabulary
  (:mod:`wow.align.answer_token_scoring`) and reads each pair's prompt once per pass, both answers behind it
  (:mod:`wow.align.shared_prompts`);
- ``wow, prompts repeated``: the same call with ``shared_prompts=False`` (TRL's layout: each answer's row repeats
  its pair's prompt);
- ``wow, every position scored``: the same call with TRL's CPU default (every position projected, prompt included);
- ``wow, a second arm on the same pairs flipped``: an oracle arm's training first (not timed), then the same pairs
  with chosen and rejected swapped, as the ``random`` arm of a stage reads them: the reference's log-probabilities
  come from the store the first one filled (:mod:`wow.align.reference_logps`), so its steps run no reference pass;
- ``trl``: bare TRL ``DPOTrainer`` (TRL's CPU default).

Each run is its own process (peak RSS is ``VmHWM``), runs alternate (A B C, C B A...: a load that drifts during the
benchmark cancels out) and a callback times every optimiser step; the first step (allocations, ~2x a later step) is
reported apart and not counted. Every arm sees the same batches in the same order.

The ceiling is the matrix products of a step at this machine's measured GEMM rate (the model's own shapes, in the
run's precision, all threads): the policy's forward and its backward to the activations (the frozen weights get no
gradient; LoRA's are negligible) and the reference's forward, ``6 x N x tokens`` FLOPs for ``N`` parameters in the
decoder's linear layers, plus the answer tokens' projection onto the vocabulary. Attention scores, norms and the
optimiser are left out, so a real step is slower. ``tokens`` are the step's tokens in TRL's layout (TRL's
``num_tokens``, every arm's), so the ceiling is the same for every arm; the arms that read each prompt once compute fewer,
so their ratio to the ceiling says how far they are from computing TRL's step at the GEMM rate.

Run: ``.venv/bin/python bench/bench_dpo.py`` (writes ``outputs/bench/dpo.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    BENCH_DIR,
    gemm_gflops,
    loadavg,
    markdown_table,
    median,
    peak_rss_mb,
    ratio,
    rss_mb,
    run_child,
    write_result,
)

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


ARMS = {
    "wow": "wow.align.training.train",
    "wow-repeated-prompts": "wow.align.training.train, prompts repeated per answer (TRL's layout)",
    "wow-every-position": "wow.align.training.train, every position scored (TRL's CPU default)",
    "wow-shared-reference": "wow.align.training.train, a second arm on the same pairs flipped (reference reused)",
    "trl": "bare TRL DPOTrainer",
}


#: ``--dtype``: the training's bf16 autocast (``auto``: what ``dtype: auto`` resolves to on this machine).
BF16 = {"auto": None, "float32": False, "bfloat16": True}


def child(which: str, steps: int, batch_size: int, n_pairs: int, dtype: str = "auto") -> dict:
    """One training run in this process (an arm of :data:`ARMS`); returns step times, tokens and memory."""
    import contextlib
    import dataclasses

    import torch
    from wow.align import align_config, answer_token_scoring, training

    torch.manual_seed(0)
    ds = preference_pairs(n_pairs)
    config = align_config.AlignConfig(
        train_batch_size=batch_size, max_steps=steps, progress=False, logging_steps=1, bf16=BF16[dtype]
    )
    timer = _step_timer()
    rss_start = rss_mb()
    t0 = time.perf_counter()
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        if which == "trl":
            loss, history = _bare_trl(ds, config, Path(tmp) / "run", timer)
        else:
            if which == "wow-every-position":
                answer_token_scoring.answer_tokens_only = contextlib.nullcontext
            if which == "wow-repeated-prompts":
                config = dataclasses.replace(config, shared_prompts=False)
            if which == "wow-shared-reference":  # an oracle arm first (untimed), then its pairs flipped, as random's
                training.train(ds, None, MODEL, "dpo", Path(tmp) / "first", config)
                ds = ds.rename_columns({"chosen": "rejected", "rejected": "chosen"})
                t0 = time.perf_counter()
            res = training.train(ds, None, MODEL, "dpo", Path(tmp) / "run", config, callbacks=[timer])
            loss, history = res.train_loss, res.log_history
            # shared only in float32 (wow.align.reference_logps): in bfloat16 this arm computes its reference too
            reference = json.loads((Path(tmp) / "run" / "train_log.json").read_text())["reference_logps"]
    total = time.perf_counter() - t0
    counted = timer.steps[1:]
    cumulative = [h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h]
    return {
        "which": which,
        "steps": len(timer.steps),
        "step_seconds": timer.steps,
        "step_tokens": [b - a for a, b in zip([0, *cumulative[:-1]], cumulative, strict=True)],
        "s_per_step": sum(counted) / len(counted) if counted else None,
        "first_step_seconds": timer.steps[0] if timer.steps else None,
        "total_seconds": total,
        "train_loss": loss,
        "reference_logps": reference,
        "bf16": align_config.use_bf16(config, "cpu"),
        "rss_start_mb": rss_start,
        "peak_rss_mb": peak_rss_mb(),
    }


def _bare_trl(ds, config, output_dir: Path, timer) -> tuple[float, list[dict]]:
    """TRL's DPOTrainer used directly, with the same model folder, data, precision and settings as
    ``wow.align.training.train``; returns the training loss and the log history."""
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from wow.align.align_config import use_bf16
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
        per_device_train_batch_size=config.train_batch_size,
        per_device_eval_batch_size=config.train_batch_size,
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
        bf16=use_bf16(config, "cpu"),  # what wow's train() autocasts to: dtype auto's choice on this CPU
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
    return out.metrics.get("train_loss"), list(trainer.state.log_history)


def _model_config(model: str = MODEL):
    from transformers import AutoConfig
    from wow.backends import models

    return AutoConfig.from_pretrained(models.resolve(model).source)


def linear_parameters(config) -> int:
    """Parameters in the decoder's linear layers (attention and MLP projections of every layer) of a model config."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    per_layer = (
        config.hidden_size * (2 * config.hidden_size + 2 * kv) + 3 * config.hidden_size * config.intermediate_size
    )
    return config.num_hidden_layers * per_layer


def model_gemm_gflops(config, bf16: bool, tokens: int = 1024) -> float:
    """GFLOP/s of this machine (all threads) on the model's largest projection (tokens x hidden @ hidden x MLP): the
    best of 3 medians of 20 products, since a ceiling is the rate the machine attains (a shared machine's momentary
    load once halved a single median)."""
    dtype = "bfloat16" if bf16 else "float32"
    return max(gemm_gflops(tokens, config.hidden_size, config.intermediate_size, dtype, reps=20) for _ in range(3))


def bench_dpo(
    steps: int = 5, batch_size: int = 2, n_pairs: int = 16, reps: int = 2, dtype: str = "auto", name: str = "dpo"
) -> dict:
    """Alternate ``reps`` runs of each arm (one process each); compare seconds per step, peak memory and the
    compute ceiling.

    Args:
        steps: optimiser steps per run (the first is a warm-up, not counted).
        batch_size: pairs per step (the demo's 2).
        n_pairs: preference pairs.
        reps: runs of each arm.
        name: the result's name (``outputs/bench/<name>.json``).
        dtype: the trainings' precision (``auto``: what ``dtype: auto`` resolves to here; ``float32`` measures the
            precision of CPUs without native bf16 on this one).
    """
    load_before = loadavg()
    runs = {which: [] for which in ARMS}
    for rep in range(reps):
        for which in list(ARMS) if rep % 2 == 0 else list(ARMS)[::-1]:  # A B C C B A: a drifting load cancels out
            args = [str(BENCH_DIR / "bench_dpo.py"), "--child", which, "--steps", str(steps)]
            args += ["--batch-size", str(batch_size), "--pairs", str(n_pairs), "--dtype", dtype]
            runs[which].append(run_child(args))
    bf16 = runs["wow"][0]["bf16"]
    model_config = _model_config()
    n_linear = linear_parameters(model_config)
    gflops = model_gemm_gflops(model_config, bf16)
    counted_tokens = runs["wow"][0]["step_tokens"][1:]
    tokens_per_step = sum(counted_tokens) / len(counted_tokens) if counted_tokens else None
    ceiling = 6 * n_linear * tokens_per_step / (gflops * 1e9) if tokens_per_step else None
    rows = []
    for which, label in ARMS.items():
        rs = runs[which]
        rows.append(
            {
                "method": label,
                "runs": len(rs),
                "s_per_step": median([r["s_per_step"] for r in rs]),
                "first_step_s": median([r["first_step_seconds"] for r in rs]),
                "total_seconds": median([r["total_seconds"] for r in rs]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "train_loss": rs[0]["train_loss"],
                "reference_shared": (rs[0].get("reference_logps") or {}).get("shared"),
            }
        )
    trl = rows[-1]
    for r in rows:
        r["vs_trl_s_per_step"] = ratio(r["s_per_step"], trl["s_per_step"])
        r["vs_ceiling"] = ratio(r["s_per_step"], ceiling)
        r["vs_trl_peak_rss"] = ratio(r["peak_rss_mb"], trl["peak_rss_mb"])
    result = {
        "name": name,
        "model": MODEL,
        "precision": "bfloat16" if bf16 else "float32",
        "steps": steps,
        "counted_steps": steps - 1,
        "batch_size": batch_size,
        "pairs": n_pairs,
        "rows": rows,
        "ceiling": {
            "s_per_step": ceiling,
            "tokens_per_step": tokens_per_step,
            "linear_parameters": n_linear,
            "gemm_gflops": gflops,
            "rule": "6 x linear parameters x tokens of a step / GEMM rate (policy forward + backward to the "
            "activations, reference forward); attention scores, norms, the vocabulary projection of the answer "
            "tokens and the optimiser left out",
        },
        "runs": runs,
        "goal": "wow <= 1.0x bare TRL (s/step)",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result(name, result)
    return result


COLUMNS = [
    "method",
    "runs",
    "s_per_step",
    "vs_trl_s_per_step",
    "vs_ceiling",
    "first_step_s",
    "total_seconds",
    "peak_rss_mb",
    "vs_trl_peak_rss",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table (``--child`` runs one training, prints JSON)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", choices=list(ARMS), help="run one training in this process")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--dtype", choices=list(BF16), default="auto", help="the trainings' precision")
    p.add_argument("--name", default="dpo", help="the result's name (outputs/bench/<name>.json)")
    a = p.parse_args(argv)
    if a.child:
        res = child(a.child, a.steps, a.batch_size, a.pairs, a.dtype)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    res = bench_dpo(a.steps, a.batch_size, a.pairs, a.reps, a.dtype, a.name)
    print(markdown_table(res["rows"], COLUMNS))
    c = res["ceiling"]
    print(
        f"{res['precision']}; compute ceiling {c['s_per_step']:.2f} s/step: 6 x {c['linear_parameters'] / 1e6:.0f}M "
        f"parameters x {c['tokens_per_step']:.0f} tokens at {c['gemm_gflops']:.0f} GFLOP/s (measured GEMM rate)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
