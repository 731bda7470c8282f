"""One writer per run folder: an OS lock on ``outputs/<run>/.wow.lock``, held for the life of the process.

``wow run`` and a notebook run by hand (its set-up call, :func:`wow.run_folder.stage_setup.setup`) take the lock before they
write anything. A second writer is refused at once with a :class:`wow.WowError` that names the folder and the holder
(pid, command, start time), which the holder writes into the lock file after taking it. The lock is ``flock`` on
that file: the operating system releases it when the holder's process ends, also on ``kill -9``, so there is never a
stale lock to clean up. The lock file itself is never deleted (deleting it would let two processes lock two
different files of the same name); what it says about a holder that is gone is simply ignored. A process that takes
the lock removes the temporary files that killed writers left in the folder (:func:`wow.io.remove_temporaries`).

The notebooks ``wow run`` executes run in kernels of their own, child processes of the holder. The holder gives them
its token in the environment variable :data:`ENV_VAR` (:func:`kernel_env`); a process whose token matches the one in
the lock file works under its parent's lock instead of being refused by it. Read-only uses (``wow report``, opening
a notebook to look) take no lock.

Example::

    from wow.run_folder import lock
    with lock.hold(P.run_dir):      # refused with a WowError while another process writes there
        ...                         # write the run's artefacts
    lock.holder(P.run_dir)          # None, or {"pid": ..., "command": ..., "started": ...}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from wow import WowError, io, layout

log = logging.getLogger(__name__)

#: Environment variable through which a holder passes its token to the notebook kernels it starts.
ENV_VAR = "WOW_RUN_LOCK_TOKEN"
#: How long a refused process waits for a holder that has just taken the lock to write who it is.
_INFO_WAIT_S = 1.0

_TOKEN = secrets.token_hex(16)  # one per process: it names this process in every lock it holds
_HELD: dict[Path, list] = {}  # resolved run folder -> [file descriptor, how many times acquired]


def acquire(run_dir: str | os.PathLike) -> str:
    """Take the write lock of ``run_dir`` (created if missing) for this process, until :func:`release` or its end.

    Returns:
        ``"acquired"`` (taken now), ``"held"`` (this process already holds it; counted, so every acquire needs its
        release) or ``"parent"`` (the process that started this one holds it and passed its token on).

    Raises:
        WowError: another process holds the lock; the message names the folder and the holder.
    """
    run_dir = Path(run_dir).resolve()
    if run_dir in _HELD:
        _HELD[run_dir][1] += 1
        return "held"
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / layout.LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + _INFO_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        info = _read_info(path)
        if info.get("token") and info.get("token") == os.environ.get(ENV_VAR):
            os.close(fd)
            log.debug("%s: working under the lock of the parent process %s", run_dir, info.get("pid"))
            return "parent"
        if _alive(info) or time.monotonic() > deadline:
            os.close(fd)
            raise WowError(_refusal(run_dir, info))
        # taken a moment ago (or probed by holder()): the new holder has not written its name over the old one yet
        time.sleep(0.05)
    info = {
        "pid": os.getpid(),
        "command": _command(),
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "token": _TOKEN,
    }
    # written in place, never replaced by a rename: the lock lives on this file's inode
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    _HELD[run_dir] = [fd, 1]
    log.debug("%s: write lock taken by pid %d", run_dir, os.getpid())
    # the only writer now: temporary files of writers killed before their rename are debris (the report folder is
    # left alone: `wow report` writes there without the lock)
    removed = io.remove_temporaries(run_dir, skip=(layout.REPORT_DIR,))
    if removed:
        log.info("%s: removed %d temporary file(s) left by a killed writer", run_dir, len(removed))
    return "acquired"


def release(run_dir: str | os.PathLike) -> None:
    """Give back one :func:`acquire` of this process; the lock is released with the last one."""
    run_dir = Path(run_dir).resolve()
    held = _HELD.get(run_dir)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[run_dir]
    fd = held[0]
    try:
        os.ftruncate(fd, 0)  # nobody holds it any more
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike) -> Iterator[str]:
    """Hold the write lock of ``run_dir`` for the block (see :func:`acquire`; yields what it returned)."""
    how = acquire(run_dir)
    try:
        yield how
    finally:
        if how != "parent":
            release(run_dir)


def holds(run_dir: str | os.PathLike) -> bool:
    """True when this process holds the lock of ``run_dir``."""
    return Path(run_dir).resolve() in _HELD


def holder(run_dir: str | os.PathLike) -> dict | None:
    """Who holds the lock of ``run_dir`` now (pid, command, started, host), or None when nobody does."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / layout.LOCK_FILE
    if run_dir in _HELD:
        return _public(_read_info(path))
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        # a shared probe: it conflicts with a holder's exclusive lock and with nothing else for long
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _public(_read_info(path))
    finally:
        os.close(fd)
    return None


def kernel_env(run_dir: str | os.PathLike) -> dict[str, str]:
    """Environment for the notebook kernels this process starts on ``run_dir``, which it must hold."""
    if not holds(run_dir):
        raise WowError(
            f"{run_dir}: this process does not hold the folder's write lock; take it with wow.run_folder.lock.hold."
        )
    return {ENV_VAR: _TOKEN}


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _alive(info: dict) -> bool:
    """True when ``info`` names a process that still runs (on another host: assumed to)."""
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if info.get("host") and info["host"] != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _public(info: dict) -> dict:
    return {k: v for k, v in info.items() if k != "token"}


def _command(argv: list[str] | None = None) -> str:
    """The command line of this process, on one line (an error naming it is one line) and at most 300 characters."""
    argv = argv or getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return _one_line(shlex.join(argv))


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _refusal(run_dir: Path, info: dict) -> str:
    if not info.get("pid"):
        who = "another process (it has not said which)"
    else:
        who = f"pid {info['pid']}"
        if info.get("host") and info["host"] != socket.gethostname():
            who += f" on {info['host']}"
        who += f" ({_one_line(info.get('command', '?'))}), started {info.get('started', '?')}"
    kernel = "ipykernel" in str(info.get("command", ""))
    what = (
        "a notebook kernel keeps the folder until it is shut down (Kernel > Shut Down Kernel in JupyterLab)"
        if kernel
        else "wait for it to end or stop it"
    )
    return (
        f"{run_dir} is being written by {who}; one writer per run folder: {what}, or pick another run_name. "
        "Reading it (wow report, opening the notebooks) needs no lock."
    )
