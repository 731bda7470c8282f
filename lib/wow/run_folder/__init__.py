"""Whether a run folder belongs to a set of parameters, and which parameters its stages used.

Two rules, one per entry point:

* ``wow run`` may change what later stages do (a plotting parameter, the bootstrap size) but not what the answers
  depend on (:data:`DATA_KEYS`): a folder whose ``run.yaml`` holds other values of those belongs to another run
  (:func:`check_run_yaml`). ``wow run`` then writes the set it runs to ``run.yaml`` (:func:`record`).
* A stage (a notebook, run by ``wow run``, by plain papermill or interactively) must use exactly the run's set: every
  parameter equal to ``run.yaml`` (:func:`check_same`), else it stops naming the keys. Each stage records the set it
  validated in ``stage_params.json`` (:func:`record_stage`), which ``wow run`` checks after the stage
  (:func:`check_stage`) and the report lists.

``run.yaml`` is read here only (:func:`read_run_yaml`).

Example::

    run_folder.check_run_yaml(P, "parameters/demo.yaml")   # raises WowError naming the keys that differ
"""

from __future__ import annotations

import hashlib
import json

import yaml

from wow import WowError, io
from wow.params import set_files

#: What the answers depend on: a run folder holding other values of these belongs to another run.
DATA_KEYS = (
    "tasks",
    "task_options",
    "n_questions",
    "split_fractions",
    "generators",
    "n_samples",
    "temperature",
    "max_new_tokens",
    "seed",
    "protocol",
)


def read_run_yaml(run_dir, source: str = "parameters") -> dict | None:
    """The parameters recorded in ``<run_dir>/run.yaml`` (a mapping, renamed parameters under their new names:
    :func:`wow.params.set_files.migrate`), or None when the folder has none.

    Raises:
        WowError: the file is not a YAML mapping.
    """
    from wow.layout import Layout

    path = Layout(run_dir).run_yaml
    if not path.exists():
        return None
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        old = None
    if not isinstance(old, dict):
        raise WowError(f"{path} is not a YAML mapping of parameters; delete it or pick another run_name in {source}.")
    return set_files.migrate(old)


def _differences(P, old: dict, keys) -> list[str]:
    new = P.model_dump(mode="json")
    fields = type(P).model_fields
    # a key missing from an older run.yaml held its default then
    return [k for k in keys if canonical(old.get(k, _default(fields[k]))) != canonical(new.get(k))]


def _default(field):
    return field.default if not callable(getattr(field, "default_factory", None)) else field.default_factory()


def canonical(value):
    """A value as JSON sees it (tuples and lists alike, 5e-05 and 5.0e-05 alike)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def check_run_yaml(P, source: str = "parameters", keys=None) -> None:
    """Refuse a run folder whose ``run.yaml`` differs from ``P`` in what the answers depend on (:data:`DATA_KEYS`).

    Reusing such a folder would mix the artefacts of two runs. A folder without ``run.yaml`` is fine. ``keys``
    limits the comparison to those parameters.

    Raises:
        WowError: names the folder, the keys that differ and what to do.
    """
    old = read_run_yaml(P.run_dir, source)
    if old is None:
        return
    changed = _differences(P, old, [k for k in DATA_KEYS if keys is None or k in keys])
    if changed:
        raise WowError(
            f"{P.run_dir} holds a run with different {', '.join(changed)} (see its run.yaml); pick another "
            f"run_name in {source} or delete that folder."
        )


def record(P, source: str = "parameters") -> None:
    """Write ``run.yaml`` (the validated parameters, ``dtype`` resolved) after :func:`check_run_yaml`.

    Raises:
        WowError: the folder holds a run with other data parameters.
    """
    check_run_yaml(P, source)
    io.write_text(P.layout.run_yaml, yaml.safe_dump(P.model_dump(mode="json"), sort_keys=False))


def check_same(P, source: str = "parameters") -> None:
    """Refuse parameters that differ in any key from the run's ``run.yaml``: every stage of a run uses its whole set.

    A folder without ``run.yaml`` is fine (the caller records ``P`` as the run's set).

    Raises:
        WowError: names each key with the run's value and the stage's, and the two ways to proceed.
    """
    old = read_run_yaml(P.run_dir, source)
    if old is None:
        return
    changed = _differences(P, old, list(type(P).model_fields))
    if changed:
        new = P.model_dump(mode="json")
        diffs = "; ".join(f"{k}: run {old.get(k)!r}, here {new.get(k)!r}" for k in changed)
        raise WowError(
            f"{source}: the parameters differ from the run's ({P.run_dir}/run.yaml) in {', '.join(changed)} "
            f"({diffs}). Every stage of a run uses the run's whole set: set param_file to the run's parameter set "
            f"(and drop the changed values), or change the set and rerun with `wow run <set> --from <stage>`, or "
            f"pick another run_name."
        )


#: Where the run folder lies: not part of what a stage computes, so a moved run folder keeps its hashes.
LOCATION_KEYS = ("output_root",)


def params_sha(values: dict) -> str:
    """A short content hash of a parameter mapping (JSON, keys sorted), without :data:`LOCATION_KEYS`."""
    kept = {k: v for k, v in values.items() if k not in LOCATION_KEYS}
    return hashlib.sha256(json.dumps(canonical(kept), sort_keys=True).encode()).hexdigest()[:16]


def record_stage(P, stage: str) -> None:
    """Record in ``stage_params.json`` the parameters ``stage`` validated and uses (hash and values)."""
    path = P.layout.stage_params
    records = io.read_json(path) if path.exists() else {}
    values = P.model_dump(mode="json")
    records[stage] = {"sha256": params_sha(values), "values": values}
    io.write_json(path, records)


def check_stage(run_dir, stage: str, fields: dict | None = None) -> None:
    """After ``stage`` ran: it must have recorded parameters equal to ``run.yaml``.

    Args:
        run_dir: the run folder.
        stage: the notebook's stem.
        fields: the parameter schema's fields (``RunParams.model_fields``): a key one side lacks held its default.

    Raises:
        WowError: the stage recorded nothing (its notebook does not set up with :func:`wow.run_folder.stage_setup.setup`) or
            other values (named).
    """
    from wow.layout import Layout

    run = read_run_yaml(run_dir) or {}
    path = Layout(run_dir).stage_params
    records = io.read_json(path) if path.exists() else {}
    if stage not in records:
        raise WowError(
            f"{stage} recorded no parameters in {path}: its notebook must validate them with "
            f"stage_setup.setup(globals(), {stage!r})."
        )
    used = records[stage]["values"]
    # a key missing from either side (a field newer than that file) held its default there
    fields = fields or {}
    changed = sorted(
        k
        for k in set(run) | set(used)
        if canonical(run.get(k, _default(fields[k]) if k in fields else None))
        != canonical(used.get(k, _default(fields[k]) if k in fields else None))
    )
    if changed:
        raise WowError(f"{stage} used parameters other than the run's run.yaml: {', '.join(changed)}.")


def stage_records(run_dir) -> dict:
    """``{stage: {"sha256", "values"}}`` from ``stage_params.json`` ({} when absent)."""
    from wow.layout import Layout

    path = Layout(run_dir).stage_params
    return io.read_json(path) if path.exists() else {}
