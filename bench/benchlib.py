"""Shared helpers of the benchmark scripts: output folder, machine facts, timers, tables, child-process peaks.

Every benchmark measures ratios side by side in one process run (the machine is shared and noisy), records the load
average before and after, and writes ``outputs/bench/<name>.json``. Tables are printed as markdown.

Example::

    from benchlib import Timer, machine, write_result
    with Timer() as t:
        work()
    write_result("sampling", {"rows": rows, "machine": machine()})
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import wow  # noqa: F401  (before torch: the OpenMP wait policy wow's users get, lib/wow/__init__.py)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "outputs" / "bench"
BENCH_DIR = Path(__file__).resolve().parent


def out_dir() -> Path:
    """``outputs/bench`` (or ``$WOW_BENCH_OUT``), created when missing."""
    folder = Path(os.environ.get("WOW_BENCH_OUT", OUT))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def set_dtype(params: str | Path | None = None) -> str:
    """The precision a parameter set's runs use on this machine (its ``dtype``, default ``auto``, resolved by
    :func:`wow.backends.precision.resolve_dtype`): benchmarks measure the workload the sets run, so never a precision this CPU
    only emulates unless the set asks for it."""
    import yaml
    from wow.backends import precision

    values = yaml.safe_load(Path(params or REPO / "parameters" / "demo.yaml").read_text(encoding="utf-8")) or {}
    return precision.resolve_dtype(str(values.get("dtype", "auto")))


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages (rounded)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """CPU model and core count (from ``lscpu``), Python and library versions, torch threads."""
    info = {"cpu_model": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(re.findall(r"^([^:\n]+):\s*(.*)$", text, re.M))
        info["cpu_model"] = fields.get("Model name", info["cpu_model"]).strip()
        info["cores"] = int(fields.get("CPU(s)", info["cores"]))
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    versions = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "trl", "peft"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    info["versions"] = versions
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    info["gomp_spincount"] = os.environ.get("GOMP_SPINCOUNT")
    try:
        from wow.backends import precision

        info["cpu_family"] = precision.cpu_family()
        info["cpu_flags"] = precision.machine()["cpu_flags"]
        info["auto_dtype"] = precision.resolve_dtype("auto")
    except ImportError:
        pass
    return info


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds`` (wall clock, perf_counter)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def gemm_gflops(m: int, k: int, n: int, dtype: str = "float32", threads: int | None = None, reps: int = 3) -> float:
    """GFLOP/s of an ``(m x k) @ (k x n)`` matrix product in ``dtype`` on ``threads`` threads (None: torch's current
    number), the median of ``reps`` timings after a warm-up."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a = torch.randn(m, k, dtype=getattr(torch, dtype))
        b = torch.randn(k, n, dtype=getattr(torch, dtype))
        a @ b  # warm-up
        seconds = []
        for _ in range(reps):
            with Timer() as t:
                a @ b
            seconds.append(t.seconds)
    finally:
        torch.set_num_threads(before)
    return 2 * m * k * n / median(seconds) / 1e9


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (``VmHWM`` of /proc/self/status; psutil elsewhere)."""
    try:
        text = Path("/proc/self/status").read_text()
        m = re.search(r"^VmHWM:\s*(\d+)\s*kB", text, re.M)
        if m:
            return int(m.group(1)) / 1024
    except OSError:
        pass
    try:
        import psutil

        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss) / 2**20
    except ImportError:
        return None


def reset_peak_rss() -> bool:
    """Reset this process's peak resident memory (``VmHWM``) to its current size; False where Linux refuses.

    Lets a child measure the peak of its work apart from the peak of loading a model.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mb() -> float | None:
    """Current resident memory of this process in MiB."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def run_child(args: list[str], timeout: float = 1200) -> dict:
    """Run ``python <args>`` in a fresh process that prints one JSON object as its last stdout line; return it.

    The child's stderr (progress bars, logs) is passed through. Raises RuntimeError when the child fails.
    """
    proc = subprocess.run(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=str(REPO), env=os.environ
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {' '.join(args)} failed with status {proc.returncode}")
    return json.loads(lines[-1])


def write_result(name: str, result: dict) -> Path:
    """Write ``outputs/bench/<name>.json`` (atomic replace) and return its path."""
    path = out_dir() / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(result), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _clean(value):
    """JSON-safe: NaN/inf become None, tuples become lists, paths become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def fmt(value, digits: int = 3) -> str:
    """A table cell: numbers to ``digits`` significant figures, None as an em dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 10**digits:
            return f"{value:.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A markdown table of ``rows`` (dicts) over ``columns`` (default: the keys of the first row)."""
    if not rows:
        return "(no rows)\n"
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def median(values: list[float]) -> float:
    """The median of a non-empty list."""
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is missing or ``b`` is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b
