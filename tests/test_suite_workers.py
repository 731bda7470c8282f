"""``make test`` runs the suite on two pytest-xdist workers: a module fixture must still be built by one worker.

The groups come from tests/conftest.py (``_fixture_groups``), computed here on a real collection of files that read
the killed-and-resumed run, the smoke run and the llama.cpp servers.
"""

import json
import subprocess
import sys

from conftest import ROOT

FILES = [
    "tests/test_reliability.py",
    "tests/test_api_prefill.py",
    "tests/test_backends_openai.py",
    "tests/test_lock.py",
]

_COLLECT = """
import json, sys
import pytest

class Grab:
    def pytest_collection_finish(self, session):
        import conftest
        self.rows = [
            {"id": i.nodeid, "fixtures": sorted(i.fixturenames)} for i in session.items
        ]
        self.groups = conftest._fixture_groups(session.items)

grab = Grab()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-n", "0", *sys.argv[1:]], plugins=[grab])
print("GROUPS" + json.dumps({"rows": grab.rows, "groups": grab.groups}))
sys.exit(code)
"""


def test_each_module_fixture_is_read_in_one_group_and_other_tests_go_to_a_free_worker():
    proc = subprocess.run(
        [sys.executable, "-c", _COLLECT, *FILES], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(proc.stdout.split("GROUPS", 1)[1])
    rows, groups = data["rows"], data["groups"]
    assert len(rows) > 20
    fixtures = {r["id"]: set(r["fixtures"]) for r in rows}

    # every reader of the killed-and-resumed run (some read the smoke run too) in one group: it is built once
    killed = {groups.get(i) for i, f in fixtures.items() if "killed_and_resumed" in f}
    assert len(killed) == 1 and None not in killed
    # the llama.cpp servers and the smoke run are session fixtures: their readers are not tied to one worker
    assert not any(i in groups for i, f in fixtures.items() if "smoke_run" in f and "killed_and_resumed" not in f)
    llama = [i for i, f in fixtures.items() if "llama_server_process" in f and i.startswith("tests/test_api_prefill")]
    assert llama and not any(i in groups for i in llama)
    # a module fixture that reads a session one is built once all the same (tests/test_backends_openai.py's server)
    openai = {
        groups.get(i) for i, f in fixtures.items() if i.startswith("tests/test_backends_openai.py") and "clean" in f
    }
    assert len(openai) == 1 and None not in openai
    # a test that reads no module fixture goes to whichever worker is free
    atomic = [
        i for i in fixtures if i.endswith("::test_writes_are_atomic_a_failed_write_leaves_the_old_file_and_no_debris")
    ]
    assert atomic and not any(i in groups for i in atomic)


def test_the_suite_ends_by_naming_the_machine_and_the_precision_auto_chose():
    from wow.backends import precision

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "tests/test_tasks_registry.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    *_, last, count = proc.stdout.strip().splitlines()  # just above the count of passed tests
    assert "passed" in count
    assert last.startswith("machine: ") and f"({precision.cpu_family()};" in last, last
    forced = precision.cpu_bf16_override()  # WOW_CPU_BF16=0 make test: said after the precision
    suffix = f" ({precision.CPU_BF16_ENV}={forced})" if forced else ""
    assert last.endswith(f"dtype auto -> {precision.resolve_dtype('auto')}{suffix}"), last
