"""``wow data check``: every data file a parameter set names exists, parses and has the rows and fields its task needs.

It reads the files with the tasks' own loaders (so a file that passes here loads in the run), but never loads a
model, Stockfish or a labeler: COM2's rows are checked as its loader checks them before labelling, Bio's topics
against the passage database when the set names one. Hub datasets (``path: Rowan/hellaswag`` and the like) are
downloaded by ``datasets`` on first use and are listed, not checked; a local ``data_files`` of a hub task is read and
its fields checked. A file with fewer usable rows than ``n_questions`` passes with a note (the run then gets fewer
questions); an NLGraph shortest-path file is noted with how many of its normalisers (longest paths) are inexact. ``data/README.md`` says where each file comes from.

Example::

    from wow import params
    from wow.cli import datacheck
    results = datacheck.check_data(params.load("parameters/paper/fig3_alignment.yaml"))
    print(datacheck.format_results(results))
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from wow import WowError, layout
from wow.params import RunParams

log = logging.getLogger(__name__)

#: Fields every row of a hub task's local ``data_files`` must have (the loaders' ``field(row, ...)`` reads).
HUB_FIELDS = {
    "hellaswag": ("ctx", "endings", "label"),
    "medmcqa": ("question", "opa", "opb", "opc", "opd", "cop"),
    "mmlu_pro": ("question", "options", "answer_index", "src"),
    "science": ("problem_text", "unit", "answer_number"),
    "chess": ("FEN", "Moves", "Rating"),
}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass
class Result:
    """One checked file (or hub dataset) of one task option."""

    task: str
    key: str
    source: str
    ok: bool
    message: str


def _resolve(value: str, root: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else root / p


def _is_hub_id(value: str, root: Path) -> bool:
    return bool(_HUB_ID.match(value)) and not Path(value).suffix and not _resolve(value, root).exists()


def _rows_note(n: int, P: RunParams, what: str) -> str:
    note = f"{n} {what}"
    if n < P.n_questions:
        note += f" (fewer than n_questions {P.n_questions}: the run gets at most {n} questions)"
    return note


def _check_file(task: str, key: str, path: Path, opts: dict, root: Path, P: RunParams) -> str:
    """Load ``path`` as task ``task`` reads it; returns what was found. Raises WowError on any problem."""
    from wow import tasks

    if not path.exists():
        raise WowError("missing; data/README.md says where it comes from")
    if key == "db":
        from wow.tasks.factscore import PassageDB

        db = PassageDB(path)
        try:
            n = db.con.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        except Exception as e:  # sqlite3.DatabaseError: not a database, or no documents table
            raise WowError(f"{path}: not a FActScore passage database (table documents(title, text)): {e}") from None
        if not n:
            raise WowError(f"{path}: the documents table is empty")
        return f"{n} passages"
    if task in ("shortest_path", "max_flow", "matching"):
        questions = tasks.get(task, path=str(path)).load_nlgraph(str(path))
        return _rows_note(len(questions), P, "questions parsed") + _inexact_note(questions)
    if task == "knowledge_crosswords":
        return _rows_note(len(tasks.get(task, path=str(path)).load(str(path), P.seed)), P, "questions parsed")
    if task == "com2":
        return _rows_note(_com2_rows(path), P, "usable rows (types 2i/3i)")
    if task == "bio_generation":
        db = opts.get("db")
        db_path = str(_resolve(db, root)) if isinstance(db, str) and _resolve(db, root).exists() else None
        qs = tasks.get(task, path=str(path), db=db_path).build(None, P.seed)
        checked = " (every topic a title of the database)" if db_path else ""
        return _rows_note(len(qs), P, "topics" + checked)
    if task in HUB_FIELDS:
        from wow.tasks.sources import field, load_rows

        rows = load_rows(None, opts.get("split", "train"), str(path))
        for row in rows:
            for name in HUB_FIELDS[task]:
                field(row, name, object)
        return _rows_note(len(rows), P, f"rows with {', '.join(HUB_FIELDS[task])}")
    raise WowError(f"no data check for task {task!r}")


def _inexact_note(questions) -> str:
    """How many graph normalisers are upper bounds instead of the exact longest path (``normaliser_exact``)."""
    flagged = [q for q in questions if "normaliser_exact" in q.meta]
    if not flagged:
        return ""
    inexact = sum(not q.meta["normaliser_exact"] for q in flagged)
    if not inexact:
        return "; every normaliser exact"
    return (
        f"; {inexact} of {len(flagged)} normalisers are upper bounds (graphs too large for the exact longest path: "
        "their answers are graded on a wider scale)"
    )


def _com2_rows(path: Path) -> int:
    """COM2 rows its loader keeps (:meth:`wow.tasks.com2.COM2.item`: its checks, before any labelling)."""
    from wow.tasks.com2 import COM2

    task = COM2(str(path))
    return sum(task.item(row) is not None for row in task.rows())


def check_data(P: RunParams, root: str | Path | None = None) -> list[Result]:
    """Check every data file of ``P.task_options`` (``path``, ``data_files``, ``db``).

    Args:
        P: the parameters.
        root: folder that relative paths resolve against (default: the repository root, as the pipeline does).

    Returns:
        One :class:`Result` per file or hub dataset; ``ok`` False names the problem.
    """
    base = Path(root) if root else layout.REPO_ROOT
    out = []
    for task in P.tasks:
        opts = P.task_options.get(task, {})
        for key in ("path", "data_files", "db"):
            value = opts.get(key)
            if not isinstance(value, str):
                continue
            if key == "path" and _is_hub_id(value, base):
                out.append(Result(task, key, value, True, "hub dataset: downloaded by `datasets` on first use"))
                continue
            if key == "path" and task in HUB_FIELDS and "data_files" in opts:
                continue
            path = _resolve(value, base)
            try:
                out.append(Result(task, key, str(path), True, _check_file(task, key, path, opts, base, P)))
            except WowError as e:
                out.append(Result(task, key, str(path), False, str(e)))
        if not any(r.task == task for r in out):
            out.append(Result(task, "-", "-", True, "no data file: questions are generated"))
    for r in out:
        log.debug("%s %s.%s: %s", "ok" if r.ok else "FAIL", r.task, r.key, r.message)
    return out


def format_results(results: list[Result]) -> str:
    """One line per file: ``ok`` or ``FAIL``, the task option, the file and what was found."""
    lines = [f"{'ok' if r.ok else 'FAIL':4} {r.task}.{r.key}: {r.source}: {r.message}" for r in results]
    bad = sum(not r.ok for r in results)
    lines.append(f"{len(results) - bad} of {len(results)} data sources ok" + (f", {bad} failing" if bad else ""))
    return "\n".join(lines)
