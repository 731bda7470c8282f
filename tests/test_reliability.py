"""Runs that survive: kill -9 anywhere in the pipeline, rerun, and get what an uninterrupted run gets.

One run of parameters/smoke.yaml is started with ``wow run`` in a fresh folder and killed with SIGKILL (the runner
and its kernel together, as a crash or an OOM kill would) four times: while sampling (01), while judging (02), while
training (04) and while plotting (05). Each rerun resumes from what is on disk. The finished run must equal the
uninterrupted smoke run of the session (``smoke_run``) byte for byte in its data, which is also the determinism check:
both runs started from empty folders with their own caches, with the same seed. No model call may be computed twice,
no half-written file may ever be left for the next stage, and neither run may leave a trace of the API keys it saw.
"""

import ast
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from conftest import SECRET_MARKERS, notebook_code
from wow import WowError, io
from wow.backends.cache import CallCache

ROOT = Path(__file__).resolve().parents[1]
#: Artefacts that must be byte-identical between two runs of the same parameters and seed.
DATA_FILES = [
    "questions.jsonl",
    "answers.jsonl",
    "scores.jsonl",
    "judgements/*.jsonl",
    "acc_wow.csv",
    "correlations.csv",
    "preferences/**/*.arrow",
    "preferences/**/meta.json",
    "eval/**/*.jsonl",
]


def _launch(param_file: Path, log: Path) -> subprocess.Popen:
    out = open(log, "ab")  # noqa: SIM115 (closed by the child's exit)
    return subprocess.Popen(
        [sys.executable, "-m", "wow.cli", "run", str(param_file)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **SECRET_MARKERS},
    )


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the runner and every process under it (the notebook's kernel) at once."""
    parent = psutil.Process(proc.pid)
    victims = [parent, *parent.children(recursive=True)]
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


def _timings(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "timings.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _executed_cells(notebook: Path) -> int:
    """Cells executed so far: papermill saves a running notebook into a temporary file next to it (wow.io)."""
    most = 0
    for path in [notebook, *notebook.parent.glob(f".{notebook.name}.*.tmp")]:
        try:
            cells = json.loads(path.read_text())["cells"]
        except (OSError, json.JSONDecodeError, KeyError):
            continue
        most = max(most, sum(1 for c in cells if c["cell_type"] == "code" and c.get("execution_count")))
    return most


def _training_in_progress(run_dir: Path) -> bool:
    return any(not (p.parent / "train_log.json").exists() for p in run_dir.glob("models/**/progress.json"))


def _assert_no_half_written_file(run_dir: Path) -> None:
    for path in run_dir.rglob("*.jsonl"):
        io.read_jsonl(path)  # raises on a truncated line
    for path in run_dir.rglob("*.csv"):
        pd.read_csv(path)
    for path in run_dir.rglob("*.json"):
        if "notebooks" not in path.parts:
            io.read_json(path)


def _run_until(param_file: Path, log: Path, when, what: str, timeout: float = 600) -> str:
    """Start a run, wait until ``when()`` is true, then kill it after a random pause (seeded by ``what``)."""
    proc = _launch(param_file, log)
    deadline = time.monotonic() + timeout
    while not when():
        if proc.poll() is not None:
            pytest.fail(
                f"the run ended (status {proc.returncode}) before it was {what}; log: {log.read_text()[-2000:]}"
            )
        if time.monotonic() > deadline:
            _kill_all(proc)
            pytest.fail(f"the run was never seen {what}")
        time.sleep(0.05)
    time.sleep(random.Random(what).uniform(0.0, 0.3))
    _kill_all(proc)
    return what


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    """A smoke run killed four times and resumed to the end; returns (run folder, log, kill points)."""
    tmp = tmp_path_factory.mktemp("killed")
    values = yaml.safe_load((ROOT / "parameters" / "smoke.yaml").read_text()) | {"output_root": str(tmp / "runs")}
    param_file = tmp / "smoke.yaml"
    param_file.write_text(yaml.safe_dump(values))
    run_dir = tmp / "runs" / values["run_name"]
    cache, log = run_dir / "cache.sqlite", tmp / "wow-run.log"
    points, checks = [], []

    points.append(
        _run_until(
            param_file, log, lambda: _cache_rows(cache) >= 3 and not (run_dir / "answers.jsonl").exists(), "sampling"
        )
    )
    checks.append(not (run_dir / "answers.jsonl").exists())
    _assert_no_half_written_file(run_dir)

    after_sampling = {}

    def judging() -> bool:
        if "01_data_prep" not in _timings(run_dir):
            return False
        after_sampling.setdefault("rows", _cache_rows(cache))
        return _cache_rows(cache) >= after_sampling["rows"] + 3

    points.append(_run_until(param_file, log, judging, "judging"))
    checks.append("02_elicitation" not in _timings(run_dir))
    _assert_no_half_written_file(run_dir)

    points.append(_run_until(param_file, log, lambda: _training_in_progress(run_dir), "training"))
    checks.append(not (run_dir / "alignment.csv").exists())
    _assert_no_half_written_file(run_dir)

    plots = run_dir / "notebooks" / "05_correlation_plots.ipynb"
    points.append(
        _run_until(
            param_file,
            log,
            lambda: "04_dpo_training" in _timings(run_dir) and _executed_cells(plots) >= 4,
            "plotting",
        )
    )
    checks.append(not (run_dir / "summary.md").exists())
    _assert_no_half_written_file(run_dir)

    proc = _launch(param_file, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    assert all(checks), f"a kill came too late for its stage: {list(zip(points, checks, strict=True))}"
    return run_dir, log, points


def _data_files(run_dir: Path) -> dict[str, bytes]:
    files = {}
    for pattern in DATA_FILES:
        for path in sorted(run_dir.glob(pattern)):
            files[str(path.relative_to(run_dir))] = path.read_bytes()
    return files


def test_killed_run_resumes_to_the_same_artefacts_as_an_uninterrupted_run(killed_and_resumed, smoke_run):
    run_dir, _, points = killed_and_resumed
    assert points == ["sampling", "judging", "training", "plotting"]
    resumed, clean = _data_files(run_dir), _data_files(smoke_run)
    assert sorted(resumed) == sorted(clean)
    assert any(k.startswith("preferences/") for k in clean) and any(k.startswith("eval/") for k in clean)
    differing = [name for name in clean if resumed[name] != clean[name]]
    assert not differing, f"differ after kill -9 and resume: {differing}"
    for name in ["alignment.csv", "summary.md"]:
        assert (run_dir / name).exists(), name


def test_no_model_call_is_computed_twice_across_kills(killed_and_resumed):
    run_dir, _, _ = killed_and_resumed
    cache = CallCache(run_dir / "cache.sqlite")
    try:
        assert len(cache) > 0 and cache.computed_twice() == {}
    finally:
        cache.close()


def test_same_seed_gives_byte_identical_answers_preferences_and_metrics(killed_and_resumed, smoke_run):
    run_dir, _, _ = killed_and_resumed
    for name in ["answers.jsonl", "acc_wow.csv", "correlations.csv"]:
        assert (run_dir / name).read_bytes() == (smoke_run / name).read_bytes(), name
    prefs = sorted(p.relative_to(smoke_run) for p in smoke_run.glob("preferences/**/*.arrow"))
    assert prefs and all((run_dir / p).read_bytes() == (smoke_run / p).read_bytes() for p in prefs)
    metric_cols = ["setting", "task", "before_p_wrong", "after_p_wrong", "before_acc", "after_acc", "d_p_wrong"]
    a, b = pd.read_csv(run_dir / "alignment.csv"), pd.read_csv(smoke_run / "alignment.csv")
    cols = [c for c in metric_cols if c in b]
    pd.testing.assert_frame_equal(a[cols], b[cols])


@pytest.mark.parametrize("which", ["uninterrupted", "killed and resumed"])
def test_no_trace_of_the_api_keys_in_outputs_notebooks_cache_or_logs(which, smoke_run, killed_and_resumed):
    run_dir = smoke_run if which == "uninterrupted" else killed_and_resumed[0]
    scanned = [p for p in run_dir.rglob("*") if p.is_file()]
    if which != "uninterrupted":
        scanned.append(killed_and_resumed[1])  # everything the runner and the kernels printed
    assert any(p.name == "cache.sqlite" for p in scanned) and any(p.suffix == ".ipynb" for p in scanned)
    for path in scanned:
        data = path.read_bytes()
        for name, marker in SECRET_MARKERS.items():
            assert marker.encode() not in data, f"{name} found in {path}"


def test_writes_are_atomic_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "answers.jsonl"
    io.write_jsonl(path, [{"answer_id": "a"}])
    before = path.read_bytes()

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        io.write_jsonl(path, [{"answer_id": "b"}, {"bad": Unserialisable()}])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.jsonl"]


#: Methods that write a file, and which of their arguments is the file ("self": the object the method is called on).
WRITERS = {
    "open": 0,  # with a mode that writes
    "write_text": "self",
    "write_bytes": "self",
    "savefig": 0,
    "to_csv": 0,
    "to_json": 0,
    "to_parquet": 0,
    "to_pickle": 0,
    "to_excel": 0,
    "to_html": 0,
    "to_feather": 0,
    "save_to_disk": 0,
    "save_pretrained": 0,
    "save_model": 0,
    "execute_notebook": 1,  # papermill: the executed notebook
}
#: Module functions that write a file, and which of their arguments is the file.
MODULE_WRITERS = {
    ("json", "dump"): 1,
    ("yaml", "dump"): 1,
    ("yaml", "safe_dump"): 1,
    ("pickle", "dump"): 1,
    ("torch", "save"): 1,
    ("np", "save"): 0,
    ("np", "savez"): 0,
    ("np", "savetxt"): 0,
    ("shutil", "copy"): 1,
    ("shutil", "copy2"): 1,
    ("shutil", "copyfile"): 1,
    ("shutil", "copytree"): 1,
    ("shutil", "move"): 1,
    ("os", "write"): 0,
    ("os", "pwrite"): 0,
    ("os", "ftruncate"): 0,
}
#: Writers that do not go through a temporary file of wow.io, and why that is safe.
ALLOWED_WRITERS = {
    (
        "lib/wow/align/training.py",
        "save_model",
    ): "adapter weights into the training folder, which counts as complete only once "
    "train_log.json is written (atomically) after them (wow.align.training.is_complete)",
    (
        "lib/wow/preferences/__init__.py",
        "save_to_disk",
    ): "into a temporary folder of its own (.<name>.tmp<pid>), renamed over the set",
    ("lib/wow/run_folder/lock.py", "ftruncate"): "the lock file is written in place: the lock lives on its inode",
    ("lib/wow/run_folder/lock.py", "pwrite"): "the lock file is written in place: the lock lives on its inode",
    (
        "lib/wow/cli/llama_server.py",
        "open",
    ): "the server process's log stream, into a fresh temporary file (mkstemp): no artefact of a run",
}


def _writer_calls(tree: ast.AST) -> list[tuple[int, str, bool]]:
    """(line, writer name, writes into a temporary of wow.io.atomic_path / atomic_dir) for every writing call."""
    found = []

    def is_temporary(node, temps) -> bool:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and node.args:
            node = node.args[0]
        return isinstance(node, ast.Name) and node.id in temps

    def visit(node, temps):
        if isinstance(node, ast.With | ast.AsyncWith):
            temps = temps | {
                item.optional_vars.id
                for item in node.items
                if isinstance(item.context_expr, ast.Call)
                and isinstance(item.context_expr.func, ast.Attribute)
                and item.context_expr.func.attr in ("atomic_path", "atomic_dir")
                and isinstance(item.optional_vars, ast.Name)
            }
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
            where = MODULE_WRITERS.get((owner, name), WRITERS.get(name))
            target = None
            if where == "self":
                target = func.value if isinstance(func, ast.Attribute) else None
                where = None if owner == "io" else where  # wow.io's own writers
            elif where is not None:
                args = [*node.args, *(kw.value for kw in node.keywords if kw.arg in ("path_or_buf", "buf", "stream"))]
                target = args[where] if len(args) > where else None
                if name == "open":
                    modes = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "mode")]
                    writes = any(isinstance(m, ast.Constant) and set(str(m.value)) & set("wax+") for m in modes)
                    where = where if writes else None
                elif target is None and name in ("to_csv", "to_json", "to_html", "dump", "safe_dump"):
                    where = None  # returns the text instead of writing it
            if where is not None:
                found.append((node.lineno, name, target is not None and is_temporary(target, temps)))
        for child in ast.iter_child_nodes(node):
            visit(child, temps)

    visit(tree, frozenset())
    return found


def test_library_writes_files_only_through_the_atomic_writers():
    """Every artefact is written by wow.io (unique temporary file + rename), or into one of its temporaries (figures,
    executed notebooks, converted models); the few exceptions are listed with the reason they are safe."""
    sources = [(p, p.read_text()) for p in sorted((ROOT / "lib" / "wow").rglob("*.py")) if p.name != "io.py"]
    sources += [(p, notebook_code(p)) for p in sorted((ROOT / "notebooks").glob("*.ipynb"))]
    offenders, seen = [], set()
    for path, text in sources:
        for line, name, into_temporary in _writer_calls(ast.parse(text)):
            seen.add(name)
            if not into_temporary and (str(path.relative_to(ROOT)), name) not in ALLOWED_WRITERS:
                offenders.append(f"{path.relative_to(ROOT)}:{line}: {name}(...) writes a file outside wow.io")
    assert not offenders, "\n".join(offenders)
    # the check sees the writers the library does use (a check that sees nothing proves nothing)
    assert {"savefig", "execute_notebook", "save_pretrained", "save_model", "save_to_disk"} <= seen, seen


def test_the_static_write_check_catches_direct_writers():
    bad = """
import json, papermill, torch
def f(fig, df, path, ds):
    fig.savefig(path)
    df.to_csv(path, index=False)
    ds.save_to_disk(str(path))
    papermill.execute_notebook("in.ipynb", str(path))
    with open(path, "w") as fh:
        json.dump({}, fh)
    path.write_text("x")
    torch.save({}, path)
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp)
        papermill.execute_notebook("in.ipynb", str(tmp))
    io.write_text(path, df.to_csv(index=False))
    open(path).read()
"""
    calls = _writer_calls(ast.parse(bad))
    direct = sorted(name for _, name, into_temporary in calls if not into_temporary)
    assert direct == sorted(
        ["savefig", "to_csv", "save_to_disk", "execute_notebook", "open", "dump", "write_text", "save"]
    )
    assert sorted(name for _, name, t in calls if t) == ["execute_notebook", "savefig"]


def test_cache_refuses_a_file_it_cannot_read_rather_than_starting_over(tmp_path):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"half a cache")
    with pytest.raises(WowError, match="left untouched"):
        CallCache(path)
    assert path.read_bytes() == b"half a cache"
