"""``wow run`` refuses, before any kernel starts and with one line naming the fix, what would fail later."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wow import params
from wow.cli import preflight

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "parameters" / "smoke.yaml").read_text())


def _set(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump({**SMOKE, "output_root": str(tmp_path / "runs"), **changes}))
    return path


def _wow_run(path: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    environ = {k: v for k, v in environ.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "wow.cli", "run", str(path), *extra],
        capture_output=True,
        text=True,
        env=environ,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def _refused_before_any_kernel(proc, tmp_path, *needles):
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)
    assert not (tmp_path / "runs").exists()  # nothing written: no run.yaml, no stages.json


def test_an_api_model_as_policy_is_refused(tmp_path):
    proc = _wow_run(_set(tmp_path, policy_model="gpt-4o", generators=["smollm2-135m", "gpt-4o"]), "--yes")
    _refused_before_any_kernel(proc, tmp_path, "policy_model 'gpt-4o' is served by an API")


def test_an_api_generator_without_a_key_is_refused(tmp_path):
    env = {"OPENAI_API_KEY": None}
    proc = _wow_run(_set(tmp_path, generators=["smollm2-135m", "gpt-4o-mini"]), "--yes", env=env)
    _refused_before_any_kernel(proc, tmp_path, "gpt-4o-mini is an API model and OPENAI_API_KEY is not set")


def test_a_paid_run_without_a_terminal_wants_yes(tmp_path):
    env = {"OPENAI_API_KEY": "placeholder-for-the-test"}
    proc = _wow_run(_set(tmp_path, judges=["gpt-4o-mini"]), "--only", "02", env=env)
    _refused_before_any_kernel(proc, tmp_path, "calls paid APIs for about USD", "Pass --yes")


def test_a_missing_data_file_is_refused(tmp_path):
    missing = tmp_path / "NLGraph_shortest_path.json"
    proc = _wow_run(_set(tmp_path, task_options={"shortest_path": {"path": str(missing)}}))
    _refused_before_any_kernel(proc, tmp_path, str(missing), "wow data check")


def test_the_preflight_lists_every_problem_at_once(tmp_path):
    P = params.validate(
        {
            "output_root": str(tmp_path),
            "policy_model": "gpt-4o",
            "task_options": {"shortest_path": {"path": str(tmp_path / "missing.json")}},
            "report_to": ["wandb"],
        }
    )
    found = preflight.problems(P)
    assert any("policy_model" in f for f in found) and any("missing.json" in f for f in found)
    if __import__("importlib").util.find_spec("wandb") is None:
        assert any("report_to names wandb" in f for f in found)
    assert preflight.problems(P, ["03"]) == []  # stage 03 alone needs none of it
    with pytest.raises(Exception, match="cannot start here"):
        preflight.check_before_run(P)


def test_a_local_server_costs_nothing_and_openai_costs_what_the_estimate_says():
    P = params.validate({"judges": ["gpt-4o-mini"]})
    assert preflight.estimated_api_cost(P, ["02"]) > 0
    assert preflight.estimated_api_cost(P.model_copy(update={"base_url": "http://127.0.0.1:8080/v1"}), ["02"]) == 0
