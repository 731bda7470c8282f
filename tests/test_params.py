"""Parameter sets are strict: unknown keys, wrong types and out-of-range values are refused by name."""

from pathlib import Path

import pytest
import yaml
from wow import WowError, params

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


def test_from_globals_catches_an_injected_typo():
    import math

    ns = {"run_name": "r", "n_samples": 2, "math": math, "In": [], "_private": 1, "n_sample": 3}
    with pytest.raises(WowError, match="'n_sample'"):
        params.from_globals(ns)
    del ns["n_sample"]
    assert params.from_globals(ns).n_samples == 2


def test_run_dir_is_under_the_repository_by_default():
    P = params.validate({"run_name": "abc"})
    assert P.run_dir == ROOT / "outputs" / "abc"
    assert P.cache_path.name == "cache.sqlite"
