"""``wow run``: execute the numbered notebooks in order with papermill, for one parameter set.

Each notebook receives the run's whole validated parameter set (every field, plus ``param_file``), checks in its
set-up cell that it equals ``run.yaml`` and records what it used in ``stage_params.json``, which is checked here after
the stage (:mod:`wow.run_folder`); it runs with the project's Jupyter kernel and is saved executed to ``outputs/<run>/notebooks/`` (papermill writes it to a unique temporary
file while it runs, renamed into place when the stage ends, also when it fails). Model calls are cached on disk, so
a rerun is fast and a run that died resumes. A failing notebook stops the run with the cell and the error; what
earlier stages wrote stays. At the end (also after a failure) the run's HTML report is written to
``outputs/<run>/report/``.

A run folder has one writer at a time: ``wow run`` holds the folder's lock (:mod:`wow.run_folder.lock`) from before it writes
``run.yaml`` to its end, and passes it on to the kernels of its notebooks; a second ``wow run``, or a notebook
kernel, on the same folder is refused. Every attempt at a stage is recorded in ``stages.json`` (start, end, status,
pid, error), so a failed attempt never hides a later successful one; ``timings.json`` keeps the wall time of each
stage's latest successful attempt.

Example::

    from wow.cli import run
    run.run("parameters/smoke.yaml", only=["03"])
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

from wow import WowError, io, layout, params, run_folder
from wow.backends import precision
from wow.cli import preflight
from wow.run_folder import fingerprint, lock, stage_setup
from wow.run_folder.stages import end_attempt, start_attempt

log = logging.getLogger(__name__)

KERNEL = "wow"


def select(only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """Notebooks to run: ``only`` (prefixes like "03") or everything from ``start`` on."""
    nbs = layout.notebooks()
    prefixes = [nb.name[:2] for nb in nbs]
    for p in [*(only or []), *([start] if start else [])]:
        if p[:2] not in prefixes:
            raise WowError(f"no notebook {p!r}; the notebooks are {', '.join(nb.stem for nb in nbs)}")
    if only:
        return [nb for nb in nbs if nb.name[:2] in {p[:2] for p in only}]
    if start:
        return [nb for nb in nbs if nb.name[:2] >= start[:2]]
    return nbs


def kernel_name() -> str:
    """The project's kernel when registered (``make install`` does it), else the default python3 kernel."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL if KERNEL in KernelSpecManager().find_kernel_specs() else "python3"


def notebook_parameters(P: params.RunParams, param_file: str | Path | None = None) -> dict:
    """What every notebook of the run receives: the whole validated set (so no stage falls back on a default the
    set overrides), and ``param_file`` for the record."""
    values = P.model_dump(mode="json")
    return {stage_setup.PARAM_FILE: str(Path(param_file).resolve()) if param_file else None, **values}


def record_run(P: params.RunParams, source: str) -> None:
    """Write ``run.yaml`` (:func:`wow.run_folder.record`); refuse a folder of a different run."""
    run_folder.record(P, source)


def run(
    param_file: str | Path,
    only: list[str] | None = None,
    start: str | None = None,
    check: bool = True,
    force: bool = False,
    confirm_cost=None,
    fast_dev_run: bool = False,
    stand_ins: bool = False,
    limit: int | None = None,
    **overrides,
) -> Path:
    """Execute the selected notebooks for a parameter set; returns the run folder.

    Args:
        param_file: the parameter set (YAML).
        only, start: which stages (see :func:`select`).
        check: run the preflight (:mod:`wow.cli.preflight`) before any kernel starts.
        force: run every selected stage, also those whose inputs did not change (:mod:`wow.run_folder.fingerprint`).
        confirm_cost: called with the estimated API bill (USD) after the preflight when it is above zero; it raises
            to stop the run (``wow run`` asks, or wants ``--yes``).
        fast_dev_run: rehearse the set instead: every setting, small sizes, a folder of its own
            (:mod:`wow.cli.rehearsal`; ``rehearsal.json`` lists every change).
        stand_ins: with ``fast_dev_run``, offline stand-ins for the set's models, hub data and online labelers.
        limit: a quick try: at most this many questions per task (:func:`limited`), in a folder of its own.
        overrides: parameters replacing the file's values.

    Raises:
        WowError: invalid parameters, a preflight refusal, the folder is being written by another process
            (:mod:`wow.run_folder.lock`), or a notebook failed (names the notebook, cell and error).
    """
    if fast_dev_run and limit is not None:
        raise WowError("--limit and --fast-dev-run both choose the sizes of a quick run: give one of them")
    if fast_dev_run:
        from wow.cli import rehearsal

        with rehearsal.prepared(param_file, stand_ins=stand_ins, **overrides) as values:
            return run(
                param_file, only=only, start=start, check=check, force=force, confirm_cost=confirm_cost, **values
            )
    if stand_ins:
        raise WowError(
            "stand-ins replace the set's models and data, so they run only in a rehearsal, in a folder of its own: "
            "add --fast-dev-run"
        )
    param_file, overrides = resume_target(param_file, overrides)
    if limit is not None:
        overrides = limited(params.load(param_file, **overrides), limit, overrides)
    P = params.load(param_file, **overrides)
    selected = select(only, start)
    if check:
        preflight.check_before_run(P, [nb.name[:2] for nb in selected])
        from wow.cli import estimate, estimate_table

        stand_ins = P.layout.rehearsal.exists() and bool(io.read_json(P.layout.rehearsal).get("stand_ins"))
        lines = estimate.estimate(P, only=[nb.name[:2] for nb in selected], stand_ins=stand_ins)
        log.info("%s", estimate_table.plan_text(lines) + (" (API models: local stand-ins)" if stand_ins else ""))
    if confirm_cost is not None:
        cost = preflight.estimated_api_cost(P, [nb.name[:2] for nb in selected])
        if cost > 0:
            confirm_cost(cost)
    run_folder.check_run_yaml(P, str(param_file))  # read-only: a refused run leaves the folder as it was
    with lock.hold(P.run_dir):  # refused here, before anything is written, while another process writes there
        record_run(P, str(param_file))
        return _run_locked(P, selected, param_file, force)


def limited(P: params.RunParams, limit: int, overrides: dict) -> dict:
    """``wow run SET --limit N`` (lm-eval-harness's name): the overrides of a quick try of ``P`` on at most ``N``
    questions per task (at least the fewest that fill every split of ``split_fractions``), every other setting kept,
    in the folder ``<run_name>_limit<N>`` (unless ``run_name`` is given), so the full run's folder is untouched.

    Raises:
        WowError: ``limit`` below 1.
    """
    from wow.cli.rehearsal_sizes import least_questions

    if limit < 1:
        raise WowError(f"--limit {limit}: give at least 1 question per task")
    n = min(P.n_questions, max(limit, least_questions(list(P.split_fractions))))
    out = {**overrides, "n_questions": n}
    out.setdefault("run_name", f"{P.run_name}_limit{limit}")
    why = f" (the fewest that fill every split of {list(P.split_fractions)})" if n > limit else ""
    log.info("--limit %d: n_questions %d -> %d%s, in the run folder %s", limit, P.n_questions, n, why, out["run_name"])
    return out


def resume_target(param_file: str | Path, overrides: dict) -> tuple[Path, dict]:
    """``wow run <run folder>`` resumes that folder's run: its ``run.yaml`` is the set, the folder where it lies.

    Raises:
        WowError: a folder without ``run.yaml``.
    """
    path = Path(param_file)
    if not path.is_dir():
        return path, overrides
    if not (path / "run.yaml").is_file():
        raise WowError(
            f"{path} is a folder without run.yaml; give a parameter file (e.g. parameters/demo.yaml) or a run folder "
            "written by wow run (e.g. outputs/demo) to resume it."
        )
    log.info("resuming the run in %s (its run.yaml)", path)
    where = {"output_root": str(path.resolve().parent), "run_name": path.resolve().name}
    return path / "run.yaml", {**where, **overrides}


def _run_locked(
    P: params.RunParams, selected: list[Path], param_file: str | Path | None = None, force: bool = False
) -> Path:
    nb_params = notebook_parameters(P, param_file)
    out_dir = P.layout.notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = kernel_name()
    ipc_dir = Path(tempfile.mkdtemp(prefix="wow-kernel-"))  # the kernels' socket files, removed at the end
    manager = _local_kernel_manager(lock.kernel_env(P.run_dir), ipc_dir)  # the kernels work under this lock
    try:
        return _run_stages(P, selected, nb_params, out_dir, kernel, manager, force)
    finally:
        shutil.rmtree(ipc_dir, ignore_errors=True)


def _run_stages(P, selected, nb_params, out_dir, kernel, manager, force) -> Path:
    """Run (or skip, when unchanged) each selected stage in order; then the report."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    timings = _load_timings(P.run_dir)
    started = time.perf_counter()
    ran = []
    for i, nb in enumerate(selected, 1):
        if not force and fingerprint.unchanged(P, nb):
            log.info(
                "[%d/%d] %s unchanged (the parameters it read, its notebook, the library and the stages before it): "
                "skipped; --force reruns it",
                i,
                len(selected),
                nb.stem,
            )
            continue
        ran.append(nb)
        out = out_dir / nb.name
        log.info("[%d/%d] %s ...", i, len(selected), nb.stem)
        attempt = start_attempt(P.run_dir, nb.stem, precision.run_machine())
        t0 = time.perf_counter()
        failure = None
        try:
            # papermill saves the notebook as it runs: into a unique temporary file, renamed when the stage ends
            with io.atomic_path(out) as tmp, warnings.catch_warnings(), _quiet_unknown_parameters():
                warnings.filterwarnings("ignore", message=r"The specified file .* does not end in")
                try:
                    papermill.execute_notebook(
                        str(nb),
                        str(tmp),
                        parameters=nb_params,
                        kernel_name=kernel,
                        progress_bar=False,
                        cwd=str(layout.NOTEBOOK_DIR),
                        kernel_manager_class=manager,
                        stderr_file=StageEcho(nb.stem[:2]),  # the library's progress lines, in the terminal
                    )
                except PapermillExecutionError as e:
                    failure = e  # the executed notebook, with the error, still takes its place
        except BaseException as e:
            end_attempt(P.run_dir, nb.stem, attempt, "failed", f"{e.__class__.__name__}: {e}" if str(e) else repr(e))
            raise
        elapsed = time.perf_counter() - t0
        if failure is not None:
            error = f"{failure.ename}: {failure.evalue.strip()}"
            end_attempt(P.run_dir, nb.stem, attempt, "failed", f"cell {failure.exec_count}: {error}", elapsed)
            try_write_report(P.run_dir)
            raise WowError(
                f"{nb.stem} failed in cell {failure.exec_count}: {error} "
                f"(executed notebook: {out}; outputs of earlier stages are kept)"
            )
        try:
            run_folder.check_stage(P.run_dir, nb.stem, type(P).model_fields)
        except WowError as e:
            end_attempt(P.run_dir, nb.stem, attempt, "failed", str(e), elapsed)
            raise
        end_attempt(P.run_dir, nb.stem, attempt, "done", None, elapsed)
        fingerprint.record_fingerprint(P, nb)
        timings[nb.stem] = round(elapsed, 2)
        io.write_json(P.layout.timings, timings)
        log.info("[%d/%d] %s done in %.1f s", i, len(selected), nb.stem, elapsed)
    if ran or not (P.layout.report / "index.html").exists():
        try_write_report(P.run_dir)
    from wow.report import verdict

    text = verdict.results_text(P.run_dir)
    if text:
        log.info("\n%s", text)
    wall = time.perf_counter() - started
    log.info(
        "wall time %.1f min (%s)",
        wall / 60,
        ", ".join(
            f"{nb.stem[:2]} {timings[nb.stem]:.0f} s" if nb in ran else f"{nb.stem[:2]} skipped" for nb in selected
        ),
    )
    return P.run_dir


def try_write_report(run_dir: Path) -> Path | None:
    """Write the run's HTML report (:func:`wow.report.html_report.write_report`); a failure is logged, never raised."""
    from wow.report import html_report

    try:
        return html_report.write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the run's artefacts are written; a report problem must not fail it
        log.warning("the run report was not written (%s: %s); try: wow report %s", e.__class__.__name__, e, run_dir)
        return None


def _local_kernel_manager(extra_env: dict[str, str] | None = None, ipc_dir: Path | None = None) -> type:
    """A kernel manager that talks to its kernel over local IPC sockets (files only this user can reach) instead of
    unencrypted TCP ports on 127.0.0.1, which other local users could connect to (ipykernel warns about them).

    Its kernels get this process's environment plus ``extra_env`` (the lock token of :func:`wow.run_folder.lock.kernel_env`);
    their socket files go to ``ipc_dir`` (default: the working directory, where they would litter ``notebooks/``).
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        async def start_kernel(self, **kw):
            if ipc_dir is not None:
                self.ip = str(ipc_dir / "kernel-ipc")
            env = {**(kw.pop("env", None) or os.environ), **(extra_env or {})}
            return await super().start_kernel(env=env, **kw)

    return LocalKernelManager


class StageEcho:
    """A file-like sink for a kernel's stderr that shows the library's progress lines in ``wow run``'s terminal.

    The notebooks log ``INFO wow.<module>: ...`` lines (answers sampled, pairs judged, trainings started and their
    validation loss, models evaluated); each is logged here as ``  [NN] <module>: ...``, a line repeated at once
    only once. Warnings and errors of any logger pass too; progress bars and tables (widgets, text) do not.
    """

    _LINE = re.compile(r"^(INFO|WARNING|ERROR) (wow[\w.]*|[\w.]+): (.*)$")

    def __init__(self, stage: str):
        self.stage = stage
        self._buffer = ""
        self._last = None

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = re.split(r"[\r\n]", self._buffer)
        for line in lines:
            m = self._LINE.match(line.strip())
            if not m or (m.group(1) == "INFO" and not m.group(2).startswith("wow")) or line == self._last:
                continue
            self._last = line
            name = m.group(2)
            name = name.rsplit(".", 1)[-1] if name.startswith("wow.") else name  # the module: judges, progress...
            (log.info if m.group(1) == "INFO" else log.warning)("  [%s] %s: %s", self.stage, name, m.group(3))
        return len(text)

    def flush(self) -> None:
        """Nothing is buffered but an unfinished line."""


class _UnknownParameterFilter(logging.Filter):
    """papermill warns for every parameter a notebook's ``parameters`` cell does not declare; the notebooks declare
    only ``param_file`` and take the whole set, so those warnings say nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Passed unknown parameter")


class _quiet_unknown_parameters:
    def __enter__(self):
        self._filter = _UnknownParameterFilter()
        logging.getLogger("papermill").addFilter(self._filter)

    def __exit__(self, *exc):
        logging.getLogger("papermill").removeFilter(self._filter)


def _load_timings(run_dir: Path) -> dict:
    path = layout.Layout(run_dir).timings
    return io.read_json(path) if path.exists() else {}
