"""``wow compare outputs/A outputs/B``: what changes between two runs, in one small table.

Made for measuring a protocol switch (docs/fidelity.md): the same parameter set run once with ``protocol: wow`` and
once with ``protocol: paper``. Per task (all generators pooled) the table shows the protocol, the answers' parse
rate, the wrong-over-wrong candidate pairs and Acc_WoW at M = 1.0 of every method (with its pair count), and per
aligned setting (``alignment.csv``) Δp_wrong beside what reads it (the aligned model's parse rate, Δp_wrong over
the parsed answers, the change of answer length), side by side with the difference B - A. A value a run lacks (a stage it did not reach, a method it did not run) shows as
``-``.

Example::

    rows = compare.compare("outputs/demo", "outputs/paper_protocol_demo")
    print(compare.format_comparison(rows, "demo", "paper_protocol_demo"))
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from wow import WowError, io, run_folder


def _run(run_dir: str | Path) -> dict:
    """Protocol, parse rates, pairs and Acc_WoW at M = 1 of one run folder: ``{(what, task): value}``."""
    d = Path(run_dir)
    if not d.is_dir():
        raise WowError(f"{d} is not a folder; give two run folders, e.g. wow compare outputs/demo outputs/other.")
    have = [f for f in ("run.yaml", "answers.jsonl", "acc_wow.csv") if (d / f).is_file()]
    if not have:
        raise WowError(
            f"{d} holds none of run.yaml, answers.jsonl, acc_wow.csv: not a run folder (wow run writes them)."
        )
    out: dict[tuple[str, str], object] = {}
    if (d / "run.yaml").is_file():
        run = run_folder.read_run_yaml(d) or {}
        out[("protocol", "")] = run.get("protocol", "wow")
    if (d / "answers.jsonl").is_file():
        answers = io.read_jsonl(d / "answers.jsonl")
        for task in sorted({a["task"] for a in answers}):
            rows = [a for a in answers if a["task"] == task]
            out[("parse rate", task)] = sum(a.get("extracted") is not None for a in rows) / len(rows)
    if (d / "acc_wow.csv").is_file():
        acc = pd.read_csv(d / "acc_wow.csv")
        acc = acc[(acc["margin"] - 1.0).abs() < 1e-9]
        for task, t in acc.groupby("task"):
            oracle = t[t["method"] == "oracle"]
            if len(oracle):
                out[("wrong-over-wrong pairs", task)] = int(oracle["n_pairs"].sum())
            keys = ["method", "judge", "check"]
            for key, m in t.fillna({"judge": "", "check": "none"}).groupby(keys):
                method, judge, check = key
                name = method + (f" ({judge})" if judge else "") + ("" if check == "none" else f" [{check}]")
                n = int(m["n_pairs"].sum())
                hits = float(m["n_hits"].sum())
                out[(f"Acc_WoW M=1: {name}", task)] = (hits / n if n else math.nan, n)
    if (d / "alignment.csv").is_file():
        for _, r in pd.read_csv(d / "alignment.csv").iterrows():
            where = str(r.get("eval_task") if isinstance(r.get("eval_task"), str) else r["task"])
            name = r["setting"] + (f" seed {int(r['train_seed'])}" if pd.notna(r.get("train_seed", None)) else "")
            for column, what in ALIGNMENT_COLUMNS.items():
                if column in r and pd.notna(r[column]):
                    out[(f"{name}: {what}", where)] = float(r[column])
    return out


#: alignment.csv columns ``wow compare`` shows per aligned setting: Δp_wrong and what reads it.
ALIGNMENT_COLUMNS = {
    "d_p_wrong": "Δp_wrong",
    "after_parse_rate": "parse rate after alignment",
    "d_p_wrong_parsed": "Δp_wrong, parsed answers only",
    "d_mean_length": "Δ answer length (tokens)",
}


def compare(run_a: str | Path, run_b: str | Path) -> pd.DataFrame:
    """The comparison table of two run folders.

    Returns:
        DataFrame ``what, task, a, b, delta`` (``a``/``b`` formatted text; ``delta`` is B - A where both are
        numbers, else empty).

    Raises:
        WowError: a folder that is not a run folder.
    """
    a, b = _run(run_a), _run(run_b)
    keys = list(dict.fromkeys([*a, *b]))
    keys.sort(key=lambda k: (k[0] != "protocol", k[1], not k[0].startswith("parse"), k[0]))
    rows = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        rows.append({"what": key[0], "task": key[1], "a": _fmt(va), "b": _fmt(vb), "delta": _delta(va, vb)})
    return pd.DataFrame(rows, columns=["what", "task", "a", "b", "delta"])


def _num(v) -> float | None:
    if isinstance(v, tuple):
        v = v[0]
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, tuple):
        acc, n = v
        return f"{'-' if math.isnan(acc) else f'{acc:.3f}'} (n={n})"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _delta(va, vb) -> str:
    x, y = _num(va), _num(vb)
    if x is None or y is None:
        return ""
    d = y - x
    return f"{int(d):+d}" if isinstance(va, int) and isinstance(vb, int) else f"{d:+.3f}"


def format_comparison(rows: pd.DataFrame, name_a: str = "A", name_b: str = "B") -> str:
    """The table as aligned plain text (``wow compare`` prints it)."""
    header = ["what", "task", name_a, name_b, "B - A"]
    body = [[str(r.what), str(r.task), str(r.a), str(r.b), str(r.delta)] for r in rows.itertuples()]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=False)]
    lines = ["  ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)).rstrip() for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
