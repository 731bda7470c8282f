"""``wow run``: execute the numbered notebooks in order with papermill, for one parameter set.

Each notebook receives the parameters it declares (its ``parameters`` cell) from the set, runs with the project's
Jupyter kernel, and is saved executed to ``outputs/<run>/notebooks/``. Model calls are cached on disk, so a rerun
is fast and a run that died resumes. A failing notebook stops the run with the cell and the error; what earlier
stages wrote stays. At the end (also after a failure) the run's HTML report is written to ``outputs/<run>/report/``.

Example::

    from wow import run
    run.run("parameters/smoke.yaml", only=["03"])
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from wow import WowError, io, params

log = logging.getLogger(__name__)

NOTEBOOK_DIR = params.REPO_ROOT / "notebooks"
KERNEL = "wow"


def notebooks() -> list[Path]:
    """The numbered notebooks, in order."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise WowError(f"no numbered notebooks in {NOTEBOOK_DIR}")
    return found


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
        WowError: the folder holds a run with other data parameters (:func:`wow.params.check_run_folder`).
    """
    import yaml

    params.check_run_folder(P, source)
    io.write_text(P.run_dir / "run.yaml", yaml.safe_dump(P.model_dump(mode="json"), sort_keys=False))


def run(param_file: str | Path, only: list[str] | None = None, start: str | None = None, **overrides) -> Path:
    """Execute the selected notebooks for a parameter set; returns the run folder.

    Raises:
        WowError: invalid parameters, or a notebook failed (names the notebook, cell and error).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    P = params.load(param_file, **overrides)
    record_run(P, str(param_file))
    values = P.model_dump(mode="json")
    out_dir = P.run_dir / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    selected = select(only, start)
    kernel = kernel_name()
    timings = _load_timings(P.run_dir)
    started = time.perf_counter()
    for i, nb in enumerate(selected, 1):
        declared = notebook_parameters(nb)
        nb_params = {k: values[k] for k in declared if k in values}
        out = out_dir / nb.name
        log.info("[%d/%d] %s ...", i, len(selected), nb.stem)
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb),
                str(out),
                parameters=nb_params,
                kernel_name=kernel,
                progress_bar=False,
                cwd=str(NOTEBOOK_DIR),
                kernel_manager_class=_local_kernel_manager(),
            )
        except PapermillExecutionError as e:
            write_report(P.run_dir)
            raise WowError(
                f"{nb.stem} failed in cell {e.exec_count}: {e.ename}: {e.evalue.strip()} "
                f"(executed notebook: {out}; outputs of earlier stages are kept)"
            ) from None
        elapsed = time.perf_counter() - t0
        timings[nb.stem] = round(elapsed, 2)
        io.write_json(P.run_dir / "timings.json", timings)
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


def _local_kernel_manager() -> type:
    """A kernel manager that talks to its kernel over local IPC sockets (files only this user can reach) instead of
    unencrypted TCP ports on 127.0.0.1, which other local users could connect to (ipykernel warns about them)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class LocalKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return LocalKernelManager


def _load_timings(run_dir: Path) -> dict:
    path = run_dir / "timings.json"
    return io.read_json(path) if path.exists() else {}
