"""Each notebook's closing paper check (wow.steps.paper_check): skipped with its reason where the run is not a paper
set as shipped, and each stage's number measured by hand on hand-made run folders of a paper set."""

import json

import pandas as pd
import pytest
from wow import io, params
from wow.steps import paper_check

FIG3 = "parameters/paper/fig3_alignment.yaml"


def paper_params(tmp_path):
    return params.load(FIG3, output_root=str(tmp_path), run_name="paper_run")


def test_a_set_outside_parameters_paper_and_a_changed_paper_set_are_skipped_naming_why(tmp_path):
    smoke = params.load("parameters/smoke.yaml", output_root=str(tmp_path))
    assert paper_check.skip_reason(smoke, "parameters/smoke.yaml") == (
        "parameters/smoke.yaml is not a paper set (parameters/paper/)"
    )
    changed = params.load(FIG3, output_root=str(tmp_path), n_questions=8, n_samples=2)
    assert paper_check.skip_reason(changed, FIG3) == (
        f"this run changes n_questions, n_samples of {FIG3}: its numbers are not the paper's setting"
    )
    assert paper_check.skip_reason(paper_params(tmp_path), FIG3) is None  # where it writes is no change
    out = paper_check.check(smoke, "03", "parameters/smoke.yaml")
    assert out["status"] == "skipped"
    assert json.loads(smoke.layout.paper_checks.read_text())["03"]["reason"].startswith("parameters/smoke.yaml")


def test_stage_01_and_02_compare_the_train_questions_and_answers_with_the_papers_500_and_10(tmp_path):
    P = paper_params(tmp_path)
    questions = [{"id": f"kc/{i}", "task": "kc", "split": "train"} for i in range(500)]
    questions += [{"id": f"sp/{i}", "task": "sp", "split": "train"} for i in range(499)]
    questions += [{"id": "sp/t", "task": "sp", "split": "test"}]
    io.write_jsonl(P.layout.questions, questions)
    out = paper_check.check(P, "01", FIG3)
    assert (out["status"], out["value"]) == ("differs", 499)  # one task short of the paper's 500
    assert "kc 500, sp 499" in out["how"]
    answers = [{"question_id": "q1", "generator": g, "split": "train"} for g in ("a", "b") for _ in range(10)]
    io.write_jsonl(P.layout.answers, answers)
    assert paper_check.check(P, "02", FIG3)["status"] == "agrees"
    io.write_jsonl(P.layout.answers, answers[:-1])
    assert paper_check.check(P, "02", FIG3)["value"] == 9
    assert set(json.loads(P.layout.paper_checks.read_text())) == {"01", "02"}


def acc_row(method, acc, n_pairs, margin=1.0, split="train"):
    return {"split": split, "method": method, "margin": margin, "n_pairs": n_pairs, "acc_wow": acc}


@pytest.mark.parametrize(
    ("rows", "status", "value"),
    [
        # the oracle, another margin, another split and a row of 29 pairs do not count: best 0.64 -> 0.14
        (
            [
                acc_row("oracle", 1.0, 500),
                acc_row("score_k1", 0.64, 200),
                acc_row("consistency", 0.61, 300),
                acc_row("logprob", 0.95, 40, margin=0.1),
                acc_row("logprob", 0.9, 40, split="test"),
                acc_row("pairwise_text", 0.9, 29),
            ],
            "agrees",
            0.14,
        ),
        ([acc_row("score_k1", 0.80, 200)], "differs", 0.30),  # above 0.209 + 0.05
        ([acc_row("score_k1", 0.48, 200)], "differs", -0.02),  # no method above random
    ],
)
def test_stage_03_compares_the_best_acc_wow_gain_with_the_abstracts_209(tmp_path, rows, status, value):
    P = paper_params(tmp_path)
    P.run_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(P.layout.acc_wow, index=False)
    out = paper_check.check(P, "03", FIG3)
    assert out["status"] == status and out["value"] == pytest.approx(value)


def test_stage_04_and_05_compare_the_mean_gains_and_fig3s_slope_with_the_papers_claims(tmp_path):
    P = paper_params(tmp_path)
    P.run_dir.mkdir(parents=True)
    pd.DataFrame({"d_p_wrong": [0.05, -0.01, 0.02], "neg_d_ece": [0.01, 0.02, -0.01]}).to_csv(
        P.layout.alignment, index=False
    )
    out = paper_check.check(P, "04", FIG3)
    assert out["status"] == "agrees" and out["value"] == pytest.approx(0.02)  # (0.05 - 0.01 + 0.02) / 3
    pd.DataFrame({"d_p_wrong": [-0.05], "neg_d_ece": [0.03]}).to_csv(P.layout.alignment, index=False)
    assert paper_check.check(P, "04", FIG3)["status"] == "differs"
    slopes = pd.DataFrame(
        {"gain": ["d_p_wrong", "d_acc"], "slope": [0.1, 0.5], "ci_low": [-0.2, 0.1], "ci_high": [0.3, 0.9]}
    )
    slopes.to_csv(P.layout.fig3_slopes, index=False)
    out = paper_check.check(P, "05", FIG3)
    assert (out["status"], out["value"]) == ("agrees", 0.1)  # the interval holds 0: "not sensitive"
    slopes.assign(ci_low=[0.05, 0.1]).to_csv(P.layout.fig3_slopes, index=False)
    assert paper_check.check(P, "05", FIG3)["status"] == "differs"
