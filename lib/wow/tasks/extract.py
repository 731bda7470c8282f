"""Answer extraction shared by the tasks: the "state your final answer" turn and tolerant regexes.

Two ways to read an answer (DESIGN.md section 5):

* the extraction turn: a second user turn asks for the final answer in a fixed form that starts with a prefix
  ("The total weight is"); local engines prefill the assistant turn with the prefix, so the pattern is applied to
  ``prefix + reply``; chat APIs reply freely and the same pattern is applied to the reply;
* the direct parse: a tolerant regex over the first (reasoning) answer, taking the LAST statement of an answer.

Example::

    ext = numeric_extraction("The total weight is", "the total weight of the shortest path")
    re.search(ext.pattern, "The total weight is 7.").group(1)  # "7"
"""

from __future__ import annotations

import re

from wow.tasks.base import Extraction

#: A number as written in an answer: optional sign (ASCII or Unicode minus), thousands groups, decimals.
NUMBER = r"[-+\u2212]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+\u2212]?\.\d+"
#: An optional power of ten after a number: ``e-3``, ``E5``, ``x 10^5``, ``× 10^{-3}``, ``\times 10^5``, ``*10**5``.
EXPONENT = r"(?:\s*[eE]\s*([-+\u2212]?\d+)|\s*(?:[x\u00d7*]|\\times|\\cdot|\u00b7)\s*10\s*(?:\^|\*\*)\s*\{?\s*([-+\u2212]?\d+)\s*\}?)?"

#: The instruction that precedes every reasoning prompt (our wording of the paper's chain-of-thought prefix).
COT_INSTRUCTION = "Work through the following question step by step, explain your reasoning briefly, and end with your final answer. Keep it short.\n\n"
#: The instruction of the graph tasks' ``reasoning="brief"`` (a small model's step-by-step answers run past a short
#: token budget before they state a number; asked for one sentence, most of them end inside it).
BRIEF_INSTRUCTION = "Answer the following question in one short sentence.\n\n"

#: Prefix of the multiple-choice extraction turn.
MC_PREFIX = "The answer is option"
#: The multiple-choice extraction turn under ``protocol: paper`` (our wording of the paper's request,
#: ``instruction/multi_choice_extract.txt``): the option letter alone, which the paper's end-anchored regex reads.
PAPER_MC_INSTRUCTION = (
    "Which option did you choose? Reply with nothing but the letter of that option. "
    'If your answer picked no option, reply "None".'
)

# An option letter that stands alone: not the start of a word ("None", "Because"), not "I" opening a sentence.
_LETTER = r"(?!I\s+[a-z])[A-Z](?![A-Za-z0-9'])"
# A letter after "answer is" / "option" / "answer:"; or a reply that is just a letter ("B", "B.", "(B)", "B) ...").
MC_PATTERN = (
    r"(?m)(?:(?:[Aa]nswer(?:\s+is)?|[Oo]ption|[Cc]hoice)\s*:?\s*(?:[Oo]ption\s*:?\s*)?[\(\[]?\**\s*"
    rf"(?={_LETTER})"
    r"|^\s*[\(\[]?\**\s*(?=[A-Z](?:[\)\]\.:*]|\s*$)))"
    r"([A-Z])"
)
# Direct parse of a reasoning answer: only explicit statements ("the answer is (B)", "Answer: B", "best option is C").
MC_DIRECT_PATTERN = (
    r"(?:(?:[Aa]nswer|[Oo]ption|[Cc]hoice|[Mm]ove)\s+(?:would\s+be|is)|[Aa]nswer\s*:)\s*:?\s*"
    rf"(?:[Oo]ption\s*)?[\(\[]?\**\s*(?={_LETTER})([A-Z])"
)


def mc_extraction() -> Extraction:
    """The multiple-choice extraction turn: reply with the option letter only.

    Returns:
        the :class:`Extraction` whose pattern accepts ``B``, ``B.``, ``B)``, ``(B)``, ``**B**`` after the prefix or
        alone, and rejects "None" (a letter followed by lowercase letters).
    """
    return Extraction(
        instruction=(
            "Which option did you choose? Reply with the option letter only, starting with "
            f'"{MC_PREFIX}". If your answer picked no option, reply "None".'
        ),
        prefix=MC_PREFIX,
        pattern=MC_PATTERN,
    )


def numeric_extraction(prefix: str, what: str) -> Extraction:
    """A numeric extraction turn: restate ``what`` as one number after ``prefix``.

    Args:
        prefix: the answer prefix, e.g. "The total weight is".
        what: what the number is, in words, for the instruction.

    Returns:
        the :class:`Extraction`; group 1 of its pattern is the number (sign, thousands commas and decimals allowed).
    """
    words = r"\s+".join(re.escape(w) for w in prefix.split())
    return Extraction(
        instruction=(
            f'What is {what} in your answer? Reply with one number only, starting with "{prefix}". '
            'If your answer gave no number, reply "None".'
        ),
        prefix=prefix,
        pattern=rf"(?i){words}\s*:?\s*(?:about\s+|approximately\s+|=\s*)?\$?\**\s*({NUMBER})",
    )


def last_match(patterns: list[str], text: str) -> re.Match | None:
    """The match that ends last in ``text`` over several patterns (the final statement of an answer).

    Args:
        patterns: regexes, each with the answer in group 1.
        text: the answer text.

    Returns:
        the last-ending match, or None when no pattern matches.
    """
    best = None
    for pat in patterns:
        for m in re.finditer(pat, text or ""):
            if best is None or m.end() > best.end():
                best = m
    return best


def to_number(raw: str, exponent: str | None = None) -> float | None:
    """Parse a number matched by :data:`NUMBER` (commas removed, Unicode minus mapped), times 10**exponent.

    Args:
        raw: the matched mantissa.
        exponent: an optional power of ten.

    Returns:
        the float, or None when it does not parse.
    """
    try:
        value = float(raw.replace(",", "").replace("\u2212", "-"))
        if exponent:
            value *= 10.0 ** int(exponent.replace("\u2212", "-"))
    except (ValueError, OverflowError):
        return None
    return value


def integral(value: float | None) -> int | float | None:
    """An ``int`` when ``value`` is a whole number, else the float itself (None stays None)."""
    if value is None:
        return None
    return int(value) if float(value).is_integer() else value
