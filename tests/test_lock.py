"""One run folder, one writer: ``wow run`` and a notebook's set-up call lock the folder; a second writer is refused.

A helper process holds a folder through the call every notebook makes in its second cell (``stage_setup.setup``),
as a kernel in JupyterLab does: ``wow run`` is refused at once with one line that names the holder, and writes
nothing; ``wow report`` still works. After ``kill -9`` of the holder a ``wow run`` starts with no cleanup, its
notebook's kernel works under its lock, and a second ``wow run`` started meanwhile is refused; the first ends as an
uninterrupted run would (its answers equal the session's smoke run). The status of every attempt at a stage is
kept, and the report shows the latest.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from wow import WowError, io, layout, params
from wow.cli import run
from wow.figures import figure_files
from wow.report import html_report
from wow.run_folder import lock, stages

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "parameters" / "smoke.yaml").read_text())

HOLD = """
import json, sys, time
from wow.run_folder import stage_setup
P = stage_setup.setup(json.loads(sys.argv[1]), "01_data_prep")
print("held", P.run_dir, flush=True)
time.sleep(600)
"""


def wow_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wow.cli", *args], capture_output=True, text=True, timeout=600)


def _param_file(tmp_path: Path, **changes) -> tuple[Path, Path]:
    values = {**SMOKE, "output_root": str(tmp_path / "runs"), **changes}
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(values))
    return path, params.validate(values).run_dir


def _hold(run_dir: Path) -> subprocess.Popen:
    """A process that holds ``run_dir`` through a notebook's set-up call, as a JupyterLab kernel would (with the
    run's own parameters when the folder has a run.yaml: a stage with other values is refused before the lock)."""
    values = {**SMOKE, "run_name": run_dir.name, "output_root": str(run_dir.parent)}  # a kernel of the run's set
    if (run_dir / "run.yaml").exists():
        values = yaml.safe_load((run_dir / "run.yaml").read_text())
    proc = subprocess.Popen([sys.executable, "-c", HOLD, json.dumps(values)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("held"), "the helper did not take the lock"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    }


def _refusal(proc: subprocess.CompletedProcess) -> str:
    """The one ``wow: error:`` line of a refused command (exit status 1, no traceback)."""
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("wow: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    return errors[0]


def _wait_for(what: str, condition, proc: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"wow run ended (status {proc.returncode}) before {what}: {log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"never saw {what}")
        time.sleep(0.1)


def test_a_folder_a_notebook_holds_refuses_wow_run_at_once_and_stays_as_it_was(tmp_path):
    param_file, run_dir = _param_file(tmp_path, n_boot=100)
    run.record_run(params.load(param_file, n_boot=200), "the run before")  # wow run would write n_boot: 100
    io.write_jsonl(run_dir / "answers.jsonl", [{"answer_id": "kept"}])
    holder = _hold(run_dir)
    try:
        before = _snapshot(run_dir)
        started = time.monotonic()
        line = _refusal(wow_cli("run", str(param_file), "--only", "01"))
        assert time.monotonic() - started < 120  # refused, not waiting for a holder that sleeps for 10 minutes
        for needle in (str(run_dir), f"pid {holder.pid}", "stage_setup", "started ", "one writer per run folder"):
            assert needle in line, (needle, line)
        assert _snapshot(run_dir) == before  # not even run.yaml: refused before anything is written

        assert lock.holder(run_dir)["pid"] == holder.pid
        report = wow_cli("report", str(run_dir))  # reading needs no lock
        assert report.returncode == 0, report.stderr
        assert (run_dir / "report" / "index.html").is_file()
        with pytest.raises(WowError, match=f"pid {holder.pid}"):  # the library path refuses as the command does
            run.run(param_file, only=["01"])
    finally:
        _kill9(holder)
    assert lock.holder(run_dir) is None  # kill -9 released it: nothing to clean up
    with lock.hold(run_dir) as how:
        assert how == "acquired" and lock.holder(run_dir)["pid"] == os.getpid()
    assert lock.holder(run_dir) is None


@pytest.mark.slow
def test_two_wow_runs_on_one_folder_the_second_is_refused_the_first_ends_as_if_alone(tmp_path, smoke_run):
    param_file, run_dir = _param_file(tmp_path)
    _kill9(_hold(run_dir))  # a holder killed with -9 leaves its lock file, and a temporary file of a killed write
    debris = run_dir / "notebooks" / ".01_data_prep.ipynb.abcd1234.tmp"
    debris.parent.mkdir(parents=True)
    debris.write_text("{half a notebook")
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "wow.cli", "run", str(param_file), "--only", "01"], stdout=out, stderr=out
        )
    try:
        _wait_for(
            "the first run holding the folder in stage 01",
            lambda: (
                (lock.holder(run_dir) or {}).get("pid") == first.pid
                and "01_data_prep" in stages.load_attempts(run_dir)
            ),
            first,
            log,
        )
        assert not debris.exists()  # the new holder removed what a killed writer left

        line = _refusal(wow_cli("run", str(param_file), "--only", "01"))
        assert str(run_dir) in line and f"pid {first.pid}" in line and "wow.cli run" in line, line

        assert wow_cli("report", str(run_dir)).returncode == 0  # while the run holds the folder
        assert f"running (pid {first.pid}" in (run_dir / "report" / "index.html").read_text()
        assert first.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    # the notebook's kernel worked under its parent's lock; the refused run left no trace
    (attempt,) = stages.load_attempts(run_dir)["01_data_prep"]
    assert attempt["status"] == "done" and attempt["pid"] == first.pid and attempt["error"] is None
    for name in ("questions.jsonl", "answers.jsonl"):
        assert (run_dir / name).read_bytes() == (smoke_run / name).read_bytes(), name
    executed = json.loads((run_dir / "notebooks" / "01_data_prep.ipynb").read_text())
    assert not executed["metadata"]["papermill"].get("exception")
    assert not [p for p in run_dir.rglob(".*.tmp")]  # papermill's temporary notebook was renamed into place
    assert _status((run_dir / "report" / "index.html").read_text(), "01_data_prep") == "done"


def _executed(path: Path, failed: bool) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"exception": True if failed else None, "end_time": "2026-01-01T00:00:00"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


def _status(page: str, stage: str) -> str:
    row = page.split(f"<tr><td>{stage}</td>", 1)[1].split("</tr>")[0]
    return row.split(">", 1)[1].split("</td>")[0]


def test_every_attempt_is_kept_and_the_report_shows_the_latest(tmp_path):
    stage, other, third = [nb.stem for nb in layout.notebooks()][:3]
    d = tmp_path / "run"
    d.mkdir()
    (d / "run.yaml").write_text(yaml.safe_dump({"run_name": "t"}))
    # stage: failed, then done (the notebook on disk is the latest attempt's)
    first = stages.start_attempt(d, stage)
    stages.end_attempt(d, stage, first, "failed", "cell 3: FileNotFoundError: answer_labels.png", 2.0)
    second = stages.start_attempt(d, stage)
    stages.end_attempt(d, stage, second, "done", None, 65.4)
    _executed(d / "notebooks" / f"{stage}.ipynb", failed=False)
    # other: done, then failed
    stages.end_attempt(d, other, stages.start_attempt(d, other), "done", None, 3.0)
    stages.end_attempt(d, other, stages.start_attempt(d, other), "failed", "cell 2: WowError: boom", 1.0)
    _executed(d / "notebooks" / f"{other}.ipynb", failed=True)
    # third: started by a process that is gone (kill -9), with the notebook of an earlier, successful run
    stages.start_attempt(d, third)
    data = json.loads((d / layout.ATTEMPTS_FILE).read_text())
    data[third][0]["pid"] = 2**22 + 1  # above Linux's pid_max default: no such process
    (d / layout.ATTEMPTS_FILE).write_text(json.dumps(data))
    _executed(d / "notebooks" / f"{third}.ipynb", failed=False)

    attempts = stages.load_attempts(d)
    assert [a["status"] for a in attempts[stage]] == ["failed", "done"]
    assert [a["status"] for a in attempts[other]] == ["done", "failed"]
    assert all(a["pid"] == os.getpid() and a["start"] and a["end"] for a in attempts[stage])

    page = html_report.write_report(d).read_text()
    assert _status(page, stage).startswith("done (attempt 2 of 2)")
    assert "1 min 05 s" in page.split(f"<tr><td>{stage}</td>", 1)[1].split("</tr>")[0]
    assert _status(page, other).startswith("failed (attempt 2 of 2): cell 2: WowError: boom")
    assert _status(page, third).startswith("stopped before its end")
    missing = page.split('id="missing"')[1].split("</div>")[0]
    assert f"{stage}:" not in missing and f"{other}: failed" in missing and f"{third}: stopped" in missing


def test_a_failed_attempt_is_recorded_with_its_error(tmp_path, monkeypatch):
    import papermill

    def broken(*args, **kwargs):
        raise RuntimeError("the kernel died")

    monkeypatch.setattr(papermill, "execute_notebook", broken)
    param_file, run_dir = _param_file(tmp_path)
    with pytest.raises(RuntimeError, match="the kernel died"):
        run.run(param_file, only=["01"])
    (attempt,) = stages.load_attempts(run_dir)["01_data_prep"]
    assert attempt["status"] == "failed" and attempt["error"] == "RuntimeError: the kernel died"
    assert not (run_dir / "notebooks" / "01_data_prep.ipynb").exists()  # no empty notebook took its place
    assert not list(run_dir.rglob(".*.tmp")) and lock.holder(run_dir) is None  # released at the end


def test_the_lock_is_reentrant_in_one_process_and_passes_to_its_kernels_only(tmp_path, monkeypatch):
    d = tmp_path / "run"
    with lock.hold(d):
        assert lock.acquire(d) == "held"  # a notebook cell run twice, or run.run after stage_setup.setup
        lock.release(d)
        assert lock.holds(d)
        env = lock.kernel_env(d)
        child = "from wow.run_folder import lock; import sys; print(lock.acquire(sys.argv[1]))"
        as_kernel = subprocess.run(
            [sys.executable, "-c", child, str(d)], env={**os.environ, **env}, capture_output=True, text=True
        )
        assert as_kernel.stdout.strip() == "parent", as_kernel.stderr
        monkeypatch.delenv(lock.ENV_VAR, raising=False)
        stranger = subprocess.run([sys.executable, "-c", child, str(d)], capture_output=True, text=True)
        assert "is being written by pid" in stranger.stderr and f"pid {os.getpid()}" in stranger.stderr
    assert not lock.holds(d) and lock.holder(d) is None
    with pytest.raises(WowError, match="does not hold"):
        lock.kernel_env(d)


def test_figures_are_saved_through_unique_temporary_files(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    seen = []
    real = fig.savefig

    def spy(path, **kwargs):
        seen.append(Path(path).name)
        real(path, **kwargs)

    fig.savefig = spy
    for _ in range(2):
        written = figure_files.save(fig, tmp_path / "answer_labels")
    plt.close(fig)
    assert [p.name for p in written] == ["answer_labels.png", "answer_labels.pdf"]
    assert len(set(seen)) == 4 and all(io.TEMPORARY_NAME.match(name) for name in seen), seen
    assert (tmp_path / "answer_labels.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "answer_labels.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answer_labels.pdf", "answer_labels.png"]


def test_figure_names_with_dots_keep_their_tail(tmp_path):
    import matplotlib.pyplot as plt

    fig, _ = plt.subplots()
    names = [p.name for p in figure_files.save(fig, tmp_path / "fig2_gpt-3.5-turbo")]
    names += [p.name for p in figure_files.save(fig, tmp_path / "reliability_score_0.1.png")]
    plt.close(fig)
    assert names == [
        "fig2_gpt-3.5-turbo.png",
        "fig2_gpt-3.5-turbo.pdf",
        "reliability_score_0.1.png",
        "reliability_score_0.1.pdf",
    ]


def test_atomic_dir_replaces_a_folder_and_leftovers_of_killed_writers_are_removed(tmp_path):
    target = tmp_path / "model"
    for content in ("old", "new"):
        with io.atomic_dir(target) as tmp:
            (tmp / "weights").write_text(content)
    assert (target / "weights").read_text() == "new"
    with pytest.raises(RuntimeError), io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (target / "weights").read_text() == "new"
    (tmp_path / ".answers.jsonl.a1b2c3d4.tmp").write_text("half")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / ".index.html.a1b2c3d4.tmp").write_text("being written by wow report")
    (tmp_path / ".kept.tmp").write_text("not a name wow.io makes")
    removed = io.remove_temporaries(tmp_path, skip=("report",))
    assert [p.name for p in removed] == [".answers.jsonl.a1b2c3d4.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".kept.tmp", "model", "report"]
