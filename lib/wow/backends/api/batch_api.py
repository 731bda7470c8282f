"""The OpenAI Batch API mode of the ``openai`` engine (large judge runs at half price).

Write every request as one line of a JSONL file, upload it, create a batch, poll until it ends, then read the
output (and error) files. The id of a submitted batch is kept next to its input file, so a rerun after a kill
attaches to the batch already running instead of paying for it twice. Lines that succeeded are handed on (and
cached) before an :class:`EngineError` reports the ones that did not.

Example::

    engine = OpenAIEngine("gpt-4o", batch=True, batch_dir="outputs/run/batches")
    engine.generate(requests)   # hours later: one Completion per request
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

from wow import io
from wow.backends.base import ChatRequest, Completion, EngineError, ResultCallback

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
FINAL = ("completed", "failed", "expired", "cancelled")
#: The Batch API costs half the live price.
BATCH_PRICE_FACTOR = 0.5


def batch_lines(engine, requests: list[ChatRequest]) -> list[dict]:
    """The JSONL lines of a batch input file: ``custom_id`` ``request-<i>``, POST to the chat endpoint."""
    return [
        {"custom_id": f"request-{i}", "method": "POST", "url": ENDPOINT, "body": engine.body(r)}
        for i, r in enumerate(requests)
    ]


def run_batch(engine, requests: list[ChatRequest], on_result: ResultCallback | None = None) -> list[Completion]:
    """Send ``requests`` as one batch through ``engine``'s client and collect the completions, in order.

    Args:
        engine: an :class:`~wow.backends.api.openai_engine.OpenAIEngine` (its client, bodies, polling interval).
        requests: the chat requests.
        on_result: called as ``on_result(i, completion)`` for each line that succeeded.

    Returns:
        One completion per request.

    Raises:
        EngineError: the batch failed, or some lines have no result (the others were handed on first).
    """
    client = engine.client
    lines = batch_lines(engine, requests)
    blob = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines)
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]
    folder = Path(engine.batch_dir or Path(tempfile.gettempdir()) / "wow-batches")
    input_path, state_path = folder / f"batch-{digest}.jsonl", folder / f"batch-{digest}.id"
    batch = _attach(client, state_path)
    if batch is None:
        io.write_text(input_path, blob)
        with open(input_path, "rb") as f:
            uploaded = client.files.create(file=f, purpose="batch")
        batch = client.batches.create(input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h")
        io.write_text(state_path, batch.id)
        log.info("submitted batch %s (%d requests, input %s)", batch.id, len(requests), input_path)
    while batch.status not in FINAL:
        time.sleep(engine.poll_interval)
        batch = client.batches.retrieve(batch.id)
        counts = getattr(batch, "request_counts", None)
        log.info("batch %s: %s %s", batch.id, batch.status, counts or "")
    results: list[Completion | None] = [None] * len(requests)
    failures: dict[int, str] = {}
    for row in _read(client, getattr(batch, "output_file_id", None)) + _read(
        client, getattr(batch, "error_file_id", None)
    ):
        i = _index(row, len(requests))
        if i is None:
            continue
        response, error = row.get("response") or {}, row.get("error")
        if error or response.get("status_code") != 200:
            failures[i] = _line_error(error, response)
            continue
        try:
            results[i] = engine.completion(response.get("body") or {}, requests[i], BATCH_PRICE_FACTOR)
        except Exception as e:  # a malformed line: reported below like any other failure
            failures[i] = f"{type(e).__name__}: {e}"
            continue
        if on_result is not None:
            on_result(i, results[i])
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        i = missing[0]
        why = failures.get(i) or f"batch {batch.id} ended {batch.status!r} without a result for it"
        errors = getattr(getattr(batch, "errors", None), "data", None)
        if errors:
            why += f"; batch errors: {errors}"
        state_path.unlink(missing_ok=True)  # a rerun submits the missing requests afresh
        raise EngineError(
            f"{engine.describe(i, requests[i])} failed in batch {batch.id}: {why} "
            f"({len(missing)} of {len(requests)} requests without a result)."
        )
    state_path.unlink(missing_ok=True)
    return results


def _attach(client, state_path: Path):
    """The batch recorded in ``state_path`` when it can still deliver, else None."""
    if not state_path.exists():
        return None
    batch = client.batches.retrieve(state_path.read_text().strip())
    if batch.status in ("failed", "expired", "cancelled") and not getattr(batch, "output_file_id", None):
        return None
    log.info("attached to batch %s (%s)", batch.id, batch.status)
    return batch


def _read(client, file_id: str | None) -> list[dict]:
    if not file_id:
        return []
    content = client.files.content(file_id)
    text = content.text if hasattr(content, "text") else content.read().decode("utf-8")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("batch file %s line %d is not JSON; its request counts as failed", file_id, n)
    return rows


def _index(row: dict, n: int) -> int | None:
    cid = str(row.get("custom_id", ""))
    if not cid.startswith("request-") or not cid[8:].isdigit() or int(cid[8:]) >= n:
        log.warning("batch output line with unknown custom_id %r ignored", cid)
        return None
    return int(cid[8:])


def _line_error(error, response: dict) -> str:
    if error:
        return f"{error.get('code', '')}: {error.get('message', error)}" if isinstance(error, dict) else str(error)
    body = response.get("body") or {}
    message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    return f"HTTP {response.get('status_code')}" + (f": {message}" if message else "")
