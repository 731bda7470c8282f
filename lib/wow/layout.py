"""Every artefact path of a run folder, in one leaf (docs/artefacts.md describes what each file holds).

A :class:`Layout` names the files of one run folder ``outputs/<run>/``; every module that reads or writes a run's
files asks it for their paths instead of spelling them. This module imports nothing of wow but
:class:`wow.WowError`, so anything may import it.

Example::

    from wow.layout import Layout
    run = Layout("outputs/demo")
    run.answers                                   # outputs/demo/answers.jsonl
    run.eval_answers("shortest_path", "self_oracle_dpo")
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from wow import WowError

#: The repository root (notebooks/, parameters/ and, by default, outputs/ lie under it).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The numbered notebooks, one per stage.
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
LOCK_FILE = ".wow.lock"
#: Every attempt at every stage: ``{stage: [attempt, ...]}``, oldest first.
ATTEMPTS_FILE = "stages.json"
REPORT_DIR = "report"
#: Files of one training run (``models/<task>/<setting>/<config>/``) and of its grid (``models/<task>/<setting>/``).
TRAIN_LOG_FILE = "train_log.json"
PROGRESS_FILE = "progress.json"
#: Trainer checkpoints of one training run, inside its folder (:mod:`wow.align.checkpoints`).
CHECKPOINTS_DIR = "checkpoints"
SELECTION_FILE = "selection.json"
GRID_FILE = "grid.json"
VALIDATION_ANSWERS_DIR = "validation_answers"


def notebooks() -> list[Path]:
    """The numbered notebooks (``notebooks/NN_*.ipynb``), in order."""
    found = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise WowError(f"no numbered notebooks in {NOTEBOOK_DIR}")
    return found


def safe_name(name: str) -> str:
    """A name made file-safe: anything but letters, digits, ``.``, ``_``, ``-`` becomes ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


def judgement_filename(kind: str, judge: str, mode: str = "text", k: int | None = None) -> str:
    """File name under ``judgements/``: ``pairwise_<judge>_<mode>.jsonl`` or ``score_<judge>_k<k>_<mode>.jsonl``.

    The judge name is made file-safe (:func:`safe_name`; ``judge`` when nothing is left).
    """
    safe = safe_name(judge) or "judge"
    if kind == "pairwise":
        return f"pairwise_{safe}_{mode}.jsonl"
    if kind == "score":
        if k is None:
            raise WowError("a score judgement file needs k.")
        return f"score_{safe}_k{k}_{mode}.jsonl"
    raise WowError(f"unknown judgement kind {kind!r}; use 'pairwise' or 'score'.")


def seeded_name(name: str, train_seed: int | None) -> str:
    """The name of one training seed's model, evaluation and mechanism row: ``<name>__seed<k>``, or ``name`` for a
    setting trained once (``train_seeds`` unset)."""
    return name if train_seed is None else f"{name}__seed{train_seed}"


@dataclass(frozen=True)
class Layout:
    """The artefact paths of the run folder ``root`` (docs/artefacts.md, stage by stage)."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # -- the run itself (wow run, params) ---------------------------------------------------------------------
    @property
    def run_yaml(self) -> Path:
        return self.root / "run.yaml"

    @property
    def stage_params(self) -> Path:
        """The parameters each stage validated and used: ``{stage: {"sha256", "values"}}``."""
        return self.root / "stage_params.json"

    @property
    def cache(self) -> Path:
        return self.root / "cache.sqlite"

    @property
    def reference_cache(self) -> Path:
        """The reference model's log-probability of every training and validation sequence (stage 04; a wow cache
        file apart from the model calls of ``cache.sqlite``: :mod:`wow.align.reference_logps`)."""
        return self.root / "reference_logps.sqlite"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def stages(self) -> Path:
        return self.root / ATTEMPTS_FILE

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def paper_checks(self) -> Path:
        return self.root / "paper_checks.json"

    @property
    def signal_audit(self) -> Path:
        return self.root / "signal_audit.json"

    @property
    def mechanism(self) -> Path:
        return self.root / "mechanism.csv"

    @property
    def mechanism_rewards(self) -> Path:
        return self.root / "mechanism_rewards.csv"

    @property
    def mechanism_contrasts(self) -> Path:
        return self.root / "mechanism_contrasts.csv"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def usage(self) -> Path:
        return self.root / "usage.json"

    @property
    def rehearsal(self) -> Path:
        """``rehearsal.json`` of a ``wow run --fast-dev-run`` folder: what was shrunk and what was substituted."""
        return self.root / "rehearsal.json"

    @property
    def notebooks(self) -> Path:
        return self.root / "notebooks"

    def notebook(self, stage: str) -> Path:
        """The executed notebook of ``stage`` (its stem, e.g. ``01_data_prep``)."""
        return self.notebooks / f"{stage}.ipynb"

    @property
    def report(self) -> Path:
        return self.root / REPORT_DIR

    # -- stage 01 -----------------------------------------------------------------------------------------------
    @property
    def questions(self) -> Path:
        return self.root / "questions.jsonl"

    @property
    def answers(self) -> Path:
        return self.root / "answers.jsonl"

    # -- stage 02 -----------------------------------------------------------------------------------------------
    @property
    def judgements(self) -> Path:
        return self.root / "judgements"

    def judgement(self, kind: str, judge: str, mode: str = "text", k: int | None = None) -> Path:
        return self.judgements / judgement_filename(kind, judge, mode, k)

    @property
    def scores(self) -> Path:
        return self.root / "scores.jsonl"

    # -- stage 03 -----------------------------------------------------------------------------------------------
    @property
    def acc_wow(self) -> Path:
        return self.root / "acc_wow.csv"

    @property
    def acc_wow_bins(self) -> Path:
        return self.root / "acc_wow_bins.csv"

    @property
    def correlations(self) -> Path:
        return self.root / "correlations.csv"

    # -- stage 04 -----------------------------------------------------------------------------------------------
    def preferences(self, task: str, set_name: str) -> Path:
        """``preferences/<task>/<set>/``: one preference set (``DatasetDict`` folder)."""
        return self.root / "preferences" / task / set_name

    def models(self, task: str, setting: str) -> Path:
        """``models/<task>/<setting>/``: the grid of one setting; each configuration in a sub-folder."""
        return self.root / "models" / task / setting

    def eval_answers(
        self, eval_task: str, setting: str | None = None, task: str | None = None, train_seed: int | None = None
    ) -> Path:
        """``eval/<eval task>/``: ``original.jsonl`` (``setting`` None), ``<setting>.jsonl``, or, for a model
        aligned on another ``task``, ``<task>__<setting>.jsonl``; ``__seed<k>`` appended for one of several
        training seeds (``train_seeds``)."""
        if setting is None:
            name = "original"
        elif task is None or task == eval_task:
            name = setting
        else:
            name = f"{task}__{setting}"
        if setting is not None:
            name = seeded_name(name, train_seed)
        return self.root / "eval" / eval_task / f"{name}.jsonl"

    @property
    def alignment(self) -> Path:
        return self.root / "alignment.csv"

    # -- stage 05 -----------------------------------------------------------------------------------------------
    @property
    def summary(self) -> Path:
        return self.root / "summary.md"

    @property
    def fig3_points(self) -> Path:
        """``fig3_points.csv``: Fig 3's points (each aligned setting's Acc_WoW beside its gains and their CIs)."""
        return self.root / "fig3_points.csv"

    @property
    def fig3_slopes(self) -> Path:
        """``fig3_slopes.csv``: the slope of each gain against Acc_WoW, its bootstrap CI, the sources of variance that
        CI carries, and the true slope the design detects with 80% power."""
        return self.root / "fig3_slopes.csv"
