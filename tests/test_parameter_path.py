"""One path for parameters: every stage sees the run's whole validated set, whether started by ``wow run``, by plain
papermill or interactively; a stage whose values differ from ``run.yaml`` stops naming the keys; every parameter is
read somewhere; settings of the set reach training through ``wow run`` (not only through the library function)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wow import WowError, params, run_folder
from wow.backends import precision
from wow.run_folder import stage_setup

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "parameters" / "smoke.yaml"
WOW = [sys.executable, "-m", "wow.cli"]


def _attribute_reads(tree: ast.AST) -> set[str]:
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}


def test_every_parameter_is_read_somewhere():
    """A parameter no code reads is a setting a user believes in and nothing obeys (checked mechanically)."""
    reads: set[str] = set()
    for path in (ROOT / "lib" / "wow").rglob("*.py"):
        reads |= _attribute_reads(ast.parse(path.read_text()))
    for nb in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                reads |= _attribute_reads(ast.parse("".join(cell["source"])))
    unread = [name for name in params.RunParams.model_fields if name not in reads]
    assert not unread, f"parameters no stage reads: {unread}"


def test_setup_takes_the_whole_set_from_param_file(tmp_path):
    ns = {"param_file": str(SMOKE), "output_root": str(tmp_path), "n_boot": 50}
    P = stage_setup.setup(ns, "03_acc_wow")
    expected = params.load(SMOKE, output_root=str(tmp_path), n_boot=50)
    assert P == expected
    assert P.train_batch_size == 1 and P.max_steps == 2  # values only the set holds, not the notebook
    record = run_folder.stage_records(P.run_dir)["03_acc_wow"]
    assert record["values"] == yaml.safe_load((P.run_dir / "run.yaml").read_text())  # the first stage made it


def test_a_stage_with_other_values_than_its_run_stops_naming_the_keys(tmp_path):
    first = params.load(SMOKE, output_root=str(tmp_path))
    run_folder.record(first)
    ns = {"param_file": str(SMOKE), "output_root": str(tmp_path), "eval_steps": 7, "quantization": "none"}
    with pytest.raises(WowError, match=r"differ from the run's .* in eval_steps \(eval_steps: run 5, here 7\)"):
        stage_setup.setup(ns, "04_dpo_training")
    assert "04_dpo_training" not in run_folder.stage_records(first.run_dir)


def test_a_stage_that_recorded_other_values_fails_the_run_check(tmp_path):
    P = params.load(SMOKE, output_root=str(tmp_path))
    run_folder.record(P)
    with pytest.raises(WowError, match="recorded no parameters"):
        run_folder.check_stage(P.run_dir, "04_dpo_training")
    run_folder.record_stage(P.model_copy(update={"eval_steps": 3}), "04_dpo_training")
    with pytest.raises(WowError, match="used parameters other than the run's run.yaml: eval_steps"):
        run_folder.check_stage(P.run_dir, "04_dpo_training")
    run_folder.record_stage(P, "04_dpo_training")
    run_folder.check_stage(P.run_dir, "04_dpo_training")


def test_wow_run_hands_every_notebook_the_whole_set():
    from wow.cli import run

    P = params.load(SMOKE)
    given = run.notebook_parameters(P, SMOKE)
    assert set(given) == {stage_setup.PARAM_FILE, *params.RunParams.model_fields}
    assert given["param_file"] == str(SMOKE.resolve())


def test_set_overrides_parse_yaml_values():
    from wow.cli import commands

    assert commands.parse_overrides(["n_samples=3", "tasks=[max_flow]", "pairwise=false", "base_url=null"]) == {
        "n_samples": 3,
        "tasks": ["max_flow"],
        "pairwise": False,
        "base_url": None,
    }
    with pytest.raises(WowError, match="KEY=VALUE"):
        commands.parse_overrides(["n_samples"])


def _wow(*args, timeout=120):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*WOW, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.skipif(precision.cuda_bf16() is not None, reason="this machine has a CUDA GPU")
def test_wow_run_refuses_4bit_on_a_machine_without_cuda_before_any_stage(tmp_path):
    proc = _wow("run", str(SMOKE), "--set", f"output_root={tmp_path}", "--set", "quantization=4bit")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "quantization: 4bit needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "smoke").exists()  # refused before anything was written or any kernel started


def test_wow_run_refuses_a_folder_and_an_empty_file(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    for target, needle in ((tmp_path, "is a folder without run.yaml"), (tmp_path / "empty.yaml", "is empty")):
        proc = _wow("run", str(target))
        assert proc.returncode == 1 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_smoke_run_recorded_one_set_for_every_stage_and_its_training_regime(smoke_run):
    """Through ``wow run``: each stage recorded the run's set, and stage 04's training log holds the set's regime
    (eval_steps, gradient checkpointing, quantization), which notebook 04 once never received."""
    run_yaml = yaml.safe_load((smoke_run / "run.yaml").read_text())
    records = run_folder.stage_records(smoke_run)
    stems = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(records) == stems
    assert {r["sha256"] for r in records.values()} == {run_folder.params_sha(run_yaml)}
    smoke = yaml.safe_load(SMOKE.read_text())
    assert smoke["eval_steps"] != params.RunParams.model_fields["eval_steps"].default  # a value only the set has
    assert smoke["gradient_checkpointing"] is True
    logs = sorted((smoke_run / "models").rglob("train_log.json"))
    assert logs
    for path in logs:
        config = json.loads(path.read_text())["config"]
        assert (config["eval_steps"], config["gradient_checkpointing"], config["quantization"]) == (
            smoke["eval_steps"],
            True,
            "none",
        ), path
        record = json.loads(path.read_text())
        assert record["bf16"] == (run_yaml["dtype"] == "bfloat16")
        # the default reaches TRL: each pair's prompt read once per pass (wow.align.shared_prompts)
        assert config["shared_prompts"] is record["shared_prompts"] is run_yaml["shared_prompts"] is True, path
        # max_eval_pairs: 2 of the set's 5 validation pairs; 2 steps of 1 pair read 2 of 8 training pairs, so the
        # reference is computed per step, not precomputed for pairs never read
        assert config["max_eval_pairs"] == smoke["max_eval_pairs"] == record["n_val"] == 2, path
        # in_run_validation: always, not the default auto, which would skip the one evaluation (at the last step)
        assert config["in_run_validation"] == smoke["in_run_validation"] == "always", path
        assert [h["step"] for h in record["log_history"] if "eval_loss" in h] == [2], path
        assert record["n_train"] > smoke["max_steps"] * smoke["train_batch_size"]
        assert record["precomputed_ref_log_probs"] is False
        assert record["answer_tokens_only"] is True  # dpo on the CPU: only answer tokens projected
    # the reference's log-probabilities: in float32 the oracle arm computes them and the random arm (the same pairs,
    # half of them flipped) reads every one from the run's cache; in bfloat16 TRL computes them per batch, since
    # there a value depends on its batch and thread count (wow.align.reference_logps)
    reference = {p.parts[-3]: json.loads(p.read_text())["reference_logps"] for p in logs}
    if run_yaml["dtype"] == "bfloat16":
        assert all(r == {"shared": False, "computed": None, "reused": None} for r in reference.values()), reference
        return
    assert reference["self_oracle_dpo"]["shared"] and reference["self_oracle_dpo"]["computed"] > 0
    assert reference["self_random_dpo"] == {
        "shared": True,
        "computed": 0,
        "reused": 8,
    }  # 2 + 2 pairs, 2 sequences each


# -- reruns skip what did not change ------------------------------------------------------------------------------
def _copy_run(smoke_run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "runs" / smoke_run.name
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns(".wow.lock"))
    return copy


def test_each_stage_recorded_what_it_read_and_a_fingerprint(smoke_run):
    records = run_folder.stage_records(smoke_run)
    for stage, record in records.items():
        assert record["fingerprint"], stage
        assert "n_samples" in record["reads"] or stage not in ("01_data_prep",), stage
    assert "quantization" in records["04_dpo_training"]["reads"]  # the training regime reached the stage
    assert "quantization" not in records["01_data_prep"]["reads"]  # sampling does not depend on it


def test_a_warm_rerun_skips_every_stage_and_a_changed_parameter_reruns_from_its_first_reader(smoke_run, tmp_path):
    from wow.cli import run

    copy = _copy_run(smoke_run, tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if p.is_file()}
    run.run(SMOKE, output_root=str(copy.parent))
    attempts = json.loads((copy / "stages.json").read_text())
    assert all(len(a) == len(json.loads((smoke_run / "stages.json").read_text())[s]) for s, a in attempts.items())
    assert (copy / "answers.jsonl").stat().st_mtime_ns == before["answers.jsonl"]  # nothing ran

    records = run_folder.stage_records(copy)
    # no local-model stage reads api_concurrency; stage 05 writes the whole set into summary.md, so it reads it
    assert all("api_concurrency" not in records[s]["reads"] for s in list(records)[:4])
    assert "api_concurrency" in records["05_correlation_plots"]["reads"]
    run.run(SMOKE, output_root=str(copy.parent), api_concurrency=3)
    attempts = json.loads((copy / "stages.json").read_text())
    reran = [s for s, a in attempts.items() if len(a) > len(json.loads((smoke_run / "stages.json").read_text())[s])]
    assert reran == ["05_correlation_plots"], reran
    assert (copy / "answers.jsonl").stat().st_mtime_ns == before["answers.jsonl"]


def test_the_last_cell_records_what_the_stage_read_and_gives_back_the_folder(tmp_path):
    from wow.run_folder import lock

    P = stage_setup.setup({"param_file": str(SMOKE), "output_root": str(tmp_path)}, "03_acc_wow")
    assert lock.holds(P.run_dir)  # taken by the set-up cell, as a kernel run by hand takes it
    read = (P.margins, P.n_boot)  # what the stage's cells read
    assert read == (params.load(SMOKE).margins, params.load(SMOKE).n_boot)
    stage_setup.finish(P, "03_acc_wow")
    reads = run_folder.stage_records(P.run_dir)["03_acc_wow"]["reads"]
    assert {"margins", "n_boot"} <= set(reads) and "n_samples" not in reads and "quantization" not in reads
    assert not lock.holds(P.run_dir)  # a fresh kernel of the class can now write the folder


def test_dtype_auto_is_resolved_also_when_the_set_leaves_it_out():
    expected = precision.resolve_dtype("auto")
    assert expected in ("float32", "bfloat16")
    assert params.validate({}).dtype == expected  # run.yaml records what ran, never "auto"
    assert params.validate({"dtype": "auto"}).dtype == expected
    assert params.validate({"dtype": "bfloat16"}).dtype == "bfloat16"  # an explicit value stays
