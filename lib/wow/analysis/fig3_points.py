"""Fig 3's points: each aligned setting joined with the accuracy of the very pairs it trained on (the x-axis), and
the judge's Acc_WoW of ``acc_wow.csv`` beside it for reference.

x is read from the ``train`` split of each set's saved preference set, so it counts exactly the pairs the model
trained on, as the set holds them (a ``score@M`` set without the pairs the judge scored equal, a ``mix`` set with
its generators' pairs pooled, the cap and the validation split applied), from train questions only. An Acc_WoW
table over other questions than the sets' is refused (:func:`check_acc_wow_split`).

Example::

    from wow.analysis import fig3_points
    points = fig3_points.method_acc_wow(P, pd.read_csv(P.layout.acc_wow), pd.read_csv(P.layout.alignment))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from wow import WowError, schema
from wow.params import RunParams
from wow.preferences.pref_spec import PrefSpec

#: Preference types Fig 3 draws: wrong-over-wrong sets whose pairs have an accuracy (``row*`` sets have none).
FIG3_TYPES = ("oracle", "noisy", "random", "direct", "score")
#: Columns :func:`method_acc_wow` adds to the alignment rows.
FIG3_COLUMNS = [
    "method",
    "acc_wow",
    "acc_wow_pairs",
    "acc_wow_questions",
    "acc_wow_ci_low",
    "acc_wow_ci_high",
    "judge_acc_wow",
    "judge_acc_wow_pairs",
]


def method_acc_wow(P: RunParams, acc_table: pd.DataFrame, alignment: pd.DataFrame) -> pd.DataFrame:
    """Join each aligned setting with the Acc_WoW of the pairs it was trained on (paper Fig 3's x-axis).

    x is computed from the very pairs the set trained on: the ``train`` split of its saved preference set
    (``preferences/<task>/<set>``), the share whose chosen answer has the higher label. Every kind is read the same
    way: oracle sets give 1.0; ``noisy@q`` and ``random`` sets ``1 - q`` to the rounding of ``q * n``; ``direct`` sets
    the judge's accuracy over the pairs it ordered (judged in both orders when ``both_orders``); ``score@M``
    sets the accuracy of the pairs kept at margin M as the set keeps them (ties in the score dropped; under
    ``protocol: paper`` kept with the later answer chosen); a ``mix`` set pools its generators' pairs; the cap on
    pairs and the validation split are applied as in training. All of them come from train questions only. Sets
    with right-over-wrong pairs (``row*``) have no wrong-over-wrong accuracy and are left out.

    For ``direct`` and ``score`` sets the judge's Acc_WoW of ``acc_wow.csv`` (every candidate pair of the set's
    generators at the set's margin, ties counted as misses; hits summed over pairs summed across generators) is
    added beside x for reference (``judge_acc_wow``); the table must then hold train questions only.

    Args:
        P: the run's parameters.
        acc_table: ``acc_wow.csv``.
        alignment: ``alignment.csv``.

    Returns:
        The alignment rows kept, plus ``method`` (e.g. ``score@0.1``), ``acc_wow``, ``acc_wow_pairs`` and
        ``acc_wow_questions`` (the training pairs and their questions), ``acc_wow_ci_low`` / ``_high`` (x read as
        an estimate of the preferences' accuracy on such questions: a bootstrap 95% CI over the training questions),
        ``judge_acc_wow`` and ``judge_acc_wow_pairs`` (NaN for sets without a judge).

    Raises:
        WowError: ``acc_wow_split`` (or the ``split`` column of ``acc_wow.csv``) is not ``train`` while the run has
            judge-built sets, or a set's saved preference set is missing.
    """
    mode = P.pref_judge_mode or (P.judge_modes[0] if P.judge_modes else None)
    judged = [k in ("direct", "score") for k in alignment.get("pref_type", pd.Series(dtype=str))]
    if any(judged):
        check_acc_wow_split(P, acc_table)
    out = []
    for _, row in alignment.iterrows():
        if pd.notna(row.get("eval_task")) and row["eval_task"] != row["task"]:
            continue  # generalisation rows (eval_tasks): the preferences' Acc_WoW is about the training task
        kind = row["pref_type"]
        margin = row["margin"] if pd.notna(row.get("margin")) else None
        source = row["source"] if pd.notna(row.get("source")) else "self"
        judge = row["judge"] if pd.notna(row.get("judge")) else None
        if kind not in FIG3_TYPES or (schema.needs_judge(kind) and (judge is None or mode is None)):
            continue
        spec = PrefSpec(kind, margin, judge if schema.needs_judge(kind) else None, mode, source)
        x = training_pairs_accuracy(P, row["task"], spec, row["setting"])
        reference = _judge_acc_wow(P, acc_table, row["task"], spec) if schema.needs_judge(kind) else (np.nan, np.nan)
        out.append(
            {
                **row.to_dict(),
                "method": schema.pref_label(kind, margin),
                **x,
                "judge_acc_wow": reference[0],
                "judge_acc_wow_pairs": reference[1],
            }
        )
    return pd.DataFrame(out, columns=[*alignment.columns, *FIG3_COLUMNS])


def check_acc_wow_split(P: RunParams, acc_table: pd.DataFrame) -> None:
    """Refuse an Acc_WoW table over other questions than the preference sets' (train questions only).

    Raises:
        WowError: naming ``acc_wow_split``, the splits ``acc_wow.csv`` holds and the sets' train split.
    """
    splits = sorted(map(str, acc_table["split"].dropna().unique())) if "split" in acc_table else []
    if P.acc_wow_split == "train" and set(splits) <= {"train"}:
        return
    raise WowError(
        f"acc_wow_split is {P.acc_wow_split!r} and acc_wow.csv holds the split(s) {', '.join(splits) or 'none'}, "
        "but the preference sets are built from train questions only: Fig 3 would set a judge's Acc_WoW on other "
        "questions beside the gains of training on the train ones. Set acc_wow_split: train and rerun from stage 03."
    )


def training_pairs_accuracy(P: RunParams, task: str, spec: PrefSpec, setting: str = "") -> dict:
    """The accuracy of the pairs a preference set trained on (its saved ``train`` split), by their true labels.

    Args:
        P: the run's parameters (``n_boot`` and ``seed`` for the CI).
        task: the set's task.
        spec: the set.
        setting: the aligned setting's name, for the error message.

    Returns:
        ``acc_wow`` (share of pairs whose chosen answer has the higher label; NaN without pairs), ``acc_wow_pairs``,
        ``acc_wow_questions`` and ``acc_wow_ci_low`` / ``acc_wow_ci_high`` (bootstrap 95% CI over the questions).

    Raises:
        WowError: the set is not saved under ``preferences/<task>/<set>``.
    """
    from datasets import load_from_disk

    from wow.analysis.acc_wow import acc_interval

    folder = P.layout.preferences(task, spec.setting(P))
    if not (folder / "meta.json").exists() or not (folder / "train").is_dir():
        raise WowError(
            f"Fig 3's x of {setting or spec.setting(P)} is the accuracy of the pairs it trained on, read from its "
            f"preference set, but {folder} holds no saved set (stage 04 writes it)."
        )
    train = load_from_disk(str(folder / "train"))  # the train split alone: an empty validation split cannot load
    hits = np.asarray(train["chosen_label"], dtype=float) > np.asarray(train["rejected_label"], dtype=float)
    questions = list(train["question_id"])
    lo = hi = np.nan
    if len(hits):
        lo, hi = acc_interval(hits, None, 1.0, groups=questions, n_boot=P.n_boot, seed=P.seed)
    return {
        "acc_wow": float(hits.mean()) if len(hits) else np.nan,
        "acc_wow_pairs": len(hits),
        "acc_wow_questions": len(set(questions)),
        "acc_wow_ci_low": lo,
        "acc_wow_ci_high": hi,
    }


def _judge_acc_wow(P: RunParams, acc_table: pd.DataFrame, task: str, spec: PrefSpec) -> tuple[float, float]:
    """The judge's Acc_WoW from ``acc_wow.csv`` for a ``direct`` or ``score`` set: ``(hits / pairs, pairs)`` pooled
    over the set's generators (NaN where the table has no such rows)."""
    needed = {"task", "judge", "generator", "method", "margin", "n_pairs", "n_hits"}
    if acc_table.empty or not needed <= set(acc_table.columns):
        return np.nan, np.nan
    sel = acc_table[
        (acc_table["task"] == task)
        & (acc_table["judge"] == spec.judge)
        & acc_table["generator"].isin(spec.generators(P))
    ]
    if spec.pref_type == "direct":
        check = "both_orders" if P.both_orders else "none"
        sel = sel[
            (sel["method"] == schema.pairwise_method(spec.mode)) & (sel["check"] == check) & (sel["margin"] == 1.0)
        ]
    else:
        method = schema.score_method(P.pref_score_k, spec.mode)
        sel = sel[(sel["method"] == method) & ((sel["margin"] - spec.margin).abs() < 1e-9)]
    n_pairs = float(sel["n_pairs"].sum())
    return (float(sel["n_hits"].sum()) / n_pairs if n_pairs else np.nan), n_pairs
