"""A run records the machine and thread settings each stage ran with (``stages.json``) and its report says them:
wall times mean little without them (the same demo takes 2.8 min with AMX and bfloat16, 4.2 in float32)."""

from __future__ import annotations

import html
import json
import os

from wow.backends import precision
from wow.report.report_stages import machine_note
from wow.run_folder import stages


def test_every_stage_of_a_wow_run_records_its_machine_and_thread_settings(smoke_run):
    attempts = stages.latest_attempts(smoke_run)
    assert set(attempts) >= {"01_data_prep", "05_correlation_plots"}
    expected_env = {k: os.environ.get(k) for k in precision.THREAD_ENV}
    assert expected_env["OMP_WAIT_POLICY"] == "PASSIVE" and expected_env["GOMP_SPINCOUNT"] == "0"  # tests/conftest.py
    for stage, attempt in attempts.items():
        record = attempt["machine"]
        assert record["env"] == expected_env, stage
        assert record["family"] == precision.cpu_family() and record["cores"] == precision.cores()
        assert record["auto_dtype"] == precision.resolve_dtype("auto")
    line = precision.describe_machine(attempts["01_data_prep"]["machine"])
    assert "OMP_WAIT_POLICY=PASSIVE" in line and "GOMP_SPINCOUNT=0" in line and f"({precision.cpu_family()})" in line
    note = f"Wall times measured on {line}."
    assert (
        f'<p class="note" id="machine-note">{html.escape(note, quote=False)}</p>'
        in (smoke_run / "report" / "index.html").read_text()
    )
    assert note in (smoke_run / "summary.md").read_text()


def test_the_note_names_each_machine_and_its_stages_when_stages_ran_on_different_ones(tmp_path):
    amx = {"cpu": "Xeon", "cores": 2, "family": "AMX", "auto_dtype": "bfloat16", "env": {"GOMP_SPINCOUNT": "10000"}}
    epyc = {"cpu": "EPYC", "cores": 4, "family": "no native bf16 (AVX2)", "auto_dtype": "float32", "env": {}}
    attempt = {"status": "done", "start": None, "end": None, "seconds": 1.0, "pid": 1, "error": None}
    data = {
        "01_data_prep": [{**attempt, "machine": epyc}, {**attempt, "machine": amx}],  # the latest attempt counts
        "02_elicitation": [{**attempt, "machine": amx}],
        "03_acc_wow": [{**attempt, "machine": epyc}],
        "04_dpo_training": [attempt],  # recorded before machines were: left out
    }
    (tmp_path / "stages.json").write_text(json.dumps(data))
    assert precision.describe_machine(amx) == "Xeon, 2 cores (AMX), dtype auto -> bfloat16; GOMP_SPINCOUNT=10000"
    assert machine_note(tmp_path) == (
        "Wall times measured on more than one machine: 01, 02 on Xeon, 2 cores (AMX), dtype auto -> bfloat16; "
        "GOMP_SPINCOUNT=10000; 03 on EPYC, 4 cores (no native bf16 (AVX2)), dtype auto -> float32; no thread "
        "settings in the environment."
    )
    data.pop("01_data_prep"), data.pop("03_acc_wow")
    (tmp_path / "stages.json").write_text(json.dumps(data))
    assert machine_note(tmp_path) == (
        "Wall times measured on Xeon, 2 cores (AMX), dtype auto -> bfloat16; GOMP_SPINCOUNT=10000."
    )
    (tmp_path / "stages.json").write_text(json.dumps({"04_dpo_training": [attempt]}))
    assert machine_note(tmp_path) == ""
