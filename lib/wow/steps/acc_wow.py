"""Stage 03 (notebook ``03_acc_wow``): how often each elicitation method prefers the less wrong answer. Every
method's Acc_WoW per margin with its CI (``acc_wow.csv``), the paper's Figure 2/5 correlations with task accuracy
and confidence (``correlations.csv``), the per-label-bin matrix (``acc_wow_bins.csv``), and their figures.

Example::

    from wow import params
    from wow.steps import acc_wow, data_prep, elicitation
    P = params.load("parameters/smoke.yaml")
    answers, scores = data_prep.load_answers(P), elicitation.load_scores(P)
    table = acc_wow.methods_table(P, answers, scores, elicitation.load_judgements(P)[0])
"""

from __future__ import annotations

import pandas as pd

from wow import WowError, io
from wow.analysis import acc_wow_tables
from wow.figures import correlation_figures, figure_files, plots
from wow.params import RunParams


def methods_table(P: RunParams, answers: list[dict], scores: list[dict], verdict_rows: list[dict]) -> pd.DataFrame:
    """Every method's Acc_WoW per margin on ``P.acc_wow_split`` with its bootstrap CI; writes ``acc_wow.csv``."""
    table = acc_wow_tables.acc_wow_table(
        answers,
        scores,
        verdict_rows,
        margins=P.margins,
        split=P.acc_wow_split,
        n_boot=P.n_boot,
        seed=P.seed,
        resample=P.ci_resample,  # whole questions (default) or single pairs
        protocol=P.protocol,
    )
    io.write_text(P.layout.acc_wow, table.to_csv(index=False))
    return table


def methods_figure(P: RunParams, table: pd.DataFrame):
    """The overview figure (``fig_acc_wow``), one panel per task and generator, after checking that the oracle,
    which reads the labels, orders every pair right wherever it has pairs."""
    oracle = table[(table.method == "oracle") & (table.n_pairs > 0)]
    if not (oracle.acc_wow == 1.0).all():
        raise WowError(f"the oracle misorders pairs (a bug in the pair rule or the labels):\n{oracle}")
    return plots.fig_acc_wow_methods(table, P.run_dir / "fig_acc_wow")


def correlations(P: RunParams, answers: list[dict], table: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figure 2/5 analysis: Pearson r of each method's Acc_WoW with task accuracy and confidence across
    (task, generator) points; writes ``correlations.csv`` and one figure per point set."""
    stats = acc_wow_tables.task_accuracy_confidence(acc_wow_tables.split_answers(answers, P.acc_wow_split), P.protocol)
    corr = acc_wow_tables.acc_wow_correlations(table, stats)
    io.write_text(P.layout.correlations, corr.to_csv(index=False))
    for fig_name, points, what in correlation_figures.figure_points(table, stats):
        correlation_figures.fig_correlation(
            points, P.run_dir / fig_name, title=f"Task accuracy, confidence and Acc$_{{WoW}}$ ({what})"
        )
    return corr


def bins_tables(P: RunParams, answers: list[dict], scores: list[dict]) -> pd.DataFrame:
    """The paper's Acc_WoW by label bins (d = 4) per task and generator; writes ``acc_wow_bins.csv`` and one heat map
    per (task, generator) at margin 1."""
    bins = acc_wow_tables.acc_wow_bins_tables(answers, scores, d=4, split=P.acc_wow_split, protocol=P.protocol)
    io.write_text(P.layout.acc_wow_bins, bins.to_csv(index=False))
    for (task_name, generator), cells in bins[bins.margin == 1.0].groupby(["task", "generator"]):
        stem = f"fig_acc_wow_bins_{figure_files.stem_part(task_name)}_{figure_files.stem_part(generator)}"
        plots.fig_acc_wow_bins(cells, P.run_dir / stem, title=f"Acc$_{{WoW}}$ by label bins: {task_name}, {generator}")
    return bins
