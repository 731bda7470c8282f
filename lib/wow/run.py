"""``wow run``: execute the numbered notebooks in order with papermill, for one parameter set.

Each notebook receives the parameters it declares (its ``parameters`` cell) from the set, runs with the project's
Jupyter kernel, and is saved executed to ``outputs/<run>/notebooks/`` (papermill writes it to a unique temporary
file while it runs, renamed into place when the stage ends, also when it fails). Model calls are cached on disk, so
a rerun is fast and a run that died resumes. A failing notebook stops the run with the cell and the error; what
earlier stages wrote stays. At the end (also after a failure) the run's HTML report is written to
``outputs/<run>/report/``.

A run folder has one writer at a time: ``wow run`` holds the folder's lock (:mod:`wow.lock`) from before it writes
``run.yaml`` to its end, and passes it on to the kernels of its notebooks; a second ``wow run``, or a notebook
kernel, on the same folder is refused. Every attempt at a stage is recorded in ``stages.json`` (start, end, status,
pid, error), so a failed attempt never hides a later successful one; ``timings.json`` keeps the wall time of each
stage's latest successful attempt.

Example::

    from wow import run
    run.run("parameters/smoke.yaml", only=["03"])
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

from wow import WowError, io, layout, lock, params, run_folder
from wow.stages import end_attempt, latest_attempts, load_attempts, start_attempt  # noqa: F401 - wow.run names them

log = logging.getLogger(__name__)

NOTEBOOK_DIR = layout.NOTEBOOK_DIR
KERNEL = "wow"
ATTEMPTS_FILE = layout.ATTEMPTS_FILE


notebooks = layout.notebooks


def select(only: list[str] | None = None, start: str | None = None) -> list[Path]:
    """Notebooks to run: ``only`` (prefixes like "03") or everything from ``start`` on."""
    nbs = notebooks()
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


def notebook_parameters(nb: Path) -> list[str]:
    """Names declared in a notebook's ``parameters`` cell."""
    import papermill

    return list(papermill.inspect_notebook(str(nb)).keys())


def record_run(P: params.RunParams, source: str) -> None:
    """Write ``run.yaml`` (the validated parameters) to the run folder; refuse a folder of a different run.

    Raises:
        WowError: the folder holds a run with other data parameters (:func:`wow.run_folder.check`).
    """
    import yaml

    run_folder.check(P, source)
    io.write_text(P.layout.run_yaml, yaml.safe_dump(P.model_dump(mode="json"), sort_keys=False))


def run(param_file: str | Path, only: list[str] | None = None, start: str | None = None, **overrides) -> Path:
    """Execute the selected notebooks for a parameter set; returns the run folder.

    Raises:
        WowError: invalid parameters, the folder is being written by another process (:mod:`wow.lock`), or a
            notebook failed (names the notebook, cell and error).
    """
    P = params.load(param_file, **overrides)
    selected = select(only, start)
    run_folder.check(P, str(param_file))  # read-only: a refused run leaves the folder as it was
    with lock.hold(P.run_dir):  # refused here, before anything is written, while another process writes there
        record_run(P, str(param_file))
        return _run_locked(P, selected)


def _run_locked(P: params.RunParams, selected: list[Path]) -> Path:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    values = P.model_dump(mode="json")
    out_dir = P.layout.notebooks
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = kernel_name()
    manager = _local_kernel_manager(lock.kernel_env(P.run_dir))  # the kernels work under this process's lock
    timings = _load_timings(P.run_dir)
    started = time.perf_counter()
    for i, nb in enumerate(selected, 1):
        declared = notebook_parameters(nb)
        nb_params = {k: values[k] for k in declared if k in values}
        out = out_dir / nb.name
        log.info("[%d/%d] %s ...", i, len(selected), nb.stem)
        attempt = start_attempt(P.run_dir, nb.stem)
        t0 = time.perf_counter()
        failure = None
        try:
            # papermill saves the notebook as it runs: into a unique temporary file, renamed when the stage ends
            with io.atomic_path(out) as tmp, warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=r"The specified file .* does not end in")
                try:
                    papermill.execute_notebook(
                        str(nb),
                        str(tmp),
                        parameters=nb_params,
                        kernel_name=kernel,
                        progress_bar=False,
                        cwd=str(NOTEBOOK_DIR),
                        kernel_manager_class=manager,
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
            write_report(P.run_dir)
            raise WowError(
                f"{nb.stem} failed in cell {failure.exec_count}: {error} "
                f"(executed notebook: {out}; outputs of earlier stages are kept)"
            )
        end_attempt(P.run_dir, nb.stem, attempt, "done", None, elapsed)
        timings[nb.stem] = round(elapsed, 2)
        io.write_json(P.layout.timings, timings)
        log.info("[%d/%d] %s done in %.1f s", i, len(selected), nb.stem, elapsed)
    write_report(P.run_dir)
    wall = time.perf_counter() - started
    log.info(
        "wall time %.1f min (%s)", wall / 60, ", ".join(f"{nb.stem[:2]} {timings[nb.stem]:.0f} s" for nb in selected)
    )
    return P.run_dir


def write_report(run_dir: Path) -> Path | None:
    """Write the run's HTML report (:func:`wow.html_report.write_report`); a failure is logged, never raised."""
    from wow import html_report

    try:
        return html_report.write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the run's artefacts are written; a report problem must not fail it
        log.warning("the run report was not written (%s: %s); try: wow report %s", e.__class__.__name__, e, run_dir)
        return None


def _local_kernel_manager(extra_env: dict[str, str] | None = None) -> type:
    """A kernel manager that talks to its kernel over local IPC sockets (files only this user can reach) instead of
    unencrypted TCP ports on 127.0.0.1, which other local users could connect to (ipykernel warns about them).

    Its kernels get this process's environment plus ``extra_env`` (the lock token of :func:`wow.lock.kernel_env`).
    """
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

        async def start_kernel(self, **kw):
            env = {**(kw.pop("env", None) or os.environ), **(extra_env or {})}
            return await super().start_kernel(env=env, **kw)

    return LocalKernelManager


def _load_timings(run_dir: Path) -> dict:
    path = layout.Layout(run_dir).timings
    return io.read_json(path) if path.exists() else {}
