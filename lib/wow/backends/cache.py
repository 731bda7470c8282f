"""The on-disk call cache: every model call of a run goes through it.

A SQLite file in WAL mode maps a key to a result. The key is the sha256 of the canonical JSON of the engine's
identity (engine, model, dtype, adapter hash, endpoint: never a secret), the kind of call and the request's
:meth:`~wow.backends.base.ChatRequest.key_fields` (messages, every decoding parameter, seed, sample index, prefill,
template version). Each result is committed as it arrives, so a process killed at any moment loses at most the calls
in flight, and a rerun makes no call whose result is stored. A file that is not a wow cache (corrupted, another
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
        WowError: the file is corrupted, is another program's SQLite file, or has another schema version.
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
        todo: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            if key in todo:  # the same request twice in one batch: computed once
                todo[key].append(i)
                continue
            value = self.cache.get(key)
            if value is None:
                todo[key] = [i]
                continue
            out[i] = Completion(**value, cached=True)
            if on_result is not None:
                on_result(i, out[i])
        firsts = [idx[0] for idx in todo.values()]
        if firsts:
            log.info(
                "%s %s: %d cached, %d to compute", self.name, self.model, len(requests) - len(firsts), len(firsts)
            )

            def store(j: int, completion: Completion) -> None:
                key = keys[firsts[j]]
                self.cache.put(key, completion.to_dict(), "generate", self.name, self.model)
                for i in todo[key]:
                    out[i] = completion
                    if on_result is not None:
                        on_result(i, completion)

            self.engine.generate([requests[i] for i in firsts], progress=progress, on_result=store)
        return out

    def _choice_logprobs(self, requests: list[ChatRequest], choices: list[str]) -> list[dict[str, float]]:
        keys = [self._key("choice_logprobs", {"request": r.key_fields(), "choices": choices}) for r in requests]
        out: list[dict | None] = [self.cache.get(k) for k in keys]
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            computed = self.engine.choice_logprobs([requests[i] for i in missing], choices)
            for i, value in zip(missing, computed, strict=True):
                self.cache.put(keys[i], value, "choice_logprobs", self.name, self.model)
                out[i] = value
        return out

    def usage(self) -> dict:
        """The wrapped engine's usage plus this process's cache hits and misses."""
        return {**self.engine.usage(), **self.cache.stats()}

    def close(self) -> None:
        """Close the wrapped engine and the cache file."""
        self.engine.close()
        self.cache.close()
