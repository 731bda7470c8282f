"""How a run report writes its values: numbers to three decimals with their CI, counts, costs and durations.

Every value of the report content (:mod:`wow.report.report_content`) is a string made here, so the Markdown summary and
the HTML page show the same text for the same number.

Example::

    with_ci(0.75, 0.5, 1.0)   # "0.750 [0.500, 1.000]"
    wall_time(65.4)            # "1 min 05 s"
"""

from __future__ import annotations

import json
import math


def is_missing(x) -> bool:
    """Whether ``x`` is None or NaN."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def text(x) -> str:
    """``x`` as text; a missing value as the empty string."""
    return "" if is_missing(x) else str(x)


def num(x) -> str:
    """A number to three decimals (``n/a`` when missing; text that is no number as it is)."""
    if is_missing(x):
        return "n/a"
    try:
        return f"{float(x):.3f}"
    except (TypeError, ValueError):
        return str(x)


def with_ci(value, low, high) -> str:
    """``value [low, high]``, or the value alone when the CI is missing."""
    if is_missing(low) or is_missing(high):
        return num(value)
    return f"{num(value)} [{num(low)}, {num(high)}]"


def as_int(x) -> int:
    """``x`` as an int; 0 for anything that is no number."""
    return int(x) if isinstance(x, int | float) and not is_missing(x) else 0


def count(x) -> str:
    """A count with thousands separators (empty for anything that is no number)."""
    return f"{as_int(x):,}" if isinstance(x, int | float) else ""


def cost(value, known_key: bool, unknown: bool) -> str:
    """An API cost in dollars; ``known_key`` False: no API was called; ``unknown``: some prices were unknown."""
    if not known_key:
        return "none (local models)"
    if unknown:
        return f"unknown prices{f' (+ ${value:,.2f} known)' if value else ''}"
    return f"${value:,.2f}"


def wall_time(seconds: float | None) -> str:
    """A wall time as ``1 h 02 min``, ``3 min 05 s`` or ``7 s`` (empty when unknown)."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def param_text(value) -> str:
    """A parameter value of ``run.yaml`` as text (JSON for anything but a string)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
