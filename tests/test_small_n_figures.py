"""Figures that do not mislead at small n: "no pairs" drawn apart from 0.0, n on every bar, fewer than 5 pairs
marked, and no correlation drawn through fewer than 3 points."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from wow.figures import correlation_figures, plots  # noqa: E402


def test_acc_wow_bars_say_no_pairs_mark_few_pairs_and_label_n():
    table = pd.DataFrame(
        {
            "task": "sp",
            "generator": "g",
            "method": ["length", "logprob", "consistency"],
            "judge": None,
            "check": "none",
            "margin": 1.0,
            "acc_wow": [np.nan, 1.0, 0.4],
            "ci_low": [np.nan, 1.0, 0.2],
            "ci_high": [np.nan, 1.0, 0.6],
            "n_pairs": [0, 2, 10],
        }
    )
    fig = plots.fig_acc_wow_methods(table)
    ax = fig.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["n=10", "n=2", "no pairs"]
    bars = {p.get_x() + p.get_width() / 2: p for p in ax.patches}
    labels = [t.get_text() for t in ax.get_xticklabels()]  # sorted: consistency, length, logprob
    assert labels == ["consistency", "length", "logprob"]
    by_label = dict(zip(labels, sorted(bars), strict=True))
    assert not bars[by_label["length"]].get_visible()  # no bar at 0.0 where there are no pairs
    assert bars[by_label["logprob"]].get_hatch() == "///"  # 2 pairs: [1.0, 1.0] looks certain and is not
    assert not bars[by_label["consistency"]].get_hatch()


def test_a_correlation_figure_with_two_points_draws_no_line():
    points = pd.DataFrame(
        {"task": ["a", "b"], "generator": "g", "accuracy": [0.1, 0.3], "mean_confidence": [0.5, 0.6],
         "acc_wow": [0.4, 0.7]}
    )  # fmt: skip
    fig = correlation_figures.fig_correlation(points)
    for ax in fig.axes[:2]:
        assert not ax.lines and not ax.collections  # neither points nor a fitted line
        assert "a correlation needs at least 3" in " ".join(t.get_text() for t in ax.texts)
