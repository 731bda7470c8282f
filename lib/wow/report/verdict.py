"""What a finished run found, in a few lines of plain text: the results table and a verdict ``wow run`` prints.

It reads the run's artefacts only (``acc_wow.csv``, ``alignment.csv``, the trainings' ``train_log.json``): Acc_WoW
at M = 1 of every method with its 95% CI and number of pairs, the alignment gains with their CIs, and a verdict in
plain words: which signals beat chance (CI above 0.5), whether training moved the model (its mean training loss
against the loss of a model that cannot tell chosen from rejected: ln 2 for DPO, each trainer's own value by
:mod:`wow.analysis.no_preference_loss`), the parse rate of every model's test
answers (an aligned model below :data:`wow.analysis.eval_metrics.LOW_PARSE_RATE` flagged), and whether any gain's CI excludes zero.

Example::

    from wow.report import verdict
    print(verdict.results_text("outputs/demo"))
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from wow import layout
from wow.analysis import eval_metrics
from wow.analysis.no_preference_loss import no_preference_loss

#: The DPO loss of a model that gives chosen and rejected the same reward margin: ln 2.
CHANCE_LOSS = math.log(2)
#: A mean training loss within this of ln 2 means the preferences did not move the model; for another trainer,
#: within the same share of its own no-preference loss (1.4%).
MOVED_BY = 0.01
#: beta of a train_log.json that does not record it (AlignConfig's default)
DEFAULT_BETA = 0.1
#: A gain measured on fewer test questions has no interval worth the name: a bootstrap over n questions has few
#: distinct draws (one for n = 1, three for n = 2), so its percentile CI cannot hold 95%; it is shown but never read
#: as excluding zero.
MIN_QUESTIONS = 5


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _signed(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.3f}"


def acc_wow_lines(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Lines of the Acc_WoW table at M = 1 and the names of the methods whose CI lies above chance."""
    rows = table[(table["margin"] == 1.0) & (table["method"] != "oracle")]
    lines, above = [], []
    for _, r in rows.iterrows():
        name = r["method"] + (f" [{r['judge']}]" if isinstance(r.get("judge"), str) and r["judge"] else "")
        name += " +both orders" if r.get("check") == "both_orders" else ""
        n = int(r["n_pairs"]) if pd.notna(r["n_pairs"]) else 0
        if n == 0:
            lines.append(f"  {r['task']:16} {name:46} no pairs")
            continue
        lines.append(
            f"  {r['task']:16} {name:46} {_fmt(r['acc_wow'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] n={n}"
        )
        if pd.notna(r["ci_low"]) and r["ci_low"] > 0.5:
            above.append(f"{name} on {r['task']}")
    return lines, above


def alignment_lines(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Lines of the gains per setting (Δp_wrong, ΔAcc, −ΔECE with CIs) and those whose CI excludes zero."""
    lines, moved = [], []
    gains = (("d_p_wrong", "Δp_wrong"), ("d_acc", "ΔAcc"), ("neg_d_ece", "-ΔECE"))
    for _, r in table.iterrows():
        n = r.get("n_questions")
        too_few = pd.notna(n) and n < MIN_QUESTIONS  # a CI from so few questions is shown, never read
        parts = []
        for col, label in gains:
            if col not in r:
                continue
            lo, hi = r.get(f"{col}_ci_low"), r.get(f"{col}_ci_high")
            parts.append(f"{label} {_signed(r[col])} [{_signed(lo)}, {_signed(hi)}]")
            if pd.notna(lo) and pd.notna(hi) and (lo > 0 or hi < 0) and not too_few:
                moved.append(f"{label} of {r['setting']} ({'up' if lo > 0 else 'down'})")
        where = r["setting"] + (f" on {r['eval_task']}" if r.get("eval_task") not in (None, r.get("task")) else "")
        where += f" seed {int(r['train_seed'])}" if pd.notna(r.get("train_seed", None)) else ""
        few = f" ({int(n)} test question{'s' if n != 1 else ''}: too few for a 95% interval)" if too_few else ""
        lines.append(f"  {where:36} " + "; ".join(parts) + few)
    return lines, moved


def parse_rates(run_dir: Path) -> dict[str, float]:
    """The share of parsed test answers of the original model and each aligned one (``eval/<task>/<model>.jsonl``),
    keyed ``<task>/<model>``."""
    from wow import io

    out = {}
    for path in sorted((Path(run_dir) / "eval").glob("*/*.jsonl")):
        rows = io.read_jsonl(path)
        if rows:
            out[f"{path.parent.name}/{path.stem}"] = eval_metrics.metric("parse_rate", rows)
    return out


def training_losses(run_dir: Path) -> dict[str, tuple[float, str, tuple[str, float] | None]]:
    """The mean training loss of each training run (``models/<task>/<setting>/<config>/train_log.json``), its trainer
    and that trainer's no-preference loss (``(formula, value)``, None where it has none): ``{folder: (loss, trainer,
    no_preference)}``."""
    out = {}
    for path in sorted((Path(run_dir) / "models").rglob(layout.TRAIN_LOG_FILE)):
        logged = json.loads(path.read_text())
        if logged.get("train_loss") is not None:
            trainer = logged.get("trainer", "dpo")
            beta = float(logged.get("config", {}).get("beta", DEFAULT_BETA))
            key = str(path.parent.relative_to(Path(run_dir) / "models"))
            out[key] = (float(logged["train_loss"]), trainer, no_preference_loss(trainer, beta))
    return out


def training_line(losses: dict[str, tuple[float, str, tuple[str, float] | None]]) -> str:
    """The verdict's line on training: how many trainings ended with a mean loss still at their trainer's
    no-preference loss (within :data:`MOVED_BY` of ln 2, the same share of another value), and which trainers have
    no such value."""
    judged = {k: (loss, chance) for k, (loss, _, chance) in losses.items() if chance}
    flat = [k for k, (loss, (_, c)) in judged.items() if abs(loss - c) < MOVED_BY * c / CHANCE_LOSS]
    formulas = sorted({chance[0] for _, chance in judged.values()})
    if formulas == ["ln 2"]:
        value = f"ln 2 = {CHANCE_LOSS:.3f}"
    else:
        value = f"their trainer's loss with no preference learnt ({', '.join(formulas)}; within {MOVED_BY} of ln 2)"
    line = (
        f"training: {len(flat)} of {len(judged)} trainings ended with a mean loss within {MOVED_BY} of {value} (the "
        "preferences did not move them)"
        if flat
        else f"training: every training's mean loss moved away from {value}"
    )
    if not judged:
        line = "training: no training's loss has a no-preference value to compare with"
    others = sorted({trainer for _, trainer, chance in losses.values() if not chance})
    if others and judged:
        line += f"; {len(losses) - len(judged)} trainings ({', '.join(others)}) have no such value and are not counted"
    elif others:
        line += f" ({', '.join(others)}: reference-free or with an NLL term)"
    return line


def _read(path: Path, given: pd.DataFrame | None) -> pd.DataFrame | None:
    if given is not None:
        return given
    return pd.read_csv(path) if path.exists() else None


def verdict_lines(
    run_dir: str | Path, acc: pd.DataFrame | None = None, alignment: pd.DataFrame | None = None
) -> list[str]:
    """The verdict of a run in plain words, one line per finding ([] before stage 03): which signals beat chance,
    whether training moved the model, whether any gain's CI excludes zero. ``summary.md``, the report and the
    terminal (:func:`results_text`) say the same lines.

    Args:
        run_dir: the run folder (its ``train_log.json`` files; the tables when not given).
        acc, alignment: ``acc_wow.csv`` and ``alignment.csv`` as DataFrames (default: read from the folder).
    """
    run = layout.Layout(Path(run_dir))
    acc, alignment = _read(run.acc_wow, acc), _read(run.alignment, alignment)
    verdict: list[str] = []
    if acc is not None:
        lines, above = acc_wow_lines(acc)
        measured = [line for line in lines if not line.endswith("no pairs")]
        verdict.append(
            f"signals above chance (CI above 0.5): {', '.join(above)}"
            if above
            else "no signal is above chance (every Acc_WoW CI reaches 0.5 or below)"
            if measured
            else "no elicitation method has Acc_WoW pairs at M = 1 (only the oracle, or none with pairs): nothing to "
            "compare with chance"
        )
    if alignment is not None:
        _, moved = alignment_lines(alignment)
        losses = training_losses(run.root)
        if losses:
            verdict.append(training_line(losses))
        rates = parse_rates(run.root)
        if rates:
            low = [k for k, v in rates.items() if v < eval_metrics.LOW_PARSE_RATE and not k.endswith("/original")]
            verdict.append(
                "parse rate of the test answers: "
                + ", ".join(f"{k} {v:.2f}" for k, v in rates.items())
                + (
                    f"; below {eval_metrics.LOW_PARSE_RATE} after alignment: {', '.join(low)} (their p_wrong counts each "
                    "unparsed answer as correctness 0)"
                    if low
                    else ""
                )
            )
        verdict.append(
            f"gains whose CI excludes 0: {', '.join(moved)}"
            if moved
            else "no gain's CI excludes 0: at this size the test questions show no change"
        )
    return verdict


def results_text(run_dir: str | Path) -> str:
    """The results table and the verdict of a run, as plain text ('' when the run has neither table yet)."""
    run = layout.Layout(Path(run_dir))
    out: list[str] = []
    acc, alignment = _read(run.acc_wow, None), _read(run.alignment, None)
    if acc is not None:
        lines, _ = acc_wow_lines(acc)
        split = ", ".join(sorted(map(str, acc["split"].dropna().unique()))) if "split" in acc else "?"
        out += [f"Acc_WoW at M = 1 ({split} questions; random = 0.5; 95% CI; n = pairs):", *lines]
    if alignment is not None:
        lines, _ = alignment_lines(alignment)
        out += ["", "Alignment on the held-out test questions (after - before; positive = better; 95% CI):", *lines]
    if not out:
        return ""
    verdict = verdict_lines(run.root, acc, alignment)
    return "\n".join([*out, "", "Verdict:", *(f"  - {v}" for v in verdict)])
