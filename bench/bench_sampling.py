"""Sampling with per-token logprobs: ``wow.sampling`` against the raw transformers engine doing the same work.

The same prompts (the shortest-path task's, as the pipeline builds them), the same batch size and the same most
tokens per answer go through

* ``wow fixed_shapes``: :func:`wow.sampling.sample_answers` (first turn only, ``extraction="direct"``) on the
  transformers engine in its default, batch-invariant mode;
* ``wow dynamic``: the same with ``fixed_shapes=False`` (one batched prompt pass, finished rows leave the batch);
* ``raw batched``: ``model.generate`` in batches of the same size (left-padded, ``do_sample``, temperature 1, no
  top-k) with ``output_scores`` and ``compute_transition_scores`` for the per-token logprobs, texts decoded;
* ``raw one-by-one``: the same ``generate`` one prompt at a time (run once, on one prompt per question: a loop's
  tokens per second do not depend on how many prompts it runs).

Two workloads: ``one question`` (every request shares one prompt, as the N samples of a question do) and
``mixed questions`` (several questions whose prompt lengths differ, as a whole run does). Sampled lengths differ
between engines, so speed is compared in generated tokens per second; the batched methods are interleaved
(A, B, C, A, B, C...) and each reports its median over repetitions. Ratios are against ``raw batched``.

Run: ``.venv/bin/python bench/bench_sampling.py`` (writes ``outputs/bench/sampling.json``).
"""

from __future__ import annotations

import argparse

from benchlib import Timer, loadavg, markdown_table, median, ratio, write_result

MODEL = "smollm2-135m"


def _workloads(n_questions: int, n_samples: int) -> dict:
    """``name -> (task, questions, samples per question)`` for the two workloads."""
    from wow import tasks

    task = tasks.get("shortest_path")
    questions = task.questions(max(n_questions, 1), seed=0, split_fractions=(1.0, 0.0, 0.0))
    per_q = max(n_samples // max(n_questions, 1), 1)
    return {
        "one question": (task, questions[:1], n_samples),
        "mixed questions": (task, questions, per_q),
    }


def _messages(task, questions, n_samples: int, seed: int) -> list[list[dict]]:
    """The first-turn messages of every (question, sample), in the order sampling sends them."""
    return [task.messages(q, task.permutation(q, k, seed)) for q in questions for k in range(n_samples)]


class RawEngine:
    """The raw transformers engine: batched ``generate`` with ``output_scores`` and transition scores."""

    def __init__(self, dtype: str = "bfloat16"):
        import torch
        from wow import models

        self.torch = torch
        self.model, self.tok = models.load(MODEL, dtype=dtype, device="cpu")
        self.tok.padding_side = "left"

    def run(self, messages: list[list[dict]], batch_size: int, max_tokens: int, seed: int = 0) -> dict:
        """Generate one answer per message list; returns answers, generated tokens and per-answer logprobs."""
        torch = self.torch
        texts = [self.tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        eos = self.model.generation_config.eos_token_id
        n_tokens, out_texts, logprobs = [], [], []
        torch.manual_seed(seed)
        for s in range(0, len(texts), batch_size):
            enc = self.tok(texts[s : s + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = self.model.generate(
                    **enc,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=max_tokens,
                    output_scores=True,
                    return_dict_in_generate=True,
                    pad_token_id=self.tok.pad_token_id,
                )
                scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            for row, lps in zip(new.tolist(), scores.float().tolist(), strict=True):
                kept = row.index(eos) if eos in row else len(row)
                n_tokens.append(kept)
                logprobs.append(lps[:kept])
                out_texts.append(self.tok.decode(row[:kept], skip_special_tokens=True))
        return {"answers": len(texts), "tokens": sum(n_tokens), "texts": out_texts, "logprobs": logprobs}


def _wow_run(engine, task, questions, n_samples: int, max_tokens: int, seed: int) -> dict:
    from wow.sampling import sample_answers

    rows = sample_answers(
        task,
        questions,
        engine,
        "bench",
        n_samples=n_samples,
        temperature=1.0,
        max_tokens=max_tokens,
        seed=seed,
        extraction="direct",
        progress=False,
    )
    return {"answers": len(rows), "tokens": sum(r["n_tokens"] for r in rows)}


def _wow_batches(engine, messages: list[list[dict]]) -> int:
    """How many decoding batches the engine makes of these prompts (fixed shapes group them by padded length)."""
    from wow.backends.base import ChatRequest

    engine._load()
    prompts = [engine._encode(engine._prompt_text(ChatRequest(messages=m))) for m in messages]
    return len(engine._batches(prompts))


def bench_sampling(
    n_questions: int = 4,
    n_samples: int = 16,
    max_tokens: int = 24,
    batch_size: int = 16,
    reps: int = 2,
    one_by_one: bool = True,
    seed: int = 0,
) -> dict:
    """Measure the four methods on both workloads; returns the result dict (also written to sampling.json).

    Args:
        n_questions: questions of the mixed workload (its requests: ``n_samples`` spread over them).
        n_samples: requests per workload.
        max_tokens: most tokens per answer (all methods).
        batch_size: rows per batch (all batched methods).
        reps: interleaved repetitions of the batched methods (median reported).
        one_by_one: also time the raw one-prompt-at-a-time loop (once per workload).
        seed: sampling seed.
    """
    from wow.backends.transformers_engine import TransformersEngine

    load_before = loadavg()
    engines = {
        "wow fixed_shapes": TransformersEngine(MODEL, dtype="bfloat16", batch_size=batch_size, fixed_shapes=True),
        "wow dynamic": TransformersEngine(MODEL, dtype="bfloat16", batch_size=batch_size, fixed_shapes=False),
    }
    raw = RawEngine()
    rows, details = [], {}
    for wname, (task, questions, per_q) in _workloads(n_questions, n_samples).items():
        messages = _messages(task, questions, per_q, seed)
        # warm-up: load the models and run one short batch each (first calls are slow)
        for eng in engines.values():
            _wow_run(eng, task, questions[:1], 1, 2, seed)
        raw.run(messages[:1], batch_size, 2)
        times: dict[str, list[float]] = {m: [] for m in (*engines, "raw batched")}
        tokens: dict[str, list[int]] = {m: [] for m in times}
        for rep in range(reps):
            order = list(times)
            order = order[rep % len(order) :] + order[: rep % len(order)]  # rotate: no method always goes first
            for method in order:
                with Timer() as t:
                    if method == "raw batched":
                        res = raw.run(messages, batch_size, max_tokens, seed)
                    else:
                        res = _wow_run(engines[method], task, questions, per_q, max_tokens, seed)
                times[method].append(t.seconds)
                tokens[method].append(res["tokens"])
        if one_by_one:  # every per_q-th prompt: each question once (a loop's tokens/s does not depend on count)
            with Timer() as t:
                res = raw.run(messages[::per_q], 1, max_tokens, seed)
            times["raw one-by-one"] = [t.seconds]
            tokens["raw one-by-one"] = [res["tokens"]]
        n = len(messages)
        base_tps = median([k / s for k, s in zip(tokens["raw batched"], times["raw batched"], strict=True)])
        for method in times:
            n_answers = len(messages[::per_q]) if method == "raw one-by-one" else n
            tps = median([k / s for k, s in zip(tokens[method], times[method], strict=True)])
            sec = median(times[method])
            rows.append(
                {
                    "workload": wname,
                    "method": method,
                    "answers": n_answers,
                    "tokens": int(median(tokens[method])),
                    "seconds": round(sec, 3),
                    "answers_per_s": n_answers / sec,
                    "tokens_per_s": tps,
                    "vs_raw_batched": ratio(tps, base_tps),
                    "reps": len(times[method]),
                }
            )
        details[wname] = {
            "questions": len(questions),
            "samples_per_question": per_q,
            "wow_fixed_shapes_batches": _wow_batches(engines["wow fixed_shapes"], messages),
            "raw_batches": -(-n // batch_size),
            "times": times,
            "tokens": tokens,
        }
    result = {
        "name": "sampling",
        "model": MODEL,
        "dtype": "bfloat16",
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "reps": reps,
        "rows": rows,
        "details": details,
        "goal": "wow >= 0.9x raw batched (tokens/s)",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("sampling", result)
    return result


COLUMNS = ["workload", "method", "answers", "tokens", "seconds", "answers_per_s", "tokens_per_s", "vs_raw_batched"]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=4)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-one-by-one", action="store_true")
    a = p.parse_args(argv)
    res = bench_sampling(a.questions, a.samples, a.max_tokens, a.batch_size, a.reps, not a.no_one_by_one)
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
