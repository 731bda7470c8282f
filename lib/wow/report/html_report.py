"""Run reports as HTML: ``outputs/<run>/report/index.html``, one page per run that opens from the file system.

The page renders the report content (:func:`wow.report.report_content.gather_report`: the run's parameters, each stage's
status and wall time, the whole run's model calls, tokens, compute time and API cost from its call cache, the
headline tables with 95% CIs, every figure of the run folder) with the template ``templates/report.html.j2``, and
links to the executed notebooks rendered to HTML in ``report/notebooks/``. It needs no server and no network: no
remote script, style sheet or font, and the rendered notebooks embed their images. Whatever a partial run lacks is
listed at the top of the page instead of failing. The report only reads the run folder (and writes ``report/``), so
it can be written while a run holds the folder's lock.

``wow run`` writes the report at its end; ``wow report outputs/<run>`` writes it again for any run folder.

Example::

    from wow.report import html_report
    html_report.write_report("outputs/demo")   # -> outputs/demo/report/index.html
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from urllib.parse import quote

from wow import io, layout
from wow.report.report_content import gather_report

log = logging.getLogger(__name__)
# nbconvert warns about every plot without alternative text; only its errors are worth a line in a run's log
_NBCONVERT_LOG = logging.getLogger(f"{__name__}.nbconvert")
_NBCONVERT_LOG.setLevel(logging.ERROR)


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
    run_dir = Path(run_dir)
    content = gather_report(run_dir)
    out_dir = layout.Layout(run_dir).report
    _render_notebooks(content, run_dir, out_dir)
    path = io.write_text(out_dir / "index.html", render_html(content))
    missing = content["missing"]
    log.info("report: %s%s", path, f" ({len(missing)} part(s) missing)" if missing else "")
    return path


def render_html(content: dict) -> str:
    """The report page of :func:`wow.report.report_content.gather_report`'s content (paths relative to ``report/``)."""
    import jinja2

    loader = jinja2.PackageLoader("wow", "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    written = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return env.get_template(TEMPLATE).render(**content, written=written)


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


def _render_notebooks(content: dict, run_dir: Path, out_dir: Path) -> None:
    """Render each stage's executed notebook into ``report/notebooks/`` and link it from the stage (``html``); a
    notebook that cannot be rendered is listed as missing. Pages of notebooks no longer there are removed."""
    run = layout.Layout(run_dir)
    for stage in content["stages"]:
        if not stage["notebook"]:
            continue
        name, nb = stage["name"], run.notebook(stage["name"])
        try:
            render_notebook(nb, out_dir / "notebooks" / f"{name}.html")
            stage["html"] = f"notebooks/{quote(name)}.html"
        except Exception as e:  # noqa: BLE001 - a notebook that cannot be rendered must not stop the report
            log.warning("report: cannot render %s: %s", nb, e)
            content["missing"].append(f"{name}: the executed notebook could not be rendered ({e.__class__.__name__})")
    rendered = {f"{s['name']}.html" for s in content["stages"] if s["html"]}
    for stale in (out_dir / "notebooks").glob("*.html"):  # left by an earlier report; no longer linked
        if stale.name not in rendered:
            stale.unlink(missing_ok=True)
