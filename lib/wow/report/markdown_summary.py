"""Run summaries: the report content of a run (:mod:`wow.report.report_content`) as Markdown, the run's ``summary.md``.

The summary shows what ran, the protocol, Acc_WoW at M = 1.0 per method, the alignment gains with 95% CIs, the
whole run's model calls, tokens, compute time and cost per stage (from its call cache) and the figures: the same
content, and the same text for every number, as the HTML report (:mod:`wow.report.html_report`), which adds the stages'
status, the parameters and the rendered notebooks.

Example::

    from wow.report import markdown_summary
    text = markdown_summary.summary_markdown(P, acc, alignment, points)   # stage 05 writes it to summary.md
"""

from __future__ import annotations

import pandas as pd

from wow.params import RunParams
from wow.report.report_content import gather_report

#: The columns of the cost table, as both renderings head them.
#: Columns of the paper checks (:func:`wow.report.report_content.paper_check_rows`).
PAPER_CHECK_HEADER = ["stage", "the paper says", "where", "this run", "outcome", "how measured, or why skipped"]
STAGE_HEADER = [
    "stage",
    "wall time (latest attempt)",
    "compute time",
    "model calls",
    "tokens (prompt + completion)",
    "API cost",
    "cache hits (last invocation)",
    "parameters used (hash)",
]


def summary_markdown(P: RunParams, acc: pd.DataFrame, alignment: pd.DataFrame, points: pd.DataFrame) -> str:
    """The run's ``summary.md``: the report content of ``P``'s run folder with these tables, as Markdown.

    Args:
        P: the run's parameters.
        acc: ``acc_wow.csv``.
        alignment: ``alignment.csv``.
        points: Figure 3's table (:func:`wow.analysis.fig3_points.method_acc_wow`); drawn in the figures, not tabulated here.
    """
    content = gather_report(P.run_dir, params=P.model_dump(mode="json"), acc=acc, alignment=alignment)
    return render_markdown(content)


def render_markdown(content: dict) -> str:
    """Markdown of :func:`wow.report.report_content.gather_report`'s content (links relative to the run folder)."""
    acc, alignment = content["acc"], content["alignment"]
    lines = [f"# Run `{content['run_name']}`", ""]
    if content["description"]:
        lines += [content["description"], ""]
    lines += [f"Protocol `{content['protocol']}`: {content['protocol_note']} (see docs/fidelity.md).", ""]
    if content["verdict"]:
        lines += ["## Verdict", "", *(f"- {v}" for v in content["verdict"]), ""]
    if content["paper_checks"]:
        keys = ["stage", "claim", "source", "value", "status", "how"]
        rows = [[c[k] for k in keys] for c in content["paper_checks"]]
        lines += ["## Beside the paper", ""] + _table(PAPER_CHECK_HEADER, rows, content["paper_checks_note"])
    lines += [f"## Acc_WoW ({acc['split']} questions, M = 1.0; random = 0.5, oracle = 1.0)", ""]
    lines += _table(acc["header"], acc["rows"], acc["note"])
    lines += ["## Alignment on the held-out test questions (positive = better)", ""]
    lines += _table(alignment["header"], alignment["rows"], alignment["note"])
    slopes = content["slopes"]
    lines += ["## Does the gain grow with the preferences' Acc_WoW? (Fig 3's slope)", ""]
    lines += _table(slopes["header"], slopes["rows"], slopes["note"])
    lines += ["## Model calls, tokens and API cost per stage (whole run)", "", content["usage_note"], ""]
    if content.get("machine_note"):
        lines += [content["machine_note"], ""]
    total = content["total"]
    keys = ["name", "time", "compute", "calls", "tokens", "cost", "hits", "params"]
    stage_rows = [[s[k] for k in keys] for s in content["stages"]]
    stage_rows.append(["total", *(total.get(k, "") for k in keys[1:])])
    lines += _table(STAGE_HEADER, stage_rows, "")
    lines += ["## Figures", ""]
    if content["figures"]:
        for f in content["figures"]:
            pdf = f" ([PDF]({f['pdf']}))" if f["pdf"] else ""
            lines.append(f"- [{_cell(f['stem'])}]({f['file']}){pdf}")
    else:
        lines.append("No figures (PNG files) in the run folder yet.")
    lines.append("")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], note: str) -> list[str]:
    """A Markdown table followed by its note, or the note alone when there are no rows."""
    if not rows:
        return [note or "No rows.", ""]
    out = ["| " + " | ".join(map(_cell, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(_cell, row)) + " |" for row in rows]
    return [*out, "", *([note, ""] if note else [])]


def _cell(value: str) -> str:
    """A table cell's text with its pipes escaped and on one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")
