"""Names and kinds, in one leaf: protocols, judge modes, score k's, preference types and sources, trainers and
schedulers, and the names built from them (Acc_WoW methods, setting names).

Every other module imports its names from here and matches them with the functions here, never by spelling the
strings itself; this module imports nothing of wow but :class:`wow.WowError`, so anything may import it.

Example::

    from wow import schema
    schema.parse_pref_type("score@0.1")                  # ("score", 0.1)
    schema.score_method(5, "logprob")                    # "score_k5_logprob"
    schema.setting_name("self", "oracle", "dpo")         # "self_oracle_dpo"
"""

from __future__ import annotations

import re
from typing import Any

from wow import WowError

#: ``protocol`` values: wow's computation, or the paper's (docs/fidelity.md).
PROTOCOLS = ("wow", "paper")
#: How a judge's verdict is read: the free-text reply, or the next-token distribution after a prefilled turn.
JUDGE_MODES = ("text", "logprob")
#: Answers per score-judge prompt (the paper's k).
SCORE_KS = (1, 2, 5, 10)
#: Preference-set types (``row*``: right over wrong; ``noisy@q`` and ``random``: the oracle pairs with a seeded share
#: q, or half, of them flipped, so that their Acc_WoW is known by construction; ``gold``: the question's gold answer,
#: written as one sentence, over its wrong answers, a positive control).
PREF_TYPES = ("oracle", "direct", "score", "row", "row_oracle", "row_direct", "row_score", "noisy", "random", "gold")
#: Preference types built from the oracle pairs, whose Acc_WoW is set by construction (1 - the flipped share).
CONTROLLED_TYPES = ("oracle", "noisy", "random")
#: Where the answers of a preference set come from: the policy's own (``self``) or every generator's (``mix``).
SOURCES = ("self", "mix")
#: Scalar methods computed from the answers alone, in report order (``oracle`` is the true order; judge methods are
#: named by the functions below).
SCALAR_METHODS = ("length", "consistency", "logprob")
#: Prefix of judge-score columns in ``scores.jsonl``: ``judge_score:<judge>:k<k>[:logprob]``.
JUDGE_SCORE_PREFIX = "judge_score:"
_JUDGE_COLUMN = re.compile(r"^judge_score:(?P<judge>.+):k(?P<k>\d+)(?::(?P<mode>text|logprob))?$")
#: Pairwise-judge checks: every pair counts, or only pairs judged the same way in both orders.
CHECKS = ("none", "both_orders")

#: trainer name -> (TRL trainer family, config fields that define the method)
TRAINERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpo": ("dpo", {"loss_type": "sigmoid"}),
    "ipo": ("dpo", {"loss_type": "ipo"}),
    "rso": ("dpo", {"loss_type": "hinge"}),
    "sppo": ("dpo", {"loss_type": "sppo_hard"}),
    "rpo": ("dpo", {"loss_type": ["sigmoid", "sft"]}),  # DPO + rpo_alpha x NLL of the chosen answer (Pang et al.)
    "cpo": ("cpo", {"loss_type": "sigmoid"}),
    "simpo": ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0}),
    "orpo": ("orpo", {}),
}
#: transformers' (5.24) schedulers that need no extra arguments: the valid ``AlignConfig.lr_scheduler`` values
#: (tests/test_align.py checks them against transformers' ``SchedulerType``).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
)


# -- validation ---------------------------------------------------------------------------------------------------
def unknown(values, valid) -> list:
    """The values not among ``valid``, in order."""
    return [v for v in values if v not in valid]


def check_among(values, valid, what: str, hint: str = "") -> None:
    """Raise ``ValueError`` naming the ``values`` not among ``valid`` (``what``: e.g. ``trainer``) and the valid ones."""
    bad = unknown(values, valid)
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}{hint}; valid: {', '.join(map(str, valid))}")


def parse_pref_type(spec: str) -> tuple[str, float | None]:
    """Split a preference-type spec like ``score@0.1`` into ``("score", 0.1)``; score types need a margin, ``noisy``
    the share of oracle pairs it flips (``noisy@0.25`` -> ``("noisy", 0.25)``).

    Raises:
        ValueError: unknown type, or a margin or share missing, misplaced or outside (0, 1].
    """
    kind, _, margin = spec.partition("@")
    if kind not in PREF_TYPES:
        raise ValueError(f"unknown preference type {kind!r}; valid: {', '.join(PREF_TYPES)}")
    if kind.endswith("score") or kind == "noisy":
        what = "a margin" if kind != "noisy" else "the share of oracle pairs to flip"
        try:
            m = float(margin)
        except ValueError:
            raise ValueError(f"{spec!r}: {kind} types need {what}, e.g. {kind}@0.25") from None
        if not 0 < m <= 1:
            raise ValueError(f"{spec!r}: {what} must lie in (0, 1]")
        return kind, m
    if margin:
        raise ValueError(f"{spec!r}: only score and noisy types take a number after @")
    return kind, None


def flip_share(pref_type: str, margin: float | None) -> float | None:
    """The share of oracle pairs a controlled preference type flips: ``oracle`` 0, ``noisy@q`` q, ``random`` 0.5;
    None for the other types (their accuracy is measured, not set)."""
    if pref_type == "oracle":
        return 0.0
    if pref_type == "noisy":
        if margin is None:
            raise WowError("noisy preferences need the share of pairs to flip (noisy@q).")
        return float(margin)
    if pref_type == "random":
        return 0.5
    return None


def check_protocol(protocol: str) -> str:
    """Validate a protocol name; raises WowError naming the valid ones."""
    if protocol not in PROTOCOLS:
        raise WowError(f"unknown protocol {protocol!r}; use one of {', '.join(PROTOCOLS)} (see docs/fidelity.md).")
    return protocol


# -- kinds --------------------------------------------------------------------------------------------------------
def needs_judge(pref_type: str) -> bool:
    """Whether a preference type is built from judge verdicts or scores (``direct``, ``score`` and their ``row_``)."""
    return pref_type.endswith(("direct", "score"))


def pref_label(pref_type: str, margin: float | None) -> str:
    """A preference type with its margin, as parameters spell it: ``score@0.1``, ``oracle``."""
    return pref_type + (f"@{margin:g}" if margin is not None else "")


# -- names built from kinds ---------------------------------------------------------------------------------------
def pairwise_method(mode: str) -> str:
    """The Acc_WoW method of a pairwise judge in ``mode``: ``pairwise_text``, ``pairwise_logprob``."""
    return f"pairwise_{mode}"


def score_method(k: int, mode: str = "text") -> str:
    """The Acc_WoW method of a score judge: ``score_k5``, ``score_k1_logprob``."""
    return f"score_k{k}" + ("_logprob" if mode == "logprob" else "")


def is_pairwise_method(method: str) -> bool:
    """Whether an Acc_WoW method is a pairwise judge's."""
    return method.startswith("pairwise_")


def parse_score_method(method: str) -> tuple[int, str] | None:
    """``(k, mode)`` of a score-judge method (``score_k5_logprob`` -> ``(5, "logprob")``); None for other methods."""
    m = re.fullmatch(r"score_k(\d+)(_logprob)?", method)
    return (int(m.group(1)), "logprob" if m.group(2) else "text") if m else None


def judge_score_column(judge: str, k: int, mode: str = "text") -> str:
    """Column name of a score judge in ``scores.jsonl``: ``judge_score:<judge>:k<k>`` (+ ``:logprob``)."""
    return f"{JUDGE_SCORE_PREFIX}{judge}:k{k}" + (":logprob" if mode == "logprob" else "")


def parse_judge_score_column(column: str) -> tuple[str, int, str]:
    """Inverse of :func:`judge_score_column`: ``(judge, k, mode)``."""
    m = _JUDGE_COLUMN.match(column)
    if not m:
        raise WowError(f"{column!r} is not a judge-score column (judge_score:<judge>:k<k>[:logprob]).")
    return m["judge"], int(m["k"]), m["mode"] or "text"


def setting_name(
    source: str,
    pref_type: str,
    trainer: str | None,
    judge: str | None = None,
    margin: float | None = None,
    both_orders: bool = True,
) -> str:
    """The paper's setting name, e.g. ``self_oracle_dpo``, ``mix_direct_filtered_gpt-4o_dpo``,
    ``mix_score_0.1_gpt-4o_dpo`` (folder name under ``models/`` and row key of ``alignment.csv``).

    Args:
        source: ``self`` or ``mix``.
        pref_type: preference type.
        trainer: trainer name; None names the preference set alone (its folder under ``preferences/``).
        judge: judge of ``direct``/``score`` types.
        margin: margin of ``score`` types; share of flipped pairs of ``noisy`` (``self_noisy_0.25_dpo``).
        both_orders: ``direct`` types: built from pairs judged the same way in both orders (the paper's
            ``filtered``).

    Returns:
        The name.
    """
    suffix = ""
    if pref_type.endswith("direct"):
        suffix = f"_filtered_{judge}" if both_orders else f"_{judge}"
    elif pref_type.endswith("score"):
        suffix = f"_{margin:g}_{judge}"
    elif pref_type == "noisy":
        suffix = f"_{margin:g}"
    name = f"{source}_{pref_type}{suffix}"
    return f"{name}_{trainer}" if trainer else name
