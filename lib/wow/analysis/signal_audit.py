"""A signal audit of the base model's answers before any training: can wrong-over-wrong preferences on these answers
teach anything, and what could they teach at most?

Computed in seconds from graded answer rows (``answers.jsonl``, the train split), with no model call:

* ``parse_rate``: the share of answers with an extracted answer;
* ``answer_in_text``: of the parsed answers, the share whose extracted value is written in the answer's own text
  (DPO trains on the text: an answer extracted by a second turn from a text that never states it gives the text
  no label to learn);
* ``cut_at_budget``: the share of answers that ran out of tokens (``finish_reason`` ``length``);
* ``within_share``: of the variance of the wrong answers' graded correctness, the share within questions (pairs
  compare answers of one question: a spread only between questions gives them nothing to order);
* ``probe_accuracy``: how well simple text features (length, mean token logprob, the size of the stated number)
  order the oracle's wrong-over-wrong pairs of held-out questions (a logistic probe, two folds by question): near
  0.5 the labels are not in these shortcuts, near 1 a model can follow them without learning what is less wrong;
* ``ceiling_d_p_wrong``: how much p_wrong could rise if the model, on each question, said only its least wrong
  answer (the most that reweighting its own answers can give: a gain above it needs answers it never wrote).

:func:`decide` applies the rules written down before a study trains (:data:`RULES`) and returns the reasons a task
setting fails them.

Example::

    from wow import io
    from wow.analysis import signal_audit
    audit = signal_audit.audit(io.read_jsonl("outputs/demo/answers.jsonl"))
    ok, reasons = signal_audit.decide(audit)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from wow import WowError
from wow.pairs import candidate_pairs, is_parsed, label, states_answer

#: The rules a task setting must pass before a study trains on it: (key, comparison, bound, why).
RULES = (
    ("parse_rate", ">=", 0.8, "most answers carry a label"),
    ("answer_in_text", ">=", 0.8, "the trained text states the answer it is graded on"),
    ("cut_at_budget", "<=", 0.2, "answers end inside the token budget"),
    ("within_share", ">=", 0.2, "questions hold wrong answers of different correctness"),
    ("ceiling_d_p_wrong", ">=", 0.05, "reweighting the model's own answers can move p_wrong by the smallest effect"),
)
#: Features of the pair probe (differences a - b).
PROBE_FEATURES = ("length", "mean_logprob", "log_size")


def _within_share(wrong: Sequence[dict]) -> float:
    """The share of the total variance of correctness that lies within questions (NaN with fewer than 2 answers)."""
    values = np.array([a["correctness"] for a in wrong], dtype=float)
    if len(values) < 2 or values.var() == 0:
        return float("nan")
    groups: dict[str, list[float]] = defaultdict(list)
    for a in wrong:
        groups[a["question_id"]].append(float(a["correctness"]))
    within = sum(((np.array(g) - np.mean(g)) ** 2).sum() for g in groups.values())
    return float(within / ((values - values.mean()) ** 2).sum())


def _ceiling(wrong: Sequence[dict]) -> float:
    """Mean over questions of the best wrong answer's correctness, minus p_wrong (the mean over wrong answers)."""
    if not wrong:
        return float("nan")
    best: dict[str, float] = {}
    for a in wrong:
        best[a["question_id"]] = max(best.get(a["question_id"], 0.0), float(a["correctness"]))
    p_wrong = float(np.mean([a["correctness"] for a in wrong]))
    return float(np.mean(list(best.values()))) - p_wrong


def _features(a: dict, b: dict) -> list[float]:
    def size(x: dict) -> float:
        v = x.get("extracted")
        return math.log1p(abs(float(v))) if isinstance(v, int | float) and math.isfinite(float(v)) else 0.0

    return [
        float(a.get("n_tokens") or 0) - float(b.get("n_tokens") or 0),
        float(a.get("mean_logprob") or 0.0) - float(b.get("mean_logprob") or 0.0),
        size(a) - size(b),
    ]


def _fit_logistic(x: np.ndarray, y: np.ndarray, steps: int = 50, ridge: float = 1e-3) -> np.ndarray:
    """Weights of a logistic regression without intercept (the pairs are symmetric), by Newton's method."""
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + ridge * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(x.shape[1])
        w -= np.linalg.solve(hess, grad)
    return w


def probe_accuracy(pairs: Sequence[tuple[dict, dict]]) -> float:
    """Held-out accuracy of a logistic probe on :data:`PROBE_FEATURES` ordering wrong-over-wrong pairs: the questions
    are split into two folds (alternating in sorted order), the probe fits on one and is scored on the other, and the
    two scores are averaged by pairs. Features are standardised on the fitting fold. NaN with fewer than two
    questions."""
    by_question: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    for a, b in pairs:
        by_question[a["question_id"]].append((a, b))
    questions = sorted(by_question)
    if len(questions) < 2:
        return float("nan")
    folds = [questions[0::2], questions[1::2]]
    hits = total = 0
    for fit, held in ((folds[0], folds[1]), (folds[1], folds[0])):

        def data(qs):
            rows = [(a, b) for q in qs for a, b in by_question[q]]
            x = np.array([_features(a, b) for a, b in rows] + [_features(b, a) for a, b in rows], dtype=float)
            y = np.array([label(a) > label(b) for a, b in rows] + [label(b) > label(a) for a, b in rows], float)
            return x, y

        x_fit, y_fit = data(fit)
        x_held, y_held = data(held)
        scale = x_fit.std(axis=0)
        scale[scale == 0] = 1.0
        w = _fit_logistic(x_fit / scale, y_fit)
        predicted = (x_held / scale) @ w > 0
        hits += int((predicted == y_held.astype(bool)).sum())
        total += len(y_held)
    return hits / total if total else float("nan")


def audit(answers: Sequence[dict], split: str | None = "train", stated_only: bool = False) -> dict:
    """The audit of graded answer rows (those of ``split``; None: all), per the module's list; ``stated_only``:
    of the answers whose text states their extracted value only (those ``pairs_from_stated_answers`` pairs).

    Returns:
        ``n_answers, n_questions, parse_rate, answer_in_text, cut_at_budget, within_share, n_pairs, probe_accuracy,
        p_wrong, ceiling_d_p_wrong``.

    Raises:
        WowError: no answer of that split.
    """
    rows = [a for a in answers if (split is None or a.get("split") == split) and (not stated_only or states_answer(a))]
    if not rows:
        raise WowError(f"no answers of split {split!r} to audit; run stage 01 first.")
    parsed = [a for a in rows if is_parsed(a)]
    wrong = [a for a in parsed if not a.get("is_correct")]
    pairs = candidate_pairs(rows)
    return {
        "n_answers": len(rows),
        "n_questions": len({a["question_id"] for a in rows}),
        "parse_rate": len(parsed) / len(rows),
        "answer_in_text": sum(map(states_answer, parsed)) / len(parsed) if parsed else float("nan"),
        "cut_at_budget": sum(a.get("finish_reason") == "length" for a in rows) / len(rows),
        "within_share": _within_share(wrong),
        "n_pairs": len(pairs),
        "probe_accuracy": probe_accuracy(pairs),
        "p_wrong": float(np.mean([a["correctness"] for a in wrong])) if wrong else float("nan"),
        "ceiling_d_p_wrong": _ceiling(wrong),
    }


def decide(result: dict) -> tuple[bool, list[str]]:
    """Whether an audit passes :data:`RULES`; the reasons it fails (a missing value fails its rule)."""
    reasons = []
    for key, op, bound, why in RULES:
        value = result.get(key)
        ok = value is not None and not math.isnan(value) and (value >= bound if op == ">=" else value <= bound)
        if not ok:
            reasons.append(f"{key} {value:.3f} fails {op} {bound} ({why})" if value is not None else f"no {key}")
    return not reasons, reasons
