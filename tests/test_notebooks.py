"""Every notebook runs end to end under papermill with parameters/smoke.yaml, and writes what it promises."""

import json
import math
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import papermill
import pytest
import yaml
from wow import WowError, io, params, schema
from wow.cli import run
from wow.elicit import scorers
from wow.run_folder import stage_setup

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_five_numbered_notebooks():
    assert [nb.stem[:2] for nb in NOTEBOOKS] == ["01", "02", "03", "04", "05"]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameter_cells_name_the_run_set_and_nothing_that_would_shadow_it(nb):
    """A notebook takes the run's whole set from ``param_file``: a parameter literal in the cell would replace the
    set's value for this stage only, which is how a stage once trained without the set's quantization."""
    declared = papermill.inspect_notebook(str(nb))
    assert list(declared) == [stage_setup.PARAM_FILE], f"{nb.name} declares {list(declared)}"
    assert declared[stage_setup.PARAM_FILE]["help"]
    assert (ROOT / eval(declared[stage_setup.PARAM_FILE]["default"])).exists()  # noqa: S307 - a literal


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_records_the_parameters_it_used(nb):
    setup = "".join(json.loads(nb.read_text())["cells"][2]["source"])
    assert f'P = stage_setup.setup(globals(), "{nb.stem}")' in setup
    last = "".join(json.loads(nb.read_text())["cells"][-1]["source"])
    assert f'stage_setup.finish(P, "{nb.stem}")' in last


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_are_committed_without_outputs(nb):
    cells = json.loads(nb.read_text())["cells"]
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    assert json.loads(nb.read_text())["metadata"]["kernelspec"]["name"] == "wow"


def test_smoke_run_writes_every_stage(smoke_run):
    d = smoke_run
    for name in [
        "questions.jsonl",
        "answers.jsonl",
        "scores.jsonl",
        "acc_wow.csv",
        "alignment.csv",
        "summary.md",
        "metrics.json",
        "run.yaml",
        "timings.json",
        "correlations.csv",
        "acc_wow_bins.csv",
        "signal_audit.json",
        "mechanism.csv",
        "fig3_points.csv",
        "fig3_slopes.csv",
    ]:
        assert (d / name).exists(), name
    for nb in NOTEBOOKS:
        executed = json.loads((d / "notebooks" / nb.name).read_text())
        assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    assert sorted(p.name for p in (d / "judgements").glob("*.jsonl"))
    for stem in ["answer_labels", "fig_acc_wow", "fig3_acc_wow_vs_alignment", "fig4_trainers"]:
        assert (d / f"{stem}.png").stat().st_size > 1000 and (d / f"{stem}.pdf").exists(), stem
    assert list(d.glob("fig5_*.png")) and list(d.glob("reliability_*.png"))
    bins = pd.read_csv(d / "acc_wow_bins.csv")
    for (task, generator), _ in bins.groupby(["task", "generator"]):  # every task with graded labels
        assert (d / f"fig_acc_wow_bins_{task}_{generator}.png").exists(), (task, generator)
    assert set(json.loads((d / "metrics.json").read_text())) == {nb.stem for nb in NOTEBOOKS[:4]}
    # each notebook's closing paper check ran and said why it skipped (the smoke set is no paper set)
    checks = json.loads((d / "paper_checks.json").read_text())
    assert sorted(checks) == [nb.name[:2] for nb in NOTEBOOKS]
    assert {c["status"] for c in checks.values()} == {"skipped"}
    assert all("smoke.yaml is not a paper set" in c["reason"] for c in checks.values())
    usage = json.loads((d / "usage.json").read_text())
    assert usage["01_data_prep"]["smollm2-135m"]["completion_tokens"] > 0
    # stage 04's evaluation decoded through the fused step, none through forward (the engine's default on a CPU)
    assert usage["04_dpo_training"]["smollm2-135m"]["decode_steps_fused"] > 0
    assert usage["04_dpo_training"]["smollm2-135m"]["decode_steps_forward"] == 0
    report = (d / "report" / "index.html").read_text()
    assert "Run report" in report and "Partial run" not in report
    assert 'id="paper-checks"' in report and "smoke.yaml is not a paper set" in report  # the checks, in the report
    assert sorted(p.name for p in (d / "report" / "notebooks").glob("*.html")) == [
        f"{nb.stem}.html" for nb in NOTEBOOKS
    ]


def test_smoke_answers_are_graded_and_oracle_is_perfect(smoke_run):
    answers = io.read_jsonl(smoke_run / "answers.jsonl")
    P = params.load(ROOT / "parameters" / "smoke.yaml")
    assert len(answers) == P.n_questions * P.n_samples
    assert all(0.0 <= a["correctness"] <= 1.0 for a in answers)
    assert any(a["mean_logprob"] is not None for a in answers)
    acc = pd.read_csv(smoke_run / "acc_wow.csv")
    oracle = acc[(acc.method == "oracle") & (acc.n_pairs > 0)]
    assert not oracle.empty and (oracle.acc_wow == 1.0).all()
    summary = (smoke_run / "summary.md").read_text()
    assert "| oracle |  | none |" in summary and "| 1.000 [1.000, 1.000] |" in summary  # value and 95% CI


def test_smoke_acc_wow_is_on_train_questions_and_no_signal_reads_a_label(smoke_run):
    acc = pd.read_csv(smoke_run / "acc_wow.csv")
    assert set(acc.split) == {"train"}
    answers = io.read_jsonl(smoke_run / "answers.jsonl")
    scores = io.read_jsonl(smoke_run / "scores.jsonl")
    parsed = [a for a in answers if a["extracted"] is not None]
    labels = [(a["correctness"], a["raw_label"], a["is_correct"]) for a in parsed]
    random.Random(0).shuffle(labels)
    for a, (correctness, raw_label, is_correct) in zip(parsed, labels, strict=True):
        a.update(correctness=correctness, raw_label=raw_label, is_correct=is_correct)
    fresh = scorers.score_answers(answers)
    for kept, new in zip(scores, fresh, strict=True):
        assert [kept[k] for k in schema.SCALAR_METHODS] == [new[k] for k in schema.SCALAR_METHODS]


def test_smoke_alignment_reports_before_after_with_cis(smoke_run):
    table = pd.read_csv(smoke_run / "alignment.csv")
    assert len(table) >= 1
    for col in ["before_p_wrong", "after_p_wrong", "d_p_wrong", "d_acc", "neg_d_ece", "d_p_wrong_ci_low"]:
        assert col in table and table[col].notna().all(), col
    row = table.iloc[0]
    assert row.d_p_wrong == pytest.approx(row.after_p_wrong - row.before_p_wrong)
    # ECE by hand over the set's n_bins (5, not the default 10) from the original model's saved test answers
    n_bins = yaml.safe_load((ROOT / "parameters" / "smoke.yaml").read_text())["n_bins"]
    assert n_bins != params.RunParams.model_fields["n_bins"].default
    original = io.read_jsonl(smoke_run / "eval" / row.eval_task / "original.jsonl")
    gaps: dict[int, float] = {}
    for r in original:
        confidence = math.exp(r["mean_logprob"])
        k = min(max(math.ceil(confidence * n_bins) - 1, 0), n_bins - 1)  # bins (k/n, (k+1)/n]
        gaps[k] = gaps.get(k, 0.0) + confidence - float(r["is_correct"])
    assert row.before_ece == pytest.approx(sum(abs(g) for g in gaps.values()) / len(original))
    adapters = list((smoke_run / "models").rglob("adapter_model.safetensors"))
    assert adapters


def test_smoke_fig3_points_recomputed_by_hand_from_the_run_folder(smoke_run):
    """Fig 3's controlled point: x from the saved preference pairs, y from the saved test answers, by hand."""
    import json

    points = pd.read_csv(smoke_run / "fig3_points.csv").set_index("setting")
    assert (
        set(points.index) == {"self_oracle_dpo", "self_random_dpo"} and points.loc["self_oracle_dpo", "acc_wow"] == 1
    )
    train = (smoke_run / "preferences" / "shortest_path" / "self_random" / "train").glob("*.arrow")
    from datasets import Dataset

    pairs = [row for f in sorted(train) for row in Dataset.from_file(str(f))]
    right = sum(p["chosen_label"] > p["rejected_label"] for p in pairs)
    flipped = sum(p["source_method"] == "oracle_flipped" for p in pairs)
    assert right + flipped == len(pairs) and flipped == round(0.5 * len(pairs))
    assert points.loc["self_random_dpo", "acc_wow"] == pytest.approx(right / len(pairs))
    assert points.loc["self_random_dpo", "acc_wow_pairs"] == len(pairs)

    def p_wrong(name):  # mean graded correctness of the wrong answers, unparsed at 0
        rows = [json.loads(line) for line in open(smoke_run / "eval" / "shortest_path" / f"{name}.jsonl")]
        wrong = [r["correctness"] or 0.0 for r in rows if not r["is_correct"]]
        return sum(wrong) / len(wrong)

    d = p_wrong("self_random_dpo") - p_wrong("original")
    assert points.loc["self_random_dpo", "d_p_wrong"] == pytest.approx(d, abs=1e-9)


def test_rerun_of_a_stage_is_served_from_the_cache(smoke_run, tmp_path):
    """Seeded sampling gives the same bytes with or without a cache: what tells is that the rerun called no model
    (its stage's record in usage.json counts the rerun's kernel only)."""
    copy = tmp_path / "runs" / smoke_run.name  # the session's run is read by other tests (other workers) meanwhile
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns(".wow.lock"))
    before = (copy / "answers.jsonl").read_bytes()
    run.run(ROOT / "parameters" / "smoke.yaml", only=["01"], output_root=str(copy.parent), force=True)
    assert (copy / "answers.jsonl").read_bytes() == before
    usage = json.loads((copy / "usage.json").read_text())["01_data_prep"]
    assert usage, "the rerun recorded no model use"
    for model, counts in usage.items():
        assert counts["calls"] == 0 and counts["cache_misses"] == 0, (model, counts)
        assert counts["cache_hits"] > 0, (model, counts)


def test_wow_run_refuses_an_unknown_parameter(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: bad\nn_sampels: 3\n")
    proc = subprocess.run([sys.executable, "-m", "wow.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "n_sampels" in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_data_file_is_refused_before_any_kernel_and_a_failing_notebook_names_its_cell(tmp_path):
    bad = tmp_path / "bad.yaml"
    missing = tmp_path / "no_such_graphs.json"  # valid parameters; the data file is missing
    bad.write_text(
        f"run_name: broken\noutput_root: {tmp_path}\ntask_options: {{shortest_path: {{path: {missing}}}}}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "wow.cli", "run", str(bad), "--only", "01"], capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert "cannot start here" in proc.stderr and "no_such_graphs.json" in proc.stderr
    assert not (tmp_path / "broken").exists()  # the preflight refused it before any kernel started
    with pytest.raises(WowError, match=r"01_data_prep failed in cell \d+: .*no_such_graphs\.json"):
        run.run(bad, only=["01"], check=False)  # past the preflight, the stage fails and names its cell


def test_smoke_mechanism_contrast_is_the_rewards_ranking_recomputed_by_hand(smoke_run):
    """mechanism_contrasts.csv (stage 05, through wow run) against the ranking accuracies counted here from stage
    04's per-answer rewards and the original model's test answers."""
    from wow.pairs import candidate_pairs, label

    rewards = pd.read_csv(smoke_run / "mechanism_rewards.csv")
    contrasts = pd.read_csv(smoke_run / "mechanism_contrasts.csv")
    points = pd.read_csv(smoke_run / "fig3_points.csv")
    assert set(rewards["setting"]) == set(pd.read_csv(smoke_run / "mechanism.csv")["setting"])
    base_pairs = {t: candidate_pairs(io.read_jsonl(smoke_run / "eval" / t / "original.jsonl")) for t in points["task"]}
    # the smoke set's oracle against its random set, where the original model's test answers hold a pair to rank
    assert contrasts.empty == (not any(base_pairs.values())), base_pairs
    for task, group in contrasts.groupby("task"):
        base = io.read_jsonl(smoke_run / "eval" / task / "original.jsonl")
        pairs = candidate_pairs(base)

        table = rewards[rewards["task"] == task]

        def accuracy(setting, table=table, pairs=pairs):
            mine = table[table["setting"] == setting]
            r = dict(zip(mine["answer_id"], mine["reward"], strict=True))
            hits = sum((r[a["answer_id"]] - r[b["answer_id"]]) * (label(a) - label(b)) > 0 for a, b in pairs)
            return hits / len(pairs)

        ranked = points[points["task"] == task].sort_values("acc_wow")
        assert set(group["reference"]) == {ranked["setting"].iloc[0]}  # the lowest Acc_WoW
        for _, row in group.iterrows():
            assert row["ranking_accuracy"] == pytest.approx(accuracy(row["setting"]))
            assert row["difference"] == pytest.approx(accuracy(row["setting"]) - accuracy(row["reference"]))
            assert row["ci_low"] <= row["difference"] <= row["ci_high"] and row["n_pairs"] == len(pairs)
