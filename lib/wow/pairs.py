"""The pair rule: which answers form pairs, which pairs a margin keeps, how pairs are subsampled and grouped.

Every stage that looks at pairs of answers asks this module, so that a point of the paper's Figure 3 takes its x
(Acc_WoW of a method at margin M, :mod:`wow.analysis.acc_wow` / :mod:`wow.analysis.acc_wow_tables`) and its y (alignment on the preference set
built from that method at M, :mod:`wow.preferences`) from the very same pairs, and every judge (:mod:`wow.elicit.judges`)
sees the same pairs.

Candidate pairs (DESIGN.md section 6)
    :func:`candidate_pairs`: within one question and one generator, both answers parsed (``extracted`` and a finite
    ``raw_label``) and wrong, raw labels different; ``a`` before ``b`` in sample order, groups in order of first
    appearance. ``include_correct=True`` also admits correct answers (the paper's binned analysis of Knowledge
    Crosswords). :func:`row_pairs`: right-over-wrong pairs (exactly one answer correct, both parsed, labels differ).

Margins: one rule
    A margin M in (0, 1] keeps the M share of pairs with the largest predicted gap: ``floor(n * M)`` pairs (a tiny
    epsilon keeps ``0.3 * 10`` at 3), but at least one when there are pairs (:func:`margin_count`); ties in the gap
    are broken by pair order, earlier first (:func:`margin_keep`). Acc_WoW at M and a ``score@M`` preference set
    both cut with it, per (task, generator), after dropping pairs with a missing score (:func:`margin_pairs`).
    The paper's code uses two other arithmetics: Acc_WoW ``int(n * M)`` with ``[-0:]`` keeping *all* pairs when that
    is 0 (metric.py), and preference sets ``round(n * M)`` (finetune.py), so there, with 15 pairs, M = 0.5 scores 7
    pairs but trains on 8. ``protocol="paper"`` reproduces both (:func:`paper_margin_keep`,
    :func:`paper_score_margin`).

Subsampling and score groups
    :func:`subsample_pairs`: a seeded cap on pairs per (task, generator), the same draw for every judge.
    :func:`score_groups`: the answers of each (question, generator) in sample order, cut into groups of k for a
    score-judge prompt (every answer is scored, so groups do not depend on grading).

Example::

    from wow.pairs import candidate_pairs, margin_pairs
    pairs = candidate_pairs(answers)                 # 6 wrong answers with distinct labels -> 15 pairs
    kept, n_missing = margin_pairs(pairs, scores, 0.5)   # the 7 pairs with the largest score gap
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from wow import WowError

#: The margins of the paper: all pairs, M_50, M_10.
MARGINS = (1.0, 0.5, 0.1)


# -- candidate pairs ----------------------------------------------------------------------------------------------
def label(answer: Mapping) -> float | None:
    """The raw label of an answer as a float, or None when it is missing or not a finite number."""
    x = answer.get("raw_label")
    if x is None or isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        return None
    return float(x)


def is_parsed(answer: Mapping) -> bool:
    """Whether an answer was parsed and graded: ``extracted`` set and a finite ``raw_label``."""
    return answer.get("extracted") is not None and label(answer) is not None


def states_answer(answer: Mapping) -> bool:
    """Whether an answer's own text states the value extracted from it (numbers as written: ``7``, not ``7.0``).

    An answer whose value was read by a second turn from a text that never writes it gives a preference pair on
    that text no label to learn (``pairs_from_stated_answers``, :mod:`wow.analysis.signal_audit`).
    """
    value = answer.get("extracted")
    if value is None:
        return False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower() in str(answer.get("text", "")).lower()


def is_candidate(answer: Mapping) -> bool:
    """Whether an answer can enter a wrong-over-wrong pair: parsed and wrong."""
    return is_parsed(answer) and not answer.get("is_correct")


def is_candidate_pair(a: Mapping, b: Mapping) -> bool:
    """Whether two answers (of one question and generator) form a wrong-over-wrong pair: both candidates, labels
    differ."""
    return is_candidate(a) and is_candidate(b) and label(a) != label(b)


def _grouped(answers: Iterable[dict], keep) -> list[list[dict]]:
    """The answers passing ``keep``, grouped by (question, generator) in order of first appearance, each group in
    sample order."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in answers:
        if keep(row):
            groups[(row["question_id"], row["generator"])].append(row)
    return [sorted(rows, key=lambda r: r["sample_index"]) for rows in groups.values()]


def candidate_pairs(
    answers: Iterable[dict], include_correct: bool = False, include_ties: bool = False
) -> list[tuple[dict, dict]]:
    """All wrong-over-wrong candidate pairs of ``answers.jsonl`` rows.

    A pair ``(a, b)`` has both answers from the same question and generator, both parsed and wrong, and different
    raw labels; ``a`` comes before ``b`` in sample order. Groups appear in order of first appearance.

    Args:
        answers: rows of ``answers.jsonl`` (``question_id``, ``generator``, ``sample_index``, ``extracted``,
            ``raw_label``, ``is_correct``).
        include_correct: also pair correct answers (with each other when their labels differ, and with wrong ones):
            the paper's binned analysis (``is_corrects=None``).
        include_ties: also pair answers with equal labels (the paper's MedMCQA score sets, where every wrong pair
            ties; :func:`wow.protocol.allows_tied_pairs`).

    Returns:
        List of ``(answer_a, answer_b)`` row pairs (the row dicts themselves, not copies).

    Example::

        pairs = candidate_pairs(answers)   # 10 wrong answers with distinct labels -> 45 pairs
    """
    keep = is_parsed if include_correct else is_candidate
    pairs = []
    for rows in _grouped(answers, keep):
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                if include_ties or label(a) != label(b):
                    pairs.append((a, b))
    return pairs


def row_pairs(answers: Iterable[dict]) -> list[tuple[dict, dict]]:
    """Right-over-wrong pairs ``(right, wrong)``: one question and generator, both parsed, exactly one correct,
    labels different; in sample order of the pair's first answer."""
    pairs = []
    for rows in _grouped(answers, is_parsed):
        for i, a in enumerate(rows):
            for b in rows[i + 1 :]:
                if bool(a.get("is_correct")) != bool(b.get("is_correct")) and label(a) != label(b):
                    pairs.append((a, b) if a.get("is_correct") else (b, a))
    return pairs


def pair_id(answer_a: dict | str, answer_b: dict | str) -> str:
    """Stable id of a pair: ``<answer_id_a>&<answer_id_b>``."""
    a = answer_a if isinstance(answer_a, str) else answer_a["answer_id"]
    b = answer_b if isinstance(answer_b, str) else answer_b["answer_id"]
    return f"{a}&{b}"


def by_task_generator(pairs: Iterable[tuple[dict, dict]]) -> dict[tuple[str, str], list[tuple[dict, dict]]]:
    """Pairs grouped by ``(task, generator)``, the unit a margin cuts; order kept within each group."""
    out: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for a, b in pairs:
        out[(a["task"], a["generator"])].append((a, b))
    return dict(out)


# -- margins ------------------------------------------------------------------------------------------------------
def check_margin(margin: float) -> float:
    """Validate a margin: a share in (0, 1]. Raises WowError otherwise."""
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise WowError(f"margin {margin!r} is not a number; use a share in (0, 1], e.g. 1.0, 0.5 or 0.1.") from None
    if not 0.0 < m <= 1.0:
        raise WowError(f"margin {margin!r} is outside (0, 1]; use a share of pairs such as 1.0, 0.5 or 0.1.")
    return m


def margin_count(n: int, margin: float) -> int:
    """How many of ``n`` pairs a margin keeps: ``floor(n * M)``, but at least 1 when ``n > 0``.

    Example::

        margin_count(45, 0.1) == 4; margin_count(15, 0.5) == 7; margin_count(5, 0.1) == 1; margin_count(0, 0.5) == 0
    """
    m = check_margin(margin)
    if n <= 0:
        return 0
    return max(1, math.floor(n * m + 1e-9))


def margin_keep(gaps: Sequence[float] | np.ndarray, margin: float, protocol: str = "wow") -> np.ndarray:
    """Indices of the pairs a margin keeps: the largest gaps first, ties broken by pair order (earlier first).

    Args:
        gaps: predicted gap per pair (non-negative, finite).
        margin: share M in (0, 1].
        protocol: ``wow`` (this rule) or ``paper`` (:func:`paper_margin_keep`, the paper's Acc_WoW cut).

    Returns:
        Sorted integer indices of the kept pairs.
    """
    from wow.protocol import is_paper

    if is_paper(protocol):
        return paper_margin_keep(gaps, margin)
    gaps = np.asarray(gaps, dtype=float).reshape(-1)
    k = margin_count(len(gaps), margin)
    order = np.argsort(-gaps, kind="stable")
    return np.sort(order[:k])


def paper_margin_keep(gaps: Sequence[float] | np.ndarray, margin: float) -> np.ndarray:
    """The paper's Acc_WoW cut (metric.py): the ``int(n * M)`` largest gaps of an ascending numpy argsort; when that
    is 0 the ``[-0:]`` slice keeps ALL pairs. Ties at the cut follow numpy's default (unstable) sort.

    Example::

        paper_margin_keep([3, 1, 2], 0.5)   # int(1.5) = 1 -> [0];  paper_margin_keep([3, 1, 2], 0.1) -> [0, 1, 2]
    """
    m = check_margin(margin)
    gaps = np.asarray(gaps, dtype=float).reshape(-1)
    k = int(len(gaps) * m)
    return np.sort(np.argsort(gaps)[-k:])


def paper_score_margin(
    pairs: Sequence[tuple[dict, dict]], scores: Mapping[str, float | None], margin: float
) -> list[tuple[dict, dict, float]]:
    """The paper's score preference cut (finetune.py) for ONE generator's pairs: pairs with both scores, chosen =
    the higher score and on a tie the later answer ``b`` (gap 0), sorted by gap descending (stable), the first
    ``round(n * M)`` kept (Python's round: 7.5 -> 8, 2.5 -> 2).

    Returns:
        ``(chosen, rejected, gap)`` triples in kept order.
    """
    m = check_margin(margin)
    out = []
    for a, b in pairs:
        sa, sb = _score(scores, a), _score(scores, b)
        if sa is None or sb is None:
            continue
        out.append((a, b, sa - sb) if sa > sb else (b, a, sb - sa))
    out.sort(key=lambda t: -t[2])
    return out[: round(len(out) * m)]


def margin_pairs(
    pairs: Sequence[tuple[dict, dict]], scores: Mapping[str, float | None], margin: float, protocol: str = "wow"
) -> tuple[list[tuple[dict, dict]], int]:
    """The pairs of ONE (task, generator) group that a scalar method keeps at margin M.

    Pairs where either answer has no score (None/NaN or absent) are dropped first; the margin then keeps the M share
    of the rest with the largest ``|score_a - score_b|`` (:func:`margin_keep`). Acc_WoW at M scores exactly these
    pairs; a ``score@M`` preference set trains on exactly these pairs, less the ties (equal scores state no
    preference; Acc_WoW counts them as misses).

    Args:
        pairs: one group's pairs from :func:`candidate_pairs` (see :func:`by_task_generator`).
        scores: ``answer_id -> score`` (higher = predicted less wrong).
        margin: share M in (0, 1].
        protocol: ``paper`` cuts with the paper's Acc_WoW arithmetic (:func:`paper_margin_keep`).

    Returns:
        ``(kept pairs in their original order, number of pairs dropped for a missing score)``.
    """
    m = check_margin(margin)
    scored, gaps = [], []
    for a, b in pairs:
        sa, sb = _score(scores, a), _score(scores, b)
        if sa is None or sb is None:
            continue
        scored.append((a, b))
        gaps.append(abs(sa - sb))
    keep = margin_keep(gaps, m, protocol) if scored else []
    return [scored[i] for i in keep], len(pairs) - len(scored)


def _score(scores: Mapping[str, float | None], answer: dict) -> float | None:
    s = scores.get(answer["answer_id"])
    if s is None:
        return None
    s = float(s)
    return s if math.isfinite(s) else None


# -- subsampling and groups ---------------------------------------------------------------------------------------
def subsample_pairs(
    pairs: Sequence[tuple[dict, dict]], max_pairs: int | None, seed: int = 0
) -> list[tuple[dict, dict]]:
    """At most ``max_pairs`` pairs per (task, generator), drawn with a seeded RNG, kept in their original order.

    The draw depends only on the pairs, ``max_pairs`` and ``seed`` (each group has its own RNG seeded by
    ``seed``, task and generator), so every judge given the same answers judges the same pairs.

    Args:
        pairs: from :func:`candidate_pairs`.
        max_pairs: cap per (task, generator); None keeps every pair (the paper capped GPT-4o at 10,000).
        seed: subsampling seed.
    """
    if max_pairs is None:
        return list(pairs)
    if max_pairs < 1:
        raise WowError(f"max_pairs must be >= 1 or None, got {max_pairs}.")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (a, _) in enumerate(pairs):
        groups[(a["task"], a["generator"])].append(i)
    keep: list[int] = []
    for (task, gen), idx in groups.items():
        if len(idx) <= max_pairs:
            keep.extend(idx)
        else:
            keep.extend(random.Random(f"{seed}/{task}/{gen}").sample(idx, max_pairs))
    return [pairs[i] for i in sorted(keep)]


def score_groups(answers: Sequence[dict], k: int) -> list[list[dict]]:
    """The answers of each (question, generator), in sample order, cut into consecutive groups of ``k``.

    Every answer is scored, unparsed and correct ones included (as in the paper), so group composition does not
    depend on grading. When the answer count is not a multiple of ``k`` the last group is smaller (it is scored
    with a prompt for its own size); with fewer than ``k`` answers there is one group of all of them.
    """
    if k < 1:
        raise WowError(f"k must be >= 1, got {k}.")
    groups = []
    for rows in _grouped(answers, lambda _: True):
        groups.extend(rows[i : i + k] for i in range(0, len(rows), k))
    return groups
