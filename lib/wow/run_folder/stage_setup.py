"""What every stage (notebook) does first and last: take the run's whole parameter set, and record what it read.

Its ``parameters`` cell names the run's set (``param_file``) and may replace single values; the set-up cell calls
:func:`setup`, which validates the whole set, refuses values that differ from the run's ``run.yaml``, records the set
as the stage's (``stage_params.json``) and takes the run folder's write lock. From then on the parameters the stage
reads are tracked; its last cell calls :func:`finish`, which records them (``wow run`` fingerprints the stage with
them: :mod:`wow.run_folder.fingerprint`) and gives the lock back when the kernel took it itself.

Example (a notebook's set-up cell and last cell)::

    from wow.run_folder import stage_setup
    P = stage_setup.setup(globals(), "01_data_prep")
    ...
    stage_setup.finish(P, "01_data_prep")
"""

from __future__ import annotations

import types

from wow import WowError, io, run_folder
from wow.params import RunParams, read_set, validate
from wow.run_folder import lock

#: The notebooks' pointer to their run's parameter set (not a parameter itself).
PARAM_FILE = "param_file"
_NOTEBOOK_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def setup(namespace: dict, stage: str | None = None, source: str | None = None) -> RunParams:
    """The run's whole parameter set, as a stage sees it: the set ``param_file`` names, with every parameter given
    as a global (the ``parameters`` cell, or injected by papermill / ``wow run``) replacing its value.

    Every public, non-module, non-callable global other than ``param_file`` is treated as a parameter, so a mistyped
    name passed with ``papermill -p`` is an error instead of a silent no-op. The result must equal the run's
    ``run.yaml`` in every key (:func:`wow.run_folder.check_same`): a stage never runs with other values than its run.
    A folder without ``run.yaml`` gets this set as its run's. With ``stage``, the set is recorded as that stage's
    (``stage_params.json``), which ``wow run`` checks and the report lists.

    The notebook then writes the run folder, so this takes its write lock (:mod:`wow.run_folder.lock`): a folder that
    ``wow run`` or another kernel is writing is refused. A notebook executed by ``wow run`` works under the lock of
    the ``wow run`` that started its kernel.

    Args:
        namespace: the notebook's ``globals()``.
        stage: the notebook's stem (``01_data_prep``), to record the set under.
        source: how errors name the caller (default: ``<stage> parameters``).

    Raises:
        WowError: unknown or invalid parameters, a missing parameter file, values that differ from the run's, or
            a folder another process writes.
    """
    source = source or f"{stage or 'notebook'} parameters"
    values = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _NOTEBOOK_NAMES
        and not isinstance(v, types.ModuleType | types.FunctionType | type)
        and not callable(v)
    }
    param_file = values.pop(PARAM_FILE, None)
    base = read_set(param_file) if param_file else {}
    P = validate({**base, **values}, source=f"{source} ({param_file})" if param_file else source)
    run_folder.check_same(P, source)  # read-only: a refused stage leaves the folder as it was
    lock.acquire(P.run_dir)  # held until finish() or the kernel's end (the notebook's cells write meanwhile)
    if run_folder.read_run_yaml(P.run_dir) is None:
        run_folder.record(P, source)  # the first stage run by hand makes this set the run's
    if stage:
        run_folder.record_stage(P, stage)
    P.track_reads()
    return P


def finish(P: RunParams, stage: str) -> None:
    """A notebook's last cell: record which parameters ``stage`` read (``wow run`` fingerprints the stage with them),
    then give back the folder's write lock when this kernel took it itself (run by hand: a class's next notebook, or
    a fresh kernel, can then write the folder without shutting this kernel down). Under ``wow run`` the lock stays
    with ``wow run``.

    Raises:
        WowError: the stage's set-up cell recorded no parameters.
    """
    path = P.layout.stage_params
    records = io.read_json(path) if path.exists() else {}
    if stage not in records:
        raise WowError(f"{stage} recorded no parameters; its set-up cell calls stage_setup.setup(globals(), stage).")
    records[stage]["reads"] = P.reads()
    io.write_json(path, records)
    while lock.holds(P.run_dir):
        lock.release(P.run_dir)
