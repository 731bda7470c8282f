"""What ``wow run`` shows in the terminal: the library's progress lines while a stage runs, and at the end the
results table with a verdict in plain words, computed from the run's artefacts."""

import json
import logging
import math

import pandas as pd
from wow import verdict
from wow.run import StageEcho


def test_stage_echo_shows_library_progress_lines_once_and_nothing_else(caplog):
    echo = StageEcho("02")
    with caplog.at_level(logging.INFO, logger="wow.run"):
        echo.write("INFO wow.judges: pairwise judge x: 12 pairs\nINFO wow.metrics: pearson: 1 point\n")
        echo.write("INFO wow.metrics: pearson: 1 point\n 40%|####  | 4/10\rINFO papermill: executing\n")
        echo.write("WARNING transformers.modeling: slow path\nINFO wow.judges: parse fail")
        echo.write("ures 0/24\n")
    assert [r.getMessage() for r in caplog.records] == [
        "  [02] judges: pairwise judge x: 12 pairs",
        "  [02] metrics: pearson: 1 point",
        "  [02] transformers.modeling: slow path",
        "  [02] judges: parse failures 0/24",
    ]


def _acc_table() -> pd.DataFrame:
    rows = [
        # task, method, judge, check, margin, n_pairs, acc, lo, hi
        ("sp", "oracle", None, "none", 1.0, 10, 1.0, 1.0, 1.0),
        ("sp", "logprob", None, "none", 1.0, 10, 0.8, 0.6, 0.95),  # above chance
        ("sp", "length", None, "none", 1.0, 10, 0.6, 0.4, 0.8),  # CI reaches 0.5
        ("sp", "pairwise_text", "j", "both_orders", 1.0, 0, float("nan"), float("nan"), float("nan")),
        ("sp", "logprob", None, "none", 0.5, 5, 1.0, 1.0, 1.0),  # another margin: not shown
    ]
    cols = ["task", "method", "judge", "check", "margin", "n_pairs", "acc_wow", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols).assign(split="train")


def test_results_name_the_signals_above_chance_and_say_no_pairs_apart_from_zero(tmp_path):
    _acc_table().to_csv(tmp_path / "acc_wow.csv", index=False)
    text = verdict.results_text(tmp_path)
    assert "logprob" in text and "0.800 [0.600, 0.950] n=10" in text
    assert "pairwise_text [j] +both orders" in text and "no pairs" in text
    assert "signals above chance (CI above 0.5): logprob on sp" in text
    assert "length on sp" not in text.split("Verdict:")[1]
    assert "1.000 [1.000, 1.000] n=5" not in text  # M = 0.5 rows stay in acc_wow.csv


def test_results_say_whether_training_moved_the_model_and_which_gains_exclude_zero(tmp_path):
    _acc_table().to_csv(tmp_path / "acc_wow.csv", index=False)
    pd.DataFrame(
        [
            {"setting": "self_oracle_dpo", "task": "sp", "eval_task": "sp", "d_p_wrong": 0.05,
             "d_p_wrong_ci_low": 0.01, "d_p_wrong_ci_high": 0.09, "d_acc": 0.0, "d_acc_ci_low": -0.1,
             "d_acc_ci_high": 0.1, "neg_d_ece": -0.02, "neg_d_ece_ci_low": -0.05, "neg_d_ece_ci_high": 0.01},
        ]
    ).to_csv(tmp_path / "alignment.csv", index=False)  # fmt: skip
    for name, loss in (("a", math.log(2) + 0.001), ("b", 0.52)):
        folder = tmp_path / "models" / "sp" / name / "cfg"
        folder.mkdir(parents=True)
        (folder / "train_log.json").write_text(json.dumps({"train_loss": loss}))
    text = verdict.results_text(tmp_path)
    assert "Δp_wrong +0.050 [+0.010, +0.090]" in text
    assert "gains whose CI excludes 0: Δp_wrong of self_oracle_dpo (up)" in text
    assert "1 of 2 trainings ended with a mean loss within 0.01 of ln 2 = 0.693" in text


def test_no_artefacts_no_results(tmp_path):
    assert verdict.results_text(tmp_path) == ""
