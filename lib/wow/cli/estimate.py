"""``wow estimate``: model calls, tokens, API cost and local compute time of a parameter set, before running it.

Everything is computed from the parameters alone (no model call, no data file read):

* **01_data_prep**: per generator and task, ``questions x n_samples`` answers plus one extraction turn each
  (none for free-text tasks such as Bio); Bio's FActScore adds atomic-fact and verification calls of its engine.
* **02_elicitation**: per judge and mode, the pairwise judge on ``2 x pairs`` prompts (both orders), where pairs per
  (task, generator) are at most ``judged questions x C(n_samples, 2)`` (every answer wrong with a distinct label:
  an upper bound) and at most the cap ``max_judge_pairs``; the score judge on ``judged questions x
  ceil(n_samples / k)`` prompts per k. The judged questions are those whose answers a later stage uses
  (:func:`judged_questions`). The logprob mode runs for local judges only (k = 1 for scores).
* **04_dpo_training**: per preference set, pairs after ``max_pairs`` (and the margin share of score sets), training
  steps per grid point (``ceil(pairs / train_batch_size) x epochs``, or ``max_steps``), validation sampling per grid
  point when the grid has more than one point, and test sampling of the original and every aligned model on every
  evaluation task (``eval_tasks``).

Token counts use :data:`PROMPT_TOKENS` and :data:`ANSWER_TOKENS` (typical sizes per task, approximate) capped by the
budgets of the set; API cost uses the prices of :data:`wow.backends.models.API_MODELS`. Local time is in two
columns: **CPU hours** for the offline model at the throughput measured on 2 CPU cores in the run's precision
(:data:`wow.cli.throughput.MEASURED`), and **GPU hours** for every other local model at the figure assumed in
:data:`wow.cli.throughput.ASSUMED_GPU` (Llama-3-8B on one A100-class GPU, named in the table, never measured here),
or for every local model at the figure the user gives (``--tokens-per-second``).
The pair counts are upper bounds, so the estimate errs high where answers are often correct.

Example::

    from wow import params
    from wow.cli import estimate
    rows = estimate.estimate(params.load("parameters/paper/fig3_alignment.yaml"), tokens_per_second=2500)
    print(estimate_table.format_table(rows))   # wow.cli.estimate_table: the text wow estimate prints
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from wow.backends import models
from wow.cli.throughput import STAND_IN, local_tokens_per_second
from wow.params import RunParams
from wow.schema import parse_pref_type

log = logging.getLogger(__name__)

#: Typical prompt tokens of one question (instruction, question, options), per task; approximate.
PROMPT_TOKENS = {
    "shortest_path": 250,
    "max_flow": 250,
    "matching": 300,
    "knowledge_crosswords": 350,
    "chess": 200,
    "science": 200,
    "mmlu_pro": 300,
    "hellaswag": 200,
    "medmcqa": 150,
    "com2": 200,
    "bio_generation": 40,
}
#: Typical tokens of a sampled answer (reasoning included), per task, before the ``max_new_tokens`` cap.
ANSWER_TOKENS = {"bio_generation": 250}
DEFAULT_ANSWER_TOKENS = 300
#: Instruction tokens a judge prompt adds to the question and answers.
JUDGE_OVERHEAD_TOKENS = 150
#: Typical judge reply tokens (text mode) before the reply budget: pairwise, and score per answer scored.
PAIRWISE_REPLY_TOKENS = 150
SCORE_REPLY_TOKENS_PER_ANSWER = 60
#: Extraction turn: prefilled (local engines) or free (API engines, the paper's 32 tokens).
EXTRACT_TOKENS = {"local": 8, "api": 32}
#: Bio's FActScore per answer of ``ANSWER_TOKENS["bio_generation"]`` tokens: atomic-fact calls (one per sentence) and
#: verification calls (one per fact); a shorter answer budget has proportionally fewer sentences
#: (:func:`factscore_calls`).
FACTSCORE_CALLS = {"atomic": 8, "verify": 30}
FACTSCORE_TOKENS = {"atomic": (450, 100), "verify": (900, 2)}


@dataclass
class Line:
    """One row of the estimate: a stage's calls of one model for one purpose."""

    stage: str
    what: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None = None
    hours: float | None = None
    device: str | None = None  # "GPU" or "CPU": where ``hours`` are spent (None for API calls)
    basis: str | None = None  # the throughput behind ``hours``: "given", "measured, <where>", "assumed, <where>"


def _is_api(model: str) -> bool:
    return model.startswith("openai:") or model in models.API_MODELS


def _answer_tokens(P: RunParams, task: str) -> int:
    return min(P.max_new_tokens, ANSWER_TOKENS.get(task, DEFAULT_ANSWER_TOKENS))


def split_sizes(P: RunParams) -> dict[str, int]:
    """Questions per split, as :mod:`wow.tasks.base` assigns them (rounded sizes, the test split the remainder)."""
    n = P.n_questions
    n_train, n_val = round(P.split_fractions[0] * n), round(P.split_fractions[1] * n)
    return {"train": n_train, "validation": n_val, "test": n - n_train - n_val}


def _pair_cap(P: RunParams, judge: str) -> int | None:
    try:
        from wow import protocol

        return protocol.judge_pair_cap(P.protocol, judge, P.max_judge_pairs)
    except (ImportError, AttributeError):
        return P.max_judge_pairs


def judged_questions(P: RunParams, task: str) -> int:
    """Questions of ``task`` whose answers the judges see (:func:`wow.protocol.judged_splits`)."""
    from wow import protocol

    splits = protocol.judged_splits(P.protocol, task, P.acc_wow_split)
    return P.n_questions if splits is None else sum(split_sizes(P)[s] for s in splits)


def _eval_samples(P: RunParams, task: str) -> int:
    try:
        from wow import protocol

        return protocol.eval_samples(P.protocol, task, P.eval_samples)
    except (ImportError, AttributeError):
        return P.eval_samples


def _extracts(task: str) -> bool:
    from wow import tasks

    return not getattr(tasks.task_class(task), "free_text", False)


def factscore_calls(part: str, answer_tokens: int) -> int:
    """FActScore calls of one Bio answer of at most ``answer_tokens`` tokens (``part``: ``atomic`` or ``verify``):
    :data:`FACTSCORE_CALLS` scaled by the answer's length against the typical biography's, at least one."""
    share = min(1.0, answer_tokens / ANSWER_TOKENS["bio_generation"])
    return max(1, math.ceil(FACTSCORE_CALLS[part] * share))


def _sampling_lines(P: RunParams, stage: str, what: str, model: str, task: str, n_answers: int) -> list[Line]:
    """Answers of ``model`` on ``task`` plus their extraction turns (and FActScore for Bio)."""
    prompt, answer = PROMPT_TOKENS.get(task, 250), _answer_tokens(P, task)
    lines = [Line(stage, f"{what}: {task}", model, n_answers, n_answers * prompt, n_answers * answer)]
    if _extracts(task):
        ext = EXTRACT_TOKENS["api" if _is_api(model) and P.api_prefill == "none" else "local"]  # free or prefilled
        lines.append(
            Line(
                stage,
                f"{what} extraction: {task}",
                model,
                n_answers,
                n_answers * (prompt + answer + 60),
                n_answers * ext,
            )
        )
    engine = P.task_options.get(task, {}).get("engine") if task == "bio_generation" else None
    if isinstance(engine, str):
        for part in ("atomic", "verify"):
            calls = n_answers * factscore_calls(part, answer)
            p, c = FACTSCORE_TOKENS[part]
            lines.append(Line(stage, f"FActScore {part}: {task}", engine, calls, calls * p, calls * c))
    return lines


def _stage01(P: RunParams) -> list[Line]:
    return [
        line
        for generator in P.generators
        for task in P.tasks
        for line in _sampling_lines(P, "01_data_prep", "sampling", generator, task, P.n_questions * P.n_samples)
    ]


def _stage02(P: RunParams) -> list[Line]:
    lines = []
    groups = [(task, g) for task in P.tasks for g in P.generators]
    for judge in P.judges:
        for mode in P.judge_modes:
            if mode == "logprob" and _is_api(judge) and P.api_prefill == "none":
                continue  # no next-token verdicts from an API that continues no prefill (judge_all skips it)
            if P.pairwise:
                cap = _pair_cap(P, judge)
                calls = prompt = 0
                for task, _g in groups:
                    pairs = judged_questions(P, task) * math.comb(P.n_samples, 2)
                    pairs = min(pairs, cap) if cap is not None else pairs
                    calls += 2 * pairs
                    prompt += 2 * pairs * (PROMPT_TOKENS.get(task, 250) + 2 * _answer_tokens(P, task))
                prompt += calls * JUDGE_OVERHEAD_TOKENS
                reply = 1 if mode == "logprob" else min(P.pairwise_reply_tokens, PAIRWISE_REPLY_TOKENS)
                lines.append(Line("02_elicitation", f"pairwise judge ({mode})", judge, calls, prompt, calls * reply))
            for k in P.score_k:
                if mode == "logprob" and k != 1:
                    continue
                calls = prompt = 0
                for task, _g in groups:
                    n_q = judged_questions(P, task)
                    n = n_q * math.ceil(P.n_samples / k)
                    calls += n
                    shown = n_q * P.n_samples * _answer_tokens(P, task)  # every judged answer in one prompt
                    prompt += n * (PROMPT_TOKENS.get(task, 250) + JUDGE_OVERHEAD_TOKENS) + shown
                reply = 1 if mode == "logprob" else min(P.score_reply_tokens, SCORE_REPLY_TOKENS_PER_ANSWER * k)
                lines.append(
                    Line("02_elicitation", f"score judge k={k} ({mode})", judge, calls, prompt, calls * reply)
                )
    return lines


def preference_pairs(P: RunParams, task: str, kind: str, margin: float | None, source: str) -> int:
    """Upper bound on the pairs of one preference set (train questions, every answer wrong or, for right-over-wrong
    types, half of them right), after the margin share and ``max_pairs``."""
    n_gen = 1 if source == "self" else len(P.generators)
    per_question = math.comb(P.n_samples, 2)
    if P.pairs_per_question and kind in ("oracle", "noisy", "random"):
        per_question = min(per_question, P.pairs_per_question)
    if kind == "gold":
        per_question = min(P.n_samples, P.pairs_per_question or P.n_samples)
    if kind.startswith("row"):
        half = P.n_samples // 2
        per_question = half * (P.n_samples - half) + (per_question if kind != "row" else 0)
    pairs = split_sizes(P)["train"] * n_gen * per_question
    if margin is not None and kind.endswith("score"):  # noisy@q keeps every oracle pair (it flips a share q)
        pairs = math.ceil(pairs * margin)
    return min(pairs, P.max_pairs)


def _stage04(P: RunParams) -> list[Line]:
    sizes = split_sizes(P)
    grid = len(P.learning_rates) * len(P.lr_schedulers) * len(P.weight_decays)
    seeds = len(P.train_seeds or [None])  # each setting trained (and evaluated) once per training seed
    lines = []
    policy = P.policy_model
    evaluated_base = set()
    for task in P.aligned_tasks:
        for target in P.eval_targets(task):
            if target not in evaluated_base:
                evaluated_base.add(target)
                n = sizes["test"] * _eval_samples(P, target)
                lines += _sampling_lines(P, "04_dpo_training", "test answers, original", policy, target, n)
        seq = PROMPT_TOKENS.get(task, 250) + _answer_tokens(P, task)
        for source in P.pref_sources:
            for spec in P.pref_types:
                kind, margin = parse_pref_type(spec)
                pairs = preference_pairs(P, task, kind, margin, source)
                train_pairs = pairs - round(0.1 * pairs)  # the set's validation share (preferences.val_fraction)
                steps_per_epoch = math.ceil(train_pairs / P.train_batch_size)
                for trainer in P.trainers:
                    steps = seeds * sum(
                        (min(P.max_steps, steps_per_epoch * e) if P.max_steps > 0 else steps_per_epoch * e) * grid
                        for e in P.epochs
                    )
                    # chosen and rejected sequences, forward and backward: counted as tokens processed
                    tokens = steps * P.train_batch_size * 2 * seq
                    n_points = grid * len(P.epochs)
                    shape = f"{n_points} grid points, {steps} steps in all" if n_points > 1 else f"{steps} steps"
                    shape += f" over {seeds} training seeds" if seeds > 1 else ""
                    what = f"training {source} {spec} {trainer}: {task} ({pairs} pairs; {shape})"
                    lines.append(Line("04_dpo_training", what, policy, 0, tokens, 0))
                    if n_points > 1 and sizes["validation"]:
                        n = seeds * n_points * sizes["validation"] * _eval_samples(P, task)
                        what = f"validation answers, {n_points} grid points, {source} {spec} {trainer}"
                        lines += _sampling_lines(P, "04_dpo_training", what, policy, task, n)
                    for target in P.eval_targets(task):
                        n = seeds * sizes["test"] * _eval_samples(P, target)
                        what = f"test answers, {source} {spec} {trainer}"
                        lines += _sampling_lines(P, "04_dpo_training", what, policy, target, n)
    return lines


def estimate(
    P: RunParams,
    tokens_per_second: float | None = None,
    batch_api: bool = False,
    only: list[str] | None = None,
    train_tokens_per_second: float | None = None,
    stand_ins: bool = False,
) -> list[Line]:
    """Every stage's model calls, tokens, API cost (USD) and local hours for the parameter set ``P``.

    Args:
        P: the parameters.
        tokens_per_second: generation throughput of the local models on the user's hardware (training is taken
            at half of it); None uses :data:`wow.cli.throughput.MEASURED` at the run's precision (``P.dtype``).
        batch_api: price API calls at the Batch API's half price.
        train_tokens_per_second: training throughput (sequence tokens through forward and backward per second);
            None: half of ``tokens_per_second``.
        only: the stages to count, as ``wow run --only`` names notebooks (e.g. ``["01", "02"]``); None: all.
        stand_ins: the API models are a rehearsal's local stand-ins: no cost, CPU hours at
            :data:`wow.cli.throughput.STAND_IN`.

    Returns:
        One :class:`Line` per stage, model and purpose; ``calls`` 0 marks training (tokens processed, no call).
    """
    lines = _stage01(P) + _stage02(P)
    if P.trainers and P.pref_types:
        lines += _stage04(P)
    if only:
        lines = [line for line in lines if any(line.stage.startswith(str(o).zfill(2)) for o in only)]
    for line in lines:
        if _is_api(line.model) and stand_ins:
            line.cost_usd = 0.0
            line.hours = (
                line.prompt_tokens / STAND_IN["prompt"] + line.completion_tokens / STAND_IN["generate"]
            ) / 3600
            line.device = "CPU"
            line.basis = f"measured, {STAND_IN['where']}"
        elif _is_api(line.model):
            prices = models.API_MODELS.get(line.model.removeprefix("openai:"))
            if prices is not None:
                cost = models.token_cost(prices, line.prompt_tokens, line.completion_tokens)
                line.cost_usd = cost / 2 if batch_api else cost
        else:
            kind = "train" if line.calls == 0 else "generate"
            rate = local_tokens_per_second(line.model, tokens_per_second, kind, train_tokens_per_second, P.dtype)
            # generation: completion tokens at the measured rate; prompts read about 10x faster (one forward pass)
            work = line.prompt_tokens if kind == "train" else line.completion_tokens + line.prompt_tokens / 10
            line.hours = work / rate.tokens_per_second / 3600
            line.device = rate.device
            line.basis = rate.basis
    return lines


def totals(lines: list[Line]) -> dict[str, dict]:
    """Per stage (in order) and ``all``: calls, tokens, API cost, GPU hours and CPU hours summed."""
    out: dict[str, dict] = {}
    for line in lines:
        for key in (line.stage, "all"):
            t = out.setdefault(key, dict.fromkeys(SUMMED, 0))
            t["calls"] += line.calls
            t["prompt_tokens"] += line.prompt_tokens
            t["completion_tokens"] += line.completion_tokens
            t["cost_usd"] += line.cost_usd or 0.0
            if line.device:
                t[f"{line.device.lower()}_hours"] += line.hours or 0.0
    if "all" in out:
        out["all"] = out.pop("all")  # last
    return out


#: The columns :func:`totals` sums per stage.
SUMMED = ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "gpu_hours", "cpu_hours")


def calls_by_stage_and_model(lines: list[Line]) -> dict[str, dict[str, int]]:
    """Model calls per stage and model (the shape of ``usage.json``: calls plus cache hits)."""
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        if line.calls:
            stage = out.setdefault(line.stage, {})
            stage[line.model] = stage.get(line.model, 0) + line.calls
    return out
