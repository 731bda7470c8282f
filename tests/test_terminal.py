"""What ``wow run`` shows in the terminal: the library's progress lines while a stage runs, and at the end the
results table with a verdict in plain words, computed from the run's artefacts."""

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from wow.cli.run import StageEcho
from wow.report import verdict


def test_stage_echo_shows_library_progress_lines_once_and_nothing_else(caplog):
    echo = StageEcho("02")
    with caplog.at_level(logging.INFO, logger="wow.cli.run"):
        echo.write("INFO wow.elicit.judges: pairwise judge x: 12 pairs\nINFO wow.analysis.metrics: pearson: 1 point\n")
        echo.write("INFO wow.analysis.metrics: pearson: 1 point\n 40%|####  | 4/10\rINFO papermill: executing\n")
        echo.write("WARNING transformers.modeling: slow path\nINFO wow.elicit.judges: parse fail")
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


def test_a_run_without_measured_methods_does_not_claim_their_cis_reach_chance(tmp_path):
    table = _acc_table()
    table[table.method.isin(["oracle", "pairwise_text"])].to_csv(tmp_path / "acc_wow.csv", index=False)
    text = verdict.results_text(tmp_path)
    assert "nothing to compare with chance" in text and "every Acc_WoW CI reaches" not in text
    table[table.method != "logprob"].to_csv(tmp_path / "acc_wow.csv", index=False)  # length measured, CI reaches 0.5
    assert "no signal is above chance (every Acc_WoW CI reaches 0.5 or below)" in verdict.results_text(tmp_path)


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
    assert "parse rate" not in text  # no evaluated answers in this folder

    # parse rates of the test answers: 3 of 4 parsed after alignment (0.75 < 0.9) is flagged, the original is not
    (tmp_path / "eval" / "sp").mkdir(parents=True)
    for model, extracted in (("original", [1, 2, None, 4]), ("self_oracle_dpo", [1, None, 3, 4])):
        with open(tmp_path / "eval" / "sp" / f"{model}.jsonl", "w") as f:
            f.writelines(
                json.dumps({"question_id": "q", "extracted": e, "is_correct": False, "correctness": 0.0}) + "\n"
                for e in extracted
            )
    text = verdict.results_text(tmp_path)
    assert "parse rate of the test answers: sp/original 0.75, sp/self_oracle_dpo 0.75; below 0.9 after " in text
    assert "alignment: sp/self_oracle_dpo (their p_wrong" in text and "sp/original (their" not in text

    # fewer than 5 test questions: a bootstrap over them has a handful of distinct draws; shown, never read
    for n, words in ((1, "1 test question"), (4, "4 test questions")):
        table = pd.read_csv(tmp_path / "alignment.csv").assign(n_questions=n)
        table.to_csv(tmp_path / "alignment.csv", index=False)
        text = verdict.results_text(tmp_path)
        assert f"({words}: too few for a 95% interval)" in text and "no gain's CI excludes 0" in text
    table.assign(n_questions=5).to_csv(tmp_path / "alignment.csv", index=False)
    assert "gains whose CI excludes 0: Δp_wrong of self_oracle_dpo (up)" in verdict.results_text(tmp_path)


def test_each_trainer_is_judged_against_its_own_no_preference_loss(tmp_path):
    # SPPO starts at 1/(2β²) = 50 at β 0.1, IPO at 1/(4β²) = 25, RSO's hinge at 1: a DPO-only reading against ln 2
    # would call all three moved; CPO has no fixed start (reference-free) and is not counted
    logs = {
        "sppo_flat": {"train_loss": 49.9, "trainer": "sppo", "config": {"beta": 0.1}},  # within 1.4% of 50
        "ipo_moved": {"train_loss": 20.0, "trainer": "ipo", "config": {"beta": 0.1}},
        "rso_flat": {"train_loss": 1.005, "trainer": "rso", "config": {"beta": 0.1}},
        "dpo_moved": {"train_loss": 0.5, "trainer": "dpo", "config": {"beta": 0.1}},
        "cpo": {"train_loss": 0.6931, "trainer": "cpo", "config": {"beta": 0.1}},
    }
    for name, logged in logs.items():
        folder = tmp_path / "models" / "sp" / name / "cfg"
        folder.mkdir(parents=True)
        (folder / "train_log.json").write_text(json.dumps(logged))
    line = verdict.training_line(verdict.training_losses(tmp_path))
    assert line.startswith("training: 2 of 4 trainings ended with a mean loss within 0.01 of their trainer's loss")
    assert "(1, 1/(2β²), 1/(4β²), ln 2; within 0.01 of ln 2)" in line
    assert line.endswith("; 1 trainings (cpo) have no such value and are not counted")
    losses = verdict.training_losses(tmp_path)
    assert losses["sp/sppo_flat/cfg"] == (49.9, "sppo", ("1/(2β²)", pytest.approx(50.0)))
    assert losses["sp/ipo_moved/cfg"][2] == ("1/(4β²)", pytest.approx(25.0))
    only_cpo = {"x": (0.7, "cpo", None)}
    assert verdict.training_line(only_cpo) == (
        "training: no training's loss has a no-preference value to compare with (cpo: reference-free or with an NLL "
        "term)"
    )


def test_no_artefacts_no_results(tmp_path):
    assert verdict.results_text(tmp_path) == ""


def test_wow_params_lists_the_allowed_values_where_the_schema_checks_them(capsys):
    from wow import schema, tasks
    from wow.cli import commands

    assert commands.main(["params"]) == 0
    out = capsys.readouterr().out.splitlines()

    def allowed(name: str) -> str:
        i = next(i for i, line in enumerate(out) if line.split()[0] == name)
        return out[i + 1].split("allowed: ", 1)[1] if "allowed: " in out[i + 1] else ""

    assert allowed("dtype") == "one of auto, float32, bfloat16, float16"
    assert allowed("protocol") == "one of wow, paper"
    assert allowed("judge_modes") == "one of text, logprob"  # inside list[Literal[...]]
    assert allowed("trainers") == "one or more of " + ", ".join(schema.TRAINERS)
    assert allowed("tasks") == "one or more of " + ", ".join(tasks.names())
    assert allowed("policy_model").startswith("model names")
    assert allowed("n_samples") == ""  # any int


def test_limit_is_a_quick_try_of_the_set_in_a_folder_of_its_own(tmp_path):
    """``wow run SET --limit N``: at most N questions per task, every other setting kept, in <run_name>_limitN (the
    full run's folder untouched); below the fewest questions that fill every split, that many, said in one line."""
    import subprocess
    import sys

    import yaml
    from wow import io, params
    from wow.cli import run

    smoke = Path(__file__).resolve().parents[1] / "parameters" / "smoke.yaml"
    P = params.load(smoke, n_questions=10, output_root=str(tmp_path))
    assert run.limited(P, 1, {}) == {"n_questions": 4, "run_name": "smoke_limit1"}  # 4 fill 0.6 / 0.2 / 0.2
    assert run.limited(P, 50, {"run_name": "mine"}) == {"n_questions": 10, "run_name": "mine"}

    cmd = [sys.executable, "-m", "wow.cli", "run", str(smoke), "--set", f"output_root={tmp_path}"]
    cmd += ["--set", "n_questions=10", "--limit", "4", "--only", "01"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--limit 4: n_questions 10 -> 4, in the run folder smoke_limit4" in proc.stdout
    folder = tmp_path / "smoke_limit4"
    recorded = yaml.safe_load((folder / "run.yaml").read_text())
    assert recorded["n_questions"] == 4 and recorded["max_new_tokens"] == P.max_new_tokens  # the rest kept
    answers = io.read_jsonl(folder / "answers.jsonl")
    assert len({a["question_id"] for a in answers}) == 4 and len(answers) == 4 * P.n_samples
    assert not (tmp_path / "smoke").exists()


def test_progress_lines_say_work_done_of_work_planned_and_the_time_left(caplog, monkeypatch):
    from wow import progress

    clock = iter([0.0, 10.0, 20.0, 40.0] + [40.0] * 9)  # start, one reading per update, then the close and after
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    with caplog.at_level(logging.INFO, logger="wow.progress"):
        with progress.bar(4, "answer", "sampling", every=5.0) as bar:
            bar.update(1)  # t = 10: 1 of 4 in 10 s -> 30 s left
            bar.update(1)  # t = 20: 2 of 4 in 20 s -> 20 s left
            bar.update(2)  # t = 40: done, no "left" line
    assert [r.getMessage() for r in caplog.records] == [
        "sampling: 1/4 answers (25%), about 30 s left",
        "sampling: 2/4 answers (50%), about 20 s left",
        "sampling: 4/4 answers in 40 s",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="wow.progress"):
        with progress.bar(4, "answer", "quiet", disable=True, every=0.0) as bar:
            bar.update(4)
    assert not caplog.records  # a disabled bar shows and logs nothing


def test_a_run_shows_progress_training_losses_and_ends_with_the_verdict(smoke_run):
    """What ``wow run`` printed for the smoke run (its ``wow`` log lines; progress logged at every step here)."""
    lines = (smoke_run.parent / "terminal.log").read_text().splitlines()
    from wow import params
    from wow.cli import estimate, estimate_table

    smoke = params.load(Path(__file__).resolve().parents[1] / "parameters" / "smoke.yaml")
    assert estimate_table.plan_text(estimate.estimate(smoke)) in lines  # the plan before the first stage
    sampling = [x for x in lines if x.startswith("  [01] progress: ") and "answers (" in x]
    assert sampling and all(x.endswith(" left") for x in sampling), lines[:40]
    losses = [x for x in lines if x.startswith("  [04] checkpoints: ") and ", loss " in x]
    assert losses and all("(ln 2 = 0.6931: no preference learnt)" in x for x in losses), lines
    assert any("step 2/2, loss" in x for x in losses)  # max_steps 2, the last step logged
    text = "\n".join(lines)  # the results are one multi-line message, after the last stage
    start = text.index("\nAcc_WoW at M = 1")
    assert "Alignment on the held-out test questions" in text[start:] and "\nVerdict:\n  - " in text[start:]
    assert "[5/5] 05_correlation_plots done" in text[:start]
    assert lines[-1].startswith("wall time ")


def test_every_command_has_a_description_and_an_example(capsys):
    import pytest
    from wow.cli import commands

    for name in commands.COMMANDS:
        with pytest.raises(SystemExit) as done:
            commands.main([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        description, example = commands.COMMANDS[name]
        assert description.split(":")[0] in " ".join(out.split()) and f"example:\n  {example}" in out
        assert example.startswith(f"wow {name}")
