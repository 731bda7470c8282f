"""Whether a stage must run again: a fingerprint of everything it read, recorded when it succeeds.

A stage's fingerprint hashes the values of the parameters it read (tracked as it ran: :meth:`wow.params.RunParams.
track_reads`, recorded by its notebook's last cell in ``stage_params.json``), its notebook's code cells, the
library's source and the versions of the packages that compute (torch, transformers, trl, peft), and the fingerprint
of the stage before it (which stands for the artefacts that stage wrote). ``wow run`` skips a stage whose
fingerprint is unchanged, its last attempt done and its executed notebook in place, and says so; it reruns from the
first stage whose inputs changed (editing a plotting parameter reruns stage 05 only). ``--force`` reruns anyway.

A stage run by hand (JupyterLab, plain papermill) records its parameters but no fingerprint, so the next ``wow run``
runs it and every later stage again: nothing stale is ever reused.

Example::

    fp = fingerprint.compute(P, notebook, records)       # None when the stage recorded no reads
    fingerprint.unchanged(P, notebook)                   # True: wow run skips it
"""

from __future__ import annotations

import functools
import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from wow import io, layout, run_folder

#: Packages whose version changes what a stage computes.
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "numpy", "pandas", "matplotlib")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def library_digest() -> str:
    """A hash of the library's source files (``lib/wow``: Python and templates) and the computing packages' versions."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".txt", ".json")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    for name in PACKAGES:
        try:
            h.update(f"{name}={version(name)}\0".encode())
        except PackageNotFoundError:
            h.update(f"{name}=none\0".encode())
    return h.hexdigest()


def notebook_digest(nb: Path) -> str:
    """A hash of a notebook's code cells (not its outputs, metadata or prose)."""
    cells = json.loads(Path(nb).read_text())["cells"]
    return _sha(json.dumps(["".join(c["source"]) for c in cells if c["cell_type"] == "code"]).encode())


def _previous(stage: str) -> str | None:
    stems = [nb.stem for nb in layout.notebooks()]
    i = stems.index(stage) if stage in stems else -1
    return stems[i - 1] if i > 0 else None


def compute(P, nb: Path, records: dict) -> str | None:
    """The fingerprint ``nb``'s stage would have now, from the parameters it read when it last ran (``records``:
    :func:`wow.run_folder.stage_records`); None when that run recorded no reads (it did not finish, or ran by hand
    before reads were recorded)."""
    stage = Path(nb).stem
    reads = (records.get(stage) or {}).get("reads")
    if reads is None:
        return None
    values = P.model_dump_values()
    previous = _previous(stage)
    upstream = (records.get(previous) or {}).get("fingerprint") if previous else ""
    if upstream is None:
        return None  # the stage before has no fingerprint: its artefacts may be anything
    read_values = {k: values.get(k) for k in reads if k not in run_folder.LOCATION_KEYS}
    blob = json.dumps(
        {
            "reads": run_folder.canonical(read_values),
            "notebook": notebook_digest(nb),
            "library": library_digest(),
            "upstream": upstream,
        },
        sort_keys=True,
    )
    return _sha(blob.encode())[:24]


def unchanged(P, nb: Path) -> bool:
    """Whether ``nb``'s stage can be skipped: it last succeeded, its executed notebook is in the run folder, and
    its fingerprint now equals the recorded one."""
    from wow.run_folder.stages import latest_attempts

    stage = Path(nb).stem
    records = run_folder.stage_records(P.run_dir)
    recorded = (records.get(stage) or {}).get("fingerprint")
    if not recorded or not P.layout.notebook(stage).exists():
        return False
    if (latest_attempts(P.run_dir).get(stage) or {}).get("status") != "done":
        return False
    return compute(P, nb, records) == recorded


def record_fingerprint(P, nb: Path) -> str | None:
    """After ``nb``'s stage succeeded under ``wow run``: store its fingerprint in ``stage_params.json``."""
    stage = Path(nb).stem
    path = P.layout.stage_params
    records = run_folder.stage_records(P.run_dir)
    fp = compute(P, nb, records)
    if stage in records:
        records[stage]["fingerprint"] = fp
        io.write_json(path, records)
    return fp
