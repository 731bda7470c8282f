"""Stage 05 (notebook ``05_correlation_plots``): Fig 3's points (``fig3_points.csv``) and the slope of each gain
against Acc_WoW with its bootstrap CI (``fig3_slopes.csv``), the reliability diagrams, and the run's ``summary.md``;
with the test answers behind each alignment row and each of Fig 3's points.
"""

from __future__ import annotations

import logging

import pandas as pd

from wow import io
from wow.analysis import eval_metrics, gain_slope
from wow.analysis.fig3_points import method_acc_wow
from wow.figures import alignment_figures, figure_files
from wow.layout import seeded_name
from wow.params import RunParams
from wow.report import markdown_summary

log = logging.getLogger(__name__)


def eval_answers(P: RunParams, row) -> tuple[str, str, list[dict], list[dict]]:
    """The test answers behind one row of ``alignment.csv``: ``(eval task, name, before, after)``, ``name`` being
    the setting, or ``<task>__<setting>`` for a model evaluated on another task."""
    target = row["eval_task"] if isinstance(row.get("eval_task"), str) else row["task"]
    seed = _train_seed(row)
    name = row["setting"] if target == row["task"] else f"{row['task']}__{row['setting']}"
    name = seeded_name(name, seed)
    before = io.read_jsonl(P.layout.eval_answers(target))
    after = io.read_jsonl(P.layout.eval_answers(target, row["setting"], row["task"], seed))
    return target, name, before, after


def _train_seed(row) -> int | None:
    seed = row.get("train_seed")  # a dict or a pandas row
    return None if seed is None or pd.isna(seed) else int(seed)


def point_answers(P: RunParams, points: pd.DataFrame) -> dict[tuple, tuple[list[dict], list[dict]]]:
    """The test answers behind each of Fig 3's points, keyed as :func:`wow.analysis.gain_slope.gain_slopes` reads them:
    ``(task, setting)``, or ``(task, setting, train_seed)`` for one of several training seeds."""
    out = {}
    for _, row in points.iterrows():
        seed = _train_seed(row)
        key = (row["task"], row["setting"]) if seed is None else (row["task"], row["setting"], seed)
        out[key] = eval_answers(P, row)[2:]
    return out


def fig3_points(P: RunParams, acc: pd.DataFrame, alignment: pd.DataFrame) -> pd.DataFrame:
    """Fig 3's points: each aligned setting's gains joined with the Acc_WoW of the pairs it trained on
    (:func:`wow.analysis.fig3_points.method_acc_wow`); writes ``fig3_points.csv`` (the figure's numbers)."""
    points = method_acc_wow(P, acc, alignment)
    io.write_text(P.layout.fig3_points, points.to_csv(index=False))
    return points


def fig3_slopes(P: RunParams, points: pd.DataFrame) -> pd.DataFrame:
    """The paper's question, the slope of each gain against Acc_WoW, with its paired bootstrap CI over test questions
    (and training seeds where a setting has several: :func:`wow.analysis.gain_slope.gain_slopes`); writes
    ``fig3_slopes.csv``."""
    slopes = gain_slope.gain_slopes(points, point_answers(P, points), n_boot=P.n_boot, seed=P.seed, n_bins=P.n_bins)
    io.write_text(P.layout.fig3_slopes, slopes.to_csv(index=False))
    return slopes


def mechanism_contrasts(P: RunParams, points: pd.DataFrame) -> pd.DataFrame:
    """Each Fig 3 setting's held-out implicit-reward ranking accuracy against the setting of lowest Acc_WoW, with a
    question-level interval pooled over training seeds (:func:`wow.align.mechanism.contrast_table`), from stage 04's
    ``mechanism_rewards.csv``; writes ``mechanism_contrasts.csv`` (empty where stage 04 scored no adapter)."""
    from wow.align import mechanism

    tables = []
    path = P.layout.mechanism_rewards
    scored = pd.read_csv(path) if path.exists() and path.stat().st_size else pd.DataFrame()
    if not scored.empty and not points.empty:
        own = points[points["eval_task"].fillna(points["task"]) == points["task"]]
        for task, group in own.groupby("task"):
            table = scored[scored["task"] == task]
            rewards = {k: dict(zip(g["answer_id"], g["reward"], strict=True)) for k, g in table.groupby("setting")}
            arms: dict[str, tuple[float, list[str]]] = {}
            for _, row in group.iterrows():
                seed = _train_seed(row)
                key = seeded_name(row["setting"], seed)
                arms.setdefault(row["setting"], (float(row["acc_wow"]), []))[1].append(key)
            base = io.read_jsonl(P.layout.eval_answers(task))
            tables.append(mechanism.contrast_table(task, base, rewards, arms, n_boot=P.n_boot, seed=P.seed))
    out = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=mechanism.CONTRAST_COLUMNS)
    io.write_text(P.layout.mechanism_contrasts, out.to_csv(index=False))
    return out


def reliability_figures(P: RunParams, alignment: pd.DataFrame) -> None:
    """One reliability diagram per alignment row: the base model's test answers against the aligned one's, on the row's
    evaluation task (``reliability_<task>_<setting>``)."""
    for _, row in alignment.iterrows():
        target, name, before, after = eval_answers(P, row)  # eval_tasks: another task
        bins = eval_metrics.reliability({"original": before, row.setting: after}, n_bins=P.n_bins)
        stem = f"reliability_{figure_files.stem_part(target)}_{figure_files.stem_part(name)}"  # score_0.5 vs score_0.1
        alignment_figures.fig_reliability(bins, P.run_dir / stem)


def summary(P: RunParams, acc: pd.DataFrame, alignment: pd.DataFrame, points: pd.DataFrame) -> str:
    """The run's ``summary.md`` (:func:`wow.report.markdown_summary.summary_markdown`), written and returned."""
    text = markdown_summary.summary_markdown(P, acc, alignment, points)
    io.write_text(P.layout.summary, text)
    return text
