"""The paper's figures, drawn with seaborn from the tables the pipeline writes.

Every function takes a pandas DataFrame, returns the matplotlib Figure and, given ``path`` (a file stem, no
suffix), saves it as PNG and PDF. Titles say what the paper's figure says.

* :func:`fig_answer_labels`: how wrong the sampled answers are, per task (the shades of wrong).
* :func:`fig_acc_wow_methods`: Acc_WoW per elicitation method and margin, with 95% CIs, one panel per (task,
  generator) (overview).
* :func:`fig_acc_wow_bins`: the paper's per-bin Acc_WoW matrix (Knowledge Crosswords analysis) as heatmaps.
* :func:`fig_correlation` (paper Figs 2 and 5): task accuracy / confidence vs Acc_WoW over (task, generator) points.
* :func:`fig_alignment_vs_acc_wow` (paper Fig 3): Acc_WoW vs Δp_wrong, ΔAcc and -ΔECE over methods, Self and
  Mix, with the regression over all datasets (black) and over Bio Generation (green).
* :func:`fig_trainers` (paper Fig 4): preference-optimisation methods compared on the three gains, averaged over
  the set-ups of :func:`fig4_setups`.
* :func:`fig_reliability`: reliability diagrams before and after alignment.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from wow import WowError, io, metrics, schema

log = logging.getLogger(__name__)

GAINS = [
    ("d_p_wrong", "Δp_wrong (less wrong)"),
    ("d_acc", "ΔAcc (more correct)"),
    ("neg_d_ece", "−ΔECE (better calibrated)"),
]


def save(fig: plt.Figure, path: str | Path | None) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` (150 dpi) and ``<path>.pdf``; returns the files written.

    The suffix is appended to the whole name (``fig2_gpt-3.5-turbo`` keeps its ``.5-turbo``); a path that already
    ends in ``.png`` or ``.pdf`` stands for its stem.
    """
    if path is None:
        return []
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    out = []
    for suffix in (".png", ".pdf"):
        target = path.with_name(path.name + suffix)
        with io.atomic_path(target) as tmp:  # a unique temporary file, renamed over the target
            metadata = {"CreationDate": None} if suffix == ".pdf" else None
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
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
        parsed = sub["method"].map(schema.parse_score_method)
        score = sub[parsed.notna()]
        if not score.empty:
            ks = sorted({km[0] for km in parsed.dropna()})
            k = 5 if 5 in ks else ks[-1]
            text_first = score[score["method"] == schema.score_method(k, "text")]
            score = text_first if not text_first.empty else score[score["method"] == schema.score_method(k, "logprob")]
            m = score["margin"].min()
            pts = score[score["margin"] == m].merge(stats, on=["task", "generator"])
            out.append((f"fig2_{safe_name(judge)}", pts, f"score-based judge {judge}, k = {k}, M = {m:g}"))
        is_pair = sub["method"].map(schema.is_pairwise_method).astype(bool)
        pair = sub[is_pair & (sub["check"] == "both_orders") & (sub["margin"] == 1.0)]
        if not pair.empty:
            text = schema.pairwise_method("text")
            mode = text if (pair["method"] == text).any() else pair["method"].iloc[0]
            pts = pair[pair["method"] == mode].merge(stats, on=["task", "generator"])
            out.append(
                (f"fig5_{safe_name(judge)}", pts, f"pairwise judge {judge} ({mode.split('_')[1]}), both-orders check")
            )
    return out


def safe_name(name: str) -> str:
    """``name`` as a file-stem part: characters other than letters, digits and ``-`` become ``_``.

    Dots go too: :func:`save` adds the suffix to a stem, so ``gpt-3.5-turbo`` or ``score_0.5`` would lose their tail.
    """
    return "".join(c if c.isalnum() or c == "-" else "_" for c in name)


def acc_wow_bars(table: pd.DataFrame) -> pd.DataFrame:
    """The bars of :func:`fig_acc_wow_methods`: one per row of ``acc_wow.csv`` with pairs, never an average.

    A bar's CI is its row's own bootstrap CI over its own pairs; averaging CI bounds over tasks or generators gives
    no CI, so every (task, generator) gets its own panel.

    Returns:
        Columns ``task, generator, label`` (method, ``+check``, judge), ``margin, acc_wow, ci_low, ci_high,
        n_pairs``.

    Raises:
        WowError: two rows of one panel share a label and margin (the table mixes runs or splits).
    """
    df = table.dropna(subset=["acc_wow"]).copy()
    check = df["check"].fillna("none") if "check" in df else pd.Series("none", index=df.index)
    df["label"] = (
        df["method"]
        + np.where(check == "both_orders", " +check", "")
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
            _empty(ax, "no wrong-over-wrong pairs to score")
            continue
        width = 0.8 / len(margins)
        for j, m in enumerate(margins):
            sub = panel[panel["margin"] == m].set_index("label").reindex(order)
            x = np.arange(len(order)) + (j - (len(margins) - 1) / 2) * width
            yerr = np.vstack([sub["acc_wow"] - sub["ci_low"], sub["ci_high"] - sub["acc_wow"]]).clip(min=0)
            ax.bar(x, sub["acc_wow"], width, yerr=yerr, capsize=2, color=palette[j], label=f"M = {m:g}")
        ax.set_xticks(np.arange(len(order)), order, fontsize=8, rotation=30, ha="right")
        ax.axhline(0.5, color="0.3", ls="--", lw=1, label="random")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("Acc$_{WoW}$")
        ax.set_title(f"{task} / {gen}", fontsize=10)
        if (r, c) == (0, len(tasks) - 1):
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="margin", title_fontsize=8)
    fig.suptitle(
        title or "Can the model tell which wrong answer is less wrong? Acc$_{WoW}$ by method and margin", fontsize=11
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
        bins: rows of ``acc_wow_bins.csv`` (:func:`wow.elicit.acc_wow_bins_table`) of ONE task and generator.
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
            _empty(ax, "no graded labels to bin")
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


#: Fig 3's regression lines as the paper draws them: (name, task or None for all datasets, colour).
FIG3_LINES = (("all datasets", None, "black"), ("Bio Generation", "bio_generation", "green"))


def fig3_lines(points: pd.DataFrame) -> pd.DataFrame:
    """The least-squares lines of Fig 3: gain = intercept + slope * Acc_WoW, over all points and over Bio Generation.

    Args:
        points: :func:`wow.pipeline.method_acc_wow` output (task, acc_wow and the gains).

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
    all datasets, the green one over Bio Generation (:func:`fig3_lines`), as in the paper.

    Args:
        table: one row per aligned setting with columns task, method, source, acc_wow (oracle = 1.0) and the gains
            d_p_wrong, d_acc, neg_d_ece (:func:`wow.pipeline.method_acc_wow`).
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
            _empty(ax, "no aligned settings")
            continue
        sns.scatterplot(data=df, x="acc_wow", y=col, hue="task", style="preferences", s=70, ax=ax)
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
            _empty(ax, "no aligned settings")
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
