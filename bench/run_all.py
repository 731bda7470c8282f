"""Run every benchmark, collect the results, write ``outputs/bench/results.json`` and ``results.md``.

Each ``bench/bench_*.py`` runs in its own process (so one benchmark's models and memory never weigh on the next)
and writes ``outputs/bench/<name>.json``; this script reads them back, builds the headline table (one line per
measure, with its goal) and prints it. ``make bench`` runs it; the default set finishes in under 20 minutes on 2
CPU cores. ``--with-demo`` adds a warm rerun of a copy of a finished ``outputs/demo`` run (minutes more).
``--readme`` replaces the table between the benchmark markers of README.md with the new one; ``--only NAME --reuse``
reruns some benchmarks and takes the others from the last ``results.json``.

Run: ``.venv/bin/python bench/run_all.py [--with-demo] [--only sampling dpo] [--readme]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

from benchlib import BENCH_DIR, REPO, fmt, loadavg, machine, markdown_table, out_dir, ratio

#: benchmark name -> (script, extra arguments); in run order (cheap first, the pipeline runs last).
BENCHES = {
    # the demo's prompts (4 questions x 10 samples) at its 64-token budget and the notebooks' default 160, at the
    # demo's batch size 20 and at 40, side by side with raw generate (1024 tokens and other batch sizes: README)
    "sampling": (
        "bench_sampling.py",
        ["--questions", "4", "--max-tokens", "64", "160", "--batch-sizes", "20", "40", "--reps", "1"],
    ),
    "precision": ("bench_precision.py", []),  # float32 vs bfloat16 on this CPU: is dtype auto's choice the faster?
    "confidence": ("bench_confidence.py", []),
    "judging": ("bench_judging.py", []),
    "growth": ("bench_growth.py", []),
    "dpo": ("bench_dpo.py", []),
    "ray": ("bench_ray.py", []),  # the demo's stage-04 trainings on 2 Ray workers against 1 (train_backend: ray)
    "cache": ("bench_cache.py", []),
    "e2e": ("bench_e2e.py", []),
}
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


def run_bench(name: str, with_demo: bool, timeout: float) -> dict:
    """Run one benchmark script in a child process; returns its JSON result (or the error)."""
    script, extra = BENCHES[name]
    args = [sys.executable, str(BENCH_DIR / script), *extra]
    if name == "cache" and with_demo:
        args.append("--with-demo")
    path = out_dir() / f"{name}.json"
    stale = path.stat().st_mtime if path.exists() else None
    start = time.perf_counter()
    try:
        proc = subprocess.run(args, cwd=str(REPO), timeout=timeout, env=os.environ)
        status = "ok" if proc.returncode == 0 else f"failed (exit status {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    fresh = path.exists() and path.stat().st_mtime != stale
    result = json.loads(path.read_text()) if fresh and status == "ok" else {"name": name}
    result["status"] = status
    result["bench_seconds"] = round(seconds, 1)
    return result


def _previous_results() -> dict:
    """The per-benchmark results of the last ``results.json`` (empty when there is none)."""
    path = out_dir() / "results.json"
    if not path.exists():
        return {}
    return json.loads(path.read_text()).get("benches", {})


def headline(results: dict) -> list[dict]:
    """One row per headline measure: ``#, measure, value, goal, met``."""
    rows: list[dict] = []

    def add(num, measure, value, goal="", met=None):
        rows.append({"#": num, "measure": measure, "value": value, "goal": goal, "met": met})

    r = results.get("sampling", {})
    for row in r.get("rows", []):
        if row["method"] == "raw batched":
            add(1, f"sampling, {row['workload']}: raw batched tokens/s", fmt(row["tokens_per_s"]))
            continue
        v = row["vs_raw_batched"]
        add(
            1,
            f"sampling, {row['workload']}: {row['method']} tokens/s vs raw batched",
            f"{fmt(v)}x ({fmt(row['tokens_per_s'])} tok/s)",
            ">= 1.0x" if row["method"].startswith("wow") else "",
            None if v is None or not row["method"].startswith("wow") else v >= 1.0,
        )
        if row["method"] == "wow default" and row.get("max_tokens") == 64:  # the demo's budget: the sampler's goal
            tps = row["tokens_per_s"]
            add(1, f"sampling, {row['workload']}: wow default tokens/s", fmt(tps), ">= 500 tok/s", tps >= 500)
    r = results.get("precision", {})
    for row in r.get("rows", []):
        add(
            0,
            f"precision, {row['workload']}: bf16 / fp32 on this CPU ({r.get('cpu_family')}); dtype auto -> {row['auto']}",
            f"{fmt(row['bf16 / fp32'])}x ({fmt(row['bfloat16'])} vs {fmt(row['float32'])})",
            "auto is the faster",
            row["auto is faster"] == "yes",
        )
    r = results.get("confidence", {})
    for row in r.get("rows", []):
        extra = row["extra_forwards_for_confidence"]
        add(
            2,
            f"confidence, {row['method']}: extra forward calls for logprobs",
            f"{extra} ({fmt(row['forwards_per_answer'])} forwards/answer)",
            "0",
            extra == 0,
        )
    r = results.get("judging", {})
    for row in r.get("rows", []):
        what = f"judge {row['judge']} {row['mode']}" + (f" k={row['k']}" if row.get("k") else "")
        add(
            3,
            f"{what}: calls / tokens (prompt + generated) per {row['unit']}",
            f"{fmt(row['calls_per_unit'])} / {fmt(row['prompt_tokens_per_unit'])} + "
            f"{fmt(row['completion_tokens_per_unit'])}",
        )
    if "cache" in r:
        c = r["cache"]
        add(3, "judge rerun through the cache: model calls", str(c["calls_rerun"]), "0", c["calls_rerun"] == 0)
    r = results.get("cache", {})
    if "warm" in r:
        pct = 100 * r["warm_over_cold"]
        add(
            4,
            "smoke pipeline: warm rerun / cold run",
            f"{fmt(pct)}% ({fmt(r['warm']['seconds'])} s of {fmt(r['cold']['seconds'])} s)",
            "<= 5%",
            pct <= 5,
        )
        calls = r["warm"]["model_calls"]
        add(4, "smoke pipeline: model calls of the warm rerun", str(calls), "0", calls == 0)
        if "warm_copy" in r:
            moved = r["warm_copy"]["model_calls"]
            add(4, "smoke pipeline: model calls of a warm rerun of a copied run folder", str(moved), "0", moved == 0)
        outside = sum(s.get("outside_cells_seconds") or 0 for s in r["warm"]["stages"].values())
        add(4, "smoke pipeline warm: time outside cells (5 kernel start-ups, papermill)", f"{fmt(outside)} s")
        d = r.get("demo", {})
        if "warm" in d:
            add(
                4,
                "demo copy: warm rerun / cold run",
                f"{fmt(100 * d['warm_over_cold'])}%",
                "<= 5%",
                d["warm_over_cold"] <= 0.05,
            )
            add(
                4,
                "demo copy: model calls of the warm rerun",
                str(d["warm"]["model_calls"]),
                "0",
                d["warm"]["model_calls"] == 0,
            )
    r = results.get("dpo", {})
    if r.get("rows"):
        wow, trl = r["rows"][0], r["rows"][-1]  # wow's train() first, bare TRL last (bench_dpo.ARMS)
        v = wow["vs_trl_s_per_step"]
        add(
            5,
            f"DPO s/step ({r.get('precision', 'precision unknown')}, {r.get('batch_size')} pairs a step): wow.align "
            "vs bare TRL",
            f"{fmt(v)}x ({fmt(wow['s_per_step'])} vs {fmt(trl['s_per_step'])} s)",
            "<= 1.0x",
            None if v is None else v <= 1.0,
        )
        ceiling = r.get("ceiling") or {}
        if ceiling.get("s_per_step"):
            add(
                5,
                "DPO s/step: wow.align vs the compute ceiling (matrix products of a step at the measured GEMM rate)",
                f"{fmt(wow['vs_ceiling'])}x ({fmt(wow['s_per_step'])} vs {fmt(ceiling['s_per_step'])} s: "
                f"{fmt(ceiling['tokens_per_step'])} tokens at {fmt(ceiling['gemm_gflops'])} GFLOP/s)",
            )
        repeated = next((row for row in r["rows"] if "prompts repeated" in row.get("method", "")), None)
        if repeated and repeated.get("s_per_step") and wow["s_per_step"]:
            add(
                5,
                "DPO s/step: each pair's prompt read once (wow.align.shared_prompts) vs repeated per answer (TRL's layout)",
                f"{fmt(ratio(wow['s_per_step'], repeated['s_per_step']))}x ({fmt(wow['s_per_step'])} vs "
                f"{fmt(repeated['s_per_step'])} s)",
            )
        shared = next((row for row in r["rows"] if "reference reused" in row.get("method", "")), None)
        if shared and shared.get("s_per_step") and wow["s_per_step"]:
            reused = shared.get("reference_shared") is not False  # bfloat16: computed per batch (not shared)
            add(
                5,
                "DPO s/step: a second arm on the same pairs (the reference's log-probabilities "
                + ("reused" if reused else "not shared in bfloat16: computed per batch")
                + ") vs the first",
                f"{fmt(ratio(shared['s_per_step'], wow['s_per_step']))}x ({fmt(shared['s_per_step'])} vs "
                f"{fmt(wow['s_per_step'])} s)",
            )
        add(
            5,
            "DPO peak RSS: wow.align vs bare TRL",
            f"{fmt(wow['vs_trl_peak_rss'])}x ({fmt(wow['peak_rss_mb'])} vs {fmt(trl['peak_rss_mb'])} MiB)",
        )
    r = results.get("ray", {})
    if r.get("rows"):
        by_arm = {row["arm"]: row for row in r["rows"]}
        add(
            5,
            f"stage 04 on Ray ({r['rows'][0]['trainings']} demo trainings): 2 workers vs 1",
            f"{fmt(r['speedup_2_over_1_worker'])}x ({fmt(by_arm['ray 2 workers']['wall s'])} vs "
            f"{fmt(by_arm['ray 1 worker']['wall s'])} s; {fmt(r['speedup_2_workers_over_local'])}x vs local)",
        )
    r = results.get("growth", {})
    if r.get("rows"):
        last = r["rows"][-1]
        first = r["rows"][0]
        scale = last["questions"] // max(first["questions"], 1)
        v = last["time_vs_linear"]
        add(6, f"growth {scale}x questions: time vs linear", f"{fmt(v)}x", "<= 1", None if v is None else v <= 1.0)
        m = last["peak_vs_smallest"]
        add(
            6,
            f"growth {scale}x questions: peak memory vs 1x",
            f"{fmt(m)}x ({fmt(last['peak_rss_mb'])} MiB)",
            f"flat (<= 1.25x at {scale}x)",
            None if m is None else m <= 1.25,
        )
    r = results.get("e2e", {})
    if r:
        if r.get("rows"):
            total = r["rows"][-1]
            add(7, f"make demo wall time ({r['demo_status']})", f"{fmt(total['minutes'])} min")
            for row in r["rows"][:-1]:
                add(7, f"make demo: {row['notebook']}", "—" if row["seconds"] is None else f"{fmt(row['seconds'])} s")
            if r.get("machine"):
                add(7, "make demo: where", r["machine"])
        else:
            add(7, "make demo wall time", r.get("demo_status", "not measured, run make demo"))
    for name, res in results.items():
        if res.get("status") != "ok":
            add("-", f"{name} benchmark", res.get("status"))
    return rows


def write_markdown(summary: dict) -> str:
    """``results.md``: machine, load, the headline table, then every benchmark's own table."""
    m = summary["machine"]
    lines = [
        "# wow benchmarks",
        "",
        f"Measured {summary['finished']} on {m['cpu_model']} ({m.get('cpu_family', 'CPU family unknown')}; flags "
        f"{' '.join(m.get('cpu_flags', []))}; dtype auto -> {m.get('auto_dtype')}), {m['cores']} CPU cores (torch "
        f"{m['versions'].get('torch')}, transformers {m['versions'].get('transformers')}, trl "
        f"{m['versions'].get('trl')}); 1-minute load average {load_range(summary)} during the benchmarks; "
        f"{fmt(summary['total_seconds'] / 60)} min in all"
        + (f" (reused from the last run: {', '.join(summary['reused'])})" if summary.get("reused") else "")
        + ".",
        "",
        markdown_table(summary["headline"], ["#", "measure", "value", "goal", "met"]),
    ]
    for name, res in summary["benches"].items():
        if res.get("rows"):
            lines += [f"## {name}", "", f"status: {res.get('status')}, {res.get('bench_seconds')} s", ""]
            lines.append(markdown_table(res["rows"]))
    return "\n".join(lines)


def load_range(summary: dict) -> str:
    """``low-high`` of the 1-minute load averages recorded before and after each benchmark."""
    loads = [
        r[key][0] for r in summary["benches"].values() for key in ("loadavg_before", "loadavg_after") if r.get(key)
    ] or [summary["loadavg_before"][0], summary["loadavg_after"][0]]
    return f"{min(loads):g}-{max(loads):g}"


def update_readme(summary: dict) -> bool:
    """Replace the text between the benchmark markers of README.md; False when the markers are missing."""
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    m = summary["machine"]
    block = (
        f"{README_START}\nMeasured {summary['finished'][:10]} on {m['cpu_model']} "
        f"({m.get('cpu_family', 'CPU family unknown')}; dtype auto -> {m.get('auto_dtype')}), {m['cores']} CPU cores, shared "
        f"(1-minute load average {load_range(summary)} during the benchmarks); `make bench` took "
        f"{fmt(summary['total_seconds'] / 60)} min"
        + (
            f" (rerun now: {', '.join(n for n in summary['benches'] if n not in summary['reused'])}; the others are "
            f"the last run's, {', '.join(summary['reused'])})"
            if summary.get("reused")
            else ""
        )
        + ".\n\n"
        + markdown_table(summary["headline"], ["#", "measure", "value", "goal", "met"])
        + README_END
    )
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    path.write_text(head + block + tail, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: run the benchmarks and write the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--with-demo", action="store_true", help="also rerun a copy of a finished outputs/demo warm")
    p.add_argument("--only", nargs="+", choices=list(BENCHES), help="run only these benchmarks")
    p.add_argument("--skip", nargs="+", choices=list(BENCHES), default=[], help="leave these benchmarks out")
    p.add_argument("--timeout", type=float, default=900, help="seconds allowed to each benchmark")
    p.add_argument(
        "--readme",
        action="store_true",
        help="update the benchmark table in README.md (needs every benchmark's result)",
    )
    p.add_argument("--reuse", action="store_true", help="take the benchmarks not run now from the last results.json")
    a = p.parse_args(argv)
    names = [n for n in (a.only or BENCHES) if n not in a.skip]
    started = time.perf_counter()
    summary = {
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "loadavg_before": loadavg(),
        "with_demo": a.with_demo,
        "benches": {},
    }
    previous = _previous_results() if a.reuse else {}
    for name in BENCHES:
        if name not in names:
            if name in previous:
                summary["benches"][name] = {**previous[name], "reused": True}
            continue
        print(f"\n== {name} ==", flush=True)
        summary["benches"][name] = run_bench(name, a.with_demo, a.timeout)
        print(f"== {name}: {summary['benches'][name]['status']} in {summary['benches'][name]['bench_seconds']} s")
    summary["loadavg_after"] = loadavg()
    summary["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    summary["total_seconds"] = round(time.perf_counter() - started, 1)
    if a.reuse:  # the time of a full run: the benchmarks run now plus those reused
        summary["total_seconds"] = round(sum(r.get("bench_seconds") or 0 for r in summary["benches"].values()), 1)
        summary["reused"] = sorted(n for n, r in summary["benches"].items() if r.get("reused"))
    summary["headline"] = headline(summary["benches"])
    folder = out_dir()
    (folder / "results.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    text = write_markdown(summary)
    (folder / "results.md").write_text(text, encoding="utf-8")
    print("\n" + markdown_table(summary["headline"], ["#", "measure", "value", "goal", "met"]))
    print(f"wrote {folder / 'results.json'} and {folder / 'results.md'} ({summary['total_seconds'] / 60:.1f} min)")
    missing = [n for n in BENCHES if n not in summary["benches"]]
    if a.readme and missing:  # the README's table is every benchmark's: a partial one would drop rows silently
        print(
            f"README.md not updated: no result for {', '.join(missing)} (run them too, or add --reuse after a run "
            "whose outputs/bench/results.json has them)"
        )
        return 2
    if a.readme and not update_readme(summary):
        print("README.md has no benchmark markers; table not inserted")
    failed = [n for n, r in summary["benches"].items() if r["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
