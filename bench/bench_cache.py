"""The cache: a warm rerun of the smoke pipeline against its cold run (time, stage times, model calls).

``wow.cli.run.run("parameters/smoke.yaml")`` executes the five notebooks into ``outputs/bench/pipeline/smoke`` from an
empty folder (cold), then again (warm). Model calls of the warm run are counted as the rows it adds to the run's
call cache (every computed result is stored, so a warm run that adds none made no model call) and, where the run
writes ``usage.json``, as the calls its engines counted in every stage. The executed
notebooks' logs show what else happened (models loaded, trainings run or skipped), and papermill's per-cell
durations split each stage into its cells and the kernel start-up / import time around them.

A copy of the run folder elsewhere (as after moving the checkout) is rerun warm too: cached calls must not depend
on where the run lives. With ``--with-demo``, a copy of a finished ``outputs/demo`` run (never the run itself) is rerun warm too; the cold
times of the demo are those of ``outputs/demo/timings.json``.

Run: ``.venv/bin/python bench/bench_cache.py [--with-demo]`` (writes ``outputs/bench/cache.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sqlite3
from pathlib import Path

from benchlib import REPO, Timer, loadavg, markdown_table, out_dir, write_result

STAGES = ("01_data_prep", "02_elicitation", "03_acc_wow", "04_dpo_training", "05_correlation_plots")


def cache_rows(path: Path) -> int:
    """Stored results in a call cache file (0 when it does not exist)."""
    if not path.exists():
        return 0
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    finally:
        db.close()


def notebook_report(folder: Path) -> dict:
    """Per executed notebook: cell seconds, the slowest cell, and what its logs say (model loads, trainings)."""
    out = {}
    for nb_path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        cells, text = [], []
        for cell in nb["cells"]:
            if cell["cell_type"] != "code":
                continue
            duration = (cell.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0
            cells.append((duration, "".join(cell["source"]).strip().splitlines()[0][:60] if cell["source"] else ""))
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    text.append("".join(o.get("text", "")))
        log = "\n".join(text)
        slowest = max(cells, default=(0.0, ""))
        out[nb_path.stem] = {
            "cell_seconds": round(sum(d for d, _ in cells), 2),
            "slowest_cell": slowest[1],
            "slowest_cell_seconds": round(slowest[0], 2),
            "model_loads": len(re.findall(r"transformers_engine: loaded ", log)),
            "to_compute": sum(int(n) for n in re.findall(r"cached, (\d+) to compute", log)),
            "trainings": len(re.findall(r"wow\.align: training ", log)),
            "trainings_skipped": len(re.findall(r"is complete; not training again", log)),
        }
    return out


def _run(param_file: str, output_root: Path) -> dict:
    """Execute the pipeline; returns wall seconds, stage seconds, cache rows added and the notebooks' report."""
    from wow import params
    from wow.cli import run

    P = params.load(REPO / param_file, output_root=str(output_root))
    before = cache_rows(P.cache_path)
    with Timer() as t:
        run.run(REPO / param_file, output_root=str(output_root))
    timings = json.loads((P.run_dir / "timings.json").read_text())
    report = notebook_report(P.run_dir / "notebooks")
    stages = {}
    for s in STAGES:
        wall = timings.get(s)
        rep = report.get(s, {})
        stages[s] = {
            "seconds": wall,
            **rep,
            "outside_cells_seconds": None if wall is None else round(wall - rep.get("cell_seconds", 0.0), 2),
        }
    return {
        "seconds": round(t.seconds, 2),
        "stages": stages,
        "model_calls": cache_rows(P.cache_path) - before,
        "engine_calls": engine_calls(P.run_dir),
        "cache_rows": cache_rows(P.cache_path),
    }


def engine_calls(run_dir: Path) -> int | None:
    """Model calls the engines counted in the stages of the last run (``usage.json``; None without the file)."""
    path = run_dir / "usage.json"
    if not path.exists():
        return None
    usage = json.loads(path.read_text())
    return sum(int(u.get("calls", 0)) for stage in usage.values() for u in stage.values())


def bench_cache(with_demo: bool = False, param_file: str = "parameters/smoke.yaml") -> dict:
    """Cold then warm run of ``param_file`` (and, with ``with_demo``, a warm rerun of a copy of outputs/demo)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    load_before = loadavg()
    root = out_dir() / "pipeline"
    from wow import params

    P = params.load(REPO / param_file, output_root=str(root))
    shutil.rmtree(P.run_dir, ignore_errors=True)
    cold = _run(param_file, root)
    warm = _run(param_file, root)
    # the same run folder copied elsewhere (a moved checkout, a copied run): still warm, no model call
    moved_root = out_dir() / "pipeline_copy"
    shutil.rmtree(moved_root, ignore_errors=True)
    shutil.copytree(P.run_dir, moved_root / P.run_dir.name, ignore=shutil.ignore_patterns("*.sqlite-shm"))
    moved = _run(param_file, moved_root)
    shutil.rmtree(moved_root, ignore_errors=True)
    result = {
        "name": "cache",
        "param_file": param_file,
        "run_dir": str(P.run_dir.relative_to(REPO)),
        "cold": cold,
        "warm": warm,
        "warm_copy": moved,
        "warm_over_cold": warm["seconds"] / cold["seconds"],
        "goal": "warm <= 5% of cold, zero model calls",
        "demo": demo_rerun() if with_demo else demo_timings(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
    }
    result["rows"] = table_rows(result)
    write_result("cache", result)
    return result


def demo_timings() -> dict:
    """Stage times of an existing ``outputs/demo`` run (``timings.json``), without running anything."""
    path = REPO / "outputs" / "demo" / "timings.json"
    if not path.exists():
        return {"status": "not measured, run make demo"}
    timings = json.loads(path.read_text())
    missing = [s for s in STAGES if s not in timings]
    return {
        "status": "partial (missing " + ", ".join(missing) + ")" if missing else "complete",
        "cold_stages": timings,
        "cold_seconds": round(sum(timings.values()), 2),
    }


def demo_rerun() -> dict:
    """Warm rerun of a copy of a finished ``outputs/demo`` run (the original is only read).

    The copy reruns with the parameters it was made with (its ``run.yaml``), which may differ from today's
    ``parameters/demo.yaml``.
    """
    from wow import WowError

    info = demo_timings()
    if info.get("status") != "complete":
        return info
    root = out_dir() / "demo_copy"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(REPO / "outputs" / "demo", root / "demo", ignore=shutil.ignore_patterns("*.sqlite-shm"))
    try:
        warm = _run(str(root / "demo" / "run.yaml"), root)
    except WowError as e:
        return {**info, "status": f"warm rerun failed: {e}"}
    return {**info, "warm": warm, "warm_over_cold": warm["seconds"] / info["cold_seconds"]}


def table_rows(result: dict) -> list[dict]:
    """One row per stage: cold and warm seconds, warm share, kernel/import time outside cells, model calls."""
    rows = []
    runs = [("smoke", result["cold"]["stages"], result["warm"])]
    if "warm_copy" in result:
        runs.append(("smoke copy", result["cold"]["stages"], result["warm_copy"]))
    demo = result.get("demo") or {}
    if "warm" in demo:
        runs.append(("demo", {s: {"seconds": v} for s, v in demo["cold_stages"].items()}, demo["warm"]))
    for name, cold_stages, warm in runs:
        for s in STAGES:
            c, w = cold_stages.get(s, {}).get("seconds"), warm["stages"][s]
            rows.append(
                {
                    "run": name,
                    "stage": s,
                    "cold_s": c,
                    "warm_s": w["seconds"],
                    "warm_pct": None if not c or w["seconds"] is None else 100 * w["seconds"] / c,
                    "warm_outside_cells_s": w.get("outside_cells_seconds"),
                    "warm_slowest_cell_s": w.get("slowest_cell_seconds"),
                    "warm_model_loads": w.get("model_loads"),
                    "warm_trainings": w.get("trainings"),
                }
            )
        cold_total = sum((cold_stages.get(s, {}).get("seconds") or 0) for s in STAGES)
        rows.append(
            {
                "run": name,
                "stage": "total",
                "cold_s": cold_total,
                "warm_s": warm["seconds"],
                "warm_pct": 100 * warm["seconds"] / cold_total if cold_total else None,
                "warm_outside_cells_s": sum(warm["stages"][s].get("outside_cells_seconds") or 0 for s in STAGES),
                "warm_slowest_cell_s": None,
                "warm_model_loads": sum(warm["stages"][s].get("model_loads") or 0 for s in STAGES),
                "warm_trainings": sum(warm["stages"][s].get("trainings") or 0 for s in STAGES),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmark and print its table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--with-demo", action="store_true", help="also rerun a copy of a finished outputs/demo warm")
    a = p.parse_args(argv)
    res = bench_cache(with_demo=a.with_demo)
    print(markdown_table(res["rows"]))
    print(f"smoke warm run: {res['warm']['model_calls']} model calls; warm/cold = {100 * res['warm_over_cold']:.1f}%")
    print(f"smoke warm run of a copy of the run folder: {res['warm_copy']['model_calls']} model calls")
    if "warm" in res["demo"]:
        print(f"demo copy warm run: {res['demo']['warm']['model_calls']} model calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
