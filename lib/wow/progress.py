"""Progress of the library's long loops, in a notebook and in ``wow run``'s terminal.

:func:`bar` is a ``tqdm`` bar (a widget in JupyterLab) that also logs a line ``<what>: done/planned <unit>s (p%),
about T left`` at most every :data:`LOG_EVERY_S` seconds and once at the end of a loop that took longer than that.
``wow run`` shows the kernel's ``wow`` log lines (:class:`wow.cli.run.StageEcho`), where a widget cannot be drawn, so a
user sees the work done of the work planned, with an estimate of the time left, in every stage.

Example::

    with progress.bar(len(requests), "answer", "sampling shortest_path") as bar:
        for r in requests:
            ...
            bar.update(1)
"""

from __future__ import annotations

import logging
import os
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

#: Seconds between two logged progress lines of one loop (``WOW_PROGRESS_EVERY_S`` replaces it; 0 logs every step).
LOG_EVERY_S = float(os.environ.get("WOW_PROGRESS_EVERY_S", "30"))


def duration(seconds: float) -> str:
    """``45 s``, ``3.2 min`` or ``1.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class Bar:
    """A tqdm bar whose progress is also logged (see the module); ``disable=True`` shows and logs nothing."""

    def __init__(self, total: int, unit: str, desc: str, disable: bool | None = None, every: float | None = None):
        self.total, self.unit, self.desc = total, unit, desc
        self.done = 0
        self._logs = disable is not True and total > 0
        self._every = LOG_EVERY_S if every is None else every
        self._start = time.monotonic()
        self._next = self._start + self._every
        self._tqdm = tqdm(total=total, unit=unit, desc=desc, disable=disable)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self._tqdm.update(n)
        self.done += n
        now = time.monotonic()
        if self._logs and now >= self._next and self.done < self.total:
            self._next = now + self._every
            left = (now - self._start) / self.done * (self.total - self.done) if self.done else None
            log.info(
                "%s: %d/%d %ss (%.0f%%)%s",
                self.desc,
                self.done,
                self.total,
                self.unit,
                100 * self.done / self.total,
                f", about {duration(left)} left" if left is not None else "",
            )

    def close(self) -> None:
        """Close the bar; a loop that took longer than the logging interval says how long."""
        self._tqdm.close()
        took = time.monotonic() - self._start
        if self._logs and took >= self._every:
            log.info("%s: %d/%d %ss in %s", self.desc, self.done, self.total, self.unit, duration(took))

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int, unit: str, desc: str, disable: bool | None = None, every: float | None = None) -> Bar:
    """A progress bar over ``total`` units (``answer``, ``call``, ``pair``) named ``desc``, logging its progress
    every ``every`` seconds (default :data:`LOG_EVERY_S`); see :class:`Bar`."""
    return Bar(total, unit, desc, disable, every)
