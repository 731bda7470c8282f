"""The Acc_WoW figures, and the one module the notebooks take every figure from.

Every figure function takes a pandas DataFrame, returns the matplotlib Figure and, given ``path`` (a file stem, no
suffix), saves it as PNG and PDF (:func:`wow.figures.figure_files.save`). Titles say what the paper's figure says. Drawn here:

* :func:`fig_answer_labels`: how wrong the sampled answers are, per task (the shades of wrong).
* :func:`fig_acc_wow_methods`: Acc_WoW per elicitation method and margin, with 95% CIs, one panel per (task,
  generator) (overview).
* :func:`fig_acc_wow_bins`: the paper's per-bin Acc_WoW matrix (Knowledge Crosswords analysis) as heatmaps.

The other figure families live in their own modules and are reachable here under the same names:
:mod:`wow.figures.correlation_figures` (paper Figs 2 and 5: :func:`figure_points`, :func:`fig_correlation`) and
:mod:`wow.figures.alignment_figures` (paper Figs 3 and 4, reliability diagrams); so are :func:`save` and :func:`safe_name`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from wow import WowError
from wow.figures.figure_files import empty_panel, save


def fig_answer_labels(answers: list[dict], path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Distribution of graded correctness of the answers, per task: unparsed, wrong (by shade) and right.

    Args:
        answers: rows of ``answers.jsonl``.
        path: file stem to save to.
        title: figure title.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    df = pd.DataFrame(answers)
    df["kind"] = np.where(df["extracted"].isna(), "unparsed", np.where(df["is_correct"], "right", "wrong"))
    tasks = sorted(df["task"].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        sub = df[df["task"] == task]
        wrong = sub[sub["kind"] == "wrong"]
        ax.hist(wrong["correctness"], bins=np.linspace(0, 1, 11), color=sns.color_palette("crest")[2], label="wrong")
        counts = sub["kind"].value_counts()
        ax.set_title(
            f"{task}\n{counts.get('right', 0)} right, {len(wrong)} wrong, {counts.get('unparsed', 0)} unparsed",
            fontsize=10,
        )
        ax.set_xlabel("graded correctness of wrong answers")
        ax.set_ylabel("answers")
        ax.set_xlim(0, 1)
    fig.suptitle(title or "Shades of wrong: how wrong the sampled answers are", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig


#: Fewer pairs than this make a bootstrap CI that looks certain and is not (1-2 pairs give [1.0, 1.0]): hatched.
FEW_PAIRS = 5


def acc_wow_bars(table: pd.DataFrame) -> pd.DataFrame:
    """The bars of :func:`fig_acc_wow_methods`: one per row of ``acc_wow.csv`` with pairs, never an average.

    A bar's CI is its row's own bootstrap CI (over its own questions, as ``ci_resample`` says); averaging CI bounds
    over tasks or generators gives no CI, so every (task, generator) gets its own panel. Rows without pairs are kept
    (``n_pairs`` 0, ``acc_wow`` NaN): the figure writes "no pairs" there, never a bar at 0.

    Returns:
        Columns ``task, generator, label`` (method, ``+both orders``, judge), ``margin, acc_wow, ci_low, ci_high,
        n_pairs``.

    Raises:
        WowError: two rows of one panel share a label and margin (the table mixes runs or splits).
    """
    df = table.copy()
    check = df["check"].fillna("none") if "check" in df else pd.Series("none", index=df.index)
    df["label"] = (
        df["method"]
        + np.where(check == "both_orders", " +both orders", "")
        + np.where(df["judge"].fillna("") != "", " (" + df["judge"].fillna("") + ")", "")
    )
    keys = ["task", "generator", "label", "margin"]
    if df.duplicated(keys).any():
        dup = df[df.duplicated(keys, keep=False)].iloc[0]
        raise WowError(
            f"acc_wow table has several rows for {dup['task']} / {dup['generator']} / {dup['label']} at M = "
            f"{dup['margin']:g}; draw one run and one split at a time."
        )
    return df[[*keys, "acc_wow", "ci_low", "ci_high", "n_pairs"]].reset_index(drop=True)


def fig_acc_wow_methods(table: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Acc_WoW of each method (x) and margin (hue), with bootstrap 95% CIs and the random baseline 0.5.

    One panel per (task, generator): each bar is one row of ``acc_wow.csv`` with its own CI (:func:`acc_wow_bars`).

    Args:
        table: rows of ``acc_wow.csv`` (columns task, generator, method, judge, margin, acc_wow, ci_low, ci_high,
            n_pairs).
        path: file stem to save to.
        title: figure title.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    bars = acc_wow_bars(table)
    tasks = sorted(bars["task"].unique()) or [None]
    gens = sorted(bars["generator"].unique()) or [None]
    width_in = max(6, 0.9 * max(1, bars["label"].nunique()) + 2)
    fig, axes = plt.subplots(
        len(gens), len(tasks), figsize=(width_in * len(tasks), 4 * len(gens)), squeeze=False, sharey=True
    )
    order = sorted(bars["label"].unique())
    margins = sorted(bars["margin"].unique(), reverse=True)
    palette = sns.color_palette("crest", max(1, len(margins)))
    for (r, gen), (c, task) in ((rg, tc) for rg in enumerate(gens) for tc in enumerate(tasks)):
        ax = axes[r][c]
        panel = bars[(bars["task"] == task) & (bars["generator"] == gen)]
        if panel.empty:
            empty_panel(ax, "no wrong-over-wrong pairs to score")
            continue
        width = 0.8 / len(margins)
        for j, m in enumerate(margins):
            sub = panel[panel["margin"] == m].set_index("label").reindex(order)
            x = np.arange(len(order)) + (j - (len(margins) - 1) / 2) * width
            yerr = np.vstack([sub["acc_wow"] - sub["ci_low"], sub["ci_high"] - sub["acc_wow"]]).clip(min=0)
            few = sub["n_pairs"].fillna(0).to_numpy() < FEW_PAIRS
            bars_ = ax.bar(x, sub["acc_wow"].fillna(0), width, yerr=np.nan_to_num(yerr), capsize=2, color=palette[j],
                           label=f"M = {m:g}")  # fmt: skip
            for bar, xi, n, acc, is_few in zip(bars_, x, sub["n_pairs"], sub["acc_wow"], few, strict=True):
                if pd.isna(n) or n == 0 or pd.isna(acc):
                    bar.set_visible(False)
                    ax.text(xi, 0.02, "no pairs", rotation=90, ha="center", va="bottom", fontsize=6, color="0.4")
                    continue
                if is_few:
                    bar.set_hatch("///")
                ax.text(xi, min(acc, 1.0) + 0.01, f"n={int(n)}", ha="center", va="bottom", fontsize=5, rotation=90)
        ax.set_xticks(np.arange(len(order)), order, fontsize=8, rotation=30, ha="right")
        ax.axhline(0.5, color="0.3", ls="--", lw=1, label="random")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Acc$_{WoW}$")
        ax.set_title(f"{task} / {gen}", fontsize=10)
        if (r, c) == (0, len(tasks) - 1):
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="margin", title_fontsize=8)
    fig.suptitle(
        (title or "Can the model tell which wrong answer is less wrong? Acc$_{WoW}$ by method and margin")
        + f"\n(n = pairs; hatched: fewer than {FEW_PAIRS} pairs, an unreliable CI; 'no pairs': nothing to score)",
        fontsize=10,
    )
    fig.tight_layout()
    save(fig, path)
    return fig


def fig_acc_wow_bins(bins: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """The paper's per-bin Acc_WoW matrix as heatmaps: one panel per method (and judge) of one (task, generator).

    Cell ``(i, j)`` is the Acc_WoW over pairs with one answer's label in bin ``i`` and the other's in bin ``j``
    (``i <= j``; bins of equal width from the lowest to the highest label, correct answers included), annotated
    with its pair count.

    Args:
        bins: rows of ``acc_wow_bins.csv`` (:func:`wow.analysis.acc_wow_tables.acc_wow_bins_table`) of ONE task and generator.
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="white", context="notebook")
    df = bins.copy()
    df["panel"] = df["method"] + np.where(df["judge"].fillna("") != "", " (" + df["judge"].fillna("") + ")", "")
    panels = list(dict.fromkeys(df["panel"])) or [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel is None:
            empty_panel(ax, "no graded labels to bin")
            continue
        sub = df[df["panel"] == panel]
        acc = sub.pivot(index="bin_i", columns="bin_j", values="acc")
        n = sub.pivot(index="bin_i", columns="bin_j", values="n_pairs")
        annot = acc.map(lambda v: "" if pd.isna(v) else f"{v:.2f}") + n.map(
            lambda v: f"\nn={int(v)}" if pd.notna(v) and v else ""
        )
        ticks = [f"{lo:.3g}..{hi:.3g}" for lo, hi in sub.drop_duplicates("bin_j")[["lo_j", "hi_j"]].to_numpy()]
        sns.heatmap(
            acc,
            vmin=0,
            vmax=1,
            cmap="crest",
            annot=annot,
            fmt="",
            cbar=ax is axes[0][-1],
            ax=ax,
            annot_kws={"size": 7},
        )
        ax.set_xticklabels(ticks, rotation=30, ha="right", fontsize=7)
        ax.set_yticklabels(ticks, rotation=0, fontsize=7)
        ax.set_xlabel("label bin (higher label)")
        ax.set_ylabel("label bin (lower label)")
        ax.set_title(panel, fontsize=9)
    fig.suptitle(title or "Acc$_{WoW}$ by label bins: far-apart answers vs close ones", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig
