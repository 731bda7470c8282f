"""End to end: ``make demo`` wall time per notebook, read from ``outputs/demo/timings.json`` (nothing is run).

``wow run`` writes each notebook's wall time into ``timings.json`` as it finishes; a run in progress shows only the
stages done so far (marked partial). Without the file the result says "not measured, run make demo".

Run: ``.venv/bin/python bench/bench_e2e.py`` (writes ``outputs/bench/e2e.json``).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from benchlib import REPO, loadavg, markdown_table, write_result

STAGES = ("01_data_prep", "02_elicitation", "03_acc_wow", "04_dpo_training", "05_correlation_plots")


def bench_e2e(run_dir: str = "outputs/demo") -> dict:
    """Per-notebook and total wall time of a finished (or running) pipeline run."""
    folder = REPO / run_dir
    path = folder / "timings.json"
    result = {"name": "e2e", "run_dir": run_dir, "loadavg_before": loadavg()}
    if not path.exists():
        result.update(demo_status="not measured, run make demo", rows=[])
    else:
        timings = json.loads(path.read_text())
        missing = [s for s in STAGES if s not in timings]
        rows = [{"notebook": s, "seconds": timings.get(s), "minutes": _min(timings.get(s))} for s in STAGES]
        total = sum(v for v in timings.values() if isinstance(v, (int, float)))
        rows.append({"notebook": "total", "seconds": round(total, 2), "minutes": _min(total)})
        written = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).isoformat(timespec="seconds")
        result.update(
            demo_status="partial (missing " + ", ".join(missing) + ")" if missing else "complete",
            rows=rows,
            timings_written=written,
        )
    result["loadavg_after"] = loadavg()
    write_result("e2e", result)
    return result


def _min(seconds):
    return None if seconds is None else round(seconds / 60, 2)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="outputs/demo")
    a = p.parse_args(argv)
    res = bench_e2e(a.run_dir)
    print(f"{a.run_dir}: {res['demo_status']}")
    if res["rows"]:
        print(markdown_table(res["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
