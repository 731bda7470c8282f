"""Reading published data: local files and hub datasets, with errors that name the file and the row.

Every loader reads its rows through this module, so every loader fails the same way: a missing file says what to
do, a malformed row names its file and line (or hub row), and nothing is skipped silently.

Hub datasets go through ``datasets.load_dataset``. The hub id is the default; a local file of the same schema
(``.jsonl``/``.json``/``.csv``/``.parquet``) can stand in for it, which is how the tests run offline::

    rows = load_rows("TIGER-Lab/MMLU-Pro", split="test")                      # the hub
    rows = load_rows(None, data_files="tests/fixtures/tasks/mmlu_pro.jsonl")   # a local file, same schema
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wow import WowError, io

log = logging.getLogger(__name__)

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Row:
    """One raw record and where it came from.

    Attributes:
        data: the record.
        where: ``<file>:<line>`` or ``<hub id> row <i>``, for error messages.
        index: position in the source (0-based).
    """

    data: dict
    where: str
    index: int


def row_error(row: Row, problem: str) -> WowError:
    """A WowError for a malformed row: names the file and line and says what is wrong.

    Args:
        row: the offending row.
        problem: what is wrong with it.

    Returns:
        the error, to raise.
    """
    return WowError(f"{row.where}: {problem}; fix or remove that row.")


def field(row: Row, name: str, kind: type | tuple[type, ...] | None = None) -> Any:
    """A required field of a row, type-checked.

    Args:
        row: the row.
        name: the field name.
        kind: accepted type(s); None accepts anything but a missing value.

    Returns:
        the value.

    Raises:
        WowError: naming the file and line when the field is missing or of the wrong type.
    """
    if name not in row.data or row.data[name] is None:
        raise row_error(row, f"missing field {name!r} (fields present: {sorted(row.data)})")
    value = row.data[name]
    if kind is not None and not isinstance(value, kind):
        raise row_error(row, f"field {name!r} should be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def require_file(path: str | os.PathLike, what: str) -> Path:
    """Check that a user-supplied data file exists.

    Args:
        path: the file.
        what: what the file is and where to get it (for the message).

    Returns:
        the path.

    Raises:
        WowError: saying what to do when the file is missing.
    """
    p = Path(path)
    if not p.is_file():
        raise WowError(f"{p} not found: {what}. Pass its location with path=...")
    return p


def read_jsonl_rows(path: str | os.PathLike, what: str) -> Iterator[Row]:
    """Rows of a JSONL file, with line numbers; a line that is not a JSON object raises a WowError.

    Args:
        path: the file.
        what: what the file is and where to get it (for the missing-file message).

    Yields:
        one :class:`Row` per non-empty line.
    """
    p = require_file(path, what)
    for lineno, data in io.iter_jsonl(p):
        yield Row(data, f"{p}:{lineno}", lineno - 1)


def read_csv_rows(path: str | os.PathLike, what: str, columns: list[str]) -> Iterator[Row]:
    """Rows of a CSV file with a header, with line numbers; missing columns raise a WowError.

    Args:
        path: the file.
        what: what the file is and where to get it.
        columns: required columns.

    Yields:
        one :class:`Row` per data record (``where`` gives the line the record starts on).
    """
    p = require_file(path, what)
    with open(p, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise WowError(f"{p}: missing column(s) {missing} (header: {reader.fieldnames}); expected {columns}.")
        start = reader.line_num + 1
        for i, record in enumerate(reader):
            if None in record or any(v is None for v in record.values()):
                raise WowError(f"{p}:{start}: wrong number of fields; fix or remove that row.")
            yield Row(dict(record), f"{p}:{start}", i)
            start = reader.line_num + 1


def load_rows(
    path: str | None,
    split: str = "train",
    data_files: str | list[str] | dict | None = None,
    name: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """Rows of a hub dataset or a local file of the same schema, through ``datasets.load_dataset``.

    Args:
        path: a hub id (``TIGER-Lab/MMLU-Pro``), a builder name (``json``/``csv``/``parquet``) or a local file;
            None with ``data_files`` infers the builder from the file extension.
        split: the split to read. A local file given as one path is read as that split.
        data_files: local file(s) for a builder.
        name: dataset configuration name.
        limit: read only the first ``limit`` rows.

    Returns:
        the rows, with ``where`` naming the file and line (local files) or the hub id and row.

    Raises:
        WowError: a missing file, an unreachable hub id (with what to do) or an unreadable file.
    """
    import datasets

    if path is not None and Path(path).suffix in _BUILDERS and data_files is None:
        data_files, path = path, None
    files = _file_list(data_files)
    for f in files:
        require_file(f, "a local file of the dataset's schema")
    if path is None:
        if not files:
            raise WowError("give a hub id with path=... or local files with data_files=...")
        path = _BUILDERS.get(Path(files[0]).suffix)
        if path is None:
            raise WowError(
                f"{files[0]}: cannot tell the format from the extension (use .jsonl, .json, .csv, .parquet)"
            )
    if isinstance(data_files, (str, os.PathLike)) or (isinstance(data_files, list) and data_files):
        data_files = {split: [str(f) for f in files]}
    try:
        ds = datasets.load_dataset(path, name=name, split=split, data_files=data_files)
    except (ConnectionError, FileNotFoundError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        raise WowError(
            f"could not load {path!r} split {split!r} ({type(e).__name__}: {str(e)[:200]})."
            + (" HF_HUB_OFFLINE=1 is set: " if offline else " ")
            + "Pre-download it with network access (datasets.load_dataset) or pass a local copy with data_files=..."
        ) from None
    except Exception as e:  # a malformed local file surfaces as a generation error deep in datasets
        if files and Path(files[0]).suffix == ".jsonl":
            for f in files:
                for _ in read_jsonl_rows(f, "a local file"):
                    pass
        raise WowError(f"could not read {files or path} ({type(e).__name__}: {str(e)[:300]})") from None
    if limit is not None and limit < len(ds):
        ds = ds.select(range(limit))
    suffix = Path(files[0]).suffix if len(files) == 1 else ""
    offset = {".jsonl": 1, ".csv": 2}.get(suffix)  # file line of row 0 (a csv record spanning lines shifts it)
    rows = []
    for i, record in enumerate(ds):
        where = f"{files[0]}:{i + offset}" if offset else f"{files or path} row {i}"
        rows.append(Row(dict(record), where, i))
    return rows


def seeded_sample(items: list, n: int | None, seed: int, source: object = "the data source") -> list:
    """A seeded sample of ``n`` items, in a seed-determined order; all of them when ``n`` is None or too large.

    Args:
        items: the pool (its order must be deterministic).
        n: how many; None for all.
        seed: the seed.
        source: what the pool was read from, for the error message.

    Returns:
        the sample.

    Raises:
        WowError: the pool is empty.
    """
    if not items:
        raise WowError(
            f"{source} holds no usable rows (only a header, or no row of the requested split or subjects); "
            "point the task at a file with data."
        )
    if n is None or n >= len(items):
        if n is not None and n > len(items):
            log.warning("asked for %d questions, the source has %d: using all of them", n, len(items))
        return list(items)
    return random.Random(f"sample/{seed}").sample(items, n)


def take_valid(pool: list, n: int | None, seed: int, make: Callable[[Any], Any | None]) -> list:
    """Walk a seeded shuffle of ``pool`` and keep the first ``n`` items that ``make`` turns into questions.

    ``make`` returns None for items that are well-formed but unusable (e.g. a chess position with fewer than four
    legal moves); those are counted and logged, never silently dropped from a requested count.

    Args:
        pool: candidate items.
        n: how many questions; None for all usable items.
        seed: the seed.
        make: item -> question or None.

    Returns:
        the questions made.
    """
    order = list(pool)
    random.Random(f"sample/{seed}").shuffle(order)
    out, unusable = [], 0
    for item in order:
        if n is not None and len(out) >= n:
            break
        q = make(item)
        if q is None:
            unusable += 1
        else:
            out.append(q)
    if unusable:
        log.info("%d source items could not be made into questions (see the task's docs for why)", unusable)
    if n is not None and len(out) < n:
        log.warning("asked for %d questions, only %d could be made from the source", n, len(out))
    return out


def _file_list(data_files: str | list | dict | None) -> list[str]:
    if data_files is None:
        return []
    if isinstance(data_files, (str, os.PathLike)):
        return [str(data_files)]
    if isinstance(data_files, dict):
        return [str(f) for v in data_files.values() for f in ([v] if isinstance(v, (str, os.PathLike)) else v)]
    return [str(f) for f in data_files]


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
