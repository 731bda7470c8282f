"""The on-disk call cache: every model call of a run goes through it.

A SQLite file in WAL mode maps a key to a result. The key is the sha256 of the canonical JSON of the engine's
identity (engine, model, dtype, adapter hash, endpoint: never a secret), the kind of call and the request's
:meth:`~wow.backends.base.ChatRequest.key_fields` (messages, every decoding parameter, seed, sample index, prefill,
template version). Each result is committed as it arrives, so a process killed at any moment loses at most the calls
in flight, and a rerun makes no call whose result is stored. An engine that batches (a local model, whose results
may depend in their last bits on the batch they were decoded in) is run in the batches it plans for the *whole*
request list, each committed in one transaction once complete: a resumed run decodes exactly the batches an
uninterrupted one does, so it writes the same bytes whatever the kernels' batch behaviour. A file that is not a wow cache (corrupted, another
program's SQLite file, another schema version) is reported with what to do; it is never overwritten.

Example::

    engine = CachedEngine(TransformersEngine("smollm2-135m"), CallCache("outputs/demo/cache.sqlite"))
    engine.generate(requests)   # a second run is served from the file: engine.cache.misses == 0
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path

from wow import WowError
from wow.backends.base import ChatRequest, Completion, Engine, ResultCallback

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
APPLICATION = "wow-call-cache"
SQLITE_HEADER = b"SQLite format 3\x00"


def cache_key(identity: dict, kind: str, payload: dict) -> str:
    """sha256 (hex) of the canonical JSON of ``{identity, kind, payload}`` (sorted keys, no whitespace)."""
    blob = json.dumps(
        {"identity": identity, "kind": kind, "payload": payload},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """A key -> JSON store in one SQLite file (WAL mode, one commit per stored result).

    Args:
        path: the cache file; created with its folder when missing.

    Attributes:
        hits: lookups answered from the file.
        misses: lookups that were not.

    Raises:
        WowError: the file is corrupted, is another program's SQLite file, has another schema version, or cannot
            be opened (locked by another process, an I/O error, a read-only folder).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        if not fresh:
            with open(self.path, "rb") as f:
                if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise WowError(self._bad("is not a SQLite file (corrupted, or some other file)"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                self._create(db)
            else:
                self._check(db, tables)
            db.execute("PRAGMA journal_mode=WAL")
            # how many times each stored call was computed (a resumed run must never compute one twice)
            db.execute("CREATE TABLE IF NOT EXISTS computed (key TEXT PRIMARY KEY, n INTEGER NOT NULL)")
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as e:  # locked, I/O error, read-only: the file may well be sound
            raise WowError(
                f"cache file {self.path} could not be opened (SQLite: {e}). Nothing says it is damaged: another "
                "process may be using it (a second run in the same run folder, or a program reading it) or its "
                "folder may not be writable. Stop that process (or fix the folder's permissions) and rerun; the "
                "file was left untouched."
            ) from None
        except sqlite3.DatabaseError as e:
            raise WowError(self._bad(f"is corrupted (SQLite: {e})")) from None
        return db

    def _create(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute(
            "CREATE TABLE calls (key TEXT PRIMARY KEY, kind TEXT NOT NULL, engine TEXT NOT NULL, "
            "model TEXT NOT NULL, value TEXT NOT NULL, created REAL NOT NULL)"
        )
        db.executemany(
            "INSERT INTO meta VALUES (?, ?)", [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))]
        )
        db.execute("COMMIT")

    def _check(self, db: sqlite3.Connection, tables: set[str]) -> None:
        if not {"meta", "calls"} <= tables:
            raise WowError(self._bad(f"is a SQLite file of another program (tables: {', '.join(sorted(tables))})"))
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("application") != APPLICATION:
            raise WowError(self._bad("is a SQLite file of another program (no wow cache marker)"))
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise WowError(
                f"cache {self.path} has schema version {meta.get('schema_version')}, this wow reads version "
                f"{SCHEMA_VERSION}. Point the run at a new cache file (or delete this one; its calls are made again)."
            )
        db.execute("SELECT key, value FROM calls LIMIT 1").fetchall()

    def _bad(self, what: str) -> str:
        return (
            f"cache file {self.path} {what}. It was left untouched: move it away (or delete it if it is yours) and "
            f"rerun; the calls it held will be made again."
        )

    def get(self, key: str) -> dict | None:
        """The stored value of ``key`` (counted as a hit), or None (counted as a miss)."""
        with self._lock:
            try:
                row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as e:
                raise WowError(self._bad(f"cannot be read (SQLite: {e})")) from None
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
            return json.loads(row[0])

    def put(self, key: str, value: dict, kind: str = "generate", engine: str = "", model: str = "") -> None:
        """Store ``value`` under ``key`` and commit at once (an existing entry is replaced)."""
        blob = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.execute(
                    "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)",
                    (key, kind, engine, model, blob, time.time()),
                )
                self._db.execute("INSERT INTO computed VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1", (key,))
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise WowError(self._bad(f"cannot be written (SQLite: {e})")) from None

    def put_many(
        self, items: list[tuple[str, dict]], kind: str = "generate", engine: str = "", model: str = ""
    ) -> None:
        """Store ``(key, value)`` pairs in one transaction (all or none survive a kill)."""
        if not items:
            return
        now = time.time()
        rows = [
            (key, kind, engine, model, json.dumps(value, ensure_ascii=False, separators=(",", ":")), now)
            for key, value in items
        ]
        with self._lock:
            try:
                self._db.execute("BEGIN")
                self._db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._db.executemany(
                    "INSERT INTO computed VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET n = n + 1",
                    [(key,) for key, _ in items],
                )
                self._db.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise WowError(self._bad(f"cannot be written (SQLite: {e})")) from None

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]

    def computed_twice(self) -> dict[str, int]:
        """Keys whose call was computed more than once (key -> times): empty unless a stored result was lost."""
        with self._lock:
            return dict(self._db.execute("SELECT key, n FROM computed WHERE n > 1").fetchall())

    def stats(self) -> dict:
        """``{"cache_hits": ..., "cache_misses": ...}`` of this process."""
        return {"cache_hits": self.hits, "cache_misses": self.misses}

    def close(self) -> None:
        """Close the file (the WAL is checkpointed)."""
        with self._lock:
            self._db.close()


class CachedEngine(Engine):
    """An engine whose every call goes through a :class:`CallCache`.

    Identical requests within one batch are sent once. Results are written as the wrapped engine produces them
    (``on_result``), so a killed run resumes where it stopped.

    Args:
        engine: the wrapped engine.
        cache: a :class:`CallCache` or a path to one.
    """

    def __init__(self, engine: Engine, cache: CallCache | str | Path):
        super().__init__(engine.model)
        self.engine = engine
        self.cache = cache if isinstance(cache, CallCache) else CallCache(cache)
        self.name = engine.name
        self.supports_prefill = engine.supports_prefill
        self.streams_results = True

    @property
    def hits(self) -> int:
        """Results served from the cache file."""
        return self.cache.hits

    @property
    def misses(self) -> int:
        """Results that had to be computed."""
        return self.cache.misses

    def identity(self) -> dict:
        """The wrapped engine's identity."""
        return self.engine.identity()

    def _key(self, kind: str, payload: dict) -> str:
        return cache_key(self.engine.identity(), kind, payload)

    def _generate(
        self, requests: list[ChatRequest], progress: bool = False, on_result: ResultCallback | None = None
    ) -> list[Completion]:
        keys = [self._key("generate", r.key_fields()) for r in requests]
        out: list[Completion | None] = [None] * len(requests)
        stored, same = self._lookup(keys)
        for i, key in enumerate(keys):
            if key in stored:
                out[i] = Completion(**stored[key], cached=True)
                if on_result is not None:
                    on_result(i, out[i])
        firsts = [idx[0] for idx in same.values()]  # one index per distinct request, in order
        todo = [i for i in firsts if keys[i] not in stored]
        if not todo:
            return out
        log.info("%s %s: %d cached, %d to compute", self.name, self.model, len(requests) - len(todo), len(todo))

        def deliver(i: int, completion: Completion) -> None:
            for k in same[keys[i]]:
                out[k] = completion
                if on_result is not None:
                    on_result(k, completion)

        plan = self.engine.plan([requests[i] for i in firsts], "generate")
        if plan is None:  # independent results: each stored as it arrives

            def store(j: int, completion: Completion) -> None:
                self.cache.put(keys[todo[j]], completion.to_dict(), "generate", self.name, self.model)
                deliver(todo[j], completion)

            self.engine.generate([requests[i] for i in todo], progress=progress, on_result=store)
            return out
        runs = [[firsts[j] for j in batch] for batch in plan if any(keys[firsts[j]] not in stored for j in batch)]
        flat = [i for batch in runs for i in batch]
        local, start = [], 0
        for batch in runs:
            local.append(list(range(start, start + len(batch))))
            start += len(batch)
        batch_of = {j: b for b, idx in enumerate(local) for j in idx}
        pending: dict[int, dict[int, Completion]] = {}

        def collect(j: int, completion: Completion) -> None:
            b = batch_of[j]
            pending.setdefault(b, {})[j] = completion
            if len(pending[b]) < len(local[b]):
                return
            done = pending.pop(b)
            fresh = [(flat[k], c) for k, c in sorted(done.items()) if keys[flat[k]] not in stored]
            self.cache.put_many([(keys[i], c.to_dict()) for i, c in fresh], "generate", self.name, self.model)
            for i, c in fresh:
                deliver(i, c)

        self.engine.generate([requests[i] for i in flat], progress=progress, on_result=collect, batches=local)
        return out

    def _lookup(self, keys: list[str]) -> tuple[dict[str, dict], dict[str, list[int]]]:
        """The stored values of the distinct ``keys`` and, per distinct key, the indices that carry it."""
        same: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            same.setdefault(key, []).append(i)
        stored = {}
        for key in same:
            value = self.cache.get(key)
            if value is not None:
                stored[key] = value
        return stored, same

    def _choice_logprobs(self, requests: list[ChatRequest], choices: list[str]) -> list[dict[str, float]]:
        keys = [self._key("choice_logprobs", {"request": r.key_fields(), "choices": choices}) for r in requests]
        stored, same = self._lookup(keys)
        firsts = [idx[0] for idx in same.values()]
        todo = [i for i in firsts if keys[i] not in stored]
        if not todo:
            return [stored[k] for k in keys]
        plan = self.engine.plan([requests[i] for i in firsts], "choice_logprobs")
        if plan is None:  # independent results: all computed in one call, stored together
            computed = self.engine.choice_logprobs([requests[i] for i in todo], choices)
            fresh = [(keys[i], v) for i, v in zip(todo, computed, strict=True)]
            self.cache.put_many(fresh, "choice_logprobs", self.name, self.model)
            stored.update(fresh)
            return [stored[k] for k in keys]
        for batch in plan:  # one planned batch per call, committed at once
            idx = [firsts[j] for j in batch]
            if all(keys[i] in stored for i in idx):
                continue
            computed = self.engine.choice_logprobs(
                [requests[i] for i in idx], choices, batches=[list(range(len(idx)))]
            )
            fresh = [(keys[i], v) for i, v in zip(idx, computed, strict=True) if keys[i] not in stored]
            self.cache.put_many(fresh, "choice_logprobs", self.name, self.model)
            stored.update(fresh)
        return [stored[k] for k in keys]

    def usage(self) -> dict:
        """The wrapped engine's usage plus this process's cache hits and misses."""
        return {**self.engine.usage(), **self.cache.stats()}

    def close(self) -> None:
        """Close the wrapped engine and the cache file."""
        self.engine.close()
        self.cache.close()


def read_calls(path: str | Path) -> list[dict]:
    """Every call stored in a cache file, read without writing anything: one dict per call.

    Each dict holds ``kind``, ``engine``, ``model``, ``created`` (unix time) and, for ``generate`` calls, the
    ``prompt_tokens`` and ``completion_tokens`` of the stored completion (None for other kinds, which store no
    tokens). A missing file gives no rows. A file that no process has open (no ``-wal`` file next to it) is read as
    immutable, so no lock or side file is created; one a run is writing is opened read-only and read with its WAL.

    Raises:
        WowError: the file is not a wow cache, or cannot be read.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    # no -wal file: no connection is open; one opened meanwhile writes to its WAL, not to this file (until a
    # checkpoint, after about 1000 pages), so reading the file as immutable sees a consistent state
    live = Path(f"{path}-wal").exists()
    uri = f"{path.resolve().as_uri()}?{'mode=ro' if live else 'immutable=1'}"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=60)
    except sqlite3.DatabaseError as e:
        raise WowError(f"cache file {path} cannot be opened (SQLite: {e})") from None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "calls" not in tables:
            raise WowError(f"cache file {path} holds no table of calls: it is not a wow cache")
        rows = db.execute(
            "SELECT kind, engine, model, created, json_extract(value, '$.prompt_tokens'), "
            "json_extract(value, '$.completion_tokens') FROM calls"
        ).fetchall()
    except sqlite3.DatabaseError as e:
        raise WowError(f"cache file {path} cannot be read (SQLite: {e})") from None
    finally:
        db.close()
    return [
        {
            "kind": kind,
            "engine": engine,
            "model": model,
            "created": float(created),
            "prompt_tokens": int(prompt or 0) if kind == "generate" else None,
            "completion_tokens": int(completion or 0) if kind == "generate" else None,
        }
        for kind, engine, model, created, prompt, completion in rows
    ]
