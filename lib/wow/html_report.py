"""Run reports: ``outputs/<run>/report/index.html``, one page per run that opens from the file system.

The page shows the run's parameters (``run.yaml``), each stage's status and wall time (its latest attempt in
``stages.json``; for runs written before it, papermill's metadata in the executed notebook and ``timings.json``),
the model calls, tokens and API cost per stage (``usage.json``), the headline tables (``acc_wow.csv`` at M = 1.0 and
the alignment gains of ``alignment.csv`` with 95% CIs), every figure of the run folder (its PNG files, by relative
path) and links to the executed notebooks rendered to HTML in ``report/notebooks/``. It needs no server and no
network: no remote script, style sheet or font, and the rendered notebooks embed their images. Whatever a partial run
lacks is listed at the top of the page instead of failing. The report only reads the run folder (and writes
``report/``), so it can be written while a run holds the folder's lock.

``wow run`` writes the report at its end; ``wow report outputs/<run>`` writes it again for any run folder.

Example::

    from wow import html_report
    html_report.write_report("outputs/demo")   # -> outputs/demo/report/index.html
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from pathlib import Path
from urllib.parse import quote

from wow import WowError, io, layout
from wow.stages import latest_attempts

log = logging.getLogger(__name__)
# nbconvert warns about every plot without alternative text; only its errors are worth a line in a run's log
_NBCONVERT_LOG = logging.getLogger(f"{__name__}.nbconvert")
_NBCONVERT_LOG.setLevel(logging.ERROR)

REPORT_DIR = layout.REPORT_DIR

#: Files the report reads besides the notebooks, with what they hold and what writes them.
_RUN = layout.Layout(".")
EXPECTED_FILES = {
    _RUN.acc_wow.name: "the Acc_WoW table, written by 03_acc_wow",
    _RUN.alignment.name: "the alignment gains, written by 04_dpo_training",
    _RUN.timings.name: "wall time per stage, written by wow run",
    _RUN.usage.name: "model calls, tokens and cost, written by stages 01-04",
}

# The lab template without its remote parts: require.js, the widget manager, MathJax and Mermaid come from CDNs.
# Cells and outputs render as in JupyterLab; LaTeX in Markdown shows as source; widgets show their text fallback.
_OFFLINE_NOTEBOOK_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""

#: The page (Jinja2, autoescaped): ``templates/report.html.j2``, shipped as package data.
TEMPLATE = "report.html.j2"


def write_report(run_dir: str | Path) -> Path:
    """Write ``<run_dir>/report/index.html`` and the executed notebooks as HTML; returns the page's path.

    Parts the run lacks (stages not run or failed, missing tables) are listed on the page; a notebook or table
    that cannot be read is reported there too (and logged) instead of stopping the report.

    Raises:
        WowError: ``run_dir`` is not a run folder (no ``run.yaml``).
    """
    import jinja2
    import yaml

    run_dir = Path(run_dir)
    run = layout.Layout(run_dir)
    if not run.run_yaml.is_file():
        raise WowError(
            f"{run_dir} is not a run folder (no run.yaml); give a folder written by wow run, e.g. outputs/demo."
        )
    try:
        run_params = yaml.safe_load(run.run_yaml.read_text()) or {}
    except yaml.YAMLError as e:
        raise WowError(f"{run_dir / 'run.yaml'} is not valid YAML ({e.__class__.__name__}); rerun wow run.") from None
    if not isinstance(run_params, dict):
        raise WowError(f"{run_dir / 'run.yaml'} is not a mapping of parameters; rerun wow run.")
    out_dir = run.report
    missing: list[str] = []

    stages, usage_rows, total = _stages(run_dir, out_dir, missing)
    acc = _acc_wow_table(run.acc_wow)
    alignment = _alignment_table(run.alignment)
    for name, what in EXPECTED_FILES.items():
        if not (run_dir / name).exists():
            missing.append(f"{name}: {what}")
    for table, name in ((acc, run.acc_wow.name), (alignment, run.alignment.name)):
        if table.get("error"):
            missing.append(f"{name} could not be read: {table['error']}")
    figures = _figures(run_dir)
    if not figures:
        missing.append("figures: no PNG files in the run folder")

    loader = jinja2.PackageLoader("wow", "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    page = env.get_template(TEMPLATE).render(
        run_name=str(run_params.get("run_name", run_dir.name)),
        protocol=str(run_params.get("protocol", "wow")),  # run.yaml of older runs: the default
        written=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        missing=missing,
        stages=stages,
        usage_rows=usage_rows,
        total=total,
        acc=acc,
        alignment=alignment,
        figures=figures,
        params=[(str(k), _param_text(v)) for k, v in run_params.items()],
        files=_files(run_dir),
    )
    path = io.write_text(out_dir / "index.html", page)
    log.info("report: %s%s", path, f" ({len(missing)} part(s) missing)" if missing else "")
    return path


def render_notebook(notebook: str | Path, out: str | Path) -> Path:
    """Render an executed notebook to a self-contained HTML file (images embedded, no remote scripts or styles)."""
    import jinja2
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        extra_loaders=[jinja2.DictLoader({"wow_offline.html.j2": _OFFLINE_NOTEBOOK_TEMPLATE})],
        template_file="wow_offline.html.j2",
        embed_images=True,
        log=_NBCONVERT_LOG,
    )
    body, _ = exporter.from_filename(str(notebook))
    return io.write_text(out, body)


# -- stages ----------------------------------------------------------------------------------------------------
def _stage_names(run_dir: Path) -> list[str]:
    try:
        names = [nb.stem for nb in layout.notebooks()]
    except WowError:
        names = []
    extra = sorted(p.stem for p in (run_dir / "notebooks").glob("*.ipynb") if p.stem not in names)
    return names + extra


def _notebook_status(path: Path) -> tuple[str, str]:
    """(status, css class) of an executed notebook, from papermill's metadata."""
    try:
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
    except (OSError, ValueError) as e:
        return f"unreadable notebook ({e.__class__.__name__})", "failed"
    if meta.get("exception"):
        return "failed (see the notebook)", "failed"
    if meta and not meta.get("end_time"):
        return "running, or stopped before its end", "other"
    return "done", "done"


def _attempt_status(latest: dict, holder: dict | None) -> tuple[str, str]:
    """(status, css class) of a stage from its latest attempt in ``stages.json``."""
    status = latest.get("status")
    n = latest.get("attempts", 1)
    which = f" (attempt {n} of {n})" if n > 1 else ""
    if status == "done":
        return f"done{which}", "done"
    if status == "failed":
        error = _text(latest.get("error") or "see the notebook")
        return f"failed{which}: {error if len(error) <= 300 else error[:297] + '...'}", "failed"
    if status == "running":
        if holder and holder.get("pid") == latest.get("pid"):
            return f"running{which} (pid {latest.get('pid')}, since {latest.get('start')})", "other"
        return f"stopped before its end{which}: pid {latest.get('pid')} is gone (killed?); rerun to resume", "failed"
    return f"unknown status {status!r}{which}", "other"


def _stages(run_dir: Path, out_dir: Path, missing: list[str]) -> tuple[list[dict], list[dict], dict]:
    from wow import lock

    run = layout.Layout(run_dir)
    timings = _read_json(run.timings)
    usage = _read_json(run.usage)
    attempts = latest_attempts(run_dir)
    holder = lock.holder(run_dir) if any(a.get("status") == "running" for a in attempts.values()) else None
    stages, usage_rows = [], []
    sums = {"time": 0.0, "calls": 0, "tokens": 0, "cost": None, "cost_unknown": False}
    for name in _stage_names(run_dir):
        nb = run.notebook(name)
        html = ipynb = None
        latest = attempts.get(name)
        if nb.exists():
            status, status_class = _attempt_status(latest, holder) if latest else _notebook_status(nb)
            try:
                render_notebook(nb, out_dir / "notebooks" / f"{name}.html")
                html, ipynb = f"notebooks/{quote(name)}.html", f"../notebooks/{quote(name)}.ipynb"
            except Exception as e:  # noqa: BLE001 - a notebook that cannot be rendered must not stop the report
                log.warning("report: cannot render %s: %s", nb, e)
                missing.append(f"{name}: the executed notebook could not be rendered ({e.__class__.__name__})")
            if status_class != "done":
                missing.append(f"{name}: {status}")
        elif latest:
            status, status_class = _attempt_status(latest, holder)
            missing.append(f"{name}: {status} (no executed notebook in notebooks/)")
        else:
            status, status_class = "not run (no executed notebook)", "other"
            missing.append(f"{name}: not run (no executed notebook in notebooks/)")
        seconds = latest.get("seconds") if latest else timings.get(name)  # the latest attempt's, not an older one's
        seconds = seconds if isinstance(seconds, int | float) else None
        calls = tokens = 0
        cost, cost_unknown, has_usage = None, False, isinstance(usage.get(name), dict)
        for model, u in (usage.get(name) or {}).items() if has_usage else []:
            if not isinstance(u, dict):
                continue
            calls += _int(u.get("calls"))
            tokens += _int(u.get("prompt_tokens")) + _int(u.get("completion_tokens"))
            if "cost_usd" in u:
                if u["cost_usd"] is None:
                    cost_unknown = True
                else:
                    cost = (cost or 0.0) + float(u["cost_usd"])
            usage_rows.append(
                {
                    "stage": name,
                    "model": model,
                    "calls": _count(u.get("calls")),
                    "prompt": _count(u.get("prompt_tokens")),
                    "completion": _count(u.get("completion_tokens")),
                    "hits": _count(u.get("cache_hits")),
                    "misses": _count(u.get("cache_misses")),
                    "cost": _cost(u.get("cost_usd"), "cost_usd" in u, u.get("cost_usd") is None),
                }
            )
        stages.append(
            {
                "name": name,
                "status": status,
                "status_class": status_class,
                "time": _duration(seconds),
                "calls": _count(calls) if has_usage else "not recorded",
                "tokens": _count(tokens) if has_usage else "not recorded",
                "cost": _cost(cost, cost is not None or cost_unknown, cost_unknown) if has_usage else "not recorded",
                "html": html,
                "ipynb": ipynb,
            }
        )
        sums["time"] += seconds or 0.0
        sums["calls"] += calls
        sums["tokens"] += tokens
        if cost is not None:
            sums["cost"] = (sums["cost"] or 0.0) + cost
        sums["cost_unknown"] |= cost_unknown
    rendered = {f"{s['name']}.html" for s in stages if s["html"]}
    for stale in (out_dir / "notebooks").glob("*.html"):  # left by an earlier report; no longer linked
        if stale.name not in rendered:
            stale.unlink(missing_ok=True)
    total = {
        "time": _duration(sums["time"]) if timings or attempts else "",
        "calls": _count(sums["calls"]) if usage else "",
        "tokens": _count(sums["tokens"]) if usage else "",
        "cost": _cost(sums["cost"], sums["cost"] is not None or sums["cost_unknown"], sums["cost_unknown"])
        if usage
        else "",
    }
    return stages, usage_rows, total


# -- tables ------------------------------------------------------------------------------------------------------
def _acc_wow_table(path: Path) -> dict:
    header = ["task", "generator", "method", "judge", "check", "pairs", "Acc_WoW [95% CI]"]
    if not path.exists():
        return {"rows": [], "note": "No acc_wow.csv yet: stage 03_acc_wow has not run."}
    try:
        import pandas as pd

        df = pd.read_csv(path)
        head = df[df["margin"] == 1.0]
        rows = []
        for _, r in head.iterrows():
            n_pairs = int(r["n_pairs"]) if pd.notna(r["n_pairs"]) else 0
            value = _with_ci(r.get("acc_wow"), r.get("ci_low"), r.get("ci_high"))
            if not n_pairs:
                value = _text(r.get("note")) or "no pairs"
            rows.append(
                [
                    _text(r.get("task")),
                    _text(r.get("generator")),
                    _text(r.get("method")),
                    _text(r.get("judge")),
                    _text(r.get("check")),
                    str(n_pairs),
                    value,
                ]
            )
    except Exception as e:  # noqa: BLE001 - a damaged table is reported on the page, not raised
        log.warning("report: cannot read %s: %s", path, e)
        return {"rows": [], "note": f"acc_wow.csv could not be read ({e.__class__.__name__}: {e}).", "error": str(e)}
    return {"header": header, "rows": rows, "note": "" if rows else "acc_wow.csv has no rows at margin 1.0."}


def _alignment_table(path: Path) -> dict:
    header = ["setting", "task", "p_wrong before → after", "Δp_wrong [95% CI]", "ΔAcc [95% CI]", "−ΔECE [95% CI]"]
    if not path.exists():
        return {"rows": [], "note": "No alignment.csv yet: stage 04_dpo_training has not run."}
    try:
        import pandas as pd

        df = pd.read_csv(path)
        rows = []
        for _, r in df.iterrows():

            def ci(col, r=r):
                return _with_ci(r.get(col), r.get(f"{col}_ci_low"), r.get(f"{col}_ci_high"))

            rows.append(
                [
                    _text(r.get("setting")),
                    _text(r.get("task")),
                    f"{_num(r.get('before_p_wrong'))} → {_num(r.get('after_p_wrong'))}",
                    ci("d_p_wrong"),
                    ci("d_acc"),
                    ci("neg_d_ece"),
                ]
            )
    except Exception as e:  # noqa: BLE001 - a damaged table is reported on the page, not raised
        log.warning("report: cannot read %s: %s", path, e)
        return {"rows": [], "note": f"alignment.csv could not be read ({e.__class__.__name__}: {e}).", "error": str(e)}
    return {"header": header, "rows": rows, "note": "" if rows else "alignment.csv has no rows."}


def _figures(run_dir: Path) -> list[dict]:
    out = []
    for png in sorted(run_dir.glob("*.png")):
        pdf = png.with_suffix(".pdf")
        out.append(
            {
                "name": png.name,
                "stem": png.stem,
                "src": f"../{quote(png.name)}",
                "pdf": f"../{quote(pdf.name)}" if pdf.exists() else None,
            }
        )
    return out


def _files(run_dir: Path) -> list[dict]:
    run = layout.Layout(run_dir)
    paths = [run.summary, run.acc_wow, run.alignment, run.correlations, run.metrics, run.usage, run.stages]
    names = [p.name for p in [*paths, run.timings, run.run_yaml]]
    return [{"name": n, "href": f"../{quote(n)}"} for n in names if (run_dir / n).exists()]


# -- formatting --------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        value = io.read_json(path)
    except Exception as e:  # noqa: BLE001 - a damaged file is treated as missing, and logged
        log.warning("report: cannot read %s: %s", path, e)
        return {}
    return value if isinstance(value, dict) else {}


def _missing_value(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _text(x) -> str:
    return "" if _missing_value(x) else str(x)


def _num(x) -> str:
    if _missing_value(x):
        return "n/a"
    try:
        return f"{float(x):.3f}"
    except (TypeError, ValueError):
        return str(x)


def _with_ci(value, low, high) -> str:
    if _missing_value(low) or _missing_value(high):
        return _num(value)
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _int(x) -> int:
    return int(x) if isinstance(x, int | float) and not _missing_value(x) else 0


def _count(x) -> str:
    return f"{_int(x):,}" if isinstance(x, int | float) else ""


def _cost(value, known_key: bool, unknown: bool) -> str:
    if not known_key:
        return "none (local models)"
    if unknown:
        return f"unknown prices{f' (+ ${value:,.2f} known)' if value else ''}"
    return f"${value:,.2f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h} h {m:02d} min" if h else (f"{m} min {s:02d} s" if m else f"{s} s")


def _param_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
