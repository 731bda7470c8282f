"""Parameter sets are strict: unknown keys, wrong types and out-of-range values are refused by name."""

from pathlib import Path

import pytest
import yaml
from wow import WowError, params
from wow.run_folder import stage_setup

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "parameters").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_parameter_set_validates(path):
    P = params.load(path)
    assert P.run_name


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"run_name": "x", "n_sampels": 3}))
    with pytest.raises(WowError, match="unknown parameter.*'n_sampels'"):
        params.load(f)


def test_wrong_type_is_named(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"n_samples": "ten"}))
    with pytest.raises(WowError, match="n_samples"):
        params.load(f)


@pytest.mark.parametrize("margin", [0.0, 1.5, -0.1])
def test_margin_outside_unit_interval_is_refused(margin):
    with pytest.raises(WowError, match=r"margins.*\(0, 1\]"):
        params.validate({"margins": [1.0, margin]})


def test_split_fractions_must_sum_to_one():
    with pytest.raises(WowError, match="split_fractions"):
        params.validate({"split_fractions": [0.5, 0.2, 0.2]})


def test_score_k_restricted():
    with pytest.raises(WowError, match="score_k"):
        params.validate({"score_k": [3]})


def test_keys_never_travel_in_parameters():
    with pytest.raises(WowError, match="environment"):
        params.validate({"task_options": {"chess": {"api_key": "sk-x"}}})


def test_missing_file_says_where_sets_are(tmp_path):
    with pytest.raises(WowError, match="does not exist"):
        params.load(tmp_path / "nope.yaml")


def test_stage_setup_catches_an_injected_typo(tmp_path):
    import math

    ns = {"run_name": "r", "output_root": str(tmp_path), "n_samples": 2, "math": math, "In": [], "_private": 1}
    ns["n_sample"] = 3
    with pytest.raises(WowError, match="'n_sample'"):
        stage_setup.setup(ns)
    del ns["n_sample"]
    assert stage_setup.setup(ns).n_samples == 2


def test_run_dir_is_under_the_repository_by_default():
    P = params.validate({"run_name": "abc"})
    assert P.run_dir == ROOT / "outputs" / "abc"
    assert P.cache_path.name == "cache.sqlite"


# -- parameters that contradict each other are refused up front ---------------------------------------------------
CONTRADICTIONS = {
    "score set without its k": (
        {"pref_types": ["score@0.5"], "score_k": [1], "pref_score_k": 5, "judge_modes": ["text"]},
        ["pref_score_k 5", "score_k [1]"],
    ),
    "direct set without pairwise judging": ({"pref_types": ["direct"], "pairwise": False}, ["direct", "pairwise"]),
    "row_direct set without pairwise judging": ({"pref_types": ["row_direct"], "pairwise": False}, ["pairwise"]),
    "pref_judge that is not run": ({"pref_types": ["direct"], "pref_judge": "gpt-4o"}, ["pref_judge", "judges"]),
    "pref_judge_mode that is not run": (
        {"pref_types": ["direct"], "judge_modes": ["text"], "pref_judge_mode": "logprob"},
        ["pref_judge_mode", "judge_modes"],
    ),
    "logprob scores read k = 1 only": (
        {"pref_types": ["score@0.1"], "judge_modes": ["logprob"], "score_k": [1, 5], "pref_score_k": 5},
        ["pref_score_k 5", "judge_modes"],
    ),
    "logprob verdicts of an API judge": (
        {"pref_types": ["direct"], "judges": ["gpt-4o"], "judge_modes": ["logprob", "text"]},
        ["judge_modes", "gpt-4o"],
    ),
    "a judged set without judges": ({"pref_types": ["score@0.5"], "judges": []}, ["pref_types", "judges"]),
}


@pytest.mark.parametrize("case", list(CONTRADICTIONS))
def test_parameters_that_contradict_each_other_are_refused_naming_both(case):
    values, needles = CONTRADICTIONS[case]
    with pytest.raises(WowError) as err:
        params.validate(values)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_consistent_judged_sets_are_accepted():
    P = params.validate({"pref_types": ["direct", "score@0.5"], "score_k": [1, 5], "pref_score_k": 5})
    assert P.pref_types == ["direct", "score@0.5"]
    params.validate({"pref_types": ["score@0.1"], "judge_modes": ["logprob"], "score_k": [1], "pref_score_k": 1})
    params.validate({"pref_types": ["oracle"], "pairwise": False, "score_k": [1], "pref_score_k": 5})  # unused


def test_pref_source_takes_one_source_or_both():
    assert params.validate({}).pref_sources == ["self"]
    assert params.validate({"pref_source": "mix"}).pref_sources == ["mix"]
    assert params.validate({"pref_source": ["self", "mix"]}).pref_sources == ["self", "mix"]
    for bad in (["self", "self"], [], ["other"]):
        with pytest.raises(WowError, match="pref_source"):
            params.validate({"pref_source": bad})


def test_acc_wow_split_defaults_to_train():
    assert params.validate({}).acc_wow_split == "train"
    assert params.validate({"acc_wow_split": "all"}).acc_wow_split == "all"
    with pytest.raises(WowError, match="acc_wow_split"):
        params.validate({"acc_wow_split": "dev"})


def test_grid_schedulers_and_weight_decays_are_checked_and_paper_sets_train_the_run_scripts_configuration():
    with pytest.raises(WowError, match=r"lr_schedulers.*'cosine_with_restart'.*with an s"):
        params.validate({"lr_schedulers": ["cosine", "cosine_with_restart"]})  # grid_search.py's misspelling
    with pytest.raises(WowError, match="weight_decays"):
        params.validate({"weight_decays": [-1e-5]})
    P = params.validate({})
    assert (P.lr_schedulers, P.weight_decays) == (["cosine"], [1e-5])  # AlignConfig's: earlier runs stay as they are
    for name in ("fig3_alignment", "fig4_trainers"):
        P = params.load(ROOT / "parameters" / "paper" / f"{name}.yaml")
        # finetune.sh and po.sh train finetune.py's defaults (the 81-point grid is an option, docs/fidelity.md)
        assert P.learning_rates == [5e-5] and P.epochs == [3]
        assert (P.lr_schedulers, P.weight_decays) == (["cosine"], [1e-5])


def test_a_renamed_parameter_is_refused_with_its_new_name_and_read_under_it_from_a_recorded_run(tmp_path):
    from wow import run_folder

    bad = tmp_path / "set.yaml"
    bad.write_text("run_name: x\npref_check: false\n")
    with pytest.raises(WowError, match=r"'pref_check' is now 'both_orders'; rename it in .*set\.yaml"):
        params.load(bad)
    # a run folder recorded before the rename: its run.yaml is read, resumed and compared under the new name
    run_dir = tmp_path / "old_run"
    run_dir.mkdir()
    recorded = params.load("parameters/smoke.yaml", output_root=str(tmp_path), run_name="old_run")
    old = recorded.model_dump(mode="json")
    old["pref_check"] = not old.pop("both_orders")
    (run_dir / "run.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert run_folder.read_run_yaml(run_dir)["both_orders"] is old["pref_check"]
    assert "pref_check" not in run_folder.read_run_yaml(run_dir)
    assert params.load(run_dir / "run.yaml").both_orders is old["pref_check"]
