"""Confidence costs no extra forward pass: model forward calls per answer, with and without per-token logprobs.

A forward pre-hook on the model counts every forward call. The same requests (the shortest-path task's first
turns) are generated with ``logprobs=True`` (what :func:`wow.elicit.sampling.sample_answers` asks for: the confidence is
``exp(mean token logprob)``) and with ``logprobs=False``; the difference is the cost of confidence. For reference the
raw engine (``model.generate``) is counted with and without ``output_scores``, and the count is set against the
decoding steps (one forward per generated token position of a batch, plus the prompt passes).

Run: ``.venv/bin/python bench/bench_confidence.py`` (writes ``outputs/bench/confidence.json``).
"""

from __future__ import annotations

import argparse

from benchlib import loadavg, markdown_table, set_dtype, write_result

MODEL = "smollm2-135m"


class ForwardCounter:
    """Counts the forward calls of a torch module (a forward pre-hook on the top-level model)."""

    def __init__(self, module):
        self.calls = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module, _args):
        self.calls += 1

    def remove(self) -> None:
        """Detach the hook."""
        self._handle.remove()


def bench_confidence(n_questions: int = 2, n_samples: int = 4, max_tokens: int = 16, batch_size: int = 8) -> dict:
    """Count forward calls per answer for wow (both engine modes) and the raw engine, logprobs on and off.

    Args:
        n_questions: shortest-path questions.
        n_samples: answers per question.
        max_tokens: most tokens per answer.
        batch_size: rows per batch.
    """
    import torch
    from wow import tasks
    from wow.backends.base import ChatRequest
    from wow.backends.local.transformers_engine import TransformersEngine
    from wow.elicit.sampling import sample_answers

    load_before = loadavg()
    task = tasks.get("shortest_path")
    questions = task.questions(n_questions, seed=0, split_fractions=(1.0, 0.0, 0.0))
    messages = [task.messages(q, task.permutation(q, k, 0)) for q in questions for k in range(n_samples)]
    rows = []
    for fixed in (True, False):
        engine = TransformersEngine(MODEL, dtype=set_dtype(), batch_size=batch_size, fixed_shapes=fixed)
        engine._load()
        counter = ForwardCounter(engine._model)
        answers = sample_answers(
            task,
            questions,
            engine,
            "bench",
            n_samples=n_samples,
            max_tokens=max_tokens,
            seed=0,
            extraction="direct",
            progress=False,
        )
        with_lp = counter.calls
        assert all(a["mean_logprob"] is not None for a in answers), "sampling returned no logprobs"
        counter.calls = 0
        reqs = [
            ChatRequest(messages=m, max_tokens=max_tokens, temperature=1.0, seed=0, sample_index=k, logprobs=False)
            for m, k in zip(messages, [k for _ in questions for k in range(n_samples)], strict=True)
        ]
        plain = engine.generate(reqs)
        without_lp = counter.calls
        counter.remove()
        tokens = sum(a["n_tokens"] for a in answers)
        same_text = [a["text"] for a in answers] == [c.text for c in plain]
        rows.append(
            {
                "method": "wow " + ("fixed_shapes" if fixed else "default"),
                "answers": len(answers),
                "generated_tokens": tokens,
                "forwards_with_logprobs": with_lp,
                "forwards_without_logprobs": without_lp,
                "extra_forwards_for_confidence": with_lp - without_lp,
                "forwards_per_answer": with_lp / len(answers),
                "forwards_per_generated_token": with_lp / max(tokens, 1),
                "same_texts": same_text,
            }
        )
        engine.close()

    from wow.backends import models

    model, tok = models.load_model(MODEL, dtype=set_dtype(), device="cpu")
    counter = ForwardCounter(model)
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in messages]
    counts, tokens = {}, 0
    for scores in (True, False):
        counter.calls = 0
        torch.manual_seed(0)
        n_tok = 0
        for s in range(0, len(texts), batch_size):
            enc = tok(texts[s : s + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=max_tokens,
                    output_scores=scores,
                    return_dict_in_generate=True,
                    pad_token_id=tok.pad_token_id,
                )
                if scores:
                    model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
            new = out.sequences[:, enc["input_ids"].shape[1] :].tolist()
            n_tok += sum(r.index(tok.eos_token_id) if tok.eos_token_id in r else len(r) for r in new)
        counts[scores] = counter.calls
        tokens = tokens or n_tok
    counter.remove()
    rows.append(
        {
            "method": "raw generate",
            "answers": len(texts),
            "generated_tokens": tokens,
            "forwards_with_logprobs": counts[True],
            "forwards_without_logprobs": counts[False],
            "extra_forwards_for_confidence": counts[True] - counts[False],
            "forwards_per_answer": counts[True] / len(texts),
            "forwards_per_generated_token": counts[True] / max(tokens, 1),
            "same_texts": None,
        }
    )
    result = {
        "name": "confidence",
        "model": MODEL,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "rows": rows,
        "goal": "0 extra forward calls for the per-token logprobs (confidence)",
        "note": (
            "A forward call processes a whole batch: forwards_per_answer falls as the batch fills. wow fixed_shapes "
            "reads each distinct prompt alone, then decodes a batch_size-row batch per padded prompt length."
        ),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    write_result("confidence", result)
    return result


COLUMNS = [
    "method",
    "answers",
    "generated_tokens",
    "forwards_with_logprobs",
    "forwards_without_logprobs",
    "extra_forwards_for_confidence",
    "forwards_per_answer",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", type=int, default=2)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    a = p.parse_args(argv)
    res = bench_confidence(a.questions, a.samples, a.max_tokens, a.batch_size)
    print(markdown_table(res["rows"], COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
