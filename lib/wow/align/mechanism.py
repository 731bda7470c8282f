"""A mechanism endpoint that needs no sampling: what each aligned model learnt, read on the base model's own test
answers with forward passes only.

Every answer the original model wrote on the test questions (``eval/<task>/original.jsonl``) is scored under the
reference (the base model) and under each adapter: its implicit reward is ``r = log pi_theta(y|x) - log
pi_ref(y|x)``, the sum over the answer's tokens (prompt and answer rendered by the chat template, as training does).
Per aligned model:

* ``ranking_accuracy``: over the test questions' wrong-over-wrong pairs (:func:`wow.pairs.candidate_pairs`), the
  share where the less wrong answer gets the higher reward (ties are misses): does the preference generalise to new
  questions, before any sampling noise?
* ``iw_p_wrong``: p_wrong of the aligned model estimated from the base answers by self-normalised importance weights
  ``w = exp(r)`` over the wrong answers, with ``ess`` (``(sum w)^2 / sum w^2``, the answers that effectively count),
  and ``d_iw_p_wrong`` against the base answers' own p_wrong;
* ``kl_ref_policy``: ``KL(pi_ref || pi_theta)`` estimated on the base answers, ``mean(-r)``: how far the model moved.

Example::

    from wow import io
    from wow.align import mechanism
    base = io.read_jsonl("outputs/demo/eval/shortest_path/original.jsonl")
    table = mechanism.mechanism_table(base, {"self_oracle_dpo": "outputs/demo/models/.../lr=5.0e-05_epochs=1"})
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from wow import WowError, progress
from wow.analysis.bootstrap import percentile_interval
from wow.pairs import candidate_pairs, label

log = logging.getLogger(__name__)

COLUMNS = [
    "setting",
    "n_answers",
    "n_pairs",
    "ranking_accuracy",
    "iw_p_wrong",
    "d_iw_p_wrong",
    "ess",
    "n_wrong",
    "kl_ref_policy",
]


def answer_logprobs(
    model, tokenizer, rows: Sequence[dict], batch_size: int = 8, desc: str = "scoring base answers"
) -> np.ndarray:
    """The sum of the token log-probabilities of each row's answer (``text``) after its prompt
    (``prompt_messages``), rendered as one chat turn each.

    The rows of one prompt (a question's samples) share it: its tokens but the last are read once, and its rows'
    continuations (the prompt's last token, then the answer) are read in batches of ``batch_size`` on top of its keys
    and values, so each answer token is scored with the prompt it follows, as a pass over the whole sequence would
    (the same log-probabilities up to rounding). Models whose cache is not plain keys and values (sliding windows)
    read each whole sequence instead.

    Raises:
        WowError: a row whose rendered prompt is not a prefix of prompt + answer (a chat template that rewrites
            earlier turns).
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    sequences = []
    for r in rows:
        prompt = tokenizer.apply_chat_template(r["prompt_messages"], add_generation_prompt=True, return_dict=False)
        turn = [*r["prompt_messages"], {"role": "assistant", "content": r["text"]}]
        full = tokenizer.apply_chat_template(turn, return_dict=False)
        if list(full[: len(prompt)]) != list(prompt):
            raise WowError(f"answer {r.get('answer_id')}: the rendered prompt is not a prefix of prompt + answer.")
        sequences.append((list(full), len(prompt)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    shared = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
    by_prompt: dict[tuple, list[int]] = defaultdict(list)
    for i, (ids, n_prompt) in enumerate(sequences):
        by_prompt[tuple(ids[: n_prompt - 1]) if shared else ()].append(i)  # unshared: batches of whole sequences
    out = np.zeros(len(rows))
    with progress.bar(len(rows), "answer", desc) as bar:
        for members in by_prompt.values():
            context = sequences[members[0]][1] - 1 if shared else 0  # the prompt's tokens but the last
            past = _context_kv(model, sequences[members[0]][0][:context]) if context else None
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                scores = _continuation_logprobs(model, [sequences[i] for i in chunk], context, past, pad)
                out[chunk] = scores
                bar.update(len(chunk))
    return out


def _context_kv(model, ids: list[int]) -> list:
    """The keys and values of every layer after reading ``ids`` (one row)."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    with torch.inference_mode():
        model.get_decoder()(input_ids=torch.tensor([ids], device=device), cache=cache, use_cache=True)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _continuation_logprobs(model, batch: list, context: int, past: list | None, pad: int) -> list[float]:
    """Per sequence ``(ids, n_prompt)`` of ``batch``: the summed log-probability of its answer tokens, reading
    ``ids[context:]`` (right-padded) after ``past``, the keys and values of the shared ``ids[:context]``."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    width = max(len(ids) - context for ids, _ in batch)
    ids = torch.tensor([s[context:] + [pad] * (width - len(s) + context) for s, _ in batch], device=device)
    mask = torch.tensor([[1] * (len(s) - context) + [0] * (width - len(s) + context) for s, _ in batch])
    cache = None
    if past is not None:
        cache = DynamicCache(config=model.config)
        for layer, (keys, values) in zip(cache.layers, past, strict=True):
            layer.update(keys.expand(len(batch), -1, -1, -1), values.expand(len(batch), -1, -1, -1))
        mask = torch.cat([mask.new_ones((len(batch), context)), mask], dim=1)
    positions = torch.arange(context, context + width, device=device)[None].expand(len(batch), -1)
    # the vocabulary projection only where an answer token is predicted: a whole batch's logits (batch x length x
    # vocabulary, in float32) cost gigabytes and most of the time for answers much shorter than their prompts
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    scores = []
    with torch.inference_mode():
        hidden = decoder(
            input_ids=ids,
            attention_mask=mask.to(device),
            position_ids=positions,
            cache=cache,
            use_cache=cache is not None,
        ).last_hidden_state
        for j, (s, n_prompt) in enumerate(batch):
            first, last = n_prompt - 1 - context, len(s) - 1 - context  # the positions that predict answer tokens
            logits = head(hidden[j, first:last]).float()
            scores.append(
                float(torch.log_softmax(logits, dim=-1).gather(-1, ids[j, first + 1 : last + 1, None]).sum())
            )
    return scores


def arm_metrics(rows: Sequence[dict], rewards: np.ndarray) -> dict:
    """The endpoint of one aligned model from its rewards ``r`` of the base answers ``rows`` (see the module)."""
    if len(rows) != len(rewards):
        raise WowError(f"{len(rows)} answers but {len(rewards)} rewards.")
    reward = {id(r): float(x) for r, x in zip(rows, rewards, strict=True)}
    pairs = candidate_pairs(rows)
    hits = sum(ranks_as_labels(reward[id(a)], reward[id(b)], a, b) for a, b in pairs)
    wrong = [i for i, r in enumerate(rows) if not r.get("is_correct")]
    c = np.array([np.clip(rows[i].get("correctness") or 0.0, 0.0, 1.0) for i in wrong], dtype=float)
    r = np.asarray(rewards, dtype=float)[wrong]
    if len(wrong):
        w = np.exp(r - r.max())
        iw, ess, base = float((w * c).sum() / w.sum()), float(w.sum() ** 2 / (w**2).sum()), float(c.mean())
    else:
        iw = ess = base = math.nan
    return {
        "n_answers": len(rows),
        "n_pairs": len(pairs),
        "ranking_accuracy": hits / len(pairs) if pairs else math.nan,
        "iw_p_wrong": iw,
        "d_iw_p_wrong": iw - base,
        "ess": ess,
        "n_wrong": len(wrong),
        "kl_ref_policy": float(-np.mean(rewards)) if len(rewards) else math.nan,
    }


def mechanism_table(
    base_rows: Sequence[dict],
    adapters: Mapping[str, str],
    model: str = "smollm2-135m",
    dtype: str = "auto",
    batch_size: int = 8,
    rewards_out: dict | None = None,
) -> pd.DataFrame:
    """The endpoint of every aligned model (``{setting: adapter folder}``) on the base model's answers: the reference
    scores them once, each adapter once, on one loaded base model (:class:`wow.backends.models.SharedBase`).
    ``rewards_out``, a dict, receives every answer's reward per setting (``{setting: {answer_id: r}}``).

    Returns:
        DataFrame with :data:`COLUMNS`, one row per setting.
    """
    from wow.backends.models import SharedBase

    if not base_rows:
        raise WowError("no base answers to score: evaluate the original model on the test questions first.")
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in base_rows:
        groups[r["question_id"]].append(r)
    rows = [r for q in sorted(groups) for r in groups[q]]  # one question's answers in one batch where they fit
    with SharedBase(model, dtype=dtype) as shared:
        reference = answer_logprobs(*shared.activate(None), rows, batch_size, "scoring base answers: reference")
        table = []
        for setting, folder in adapters.items():
            policy = answer_logprobs(*shared.activate(folder), rows, batch_size, f"scoring base answers: {setting}")
            table.append({"setting": setting, **arm_metrics(rows, policy - reference)})
            if rewards_out is not None:
                rewards_out[setting] = {
                    r["answer_id"]: float(x) for r, x in zip(rows, policy - reference, strict=True)
                }
    return pd.DataFrame(table, columns=COLUMNS)


def ranks_as_labels(reward_a: float, reward_b: float, a: Mapping, b: Mapping) -> bool:
    """Whether the rewards of answers ``a`` and ``b`` order them as their labels do (a tie is a miss)."""
    return (reward_a - reward_b) * (label(a) - label(b)) > 0


def question_hits(
    rows: Sequence[dict], reward: Mapping[str, float], pairs: Sequence[tuple[dict, dict]] | None = None
) -> dict[str, tuple[int, int]]:
    """Per test question, ``(hits, pairs)`` of the ranking accuracy: its wrong-over-wrong pairs
    (:func:`wow.pairs.candidate_pairs` of ``rows``, or ``pairs`` already drawn from them) and how many of them the
    rewards ``{answer_id: r}`` order as the labels do."""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a, b in candidate_pairs(rows) if pairs is None else pairs:
        out[a["question_id"]][0] += ranks_as_labels(reward[a["answer_id"]], reward[b["answer_id"]], a, b)
        out[a["question_id"]][1] += 1
    return {q: (h, n) for q, (h, n) in out.items()}


def ranking_difference(
    rows: Sequence[dict],
    rewards: Mapping[str, Mapping[str, float]],
    arm_a: Sequence[str],
    arm_b: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Held-out ranking accuracy of arm ``a`` minus arm ``b`` (each the mean over its settings, e.g. its training
    seeds), with a percentile interval that resamples test questions (every pair of a drawn question, both arms on
    the same draw: the pairs of one question share answers and are not independent).

    Args:
        rows: the base model's test answers (those :func:`mechanism_table` scored).
        rewards: ``{setting: {answer_id: r}}`` as :func:`mechanism_table` fills ``rewards_out``.
        arm_a, arm_b: the settings of each arm.

    Returns:
        ``{"a", "b", "difference", "ci_low", "ci_high", "n_questions", "n_pairs"}``.
    """
    if not arm_a or not arm_b:
        raise WowError("ranking_difference needs at least one setting per arm.")
    pairs = candidate_pairs(rows)
    hits = {s: question_hits(rows, rewards[s], pairs) for s in dict.fromkeys([*arm_a, *arm_b])}
    questions = sorted(next(iter(hits.values())))
    if not questions:
        raise WowError("no wrong-over-wrong pair among the test answers: the ranking accuracy is undefined.")
    h = {s: np.array([hits[s][q][0] for q in questions], dtype=float) for s in hits}
    n = np.array([hits[arm_a[0]][q][1] for q in questions], dtype=float)

    def accuracy(settings, weights):
        return np.mean([(weights * h[s]).sum(-1) / (weights * n).sum(-1) for s in settings], axis=0)

    ones = np.ones(len(questions))
    a, b = float(accuracy(arm_a, ones)), float(accuracy(arm_b, ones))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(questions), ones / len(questions), size=n_boot).astype(float)
    lo, hi = percentile_interval(accuracy(arm_a, draws) - accuracy(arm_b, draws), alpha=1 - level)
    return {
        "a": a,
        "b": b,
        "difference": a - b,
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n_questions": len(questions),
        "n_pairs": int(n.sum()),
    }


#: Columns of :func:`contrast_table` (``mechanism_contrasts.csv``).
CONTRAST_COLUMNS = [
    "task",
    "setting",
    "reference",
    "acc_wow",
    "reference_acc_wow",
    "n_seeds",
    "ranking_accuracy",
    "reference_ranking_accuracy",
    "difference",
    "ci_low",
    "ci_high",
    "n_questions",
    "n_pairs",
]


def contrast_table(
    task: str,
    rows: Sequence[dict],
    rewards: Mapping[str, Mapping[str, float]],
    arms: Mapping[str, tuple[float, Sequence[str]]],
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Every arm's held-out ranking accuracy against the arm of lowest Acc_WoW (a controlled study's reversed set),
    each with its question-level interval (:func:`ranking_difference`, seeds pooled).

    Args:
        task: the task, for the table.
        rows: the base model's test answers of the task.
        rewards: ``{reward key: {answer_id: r}}`` (``mechanism_rewards.csv``).
        arms: ``{setting: (Acc_WoW of its pairs, [its reward keys, one per training seed])}``.

    Returns:
        DataFrame with :data:`CONTRAST_COLUMNS`, one row per arm but the reference; empty with fewer than two arms or
        no wrong-over-wrong pair among the test answers (logged).
    """
    usable = {s: (x, keys) for s, (x, keys) in arms.items() if keys and all(k in rewards for k in keys)}
    if len(usable) < 2:
        return pd.DataFrame(columns=CONTRAST_COLUMNS)
    reference = min(usable, key=lambda s: (usable[s][0], s))
    x_ref, ref_keys = usable[reference]
    out = []
    for setting, (x, keys) in sorted(usable.items(), key=lambda kv: -kv[1][0]):
        if setting == reference:
            continue
        try:
            d = ranking_difference(rows, rewards, keys, ref_keys, n_boot=n_boot, seed=seed)
        except WowError as e:
            log.warning("mechanism contrast of %s, %s: %s", task, setting, e)
            return pd.DataFrame(columns=CONTRAST_COLUMNS)
        out.append(
            {
                "task": task,
                "setting": setting,
                "reference": reference,
                "acc_wow": x,
                "reference_acc_wow": x_ref,
                "n_seeds": len(keys),
                "ranking_accuracy": d["a"],
                "reference_ranking_accuracy": d["b"],
                "difference": d["difference"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "n_questions": d["n_questions"],
                "n_pairs": d["n_pairs"],
            }
        )
    return pd.DataFrame(out, columns=CONTRAST_COLUMNS)
