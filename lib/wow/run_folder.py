"""Whether a run folder belongs to a set of parameters: a folder whose ``run.yaml`` holds other values of what the
answers depend on (:data:`DATA_KEYS`) belongs to another run, and reusing it would mix two runs' artefacts.

Example::

    run_folder.check(P, "parameters/demo.yaml")   # raises WowError naming the keys that differ
"""

from __future__ import annotations

import yaml

from wow import WowError

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


def check(P, source: str = "parameters", keys=None) -> None:
    """Refuse a run folder whose ``run.yaml`` differs from ``P`` in what the answers depend on (:data:`DATA_KEYS`).

    Reusing such a folder would mix the artefacts of two runs. A folder without ``run.yaml`` is fine. ``keys``
    limits the comparison to the parameters actually given (a notebook declares only those it uses; the others
    hold defaults that say nothing about the run).

    Raises:
        WowError: names the folder, the keys that differ and what to do.
    """
    path = P.layout.run_yaml
    if not path.exists():
        return
    try:
        old = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        raise WowError(f"{path} is not valid YAML; delete it or pick another run_name in {source}.") from None
    new = P.model_dump(mode="json")
    # a key missing from an older run.yaml held its default then
    changed = [
        k
        for k in DATA_KEYS
        if (keys is None or k in keys) and old.get(k, type(P).model_fields[k].default) != new.get(k)
    ]
    if changed:
        raise WowError(
            f"{P.run_dir} holds a run with different {', '.join(changed)} (see its run.yaml); pick another "
            f"run_name in {source} or delete that folder."
        )
