"""Number arrays from rows that may miss values: the coercion every metric shares (None -> NaN).

Example::

    from wow.analysis.arrays import floats
    floats([1, None, 2.5], "scores")   # array([1. , nan, 2.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wow import WowError


def has_none(a: Any) -> bool:
    """Whether ``a`` is a list or tuple holding a None (a missing value numpy would otherwise turn into ``None``)."""
    return isinstance(a, list | tuple) and any(v is None for v in a)


def floats(values: Sequence[float | None] | np.ndarray, name: str) -> np.ndarray:
    """Float array; None -> NaN. ``name`` names the values in the error raised for a non-number."""
    try:
        return np.array([np.nan if v is None else v for v in values], dtype=float)
    except (TypeError, ValueError):
        raise WowError(f"{name} must hold numbers (or None for missing).") from None
