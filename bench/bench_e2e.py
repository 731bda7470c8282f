"""End to end: ``make demo`` wall time per notebook, read from ``outputs/demo/timings.json`` (nothing is run).

``wow run`` writes each notebook's wall time into ``timings.json`` as it finishes; a run in progress shows only the
stages done so far (marked partial). Without the file the result says "not measured, run make demo". The result
also says where the times were measured (the machine and thread settings ``stages.json`` records) and which stages
``wow run`` would compute again with the code and parameters at hand (their fingerprint changed: times of other code).

Run: ``.venv/bin/python bench/bench_e2e.py`` (writes ``outputs/bench/e2e.json``).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from benchlib import REPO, loadavg, markdown_table, write_result
from wow import layout
from wow.report.report_stages import machine_note

NOTEBOOKS = tuple(layout.notebooks())
STAGES = tuple(nb.stem for nb in NOTEBOOKS)


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
        status = "partial (missing " + ", ".join(missing) + ")" if missing else "complete"
        stale = stale_stages(folder)
        if stale:
            status += f"; stale: {', '.join(s[:2] for s in stale)} would run again on this code (make demo)"
        result.update(
            demo_status=status,
            rows=rows,
            timings_written=written,
            stale_stages=stale,
            machine=machine_note(folder),
        )
    result["loadavg_after"] = loadavg()
    write_result("e2e", result)
    return result


def stale_stages(folder) -> list[str] | None:
    """The stages of the run in ``folder`` that ``wow run`` would compute again with the library, notebooks and
    parameters at hand: from the first whose fingerprint changed (:func:`wow.run_folder.fingerprint.unchanged`) on,
    or None where its ``run.yaml`` cannot be read."""
    from wow import WowError, params
    from wow.cli.run import resume_target
    from wow.run_folder import fingerprint

    try:
        path, where = resume_target(folder, {})  # the folder's run.yaml, placed where it lies (wow run <folder>)
        P = params.load(path, **where)
    except WowError:
        return None
    first = next((i for i, nb in enumerate(NOTEBOOKS) if not fingerprint.unchanged(P, nb)), len(NOTEBOOKS))
    return list(STAGES[first:])  # wow run reruns from the first changed stage on: each rerun changes the next's inputs


def _min(seconds):
    return None if seconds is None else round(seconds / 60, 2)


def main(argv: list[str] | None = None) -> int:
    """Command line: print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="outputs/demo")
    a = p.parse_args(argv)
    res = bench_e2e(a.run_dir)
    print(f"{a.run_dir}: {res['demo_status']}")
    if res.get("machine"):
        print(res["machine"])
    if res["rows"]:
        print(markdown_table(res["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
