"""The alignment figures: the paper's Fig 3 (Acc_WoW vs the gains), Fig 4 (trainers) and reliability diagrams.

* :func:`fig_alignment_vs_acc_wow` (paper Fig 3): Acc_WoW vs Δp_wrong, ΔAcc and -ΔECE over methods, Self and
  Mix, with the regression over all datasets (black) and over Bio Generation (green) (:func:`fig3_lines`).
* :func:`fig_trainers` (paper Fig 4): preference-optimisation methods compared on the three gains, averaged over
  the set-ups of :func:`fig4_setups`.
* :func:`fig_reliability`: reliability diagrams before and after alignment.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from wow.figures.figure_files import empty_panel, save

GAINS = [
    ("d_p_wrong", "Δp_wrong (less wrong)"),
    ("d_acc", "ΔAcc (more correct)"),
    ("neg_d_ece", "−ΔECE (better calibrated)"),
]

#: Fig 3's regression lines as the paper draws them: (name, task or None for all datasets, colour).
FIG3_LINES = (("all datasets", None, "black"), ("Bio Generation", "bio_generation", "green"))


def fig3_lines(points: pd.DataFrame) -> pd.DataFrame:
    """The least-squares lines of Fig 3: gain = intercept + slope * Acc_WoW, over all points and over Bio Generation.

    Args:
        points: :func:`wow.analysis.fig3_points.method_acc_wow` output (task, acc_wow and the gains).

    Returns:
        One row per gain and line of :data:`FIG3_LINES` that has at least two points with different Acc_WoW:
        ``gain, line, color, n, slope, intercept, x_min, x_max``.
    """
    rows = []
    for col, _ in GAINS:
        if col not in points:
            continue
        for name, task, color in FIG3_LINES:
            sub = points if task is None else points[points["task"] == task]
            sub = sub.dropna(subset=["acc_wow", col])
            if len(sub) < 2 or sub["acc_wow"].nunique() < 2:
                continue
            slope, intercept = np.polyfit(sub["acc_wow"].to_numpy(float), sub[col].to_numpy(float), 1)
            rows.append(
                {
                    "gain": col,
                    "line": name,
                    "color": color,
                    "n": len(sub),
                    "slope": float(slope),
                    "intercept": float(intercept),
                    "x_min": float(sub["acc_wow"].min()),
                    "x_max": float(sub["acc_wow"].max()),
                }
            )
    columns = ["gain", "line", "color", "n", "slope", "intercept", "x_min", "x_max"]
    return pd.DataFrame(rows, columns=columns)


def fig_alignment_vs_acc_wow(
    table: pd.DataFrame, path: str | Path | None = None, title: str | None = None
) -> plt.Figure:
    """Paper Fig 3: Acc_WoW of each preference set vs the gains after alignment on it, Self and Mix together.

    Colour = task, marker = preference method and source (``self`` / ``mix``); the black line is the regression over
    all datasets, the green one over Bio Generation (:func:`fig3_lines`), as in the paper. Where the table has them,
    each point carries its own paired bootstrap 95% CI (``<gain>_ci_low`` / ``_ci_high``): a point whose bar misses
    zero is a significant change at 5%. Where the table has ``<gain>_mde``, a line of text states the design's
    power (the true gain these test questions detect with 80% power, the median over the points); it describes the
    study, not the points, so it is not drawn as a band to read them against.

    Args:
        table: one row per aligned setting with columns task, method, source, acc_wow (oracle = 1.0) and the gains
            d_p_wrong, d_acc, neg_d_ece (:func:`wow.analysis.fig3_points.method_acc_wow`).
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    df = table.dropna(subset=["acc_wow"]).copy()
    source = df["source"].fillna("self") if "source" in df else pd.Series("self", index=df.index)
    df["preferences"] = df["method"] + " (" + source + ")" if not df.empty else pd.Series(dtype=str)
    lines = fig3_lines(df)
    for ax, (col, label) in zip(axes, GAINS, strict=True):
        if df.empty or col not in df:
            empty_panel(ax, "no aligned settings")
            continue
        _design_power_note(ax, df, col)
        if f"{col}_ci_low" in df and f"{col}_ci_high" in df:
            ci = df.dropna(subset=[col, f"{col}_ci_low", f"{col}_ci_high"])
            # a percentile CI may exclude its estimate (by rounding, or one test question): never a negative bar
            yerr = np.clip([ci[col] - ci[f"{col}_ci_low"], ci[f"{col}_ci_high"] - ci[col]], 0, None)
            ax.errorbar(ci["acc_wow"], ci[col], yerr=yerr, fmt="none", ecolor="0.55", elinewidth=0.9, capsize=2)
        sns.scatterplot(data=df, x="acc_wow", y=col, hue="task", style="preferences", s=70, ax=ax, zorder=3)
        for line in lines[lines["gain"] == col].itertuples():
            xs = np.array([line.x_min, line.x_max])
            ax.plot(xs, line.intercept + line.slope * xs, color=line.color, lw=1.2, label=f"fit: {line.line}")
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xlabel("Acc$_{WoW}$ of the preferences")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.get_legend().set_visible(ax is axes[-1])
    fig.suptitle(title or "Acc$_{WoW}$ vs improvement after wrong-over-wrong alignment", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    return fig


def _design_power_note(ax, df: pd.DataFrame, col: str) -> None:
    """Write the design's minimum detectable gain of ``col`` (median ``<col>_mde`` over the points) in the panel."""
    if f"{col}_mde" not in df:
        return
    mde = pd.to_numeric(df[f"{col}_mde"], errors="coerce").dropna()
    if mde.empty:
        return
    text = f"this design detects a true gain of ±{float(mde.median()):.3f} with 80% power"
    ax.text(0.02, 0.03, text, transform=ax.transAxes, fontsize=7, gid="design_power")


#: Preference types of the paper's Fig 4 set-ups (pairwise with check, score M_50 and M_10; Self and Mix).
FIG4_PREF_TYPES = ("direct", "score")


def fig4_setups(alignment: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``alignment.csv`` Fig 4 averages over: the elicited wrong-over-wrong set-ups (``direct`` and
    ``score@M``, every source), or every row when the run trained none of them (e.g. oracle only)."""
    if alignment.empty or "pref_type" not in alignment:
        return alignment
    elicited = alignment[alignment["pref_type"].isin(FIG4_PREF_TYPES)]
    return elicited if not elicited.empty else alignment


def fig_trainers(table: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Paper Fig 4: preference-optimisation methods (trainers) compared on the three gains, averaged over set-ups.

    Each bar is the mean over the trainer's rows (set-ups: preference set x task; pass :func:`fig4_setups` for the
    paper's six: {pairwise + check, score M_50, score M_10} x {Self, Mix}), with a 95% CI over those rows.

    Args:
        table: rows of ``alignment.csv`` with columns trainer and d_p_wrong, d_acc, neg_d_ece.
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, (col, label) in zip(axes, GAINS, strict=True):
        if table.empty or col not in table:
            empty_panel(ax, "no aligned settings")
            continue
        sns.barplot(data=table, x="trainer", y=col, hue="trainer", errorbar=("ci", 95), ax=ax, palette="crest")
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel("preference optimisation")
        ax.set_ylabel(label)
    n_setups = int(table.groupby("trainer").size().max()) if not table.empty and "trainer" in table else 0
    fig.suptitle(
        title
        or "Preference optimisation methods: less wrong, more correct, better calibrated "
        f"(mean over {n_setups} set-up{'s' if n_setups != 1 else ''})",
        fontsize=11,
    )
    fig.tight_layout()
    save(fig, path)
    return fig


def fig_reliability(bins: pd.DataFrame, path: str | Path | None = None, title: str | None = None) -> plt.Figure:
    """Reliability diagrams: accuracy vs confidence per bin, one panel per model (e.g. before / after).

    Args:
        bins: columns model, lo, hi, n, mean_conf, accuracy (``wow.analysis.metrics.reliability_bins`` plus a model column).
        path: file stem to save to.
        title: suptitle.
    """
    sns.set_theme(style="whitegrid", context="notebook")
    models = list(dict.fromkeys(bins["model"])) if not bins.empty else []
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4 * max(1, len(models)), 4), squeeze=False)
    for ax, model in zip(axes[0], models or [None], strict=True):
        if model is None:
            empty_panel(ax, "no evaluated answers")
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
