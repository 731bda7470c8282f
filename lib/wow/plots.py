"""The paper's figures, drawn with seaborn from the tables the pipeline writes.

Every function takes a pandas DataFrame, returns the matplotlib Figure and, given ``path`` (a file stem, no
suffix), saves it as PNG and PDF. Titles say what the paper's figure says.

* :func:`fig_answer_labels`: how wrong the sampled answers are, per task (the shades of wrong).
* :func:`fig_acc_wow_methods`: Acc_WoW per elicitation method and margin, with 95% CIs (overview).
* :func:`fig_correlation` (paper Figs 2 and 5): task accuracy / confidence vs Acc_WoW over (task, generator) points.
* :func:`fig_alignment_vs_acc_wow` (paper Fig 3): Acc_WoW vs Δp_wrong, ΔAcc and -ΔECE over methods.
* :func:`fig_trainers` (paper Fig 4): preference-optimisation methods compared on the three gains.
* :func:`fig_reliability`: reliability diagrams before and after alignment.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from wow import metrics

log = logging.getLogger(__name__)

GAINS = [
    ("d_p_wrong", "Δp_wrong (less wrong)"),
    ("d_acc", "ΔAcc (more correct)"),
    ("neg_d_ece", "−ΔECE (better calibrated)"),
]


def save(fig: plt.Figure, path: str | Path | None) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` (150 dpi) and ``<path>.pdf``; returns the files written."""
    if path is None:
        return []
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for suffix in (".png", ".pdf"):
        target = path.with_suffix(suffix)
        tmp = target.with_name(f".{target.name}.tmp{suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata={"CreationDate": None} if suffix == ".pdf" else None)
        tmp.replace(target)
        out.append(target)
    return out


def _empty(ax: plt.Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


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
        score = sub[sub["method"].str.startswith("score_k")]
        if not score.empty:
            ks = sorted(score["method"].str.extract(r"score_k(\d+)")[0].astype(int).unique())
            k = 5 if 5 in ks else ks[-1]
            text_first = score[score["method"] == f"score_k{k}"]
            score = text_first if not text_first.empty else score[score["method"] == f"score_k{k}_logprob"]
            m = score["margin"].min()
            pts = score[score["margin"] == m].merge(stats, on=["task", "generator"])
            out.append((f"fig2_{_safe(judge)}", pts, f"score-based judge {judge}, k = {k}, M = {m:g}"))
        pair = sub[sub["method"].str.startswith("pairwise") & (sub["check"] == "both_orders") & (sub["margin"] == 1.0)]
        if not pair.empty:
            mode = "pairwise_text" if (pair["method"] == "pairwise_text").any() else pair["method"].iloc[0]
            pts = pair[pair["method"] == mode].merge(stats, on=["task", "generator"])
            out.append(
                (f"fig5_{_safe(judge)}", pts, f"pairwise judge {judge} ({mode.split('_')[1]}), both-orders check")
            )
    return out


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def fig_acc_wow_methods(table: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Acc_WoW of each method (x) and margin (hue), with bootstrap 95% CIs and the random baseline 0.5.

    Args:
        table: rows of ``acc_wow.csv`` (columns method, judge, margin, acc_wow, ci_low, ci_high, n_pairs).
        path: file stem to save to.
        title: figure title.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    df = table.dropna(subset=["acc_wow"]).copy()
    check = df["check"].fillna("none") if "check" in df else pd.Series("none", index=df.index)
    df["label"] = (
        df["method"]
        + np.where(check == "both_orders", " +check", "")
        + np.where(df["judge"].fillna("") != "", " (" + df["judge"].fillna("") + ")", "")
    )
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * df["label"].nunique() + 2), 4))
    if df.empty:
        _empty(ax, "no wrong-over-wrong pairs to score")
    else:
        agg = df.groupby(["label", "margin"], as_index=False).agg(
            acc_wow=("acc_wow", "mean"), ci_low=("ci_low", "mean"), ci_high=("ci_high", "mean"), n=("n_pairs", "sum")
        )
        order = sorted(agg["label"].unique())
        margins = sorted(agg["margin"].unique(), reverse=True)
        width = 0.8 / len(margins)
        palette = sns.color_palette("crest", len(margins))
        for j, m in enumerate(margins):
            sub = agg[agg["margin"] == m].set_index("label").reindex(order)
            x = np.arange(len(order)) + (j - (len(margins) - 1) / 2) * width
            yerr = np.vstack([sub["acc_wow"] - sub["ci_low"], sub["ci_high"] - sub["acc_wow"]]).clip(min=0)
            ax.bar(x, sub["acc_wow"], width, yerr=yerr, capsize=2, color=palette[j], label=f"M = {m:g}")
        ax.set_xticks(np.arange(len(order)), order, fontsize=8, rotation=30, ha="right")
        ax.axhline(0.5, color="0.3", ls="--", lw=1, label="random")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Acc$_{WoW}$")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="margin", title_fontsize=8)
    ax.set_title(
        title or "Can the model tell which wrong answer is less wrong? Acc$_{WoW}$ by method and margin", fontsize=11
    )
    save(fig, path)
    return fig


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
        if df.empty:
            _empty(ax, "no (task, generator) point has Acc_WoW")
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


def fig_alignment_vs_acc_wow(
    table: pd.DataFrame, path: str | Path | None = None, title: str | None = None
) -> plt.Figure:
    """Paper Fig 3: Acc_WoW of each preference source vs the gains after alignment on it.

    Args:
        table: one row per aligned setting with columns task, method, acc_wow (oracle = 1.0) and the gains
            d_p_wrong, d_acc, neg_d_ece.
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    df = table.dropna(subset=["acc_wow"])
    for ax, (col, label) in zip(axes, GAINS, strict=True):
        if df.empty or col not in df:
            _empty(ax, "no aligned settings")
            continue
        sns.scatterplot(data=df, x="acc_wow", y=col, hue="method", style="task", s=70, ax=ax)
        if len(df) >= 2 and df["acc_wow"].nunique() > 1:
            sns.regplot(data=df, x="acc_wow", y=col, scatter=False, ci=None, color="black", ax=ax, line_kws={"lw": 1})
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel("Acc$_{WoW}$ of the preferences")
        ax.set_ylabel(label)
        if ax.get_legend():
            ax.get_legend().set_visible(ax is axes[-1])
    fig.suptitle(title or "Acc$_{WoW}$ vs improvement after wrong-over-wrong alignment", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig


def fig_trainers(table: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Paper Fig 4: preference-optimisation methods (trainers) compared on the three gains, averaged over settings.

    Args:
        table: rows of ``alignment.csv`` with columns trainer and d_p_wrong, d_acc, neg_d_ece.
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (col, label) in zip(axes, GAINS, strict=True):
        if table.empty or col not in table:
            _empty(ax, "no aligned settings")
            continue
        sns.barplot(data=table, x="trainer", y=col, hue="trainer", errorbar=("ci", 95), ax=ax, palette="crest")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("preference optimisation")
        ax.set_ylabel(label)
    fig.suptitle(title or "Preference optimisation methods: less wrong, more correct, better calibrated", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig


def fig_reliability(bins: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Reliability diagrams: accuracy vs confidence per bin, one panel per model (e.g. before / after).

    Args:
        bins: columns model, lo, hi, n, mean_conf, accuracy (``wow.metrics.reliability_bins`` plus a model column).
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    models = list(dict.fromkeys(bins["model"])) if not bins.empty else []
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4 * max(1, len(models)), 4), squeeze=False)
    for ax, model in zip(axes[0], models or [None], strict=True):
        if model is None:
            _empty(ax, "no evaluated answers")
            continue
        sub = bins[(bins["model"] == model) & (bins["n"] > 0)]
        width = (sub["hi"] - sub["lo"]).to_numpy()
        ax.bar(sub["lo"], sub["accuracy"], width=width, align="edge", edgecolor="black", alpha=0.8, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="0.4", label="perfect calibration")
        ax.scatter(sub["mean_conf"], sub["accuracy"], color="crimson", s=12, zorder=3, label="mean confidence")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence exp(mean token logprob)")
        ax.set_ylabel("accuracy")
        ax.set_title(str(model), fontsize=10)
    axes[0][-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(title or "Reliability diagrams before and after alignment", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig
