"""The alignment table (``alignment.csv``): one row per aligned setting and evaluation task, the setting's
description next to :func:`wow.analysis.eval_metrics.compare_before_after` of the original and the aligned model's test answers.

Example::

    from wow.analysis import alignment_csv
    table = alignment_csv.build_alignment_table(entries, n_boot=1000, seed=0)
    alignment_csv.write_alignment_csv(table, "outputs/demo/alignment.csv")
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from wow import io
from wow.analysis.eval_metrics import ECE_BINS, compare_before_after

META_COLUMNS = (
    "setting",
    "task",
    "eval_task",
    "pref_type",
    "source",
    "trainer",
    "judge",
    "margin",
    "config",
    "train_seed",
)


def alignment_row(
    before_rows: Sequence[dict],
    after_rows: Sequence[dict],
    *,
    setting: str,
    task: str,
    pref_type: str,
    source: str,
    trainer: str,
    judge: str | None = None,
    margin: float | None = None,
    config: str | dict | None = None,
    eval_task: str | None = None,
    train_seed: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    n_bins: int = ECE_BINS,
) -> dict:
    """One row of ``alignment.csv``: the setting's description plus :func:`compare` of before and after.

    Args:
        before_rows: answers of the original model on the test questions.
        after_rows: answers of the aligned model (the grid's best configuration) on the same questions.
        setting: setting name (:func:`wow.schema.setting_name`).
        task: task name.
        pref_type: preference type.
        source: ``self`` or ``mix``.
        trainer: trainer name.
        judge: judge of ``direct``/``score`` types.
        margin: margin of ``score`` types.
        config: the chosen configuration (its folder name, or a dict written as JSON).
        eval_task: the task whose test questions were answered (None: ``task`` itself).
        train_seed: the training seed, for one of several (``train_seeds``); None: no ``train_seed`` column.
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        n_bins: ECE bins (the run's ``n_bins``).

    Returns:
        A flat dict.
    """
    meta = {
        "setting": setting,
        "task": task,
        "eval_task": eval_task or task,
        "pref_type": pref_type,
        "source": source,
        "trainer": trainer,
        "judge": judge,
        "margin": margin,
        "config": json.dumps(config, sort_keys=True) if isinstance(config, dict) else config,
    }
    if train_seed is not None:
        meta["train_seed"] = train_seed
    return meta | compare_before_after(before_rows, after_rows, n_boot=n_boot, seed=seed, n_bins=n_bins)


def build_alignment_table(entries: Iterable[Mapping], n_boot: int = 1000, seed: int = 0, n_bins: int = ECE_BINS):
    """Rows of ``alignment.csv``, one per aligned setting.

    Args:
        entries: mappings with the keys of :func:`alignment_row`: ``before_rows``, ``after_rows`` and the setting
            description (``setting, task, pref_type, source, trainer``, optional ``judge, margin, config``).
        n_boot: bootstrap resamples.
        seed: bootstrap seed.
        n_bins: ECE bins (the run's ``n_bins``).

    Returns:
        ``pandas.DataFrame``, description columns first.
    """
    import pandas as pd

    rows = []
    for e in entries:
        meta = {k: e.get(k) for k in META_COLUMNS}
        rows.append(alignment_row(e["before_rows"], e["after_rows"], **meta, n_boot=n_boot, seed=seed, n_bins=n_bins))
    return pd.DataFrame(rows)


def write_alignment_csv(table, path: str | os.PathLike) -> Path:
    """Write the alignment table as CSV, atomically.

    Args:
        table: the ``DataFrame`` of :func:`build_alignment_table`.
        path: e.g. ``outputs/<run>/alignment.csv``.

    Returns:
        The path.
    """
    return io.write_text(path, table.to_csv(index=False))
