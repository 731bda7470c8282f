"""Run summaries: the headline numbers of a run as Markdown (``summary.md``)."""

from __future__ import annotations

import pandas as pd

from wow.params import RunParams


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and pd.isna(x)) else f"{x:.3f}"


def _ci(row: pd.Series, col: str, ci: str | None = None) -> str:
    """``value [low, high]``; the CI columns are ``<ci>_ci_low/high`` (default ``ci = col``) or ``ci_low/high``."""
    prefix = f"{ci or col}_" if ci != "" else ""
    lo, hi = row.get(f"{prefix}ci_low"), row.get(f"{prefix}ci_high")
    return f"{_fmt(row[col])} [{_fmt(lo)}, {_fmt(hi)}]" if lo is not None and pd.notna(lo) else _fmt(row[col])


def _split(acc: pd.DataFrame) -> str:
    """The split(s) ``acc_wow.csv`` was computed on (its ``split`` column; older tables have none: ``all``)."""
    splits = sorted(acc["split"].dropna().unique()) if "split" in acc else []
    return ", ".join(map(str, splits)) or "all"


def summary_markdown(P: RunParams, acc: pd.DataFrame, alignment: pd.DataFrame, points: pd.DataFrame) -> str:
    """The run's ``summary.md``: what ran, Acc_WoW at M = 1.0 per method, and the alignment gains with 95% CIs.

    Args:
        P: the run's parameters.
        acc: ``acc_wow.csv``.
        alignment: ``alignment.csv``.
        points: Figure 3's table (:func:`wow.pipeline.method_acc_wow`).
    """
    lines = [
        f"# Run `{P.run_name}`",
        "",
        f"Tasks {', '.join(P.tasks)}; {P.n_questions} questions per task, {P.n_samples} answers each from "
        f"{', '.join(P.generators)}; judges {', '.join(P.judges) or 'none'}; policy {P.policy_model} aligned with "
        f"{', '.join(P.trainers)} on {', '.join(P.pref_types)} preferences ({', '.join(P.pref_sources)}). "
        f"Seed {P.seed}.",
        "",
        f"Protocol `{P.protocol}`: "
        + (
            "the paper's computation where reproducible (docs/fidelity.md)."
            if P.protocol == "paper"
            else "wow's computation (docs/fidelity.md lists where it differs from the paper's)."
        ),
        "",
        f"## Acc_WoW ({_split(acc)} questions, M = 1.0; random = 0.5, oracle = 1.0)",
        "",
        "| task | generator | method | judge | check | pairs | Acc_WoW [95% CI] |",
        "|---|---|---|---|---|---|---|",
    ]
    head = acc[acc["margin"] == 1.0].sort_values(
        ["task", "generator", "method", "judge", "check"], na_position="first"
    )
    for _, r in head.iterrows():
        judge = r["judge"] if pd.notna(r["judge"]) else ""
        check = r["check"] if pd.notna(r.get("check")) else ""
        lines.append(
            f"| {r['task']} | {r['generator']} | {r['method']} | {judge} | {check} | {int(r['n_pairs'])} | "
            f"{_ci(r, 'acc_wow', ci='') if r['n_pairs'] else 'no pairs'} |"
        )
    lines += [
        "",
        "## Alignment on the held-out test questions (positive = better)",
        "",
        "| setting | task | p_wrong before → after | Δp_wrong [95% CI] | ΔAcc [95% CI] | −ΔECE [95% CI] |",
        "|---|---|---|---|---|---|",
    ]
    for _, r in alignment.iterrows():
        lines.append(
            f"| {r['setting']} | {r['task']} | {_fmt(r['before_p_wrong'])} → {_fmt(r['after_p_wrong'])} | "
            f"{_ci(r, 'd_p_wrong')} | {_ci(r, 'd_acc')} | {_ci(r, 'neg_d_ece')} |"
        )
    lines += [
        "",
        "Figures: `fig_acc_wow`, `fig_acc_wow_bins_*`, `fig2_*`, `fig5_*`, `fig3_acc_wow_vs_alignment`, "
        "`fig4_trainers`, `reliability_*` (PNG and PDF in the run folder).",
        "",
    ]
    return "\n".join(lines)
