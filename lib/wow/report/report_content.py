"""What a run report says, gathered once: the plain structure that summary.md and the HTML page both render.

:func:`gather_report` reads a run folder (``run.yaml``, ``acc_wow.csv``, ``alignment.csv``, the stages' attempts and
usage, the figures) into one dict of text values; :func:`wow.report.markdown_summary.render_markdown` writes it as the run's
``summary.md`` and :func:`wow.report.html_report.render_html` as ``report/index.html``. The same number is thus the same
string in both. A notebook that holds the tables in memory passes them instead of the files.

The structure (every value text, formatted by :mod:`wow.report.report_format`)::

    run_name, protocol, protocol_note, description   what ran
    params        [(name, value)] of run.yaml
    acc           {split, header, rows, note}: Acc_WoW at M = 1.0 with 95% CIs, one row per method
    alignment     {header, rows, note}: the alignment gains with 95% CIs
    stages, usage_rows, total   status, wall time, calls, tokens, compute time and cost per stage and model
                  (:mod:`wow.report.report_stages`): the whole run's, from its call cache
    usage_note    one line on where those numbers come from
    machine_note  one line on the machine and thread settings the wall times were measured with
    figures       [{name, stem, file, pdf}]: the PNG files of the run folder (paths relative to it, URL-quoted)
    files         [{name, file}]: the run's tables and records
    missing       what a partial run lacks

Example::

    content = gather_report("outputs/demo")
    content["acc"]["rows"][0]   # ["shortest_path", "smollm2-135m", "length", "", "none", "45", "0.622 [0.500, 0.700]"]
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from wow import WowError, io, layout, run_folder
from wow.analysis import eval_metrics
from wow.report import report_format as fmt
from wow.report import verdict
from wow.report.report_stages import machine_note, stage_rows

log = logging.getLogger(__name__)

#: Files the report reads besides the notebooks, with what they hold and what writes them.
_RUN = layout.Layout(".")
EXPECTED_FILES = {
    _RUN.acc_wow.name: "the Acc_WoW table, written by 03_acc_wow",
    _RUN.alignment.name: "the alignment gains, written by 04_dpo_training",
    _RUN.timings.name: "wall time per stage, written by wow run",
    _RUN.usage.name: "each stage's last invocation: model calls, tokens, cost and cache hits, written by stages 01-04",
}
ACC_HEADER = ["task", "generator", "method", "judge", "check", "pairs", "Acc_WoW [95% CI]"]
ALIGNMENT_HEADER = [
    "setting",
    "task",
    "p_wrong before → after",
    "Δp_wrong [95% CI]",
    "Δp_wrong: what the CI says",
    "ΔAcc [95% CI]",
    "−ΔECE [95% CI]",
    "true Δp_wrong detected with 80% power (design)",
    "parse rate before → after",
    "Δp_wrong, parsed answers only [95% CI]",
    "Δ answer length, tokens [95% CI]",
]
#: Row labels of the three gains.
GAIN_LABELS = {"d_p_wrong": "Δp_wrong", "d_acc": "ΔAcc", "neg_d_ece": "−ΔECE"}


def gather_report(
    run_dir: str | Path,
    *,
    params: Mapping | None = None,
    acc: pd.DataFrame | None = None,
    alignment: pd.DataFrame | None = None,
) -> dict:
    """The content of the run's report, from the run folder (tables and parameters given here take precedence).

    Args:
        run_dir: the run folder.
        params: the run's parameters (default: its ``run.yaml``).
        acc: ``acc_wow.csv`` as a DataFrame (default: read from the folder).
        alignment: ``alignment.csv`` as a DataFrame (default: read from the folder).

    Raises:
        WowError: no ``params`` and ``run_dir`` is not a run folder (no or an invalid ``run.yaml``).
    """
    run_dir = Path(run_dir)
    run = layout.Layout(run_dir)
    params = dict(params) if params is not None else read_run_params(run_dir)
    missing: list[str] = []
    stages, usage_rows, total, usage_note = stage_rows(run_dir, missing)
    acc_section = _section(acc, run.acc_wow, acc_wow_section, "No acc_wow.csv yet: stage 03_acc_wow has not run.")
    alignment_section_ = _section(
        alignment, run.alignment, alignment_section, "No alignment.csv yet: stage 04_dpo_training has not run."
    )
    slopes = _section(None, run.fig3_slopes, slope_section, "No fig3_slopes.csv: stage 05 has not run.")
    for name, what in EXPECTED_FILES.items():
        given = (name == run.acc_wow.name and acc is not None) or (
            name == run.alignment.name and alignment is not None
        )
        if not given and not (run_dir / name).exists():
            missing.append(f"{name}: {what}")
    for section, name in ((acc_section, run.acc_wow.name), (alignment_section_, run.alignment.name)):
        if section.get("error"):
            missing.append(f"{name} could not be read: {section['error']}")
    damaged = acc_section.get("error") or alignment_section_.get("error")  # said under "missing" instead
    verdict_ = [] if damaged else verdict.verdict_lines(run_dir, acc, alignment)
    checks = paper_check_rows(run_dir, missing)
    figures = figure_list(run_dir)
    if not figures:
        missing.append("figures: no PNG files in the run folder")
    protocol = str(params.get("protocol", "wow"))  # run.yaml of older runs: the default
    return {
        "run_name": str(params.get("run_name", run_dir.name)),
        "protocol": protocol,
        "protocol_note": "the paper's computation where reproducible" if protocol == "paper" else "wow's computation",
        "description": describe_run(params),
        "params": [(str(k), fmt.param_text(v)) for k, v in params.items()],
        "acc": acc_section,
        "alignment": alignment_section_,
        "slopes": slopes,
        "verdict": verdict_,
        "paper_checks": checks,
        "paper_checks_note": PAPER_CHECKS_NOTE,
        "stages": stages,
        "usage_rows": usage_rows,
        "total": total,
        "usage_note": usage_note,
        "machine_note": machine_note(run_dir),
        "figures": figures,
        "files": file_list(run_dir),
        "missing": missing,
    }


#: Under the paper checks' table.
PAPER_CHECKS_NOTE = (
    "Each notebook's closing check (paper_checks.json, wow.steps.paper_check): one number of its stage beside what "
    "the paper reports, measured only where the run is a paper set as shipped; a difference is a finding, not an error."
)


def paper_check_rows(run_dir: Path, missing: list[str]) -> list[dict]:
    """Each stage's closing check beside the paper (``paper_checks.json``, :mod:`wow.steps.paper_check`): the paper's
    claim and where it says it, this run's number, the outcome (agrees, differs, skipped) and how the number was
    measured or why the check skipped. No file: no rows; an unreadable file is listed in ``missing``."""
    path = layout.Layout(run_dir).paper_checks
    if not path.exists():
        return []
    try:
        records = io.read_json(path)
    except WowError as e:
        missing.append(f"{path.name} could not be read: {e}")
        return []
    rows = []
    for stage in sorted(records):
        r = records[stage]
        value = r.get("value")
        rows.append(
            {
                "stage": stage,
                "claim": str(r.get("claim", "")),
                "source": str(r.get("source", "")),
                "value": "" if value is None else f"{value:.3f}",
                "status": str(r.get("status", "")),
                "how": str(r.get("how") or r.get("reason") or ""),
            }
        )
    return rows


def read_run_params(run_dir: Path) -> dict:
    """The parameters in ``<run_dir>/run.yaml`` (:func:`wow.run_folder.read_run_yaml`).

    Raises:
        WowError: there is no ``run.yaml``, or it is no valid YAML mapping.
    """
    params = run_folder.read_run_yaml(run_dir, "wow run")
    if params is None:
        raise WowError(
            f"{run_dir} is not a run folder (no run.yaml); give a folder written by wow run, e.g. outputs/demo."
        )
    return params


def describe_run(params: Mapping) -> str:
    """One sentence on what ran: tasks, questions, answers, generators, judges, policy, trainers, preferences, seed.

    Empty when ``params`` lacks the sampling parameters (a hand-made or partial ``run.yaml``).
    """
    if not all(k in params for k in ("tasks", "n_questions", "n_samples", "generators")):
        return ""

    def names(key: str, empty: str = "none") -> str:
        value = params.get(key)
        values = value if isinstance(value, list | tuple) else [] if value in (None, "") else [value]
        return ", ".join(map(str, values)) or empty

    return (
        f"Tasks {names('tasks')}; {params['n_questions']} questions per task, {params['n_samples']} answers each "
        f"from {names('generators')}; judges {names('judges')}; policy {params.get('policy_model', 'none')} aligned "
        f"with {names('trainers')} on {names('pref_types')} preferences ({names('pref_source')}). "
        f"Seed {params.get('seed', 'n/a')}."
    )


def acc_wow_section(df: pd.DataFrame) -> dict:
    """The Acc_WoW table at M = 1.0: one row per method (and judge and check) with its 95% CI, sorted.

    Returns:
        ``{split, header, rows, note}``: ``split`` the question split(s) of the table (``all`` for tables without
        a ``split`` column); a row without pairs shows its note (or ``no pairs``) instead of a value.
    """
    splits = sorted(map(str, df["split"].dropna().unique())) if "split" in df else []
    head = df[df["margin"] == 1.0] if "margin" in df else df.iloc[0:0]
    keys = [c for c in ("task", "generator", "method", "judge", "check") if c in head]
    if keys and not head.empty:
        head = head.sort_values(keys, na_position="first", kind="stable")
    rows = []
    for _, r in head.iterrows():
        n_pairs = fmt.as_int(r.get("n_pairs"))
        value = fmt.with_ci(r.get("acc_wow"), r.get("ci_low"), r.get("ci_high"))
        if not n_pairs:
            value = fmt.text(r.get("note")) or "no pairs"
        cells = [r.get("task"), r.get("generator"), r.get("method"), r.get("judge"), r.get("check")]
        rows.append([*map(fmt.text, cells), str(n_pairs), value])
    note = resample_note(df) if rows else "acc_wow.csv has no rows at margin 1.0."
    return {"split": ", ".join(splits) or "all", "header": ACC_HEADER, "rows": rows, "note": note}


def resample_note(df: pd.DataFrame) -> str:
    """What the CIs of ``acc_wow.csv`` resampled, from its ``ci_resample`` column."""
    units = set(map(str, df["ci_resample"].dropna())) - {""} if "ci_resample" in df else set()
    if units == {"question"}:
        return "95% CIs resample whole questions, each with all its pairs (ci_resample: question)."
    if "pair" in units:
        return (
            "95% CIs resample single pairs as if independent (ci_resample: pair): too narrow wherever a question "
            "holds several pairs."
        )
    return "The table does not say what its CIs resampled (no ci_resample column: tables before it resampled pairs)."


def ci_reading(low, high, bound, above: str = "better", below: str = "worse", symbol: str = "Δ") -> str:
    """What a 95% CI says: a change at the 5% level (``above`` / ``below`` zero), or, when it holds 0, the
    equivalence bound the data support (:func:`wow.analysis.bootstrap.equivalence_bound`).

    Args:
        low, high: the 95% CI.
        bound: the equivalence bound (the 90% CI's end farthest from 0).
        above, below: what a CI above / below 0 means.
        symbol: the quantity's name in the bound.
    """
    if fmt.is_missing(low) or fmt.is_missing(high):
        return "n/a"
    if low > 0:
        return f"{above} (CI above 0)"
    if high < 0:
        return f"{below} (CI below 0)"
    return "CI holds 0" + ("" if fmt.is_missing(bound) else f"; {symbol} within ±{fmt.num(bound)} (TOST, 5%)")


def alignment_section(df: pd.DataFrame) -> dict:
    """The alignment gains on the held-out test questions, one row per setting and task, with 95% CIs.

    Returns:
        ``{header, rows, note}``.
    """
    rows = []
    for _, r in df.iterrows():

        def ci(col, r=r):
            return fmt.with_ci(r.get(col), r.get(f"{col}_ci_low"), r.get(f"{col}_ci_high"))

        before_after = f"{fmt.num(r.get('before_p_wrong'))} → {fmt.num(r.get('after_p_wrong'))}"
        seed = f" (seed {int(r['train_seed'])})" if not fmt.is_missing(r.get("train_seed")) else ""
        cells = [fmt.text(r.get("setting")) + seed, fmt.text(r.get("task")), before_after, ci("d_p_wrong")]
        reading = ci_reading(r.get("d_p_wrong_ci_low"), r.get("d_p_wrong_ci_high"), r.get("d_p_wrong_equiv_bound"))
        after_parse = r.get("after_parse_rate")
        low = not fmt.is_missing(after_parse) and float(after_parse) < eval_metrics.LOW_PARSE_RATE
        parse = f"{fmt.num(r.get('before_parse_rate'))} → {fmt.num(after_parse)}" + (
            f" (below {eval_metrics.LOW_PARSE_RATE}: p_wrong counts its unparsed answers as 0)" if low else ""
        )
        rows.append(
            [
                *cells,
                reading,
                ci("d_acc"),
                ci("neg_d_ece"),
                fmt.num(r.get("d_p_wrong_mde")),
                parse,
                ci("d_p_wrong_parsed"),
                ci("d_mean_length"),
            ]
        )
    note = (
        "Each Δ is read by its own 95% CI (paired bootstrap over test questions): a CI that misses 0 is a change at "
        "the 5% level; a CI that holds 0 shows none and bounds the change by the 90% CI's far end (two one-sided "
        "tests at 5%). The last column describes the design, not the row's result: the true Δp_wrong these test "
        "questions detect with 80% power at the 5% level (about 2.8 standard errors, where a CI misses 0 at about "
        "1.96)."
        if rows
        else "alignment.csv has no rows."
    )
    return {"header": ALIGNMENT_HEADER, "rows": rows, "note": note}


SLOPE_HEADER = [
    "gain",
    "settings",
    "trained models",
    "test questions",
    "slope against Acc_WoW [95% CI]",
    "what the CI says",
    "true slope detected with 80% power (design)",
]


def slope_section(df: pd.DataFrame) -> dict:
    """Fig 3's question in one number per gain: the slope against the preferences' Acc_WoW (``fig3_slopes.csv``).

    Returns:
        ``{header, rows, note}``.
    """
    rows = [
        [
            GAIN_LABELS.get(r["gain"], fmt.text(r["gain"])),
            fmt.text(r.get("n_settings")),
            fmt.text(r.get("n_runs", r.get("n_settings"))),
            fmt.text(r.get("n_questions")),
            fmt.with_ci(r.get("slope"), r.get("ci_low"), r.get("ci_high")),
            ci_reading(r.get("ci_low"), r.get("ci_high"), r.get("equiv_bound"), "rises", "falls", "slope"),
            fmt.num(r.get("mde")),
        ]
        for _, r in df.iterrows()
    ]
    first = df.iloc[0] if len(df) else {}
    included = fmt.text(first.get("variance_included")) or "test questions (paired: one draw for every setting)"
    excluded = fmt.text(first.get("variance_excluded")) or "x, the training seed and the grid's choice (held fixed)"
    note = (
        "The gain per unit of preference accuracy (Fig 3's black line). Its 95% CI carries: "
        f"{included}. It leaves out: {excluded}. The last column describes the design: the true slope it detects "
        "with 80% power."
        if rows
        else "Fewer than two aligned settings with different Acc_WoW: no slope."
    )
    return {"header": SLOPE_HEADER, "rows": rows, "note": note}


def figure_list(run_dir: Path) -> list[dict]:
    """The figures of the run folder: every PNG, with its PDF when there is one (paths URL-quoted)."""
    out = []
    for png in sorted(run_dir.glob("*.png")):
        pdf = png.with_suffix(".pdf")
        out.append(
            {
                "name": png.name,
                "stem": png.stem,
                "file": quote(png.name),
                "pdf": quote(pdf.name) if pdf.exists() else None,
            }
        )
    return out


def file_list(run_dir: Path) -> list[dict]:
    """The run's tables and records that exist, each ``{name, file}`` (URL-quoted path relative to the folder)."""
    run = layout.Layout(run_dir)
    paths = [run.summary, run.acc_wow, run.alignment, run.correlations, run.metrics, run.usage, run.stages]
    names = [p.name for p in [*paths, run.timings, run.run_yaml]]
    return [{"name": n, "file": quote(n)} for n in names if (run_dir / n).exists()]


def _section(df: pd.DataFrame | None, path: Path, build: Callable[[pd.DataFrame], dict], absent: str) -> dict:
    """A table section from ``df``, else from the CSV at ``path``; a missing or damaged file gives a note instead."""
    if df is None:
        if not path.exists():
            return {"header": [], "rows": [], "note": absent, "split": "all"}
        try:
            df = pd.read_csv(path)
        except Exception as e:  # noqa: BLE001 - a damaged table is reported in the report, not raised
            log.warning("report: cannot read %s: %s", path, e)
            note = f"{path.name} could not be read ({e.__class__.__name__}: {e})."
            return {"header": [], "rows": [], "note": note, "split": "all", "error": str(e)}
    try:
        return build(df)
    except Exception as e:  # noqa: BLE001 - as above: a table without the expected columns
        log.warning("report: cannot read %s: %s", path, e)
        note = f"{path.name} could not be read ({e.__class__.__name__}: {e})."
        return {"header": [], "rows": [], "note": note, "split": "all", "error": str(e)}
