"""Small file helpers: atomic writes and strict JSONL reading.

Every artefact of a run is written atomically (to a temporary file in the same folder, then renamed), so a
killed process never leaves a half-written file for the next stage to read. Temporary names are unique
(``.<name>.<random>.tmp``), so two processes never write the same temporary file; a writer killed before its rename
leaves one behind, which the next holder of the folder's lock removes (:func:`remove_temporaries`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from wow import WowError


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: set it back at once
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on failure remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; the artefact gets the mode a plain open would give
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty temporary folder next to ``path``; on success it takes the place of the folder ``path``
    (a reader sees the old folder, briefly none, then the new one; never a half-written one), on failure it is
    removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        try:
            os.replace(tmp, path)  # path absent (or an empty folder): one rename
        except OSError:
            if not path.is_dir():
                raise
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old)  # onto the empty folder just made
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: Names of the temporary files and folders of :func:`atomic_path` and :func:`atomic_dir` (mkstemp's 8 characters).
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_temporaries(folder: str | os.PathLike, skip: tuple[str, ...] = ()) -> list[Path]:
    """Remove the temporary files and folders that writers killed before their rename left under ``folder``.

    Only for a process that holds the folder's write lock (:mod:`wow.run_folder.lock`): no other writer can be using them.
    Sub-folders named in ``skip`` are left alone. Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    for path in sorted(folder.rglob(".*.tmp")):
        rel = path.relative_to(folder).parts
        if rel[0] in skip or not TEMPORARY_NAME.match(path.name) or not path.exists():
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> Path:
    """Write one JSON object per line, atomically. Keys keep their insertion order (stable bytes across runs)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, default=_json_default) + "\n")
    return Path(path)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for every non-empty line of a JSONL file; a line that is not a JSON object raises a
    WowError naming ``<file>:<line>`` (the one JSONL parser of the project: run artefacts and data files)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise WowError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or delete that line.") from None
            if not isinstance(row, dict):
                raise WowError(f"{path}:{lineno}: not a JSON object; each line must be one record.")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file (:func:`iter_jsonl`); a missing file or a malformed line raises a WowError."""
    path = Path(path)
    if not path.exists():
        raise WowError(f"{path} does not exist: run the stage that writes it first (see the README's pipeline table).")
    return [row for _, row in iter_jsonl(path)]


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file with a clear error when it is missing or malformed."""
    path = Path(path)
    if not path.exists():
        raise WowError(f"{path} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise WowError(f"{path} is not valid JSON (line {e.lineno}: {e.msg}).") from None


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
