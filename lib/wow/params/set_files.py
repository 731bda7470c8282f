"""Parameter files on disk: where a set's path points, its raw mapping, and the parameters that were renamed.

A parameter file with a renamed key is refused by :func:`wow.params.validate` naming the new key; a run folder's
``run.yaml`` recorded under an old name is read under the new one (:func:`migrate`), so resuming or comparing an
older run keeps working.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from wow import WowError, layout

#: Parameters that were renamed, old name -> new name: a parameter file with an old name is refused with the new
#: one; a run folder's ``run.yaml`` written under the old name is read under the new (:func:`migrate`).
RENAMED_PARAMETERS = {"pref_check": "both_orders"}


def migrate(values: dict) -> dict:
    """``values`` with every key of :data:`RENAMED_PARAMETERS` under its new name (a recorded ``run.yaml``)."""
    return {RENAMED_PARAMETERS.get(k, k): v for k, v in values.items()}


def resolve_set_path(path: str | Path) -> Path:
    """A parameter file's path: as given when it exists from here, else relative to the repository root (so
    ``parameters/demo.yaml`` works from ``notebooks/`` as from the root)."""
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return layout.REPO_ROOT / path if (layout.REPO_ROOT / path).exists() else path


def read_set(path: str | Path) -> dict:
    """The raw mapping of a YAML parameter set (not validated); a run folder's ``run.yaml`` with renamed parameters
    under their new names (:func:`migrate`).

    Raises:
        WowError: the file is missing, a folder, empty, not YAML or not a mapping.
    """
    path = resolve_set_path(path)
    if path.is_dir():
        raise WowError(f"{path} is a folder; give a parameter file (e.g. parameters/demo.yaml).")
    if not path.exists():
        raise WowError(f"parameter file {path} does not exist; the sets shipped are in parameters/.")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise WowError(f"{path} is not valid YAML: {e}") from None
    if values is None:
        raise WowError(f"{path} is empty; a parameter set names at least run_name (see parameters/demo.yaml).")
    if not isinstance(values, dict):
        raise WowError(f"{path} must be a mapping of parameter names to values.")
    if path.resolve() == layout.Layout(path.resolve().parent).run_yaml:  # a recorded run's set (a resumed run)
        values = migrate(values)
    return values
