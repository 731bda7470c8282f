"""Sampling with per-token logprobs: ``wow.elicit.sampling`` against the raw transformers engine doing the same work.

The workload is a parameter set's (default ``parameters/demo.yaml``): its number of questions, samples per question,
``batch_size`` and ``max_new_tokens``, on the shortest-path task's prompts as the pipeline builds them; other token
budgets (the paper's 160 and 1024) and batch sizes are options. The same prompts, batch size and most tokens per
answer go through

* ``wow default``: :func:`wow.elicit.sampling.sample_answers` (first turn only, ``extraction="direct"``) on the
  transformers engine in its default mode (shared prompt prefixes read once, finished rows leave the batch);
* ``wow forward step``: the same with every decoding step through the model's ``forward`` (``fused_decode=False``;
  the default's steps go through :mod:`wow.backends.local.decode_step`);
* ``wow no cascade``: the default with cascade attention off (each row's step reads its own copy of the shared
  prompt's keys and values; :mod:`wow.backends.local.cascade_attention`);
* ``wow fixed_shapes``: the same in the batch-invariant mode (``fixed_shapes=True``);
* ``raw batched``: ``model.generate`` in batches of the same size (left-padded, ``do_sample``, temperature 1, no
  top-k) with ``output_scores`` and ``compute_transition_scores`` for the per-token logprobs, texts decoded;
* ``raw one-by-one``: the same ``generate`` one prompt at a time (run once, on one prompt per question: a loop's
  tokens per second do not depend on how many prompts it runs).

Sampled lengths differ between engines, so speed is compared in generated tokens per second (prompt tokens are
reported apart); the batched methods are interleaved (A, B, C, B, C, A...) and each reports its median over
repetitions. All run in the set's precision (``dtype``, ``auto`` resolved on this machine). Ratios are against
``raw batched`` at the same batch size and against the model's compute ceiling on this machine (tokens per second of
one large batched prompt pass, which is compute bound).

Run: ``.venv/bin/python bench/bench_sampling.py [--params parameters/demo.yaml] [--max-tokens 64 160 1024]
[--batch-sizes 20 40] [--name sampling]`` (writes ``outputs/bench/<name>.json``). ``make bench`` runs it on 4 of the
demo's questions at the demo's budget and the notebooks' default (64 and 160 tokens), batch sizes 20 and 40.
"""

from __future__ import annotations

import argparse

from benchlib import REPO, Timer, loadavg, markdown_table, median, ratio, set_dtype, write_result

MODEL = "smollm2-135m"
DEFAULT_PARAMS = REPO / "parameters" / "demo.yaml"


def workload_from_params(path=DEFAULT_PARAMS) -> dict:
    """The sampling workload of a parameter set: questions, samples per question, batch size, token budget."""
    import yaml

    values = yaml.safe_load(open(path, encoding="utf-8"))
    return {
        "params": str(path),
        "n_questions": int(values["n_questions"]),
        "n_samples": int(values["n_samples"]),
        "batch_size": int(values["batch_size"]),
        "max_tokens": int(values["max_new_tokens"]),
        "dtype": set_dtype(path),
    }


def _questions(n_questions: int):
    from wow import tasks

    task = tasks.get("shortest_path")
    return task, task.questions(max(n_questions, 1), seed=0, split_fractions=(1.0, 0.0, 0.0))


def _messages(task, questions, n_samples: int, seed: int) -> list[list[dict]]:
    """The first-turn messages of every (question, sample), in the order sampling sends them."""
    return [task.messages(q, task.permutation(q, k, seed)) for q in questions for k in range(n_samples)]


class RawEngine:
    """The raw transformers engine: batched ``generate`` with ``output_scores`` and transition scores."""

    def __init__(self, dtype: str):
        import torch
        from wow.backends import models

        self.torch = torch
        self.model, self.tok = models.load_model(MODEL, dtype=dtype, device="cpu")
        self.tok.padding_side = "left"

    def run(self, messages: list[list[dict]], batch_size: int, max_tokens: int, seed: int = 0) -> dict:
        """Generate one answer per message list; returns answers, generated tokens and per-answer logprobs."""
        torch = self.torch
        texts = [self.tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
        eos = self.model.generation_config.eos_token_id
        n_tokens, out_texts, logprobs, prompt_tokens = [], [], [], 0
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
            prompt_tokens += int(enc["attention_mask"].sum())
        return {
            "answers": len(texts),
            "tokens": sum(n_tokens),
            "prompt_tokens": prompt_tokens,
            "texts": out_texts,
            "logprobs": logprobs,
        }

    def ceiling(self, rows: int = 16, length: int = 256, reps: int = 3) -> float:
        """Tokens per second of one batched prompt pass (``rows x length`` tokens, compute bound): the ceiling."""
        torch = self.torch
        ids = torch.randint(100, 10000, (rows, length))
        seconds = []
        with torch.inference_mode():
            for _ in range(reps + 1):
                with Timer() as t:
                    self.model(input_ids=ids, logits_to_keep=1)
                seconds.append(t.seconds)
        return rows * length / median(seconds[1:])


def _wow_run(engine, task, questions, n_samples: int, max_tokens: int, seed: int, cascade: bool = True) -> dict:
    from wow.backends.local import cascade_attention
    from wow.elicit.sampling import sample_answers

    before, computed_before = engine.prompt_tokens, engine.prompt_tokens_computed
    enabled, cascade_attention.ENABLED = cascade_attention.ENABLED, cascade
    try:
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
    finally:
        cascade_attention.ENABLED = enabled
    return {
        "answers": len(rows),
        "tokens": sum(r["n_tokens"] for r in rows),
        "prompt_tokens": engine.prompt_tokens - before,
        "prompt_tokens_computed": engine.prompt_tokens_computed - computed_before,
    }


def _wow_batches(engine, messages: list[list[dict]]) -> int:
    """How many decoding batches the engine makes of these prompts (fixed shapes group them by padded length)."""
    from wow.backends.base import ChatRequest

    engine._load()
    prompts = [engine._encode(engine._prompt_text(ChatRequest(messages=m))) for m in messages]
    return len(engine._batches(prompts))


def bench_sampling(
    params=DEFAULT_PARAMS,
    max_tokens: list[int] | None = None,
    batch_sizes: list[int] | None = None,
    n_questions: int | None = None,
    reps: int = 2,
    one_by_one: bool = True,
    seed: int = 0,
    name: str = "sampling",
    ceiling: dict | None = None,
) -> dict:
    """Measure the methods on a parameter set's workload; returns the result dict (also written to ``<name>.json``).

    Args:
        params: the parameter set whose workload is measured (questions, samples, batch size, token budget).
        max_tokens: token budgets to measure (default: the parameter set's ``max_new_tokens``).
        batch_sizes: batch sizes to measure (default: the parameter set's ``batch_size``).
        n_questions: questions (default: the parameter set's); every question gets its ``n_samples`` samples.
        reps: interleaved repetitions of the batched methods (median reported).
        one_by_one: also time the raw one-prompt-at-a-time loop (once, first budget, one prompt per question).
        seed: sampling seed.
        name: the result's name (``outputs/bench/<name>.json``), e.g. ``sampling_1024`` for a separate run.
        ceiling: options of :meth:`RawEngine.ceiling` (``rows``, ``length``, ``reps``; default 16 x 256, 3 reps).
    """
    from wow.backends.local.transformers_engine import TransformersEngine

    work = workload_from_params(params)
    n_questions = n_questions or work["n_questions"]
    budgets = max_tokens or [work["max_tokens"]]
    sizes = batch_sizes or [work["batch_size"]]
    per_q = work["n_samples"]
    load_before = loadavg()
    dtype = work["dtype"]
    raw = RawEngine(dtype)
    ceiling = raw.ceiling(**(ceiling or {}))
    task, questions = _questions(n_questions)
    messages = _messages(task, questions, per_q, seed)
    rows, details = [], {}
    for size in sizes:
        engines = {
            "wow default": TransformersEngine(MODEL, dtype=dtype, batch_size=size),
            "wow forward step": TransformersEngine(MODEL, dtype=dtype, batch_size=size, fused_decode=False),
            "wow no cascade": TransformersEngine(MODEL, dtype=dtype, batch_size=size),
            "wow fixed_shapes": TransformersEngine(MODEL, dtype=dtype, batch_size=size, fixed_shapes=True),
        }
        for eng in engines.values():  # warm-up: load the models, run one short batch each (first calls are slow)
            _wow_run(eng, task, questions[:1], 1, 2, seed)
        raw.run(messages[:1], size, 2)
        for budget in budgets:
            wname = f"{n_questions} questions x {per_q} samples, {budget} tokens, batch {size}"
            times: dict[str, list[float]] = {m: [] for m in (*engines, "raw batched")}
            tokens: dict[str, list[int]] = {m: [] for m in times}
            prompt_tokens: dict[str, int] = {}
            computed: dict[str, int] = {}
            for rep in range(reps):
                order = list(times)
                order = order[rep % len(order) :] + order[: rep % len(order)]  # rotate: no method always first
                for method in order:
                    with Timer() as t:
                        if method == "raw batched":
                            res = raw.run(messages, size, budget, seed)
                        else:
                            cascade = method != "wow no cascade"
                            res = _wow_run(engines[method], task, questions, per_q, budget, seed, cascade)
                    times[method].append(t.seconds)
                    tokens[method].append(res["tokens"])
                    prompt_tokens[method] = res["prompt_tokens"]
                    computed[method] = res.get("prompt_tokens_computed", res["prompt_tokens"])
            if one_by_one and budget == budgets[0] and size == sizes[0]:
                with Timer() as t:
                    res = raw.run(messages[::per_q], 1, budget, seed)
                times["raw one-by-one"] = [t.seconds]
                tokens["raw one-by-one"] = [res["tokens"]]
                prompt_tokens["raw one-by-one"] = computed["raw one-by-one"] = res["prompt_tokens"]
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
                        "batch_size": size if method != "raw one-by-one" else 1,
                        "max_tokens": budget,
                        "answers": n_answers,
                        "prompt_tokens": prompt_tokens[method],
                        "prompt_tokens_computed": computed[method],
                        "tokens": int(median(tokens[method])),
                        "seconds": round(sec, 3),
                        "answers_per_s": n_answers / sec,
                        "tokens_per_s": tps,
                        "vs_raw_batched": ratio(tps, base_tps),
                        "vs_ceiling": ratio(tps, ceiling),
                        "reps": len(times[method]),
                    }
                )
            details[wname] = {
                "questions": len(questions),
                "samples_per_question": per_q,
                "wow_fixed_shapes_batches": _wow_batches(engines["wow fixed_shapes"], messages),
                "raw_batches": -(-n // size),
                "times": times,
                "tokens": tokens,
            }
            print(markdown_table([r for r in rows if r["workload"] == wname], COLUMNS), flush=True)
    result = {
        "name": name,
        "model": MODEL,
        "dtype": dtype,
        "params": work,
        "batch_sizes": sizes,
        "max_tokens": budgets,
        "ceiling_tokens_per_s": ceiling,
        "reps": reps,
        "rows": rows,
        "details": details,
        "goal": "wow default >= 1.0x raw batched (generated tokens/s, same batch size)",
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result(name, result)
    return result


COLUMNS = [
    "workload",
    "method",
    "prompt_tokens",
    "prompt_tokens_computed",
    "tokens",
    "seconds",
    "tokens_per_s",
    "vs_raw_batched",
    "vs_ceiling",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--params", default=str(DEFAULT_PARAMS), help="parameter set whose workload is measured")
    p.add_argument("--max-tokens", type=int, nargs="+", help="token budgets (default: the parameter set's)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="batch sizes (default: the parameter set's)")
    p.add_argument("--questions", type=int, help="questions (default: the parameter set's)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--no-one-by-one", action="store_true")
    p.add_argument("--name", default="sampling", help="result name: writes outputs/bench/<name>.json")
    a = p.parse_args(argv)
    res = bench_sampling(a.params, a.max_tokens, a.batch_sizes, a.questions, a.reps, not a.no_one_by_one, name=a.name)
    print(
        f"ceiling (batched prompt pass): {res['ceiling_tokens_per_s']:.0f} tok/s; load {res['loadavg_before']} -> "
        f"{res['loadavg_after']}"
    )
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
