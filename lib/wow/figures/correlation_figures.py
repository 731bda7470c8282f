"""The paper's Figures 2 and 5: task accuracy and confidence vs Acc_WoW, one point per (task, generator).

:func:`figure_points` picks each judge's points from ``acc_wow.csv`` and the task statistics
(:func:`wow.analysis.acc_wow_tables.task_accuracy_confidence`); :func:`fig_correlation` draws them with Pearson r.

Example::

    for stem, points, what in figure_points(table, stats):
        fig_correlation(points, run_dir / stem, title=what)
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from wow import schema
from wow.analysis import metrics
from wow.figures.figure_files import empty_panel, save, stem_part


def figure_points(table: pd.DataFrame, stats: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """The (task, generator) points of the paper's Figures 2 and 5, one pair of figures per judge.

    Figure 2 takes the score-based judge (k = 5 when run, else the largest k) at the smallest margin; Figure 5 the
    pairwise judge with the both-orders check at M = 1.0 (text mode when run, else logprob mode).

    Returns:
        ``(file stem, points, description)`` per figure; points have task, generator, accuracy, mean_confidence,
        acc_wow.
    """
    out = []
    for judge in sorted(table["judge"].dropna().unique()):
        sub = table[table["judge"] == judge]
        parsed = sub["method"].map(schema.parse_score_method)
        score = sub[parsed.notna()]
        if not score.empty:
            ks = sorted({km[0] for km in parsed.dropna()})
            k = 5 if 5 in ks else ks[-1]
            text_first = score[score["method"] == schema.score_method(k, "text")]
            score = text_first if not text_first.empty else score[score["method"] == schema.score_method(k, "logprob")]
            m = score["margin"].min()
            pts = score[score["margin"] == m].merge(stats, on=["task", "generator"])
            out.append((f"fig2_{stem_part(judge)}", pts, f"score-based judge {judge}, k = {k}, M = {m:g}"))
        is_pair = sub["method"].map(schema.is_pairwise_method).astype(bool)
        pair = sub[is_pair & (sub["check"] == "both_orders") & (sub["margin"] == 1.0)]
        if not pair.empty:
            text = schema.pairwise_method("text")
            mode = text if (pair["method"] == text).any() else pair["method"].iloc[0]
            pts = pair[pair["method"] == mode].merge(stats, on=["task", "generator"])
            out.append(
                (f"fig5_{stem_part(judge)}", pts, f"pairwise judge {judge} ({mode.split('_')[1]}), both-orders check")
            )
    return out


#: Fewer points than this draw no correlation (a line through two points says nothing).
MIN_POINTS = 3


def fig_correlation(points: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Paper Figs 2 and 5: task accuracy and confidence vs Acc_WoW, one point per (task, generator).

    Args:
        points: columns task, generator, accuracy, mean_confidence, acc_wow.
        path: file stem to save to.
        title: suptitle (say which elicitation method and margin the Acc_WoW is from).
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    df = points.dropna(subset=["acc_wow"])
    for ax, (col, label) in zip(
        axes, [("accuracy", "task accuracy"), ("mean_confidence", "mean confidence")], strict=True
    ):
        if len(df) < MIN_POINTS:
            empty_panel(
                ax, f"{len(df)} (task, generator) point(s) with Acc_WoW: a correlation needs at least {MIN_POINTS}"
            )
            continue
        sns.scatterplot(data=df, x=col, y="acc_wow", hue="task", style="generator", s=70, ax=ax)
        r, p, n = metrics.pearson(df[col].to_numpy(float), df["acc_wow"].to_numpy(float))
        if n >= 2 and df[col].nunique() > 1:
            sns.regplot(data=df, x=col, y="acc_wow", scatter=False, ci=None, color="black", ax=ax, line_kws={"lw": 1})
        stat = f"P = {r:.2f} (p = {p:.2g}, n = {n})" if r is not None else f"P undefined (n = {n})"
        ax.set_title(f"{label} vs Acc$_{{WoW}}$: {stat}", fontsize=10)
        ax.set_xlabel(label)
        ax.set_ylabel("Acc$_{WoW}$")
        if ax.get_legend():
            ax.get_legend().set_visible(ax is axes[-1])
    fig.suptitle(title or "Correlation between task accuracy, confidence and Acc$_{WoW}$", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig
