"""Each notebook's closing check: one of its stage's numbers beside what the paper reports, where the run is a paper
set.

The paper's reported numbers available to a reader are its setup (625 questions per dataset, 500 of them train; 10
answers per question), its abstract ("up to 20.9% higher performance than random guess"; alignment makes models
"less wrong" and "overall" better calibrated) and its figure captions (Fig 3: alignment "is not sensitive to the
accuracy of wrong-over-wrong preference"). Each stage has one :class:`PaperClaim` (:data:`CLAIMS`): the paper's
words, where it says them, the number this run gives and the tolerance within which the two agree.

The check runs only where the run is a paper set as shipped: its parameter file lies under ``parameters/paper/`` and
no value was changed (a rehearsal, a ``--limit`` try or any ``--set`` is another experiment, whose numbers are not the
paper's); otherwise it says why it skipped. A difference from the paper is a finding, not an error: the cell prints
it (logged), :func:`check` records it in the run's ``paper_checks.json``, and the run goes on.

Example (the last cell of notebook 03)::

    paper_check.check(P, "03", param_file)   # "paper check skipped: parameters/demo.yaml is not a paper set ..."
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from wow import io, layout, params
from wow.params import RunParams
from wow.params.set_files import resolve_set_path

log = logging.getLogger(__name__)

PAPER_SETS = layout.REPO_ROOT / "parameters" / "paper"
#: The paper's setup: questions sampled per dataset (all where a dataset has fewer), the train share, answers each.
PAPER_QUESTIONS = 625
PAPER_TRAIN_QUESTIONS = 500
PAPER_SAMPLES = 10
#: The abstract's largest Acc_WoW gain over random guessing (0.5), in Acc_WoW points.
PAPER_BEST_GAIN = 0.209
#: Acc_WoW rows with fewer pairs than this are too noisy to stand for an elicitation method's skill.
MIN_PAIRS = 30


@dataclass(frozen=True)
class PaperClaim:
    """What the paper reports for a stage, and how this run's number is compared with it.

    Attributes:
        stage: the notebook's number (``"03"``).
        claim: the paper's words.
        source: where the paper says it.
        measure: reads this run's number from the run folder: ``(value, agrees, how)``, where ``how`` says what was
            measured and the tolerance.
    """

    stage: str
    claim: str
    source: str
    measure: Callable[[layout.Layout, RunParams], tuple[float, bool, str]]


def _train_questions(run: layout.Layout, P: RunParams) -> tuple[float, bool, str]:
    questions = io.read_jsonl(run.questions)
    counts = pd.Series([q["task"] for q in questions if q["split"] == "train"]).value_counts()
    fewest = int(counts.min()) if len(counts) else 0
    per_task = ", ".join(f"{t} {n}" for t, n in sorted(counts.items()))
    return fewest, fewest == PAPER_TRAIN_QUESTIONS, f"train questions per task: {per_task} (exactly the paper's)"


def _answers_per_question(run: layout.Layout, P: RunParams) -> tuple[float, bool, str]:
    answers = pd.DataFrame(io.read_jsonl(run.answers))
    train = answers[answers["split"] == "train"]
    counts = train.groupby(["question_id", "generator"]).size()
    fewest = int(counts.min()) if len(counts) else 0
    return fewest, fewest == PAPER_SAMPLES, "the fewest answers of a train question by one generator (exactly 10)"


def _best_gain(run: layout.Layout, P: RunParams) -> tuple[float, bool, str]:
    table = pd.read_csv(run.acc_wow)
    rows = table[
        (table["split"] == "train")
        & (table["method"] != "oracle")
        & (table["margin"] == 1.0)
        & (table["n_pairs"] >= MIN_PAIRS)
    ]
    if rows.empty:
        return float("nan"), False, f"no elicitation method has {MIN_PAIRS}+ train pairs at M = 1"
    gain = float(rows["acc_wow"].max()) - 0.5
    how = (
        f"the best Acc_WoW - 0.5 over the run's methods, tasks and generators (M = 1, {MIN_PAIRS}+ pairs); agrees "
        f"when above 0 and at most {PAPER_BEST_GAIN} + 0.05 (the paper's is a maximum over 7 LLMs and 8 datasets)"
    )
    return gain, 0.0 < gain <= PAPER_BEST_GAIN + 0.05, how


def _mean_gains(run: layout.Layout, P: RunParams) -> tuple[float, bool, str]:
    table = pd.read_csv(run.alignment)
    d_p_wrong, neg_d_ece = float(table["d_p_wrong"].mean()), float(table["neg_d_ece"].mean())
    how = (
        f"the mean Δp_wrong over the run's {len(table)} settings (and -ΔECE {neg_d_ece:+.3f}); agrees when both "
        "are above 0"
    )
    return d_p_wrong, d_p_wrong > 0 and neg_d_ece > 0, how


def _fig3_slope(run: layout.Layout, P: RunParams) -> tuple[float, bool, str]:
    slopes = pd.read_csv(run.fig3_slopes).set_index("gain")
    row = slopes.loc["d_p_wrong"]
    how = f"Fig 3's slope of Δp_wrong on Acc_WoW, 95% CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}]; agrees when it holds 0"
    return float(row["slope"]), bool(row["ci_low"] <= 0 <= row["ci_high"]), how


CLAIMS = {
    "01": PaperClaim(
        "01",
        f"{PAPER_QUESTIONS} questions per dataset, {PAPER_TRAIN_QUESTIONS} of them for training",
        "the paper's setup (its code: preference_generation/dataset.py, 625 sampled, an 80/20 split)",
        _train_questions,
    ),
    "02": PaperClaim(
        "02",
        f"{PAPER_SAMPLES} answers sampled per question from each generator",
        "the paper's setup (its code: preference_generation/dataset.py)",
        _answers_per_question,
    ),
    "03": PaperClaim(
        "03",
        f'LLMs distinguish shades of wrong, "achieving up to {PAPER_BEST_GAIN:.1%} higher performance than random guess"',
        "the abstract",
        _best_gain,
    ),
    "04": PaperClaim(
        "04",
        'alignment "helps LLMs to produce less wrong ... answers, while overall improving model calibration"',
        "the abstract",
        _mean_gains,
    ),
    "05": PaperClaim(
        "05",
        '"wrong-over-wrong alignment is not sensitive to the accuracy of wrong-over-wrong preference"',
        "the caption of Fig 3",
        _fig3_slope,
    ),
}


def skip_reason(P: RunParams, param_file: str | Path) -> str | None:
    """Why the run is not a paper set as shipped (None when it is): its file lies outside ``parameters/paper/``, or
    it changes values of that file (named)."""
    path = resolve_set_path(param_file)
    if PAPER_SETS.resolve() not in path.resolve().parents:
        return f"{param_file} is not a paper set (parameters/paper/)"
    shipped = params.load(path).model_dump(mode="json")
    run = P.model_dump(mode="json")
    changed = sorted(k for k in run if run[k] != shipped.get(k) and k not in ("output_root", "run_name"))
    if changed:
        return f"this run changes {', '.join(changed)} of {param_file}: its numbers are not the paper's setting"
    return None


def check(P: RunParams, stage: str, param_file: str | Path) -> dict:
    """Compare the stage's number with the paper's (:data:`CLAIMS`), log the outcome and record it under
    ``stage`` in ``paper_checks.json``; skipped, with the reason, where the run is not a paper set as shipped.

    Returns:
        ``{"claim", "source", "status": agrees | differs | skipped, "value", "how" | "reason"}``.
    """
    claim = CLAIMS[stage]
    out = {"claim": claim.claim, "source": claim.source}
    reason = skip_reason(P, param_file)
    if reason:
        out |= {"status": "skipped", "reason": reason}
        log.info("paper check skipped: %s", reason)
    else:
        value, agrees, how = claim.measure(P.layout, P)
        out |= {"status": "agrees" if agrees else "differs", "value": value, "how": how}
        log.info(
            "the paper (%s): %s; this run: %.3f, %s: %s", claim.source, claim.claim, value, how, out["status"].upper()
        )
    path = P.layout.paper_checks
    records = io.read_json(path) if path.exists() else {}
    records[stage] = out
    io.write_json(path, records)
    return out
