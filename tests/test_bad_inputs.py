"""A catalogue of bad inputs: each is refused with one line that names the problem and what to do.

Parameter mistakes are caught by ``wow run`` before any notebook starts (exit status 1, one ``wow: error:`` line, no
traceback). Mistakes found inside a stage stop the run the same way, and the executed notebook shows the error as
one line, without stack frames. Nothing finished is overwritten by a refused run.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wow import WowError, io, params, preferences, tasks
from wow.backends import models
from wow.backends.cache import CallCache
from wow.elicit import sampling
from wow.run_folder import stage_setup

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "tasks"
SMOKE = yaml.safe_load((ROOT / "parameters" / "smoke.yaml").read_text())


def wow_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wow.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_refused(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 1, exactly one ``wow: error:`` line naming every needle, and no traceback anywhere."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("wow: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def param_file(tmp_path: Path, **changes) -> Path:
    values = {**SMOKE, "output_root": str(tmp_path / "runs"), **changes}
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


# -- parameters: refused before any notebook runs -------------------------------------------------------------
PARAMETER_CASES = {
    "unknown parameter": ({"n_sampels": 3}, ["n_sampels", "wow params"]),
    "wrong type": ({"n_samples": "ten"}, ["n_samples", "integer"]),
    "missing task": ({"tasks": []}, ["tasks", "at least one task", "shortest_path"]),
    "unknown task": ({"tasks": ["shortest_paths"]}, ["shortest_paths", "known tasks"]),
    "unknown task option": ({"task_options": {"shortest_path": {"n_nodez": 4}}}, ["n_nodez", "n_nodes"]),
    "unknown model name": ({"generators": ["gpt-5-turbo-x"]}, ["generators", "gpt-5-turbo-x", "openai:<model>"]),
    "unknown judge": ({"judges": ["smollm"]}, ["judges", "smollm"]),
    "trainer that does not exist": ({"trainers": ["dpoo"]}, ["dpoo", "simpo"]),
    "margin above 1": ({"margins": [1.0, 1.5]}, ["margins", "(0, 1]"]),
    "margin of 0": ({"margins": [0.0]}, ["margins", "(0, 1]"]),
    "score preference margin outside (0, 1]": ({"pref_types": ["score@2"]}, ["score@2", "(0, 1]"]),
    "unknown preference type": ({"pref_types": ["scor@0.5"]}, ["scor", "oracle"]),
    "score set whose k is never scored": (
        {"pref_types": ["score@0.5"], "score_k": [1], "pref_score_k": 5},
        ["pref_score_k 5", "score_k [1]"],
    ),
    "zero samples": ({"n_samples": 0}, ["n_samples", "greater than 0"]),
    "splits not summing to 1": ({"split_fractions": [0.6, 0.6, 0.2]}, ["split_fractions", "summing to 1"]),
    "run name with a slash": ({"run_name": "a/b"}, ["run_name", "output_root"]),
    "an API key in the parameters": ({"base_url": "sk-proj-abcdefghijklmnopqrstuvwx"}, ["base_url", "OPENAI_API_KEY"]),
}


@pytest.mark.parametrize("case", list(PARAMETER_CASES))
def test_bad_parameter_is_refused_before_any_notebook_runs(case, tmp_path):
    changes, needles = PARAMETER_CASES[case]
    proc = wow_cli("run", str(param_file(tmp_path, **changes)))
    line = assert_refused(proc, *needles)
    assert not (tmp_path / "runs").exists()  # nothing was started
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in line  # a key is named, never echoed


def test_missing_parameter_file(tmp_path):
    assert_refused(wow_cli("run", str(tmp_path / "nope.yaml")), "nope.yaml", "parameters/")


def test_parameter_file_that_is_not_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_name: [unclosed\n")
    assert_refused(wow_cli("run", str(bad)), "bad.yaml", "not valid YAML")


def test_unknown_notebook_prefix(tmp_path):
    assert_refused(wow_cli("run", str(param_file(tmp_path)), "--only", "07"), "07", "01_data_prep")


def test_outputs_folder_of_a_different_run_is_refused_and_left_alone(tmp_path):
    first = params.load(param_file(tmp_path))
    first.run_dir.mkdir(parents=True)
    from wow.cli import run

    run.record_run(first, "first")
    (first.run_dir / "answers.jsonl").write_text('{"answer_id": "kept"}\n')
    before = {p.name: p.read_bytes() for p in first.run_dir.iterdir()}
    proc = wow_cli("run", str(param_file(tmp_path, n_questions=9)))
    assert_refused(proc, str(first.run_dir), "n_questions", "run_name")
    assert {p.name: p.read_bytes() for p in first.run_dir.iterdir()} == before


def test_a_notebook_run_interactively_refuses_the_folder_of_a_different_run(tmp_path):
    from wow.cli import run

    first = params.load(param_file(tmp_path))
    first.run_dir.mkdir(parents=True)
    run.record_run(first, "first")
    cell = {**first.model_dump(), "n_samples": first.n_samples + 1}  # the parameters cell, edited
    n = first.n_samples
    with pytest.raises(WowError, match=rf"differ from the run's .* in n_samples \(n_samples: run {n}, here {n + 1}\)"):
        stage_setup.setup(cell, "01_data_prep")
    stage_setup.setup(first.model_dump())  # the same values are that run's: accepted


# -- data and files -------------------------------------------------------------------------------------------
def test_missing_dataset_file():
    with pytest.raises(WowError, match=r"nowhere\.jsonl.*(does not exist|not found|no such)"):
        tasks.get("mmlu_pro", data_files="nowhere.jsonl", labeler="onehot").questions(3, seed=0)


def test_malformed_jsonl_row_names_file_and_line(tmp_path):
    bad = tmp_path / "answers.jsonl"
    bad.write_text('{"answer_id": "a"}\n{"answer_id": "b",\n')
    with pytest.raises(WowError, match=r"answers\.jsonl:2: not valid JSON"):
        io.read_jsonl(bad)


def test_malformed_csv_row_names_file_and_line(tmp_path):
    lines = (FIXTURES / "com2.csv").read_text().splitlines()
    bad = tmp_path / "COM2.csv"
    bad.write_text("\n".join([lines[0], lines[1], "only,three,fields"]) + "\n")
    with pytest.raises(WowError, match=r"COM2\.csv:3: wrong number of fields"):
        tasks.get("com2", path=str(bad), labeler="onehot").questions(2, seed=0)


def test_empty_dataset(tmp_path):
    empty = tmp_path / "COM2.csv"
    empty.write_text((FIXTURES / "com2.csv").read_text().splitlines()[0] + "\n")
    with pytest.raises(WowError, match="COM2.csv"):
        tasks.get("com2", path=str(empty), labeler="onehot").questions(2, seed=0)


def test_stage_whose_input_is_missing_says_which_stage_to_run(tmp_path):
    P = params.load(param_file(tmp_path))
    from wow.steps import data_prep

    with pytest.raises(WowError, match=r"answers\.jsonl does not exist: run the stage that writes it first"):
        data_prep.load_answers(P)


# -- model replies ------------------------------------------------------------------------------------------------
def _answers(texts: list[str], extracted: list) -> list[dict]:
    return [
        {"answer_id": f"q{i}|g|0", "question_id": f"q{i}", "task": "shortest_path", "generator": "g", "text": t,
         "extracted": e, "extraction_method": "prefill", "is_correct": False}
        for i, (t, e) in enumerate(zip(texts, extracted, strict=True))
    ]  # fmt: skip


def test_task_with_no_parsable_answer_at_all_is_refused():
    rows = _answers(["I like trains.", "Paths are nice."], [None, None])
    with pytest.raises(WowError, match=r"none of the 2 answers of g on shortest_path could be parsed.*max_new_tokens"):
        sampling.check_parsed(rows, max_tokens=48)


def test_question_with_no_parsable_answer_is_reported_not_fatal(caplog):
    rows = _answers(["The total weight is 7", "no idea"], [7, None])
    sampling.check_parsed(rows, max_tokens=48)  # other questions parsed: the run goes on
    sampling._log_summary(rows, 1.0, "g")
    assert "1 question(s) have no parsable answer" in caplog.text and "q1" in caplog.text


def test_judge_reply_with_no_verdict_is_counted_and_kept_with_its_text():
    from test_judges import ANSWERS, FakeEngine
    from wow.elicit import judges

    engine = FakeEngine(reply=lambda r: "Both answers look equally plausible to me.")
    rows = judges.judge_pairwise(engine, ANSWERS, mode="text")
    assert len(rows) == 3  # every pair is kept, none silently dropped
    assert all(r[p]["verdict"] is None and r[p]["parse_error"] for r in rows for p in ("forward", "reverse"))
    rates = judges.pairwise_rates(rows)
    assert (rates["n_replies"], rates["n_unparsed"]) == (6, 6)
    example = judges.unparsed_examples(rows)[0]
    assert example["raw"] == "Both answers look equally plausible to me." and "no verdict" in example["parse_error"]


def test_score_reply_with_too_few_scores_is_a_parse_failure():
    from wow.elicit import judges

    scores, problem = judges.parse_scores("Answer 1: 3", k=2)
    assert scores is None and problem


# -- caches and models ----------------------------------------------------------------------------------------
def test_corrupted_cache_file_stops_the_stage_with_one_line_and_is_left_alone(tmp_path):
    P = params.load(param_file(tmp_path, run_name="corrupt"))
    P.run_dir.mkdir(parents=True)
    garbage = b"\x00\x01 this is not a cache" * 100
    (P.run_dir / "cache.sqlite").write_bytes(garbage)
    proc = wow_cli("run", str(param_file(tmp_path, run_name="corrupt")), "--only", "01")
    line = assert_refused(proc, "01_data_prep failed in cell", "cache.sqlite", "move it away")
    assert "is not a SQLite file" in line
    assert (P.run_dir / "cache.sqlite").read_bytes() == garbage
    executed = json.loads((P.run_dir / "notebooks" / "01_data_prep.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert len(errors) == 1 and errors[0]["ename"] == "WowError"
    shown = "\n".join(errors[0]["traceback"])
    assert len(errors[0]["traceback"]) == 1 and "Traceback" not in shown and "File " not in shown


def test_foreign_sqlite_file_as_cache(tmp_path):
    import sqlite3

    path = tmp_path / "cache.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE songs (title TEXT)")
    before = path.read_bytes()
    with pytest.raises(WowError, match="another program"):
        CallCache(path)
    assert path.read_bytes() == before


def test_hub_id_without_network_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WowError, match="HF_HUB_OFFLINE|offline|network"):
        models.resolve("some-org/some-model-that-is-not-here")


def test_unknown_model_name_in_code():
    with pytest.raises(WowError, match="unknown model name 'llama3-8b'"):
        models.resolve("llama3-8b")


# -- preferences and training ----------------------------------------------------------------------------------
def test_zero_pair_preference_set_says_why():
    answers = [
        {"answer_id": f"q|g|{k}", "question_id": "q", "task": "shortest_path", "split": "train", "generator": "g",
         "prompt_messages": [{"role": "user", "content": "?"}], "text": "7", "extracted": 7, "correctness": 1.0,
         "raw_label": 0.0, "is_correct": True}
        for k in range(4)
    ]  # fmt: skip
    with pytest.raises(WowError, match="no pairs|no .*pair"):
        preferences.build_preferences(answers, "oracle")


def test_training_on_an_empty_preference_set_is_refused(tmp_path):
    import datasets
    from wow.align import training

    empty = datasets.Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []})
    with pytest.raises(WowError, match="non-empty preference set"):
        training.train(empty, None, models.DEFAULT_MODEL, "dpo", tmp_path / "out")
    assert not (tmp_path / "out" / "train_log.json").exists()
