"""The sizes of a rehearsal (``wow run SET --fast-dev-run``, :mod:`wow.cli.rehearsal`): every setting of a set kept,
only sizes shrunk, each change recorded as a :class:`Change`.

Example::

    values, changes = rehearsal_sizes.shrink(yaml.safe_load(open("parameters/paper/fig3_alignment.yaml")))
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from wow import WowError, params, schema

#: Appended to the run name: a rehearsal has a folder of its own.
SUFFIX = "_fast_dev_run"
#: The sizes of a rehearsal (each only ever lowers the set's value). Two answers per question, or the fewest that let
#: the smallest score margin of the set keep a pair (:func:`least_samples`); not ``max(score_k)``: a score group
#: smaller than k is scored with a prompt of its own size (:func:`wow.pairs.score_groups`), while judged pairs grow as
#: C(n, 2) and ``protocol: paper`` caps them for GPT-4o only (:func:`wow.protocol.judge_pair_cap`).
SAMPLES_PER_QUESTION = 2
MAX_NEW_TOKENS = 48
JUDGE_REPLY_TOKENS = 64
SCORE_LINE_TOKENS = 12  # one "Score for answer i: n" line
MAX_JUDGE_PAIRS = 8
#: Candidate pairs per generator where every preference set of a set needs a judge (fig4_trainers, proxy_runs): a
#: 135M stand-in leaves about a quarter of them usable (half its answers unparsed, more correct or tied, judged pairs
#: flipped across orders), and with 2 answers per question no set had a pair and stage 04 stopped; 32 keep about
#: MAX_JUDGE_PAIRS.
JUDGED_ONLY_PAIRS = 32
MAX_PAIRS = 16
MAX_STEPS = 2
EVAL_SAMPLES = 2
N_BOOT = 50
GRID_POINTS = 2
#: The grid axes in the order the grid runs them (:func:`wow.align.grid.grid_search`).
GRID_AXES = ("learning_rates", "lr_schedulers", "weight_decays", "epochs")


@dataclass(frozen=True)
class Change:
    """One value a rehearsal changed: the parameter (``task_options.com2.labeler``), old and new value, and why."""

    key: str
    old: Any
    new: Any
    why: str

    def line(self) -> str:
        """``key: old -> new (why)`` on one line."""
        return f"{self.key}: {self.old!r} -> {self.new!r} ({self.why})"

    def to_dict(self) -> dict:
        """The change as ``rehearsal.json`` lists it."""
        return {"key": self.key, "old": self.old, "new": self.new, "why": self.why}


# -- shrinking ---------------------------------------------------------------------------------------------------
def least_questions(fractions: list[float]) -> int:
    """The fewest questions that give every split with a positive share at least one question (the split sizes
    of :func:`wow.tasks.base.assign_splits`: rounded train and validation shares, the rest for test)."""
    wanted = {name for name, f in zip(("train", "validation", "test"), fractions, strict=True) if f > 0}
    for n in range(1, 1000):
        if wanted <= set(_splits(n, fractions)):
            return n
    raise WowError(f"split_fractions {fractions}: no question count below 1000 fills every split")


def least_samples(train_questions: int, pref_types: list[str]) -> int:
    """The fewest answers per question (at least :data:`SAMPLES_PER_QUESTION`) from which every ``score@M`` set of
    ``pref_types`` can keep a pair: of the ``train_questions x C(n, 2)`` pairs of a generator (at best: every answer
    wrong, labels distinct) the paper's cut keeps ``round(pairs x M)`` (:func:`wow.pairs.paper_score_margin`; the
    toolkit's keeps at least one). ``score@0.1``: 6 train questions need 2 answers (6 pairs keep 1), 2 need 3.
    Only a best case: where answers are correct, unparsed or tied, a set can still have no pair (its stage says so).
    Where every set needs a judge (no oracle, row, noisy or random set would still train), enough answers for
    :data:`JUDGED_ONLY_PAIRS` candidate pairs of a generator: 6 train questions need 4 answers (36 pairs)."""
    kinds = [schema.parse_pref_type(t) for t in pref_types]
    margins = [m for kind, m in kinds if kind.endswith("score") and m]
    n = SAMPLES_PER_QUESTION
    while margins and round(train_questions * math.comb(n, 2) * min(margins)) < 1 and n < 100:
        n += 1
    if kinds and all(kind.endswith(("direct", "score")) for kind, _ in kinds):  # no set without a judge
        while train_questions * math.comb(n, 2) < JUDGED_ONLY_PAIRS and n < 100:
            n += 1
    return n


def train_questions(n_questions: int, fractions: list[float]) -> int:
    """How many of ``n_questions`` questions :func:`wow.tasks.base.assign_splits` puts in the train split."""
    return _splits(n_questions, fractions).count("train")


def _splits(n_questions: int, fractions: list[float]) -> list[str]:
    """The split of each of ``n_questions`` questions, as :func:`wow.tasks.base.assign_splits` assigns them."""
    from wow.tasks.base import assign_splits

    return [
        q.split for q in assign_splits([SimpleNamespace(split=None) for _ in range(n_questions)], 0, tuple(fractions))
    ]


def grid_size(values: dict) -> int:
    """Points of the training grid of a parameter mapping (learning rates x schedulers x weight decays x epochs)."""
    defaults = params.RunParams.model_fields
    return math.prod(len(values.get(axis, defaults[axis].default)) for axis in GRID_AXES)


def shrink_grid(values: dict) -> list[Change]:
    """Keep :data:`GRID_POINTS` points of the grid, changing ``values`` in place: the first value of every axis but
    the first axis with more than one value, which keeps its first two (3x3x3x3 -> 2 points, learning rates
    differing). A grid of fewer points is kept whole."""
    defaults = params.RunParams.model_fields
    changes = []
    varied = False
    for axis in GRID_AXES:
        old = list(values.get(axis, defaults[axis].default))
        keep = old[:GRID_POINTS] if len(old) > 1 and not varied else old[:1]
        varied = varied or len(keep) > 1
        if keep != old:
            values[axis] = keep
            changes.append(Change(axis, old, keep, f"{GRID_POINTS} grid points in all"))
    return changes


def shrink(values: dict) -> tuple[dict, list[Change]]:
    """The set's values with sizes shrunk to a rehearsal's (:data:`SAMPLES_PER_QUESTION` and the others); every
    setting kept. Returns ``(values, changes)``; the input is not changed."""
    out = copy.deepcopy(values)
    P = params.validate(out, source="the parameter set")  # defaults of what the set leaves out
    changes: list[Change] = []

    def lower(key: str, new, why: str) -> None:
        old = out.get(key, getattr(P, key))
        if new is not None and (old is None or new < old):
            out[key] = new
            changes.append(Change(key, old, new, why))

    lower("n_questions", least_questions(P.split_fractions), "every split of every task gets a question")
    n_train = train_questions(out.get("n_questions", P.n_questions), P.split_fractions)
    samples = least_samples(n_train, P.pref_types)
    why = "answers per question" + (
        f": the smallest score margin keeps a pair of {n_train} train questions"
        if samples > SAMPLES_PER_QUESTION
        else ""
    )
    lower("n_samples", samples, why)
    lower("max_new_tokens", MAX_NEW_TOKENS, "short answers")
    lower("judge_max_tokens", JUDGE_REPLY_TOKENS, "short judge replies")
    if P.pairwise_max_tokens is not None:
        lower("pairwise_max_tokens", JUDGE_REPLY_TOKENS, "short judge replies")
    score_tokens = max(JUDGE_REPLY_TOKENS, SCORE_LINE_TOKENS * max(P.score_k, default=1))
    if P.score_max_tokens is not None:
        lower("score_max_tokens", score_tokens, "room for one score line per answer")
    elif P.score_k and score_tokens > out.get("judge_max_tokens", P.judge_max_tokens):
        out["score_max_tokens"] = min(score_tokens, P.judge_max_tokens)
        changes.append(Change("score_max_tokens", None, out["score_max_tokens"], "room for one score line per answer"))
    paper_cap = (
        "; protocol paper caps GPT-4o alone, at 10,000: the few answers bound its pairs"
        if P.protocol == "paper"
        else ""
    )
    lower("max_judge_pairs", MAX_JUDGE_PAIRS, "a few judged pairs" + paper_cap)
    lower("max_pairs", MAX_PAIRS, "a few preference pairs per set")
    if P.max_steps < 0 or P.max_steps > MAX_STEPS:
        out["max_steps"] = MAX_STEPS
        changes.append(Change("max_steps", P.max_steps, MAX_STEPS, "a few training steps"))
    lower("eval_samples", EVAL_SAMPLES, "answers per test question")
    lower("n_boot", N_BOOT, "a small bootstrap")
    changes += shrink_grid(out)
    out["run_name"] = P.run_name + SUFFIX
    changes.append(Change("run_name", P.run_name, out["run_name"], "a folder of its own"))
    return out, changes
