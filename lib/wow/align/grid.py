"""The grid and the choice: train every point of a grid of training settings for one preference set and pick one.


``grid_search`` trains every point of a grid of learning rate x scheduler x weight decay x epochs (x beta) and picks
the configuration with the best ``select_fn(adapter_dir)`` (mean correctness of sampled answers on the validation
questions; see :func:`wow.align.evaluate.make_select_fn`), recording the validation loss of each run too. The paper's grid
(``grid_search.py``) has 81 points: learning rate {1e-4, 5e-5, 1e-5} (:data:`PAPER_LEARNING_RATES`) x scheduler
{cosine, cosine_with_restarts, reduce_lr_on_plateau} (:data:`PAPER_SCHEDULERS`) x weight decay {0, 1e-5, 1e-3}
(:data:`PAPER_WEIGHT_DECAYS`) x epochs {1, 3, 5} (:data:`PAPER_EPOCHS`), beta 0.1 and warm-up ratio 0.1 fixed.
``grid_search``'s defaults are the 9 points learning rate x epochs at the base config's scheduler and weight decay;
pass ``lr_schedulers=PAPER_SCHEDULERS, weight_decays=PAPER_WEIGHT_DECAYS`` (``python -m wow.align --grid`` does) for
all 81. Two quirks of the paper's grid carry over as they are: transformers' ``cosine_with_restarts`` with its
default single cycle is the same curve as ``cosine`` (the paper passed no cycle count), and ``reduce_lr_on_plateau``
has no warm-up and only lowers the rate after ``eval_steps``-step validations stop improving (constant otherwise).
The paper's run scripts for Figures 3 and 4 and Tables 3 and 4 trained one configuration per setting (``finetune.py``'s
defaults: lr 5e-5, cosine, weight decay 1e-5, 3 epochs), and only its proxy runs ran ``grid_search.py`` (9 points);
``parameters/paper/`` does the same, with the 81 points as an option (docs/fidelity.md, row 34).

Example::

    from wow import preferences
    from wow.align import grid
    ds = preferences.load_preferences("outputs/demo/preferences/self_oracle")
    result = grid.grid_search(ds["train"], ds["validation"], "smollm2-135m", "dpo", "outputs/demo/models/self_oracle_dpo")
    result.best["output_dir"]
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from wow import WowError, io, layout
from wow.align import checkpoints, training
from wow.align.align_config import AlignConfig

log = logging.getLogger(__name__)

PAPER_LEARNING_RATES = (1e-4, 5e-5, 1e-5)
#: The paper's schedulers; its grid_search.py spells the second ``cosine_with_restart``, which transformers rejects:
#: its grid stopped after the first 9 runs (lr 1e-4, cosine). ``cosine_with_restarts`` is the HF name.
PAPER_SCHEDULERS = ("cosine", "cosine_with_restarts", "reduce_lr_on_plateau")
PAPER_WEIGHT_DECAYS = (0.0, 1e-5, 1e-3)
PAPER_EPOCHS = (1, 3, 5)


@dataclass
class GridResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best: the row of the chosen configuration.
        runs: one row per configuration (``name, output_dir, learning_rate, lr_scheduler, weight_decay, epochs, beta,
            train_loss, val_loss, best_step, select_score, seconds, skipped``), in grid order; ``val_loss`` and
            ``best_step`` are those of the checkpoint each run saved (the one of the lowest validation loss).
        selected_by: ``select_fn`` (validation mean correctness, higher is better) or ``val_loss`` (lower).
    """

    best: dict
    runs: list[dict]
    selected_by: str


def config_name(
    learning_rate: float,
    epochs: float,
    beta: float | None = None,
    lr_scheduler: str | None = None,
    weight_decay: float | None = None,
) -> str:
    """Folder name of one grid point, in the order of the paper's names (``lr, scheduler, decay, epochs, beta``);
    an axis given as None is left out, e.g. ``lr=5.0e-05_epochs=3`` or
    ``lr=1.0e-04_scheduler=cosine_decay=1.0e-05_epochs=1_beta=0.1``."""
    parts = [f"lr={learning_rate:.1e}"]
    if lr_scheduler is not None:
        parts.append(f"scheduler={lr_scheduler}")
    if weight_decay is not None:
        parts.append(f"decay={weight_decay:.1e}")
    parts.append(f"epochs={epochs:g}")
    if beta is not None:
        parts.append(f"beta={beta:g}")
    return "_".join(parts)


def grid_points(
    base: AlignConfig,
    learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
    epochs: Sequence[float] = PAPER_EPOCHS,
    lr_schedulers: Sequence[str] | None = None,
    weight_decays: Sequence[float] | None = None,
    betas: Sequence[float] | None = None,
    selected_by_loss: bool = False,
) -> list[tuple[str, AlignConfig]]:
    """The grid's configurations ``(folder name, config)`` in training order, each checked (:meth:`AlignConfig.check`);
    the axes as in :func:`grid_search`. ``selected_by_loss``: the grid chooses its point by validation loss (no
    ``select_fn``), so the points of a grid of several validate whatever ``in_run_validation`` says.

    Raises:
        WowError: an empty axis or an invalid configuration.
    """
    lr_schedulers = [base.lr_scheduler] if lr_schedulers is None else list(lr_schedulers)
    weight_decays = [base.weight_decay] if weight_decays is None else list(weight_decays)
    axes = {"learning_rates": learning_rates, "lr_schedulers": lr_schedulers, "weight_decays": weight_decays}
    axes |= {"epochs": epochs, "betas": [None] if betas is None else betas}
    empty = [k for k, v in axes.items() if len(v) == 0]
    if empty:
        raise WowError(f"grid_search: empty grid axis {', '.join(empty)}; give at least one value each.")
    grid = []
    for lr, sched, wd, ep, beta in itertools.product(*axes.values()):
        name = config_name(
            lr,
            ep,
            beta,
            lr_scheduler=sched if len(lr_schedulers) > 1 else None,
            weight_decay=wd if len(weight_decays) > 1 else None,
        )
        cfg = dataclasses.replace(
            base,
            learning_rate=lr,
            lr_scheduler=sched,
            weight_decay=wd,
            epochs=ep,
            beta=base.beta if beta is None else beta,
        )
        cfg.check()  # a bad name fails here, not after training the points before it (the paper's W19)
        grid.append((name, cfg))
    if selected_by_loss and len(grid) > 1:  # the loss chooses the point (wow.align.in_run_validation)
        grid = [(name, dataclasses.replace(cfg, in_run_validation="always")) for name, cfg in grid]
    return grid


def grid_search(
    preferences_train,
    preferences_val,
    model_name: str,
    trainer: str,
    output_root: str | os.PathLike,
    base_config: AlignConfig | None = None,
    *,
    learning_rates: Sequence[float] = PAPER_LEARNING_RATES,
    epochs: Sequence[float] = PAPER_EPOCHS,
    lr_schedulers: Sequence[str] | None = None,
    weight_decays: Sequence[float] | None = None,
    betas: Sequence[float] | None = None,
    select_fn: Callable[[Path], float] | None = None,
    callbacks: Sequence | None = None,
) -> GridResult:
    """Train every grid configuration (resumable) and choose the best one.

    The grid is learning rate x scheduler x weight decay x epochs x beta, in that order (the paper's). The defaults
    train 9 points (the paper's learning rates and epochs, the base config's scheduler and weight decay); the
    paper's full 81-point grid also passes ``lr_schedulers=PAPER_SCHEDULERS, weight_decays=PAPER_WEIGHT_DECAYS``.
    Each configuration trains into ``output_root/<config_name>``; a scheduler or weight-decay axis of one value is
    left out of the names (so names stay those of a learning rate x epochs grid), one of several values is in
    them. Complete folders are skipped, and the scores stored in ``output_root/selection.json`` save re-evaluating
    them. ``grid.json`` in ``output_root`` lists all runs and the choice. Every configuration is checked
    (:meth:`AlignConfig.check`) before the first one trains.

    Args:
        preferences_train: training pairs (see :func:`train`).
        preferences_val: validation pairs (validation loss).
        model_name: base model.
        trainer: one of :data:`wow.schema.TRAINERS`.
        output_root: folder of the setting (``models/<setting>``).
        base_config: settings other than the grid's (learning rate, epochs, and the axes given below are
            overridden).
        learning_rates: grid of learning rates (paper: 1e-4, 5e-5, 1e-5).
        epochs: grid of epochs (paper: 1, 3, 5).
        lr_schedulers: grid of ``lr_scheduler`` names (paper: :data:`PAPER_SCHEDULERS`); None keeps
            ``base_config.lr_scheduler``. ``reduce_lr_on_plateau`` needs validation pairs.
        weight_decays: grid of weight decays (paper: 0, 1e-5, 1e-3); None keeps ``base_config.weight_decay``.
        betas: optional grid of betas; None keeps ``base_config.beta`` (and leaves it out of folder names).
        select_fn: ``adapter_dir -> score``, higher is better (the paper: mean correctness of answers sampled on
            validation questions; :func:`wow.align.evaluate.make_select_fn` builds one). None: lowest validation loss.
            A grid of one configuration selects it without calling ``select_fn``.
        callbacks: extra trainer callbacks for every run.

    Returns:
        A :class:`GridResult`.

    Raises:
        WowError: an empty grid axis, an invalid configuration, or nothing to select on (no ``select_fn`` and no
            validation pairs).
    """
    base = base_config or AlignConfig()
    root = Path(output_root)
    runs = []
    grid = grid_points(
        base, learning_rates, epochs, lr_schedulers, weight_decays, betas, selected_by_loss=select_fn is None
    )
    no_val = preferences_val is None or len(preferences_val) == 0
    if no_val and any(cfg.lr_scheduler == "reduce_lr_on_plateau" for _, cfg in grid):
        raise WowError(
            "grid_search: reduce_lr_on_plateau lowers the rate on the validation loss, but there are no validation "
            "pairs; build the preference set with a validation share or leave that scheduler out."
        )
    for i, (name, cfg) in enumerate(grid, 1):
        log.info("grid %d/%d: %s", i, len(grid), name)
        res = training.train(
            preferences_train, preferences_val, model_name, trainer, root / name, cfg, callbacks=callbacks
        )
        score = None
        if select_fn is not None and len(grid) > 1:
            # Scores live beside the adapters, not in them: engines hash the adapter folder for their cache keys.
            selection = io.read_json(root / layout.SELECTION_FILE) if (root / layout.SELECTION_FILE).exists() else {}
            if name not in selection or not res.skipped:
                selection[name] = float(select_fn(root / name))
                io.write_json(root / layout.SELECTION_FILE, selection)
            score = selection[name]
        runs.append(
            {
                "name": name,
                "output_dir": str(root / name),
                "learning_rate": cfg.learning_rate,
                "lr_scheduler": cfg.lr_scheduler,
                "weight_decay": cfg.weight_decay,
                "epochs": cfg.epochs,
                "beta": cfg.beta,
                "train_loss": res.train_loss,
                "val_loss": res.val_loss,
                "best_step": res.best_step,
                "select_score": score,
                "seconds": res.seconds,
                "skipped": res.skipped,
            }
        )
    if len(runs) == 1:
        best, selected_by = runs[0], "only configuration"  # nothing to choose: no validation sampling
    elif select_fn is not None:
        best, selected_by = max(runs, key=lambda r: r["select_score"]), "select_fn"  # first of equals wins
    else:
        with_loss = [r for r in runs if r["val_loss"] is not None]
        if not with_loss:
            raise WowError("grid_search has nothing to select on: pass select_fn or validation pairs.")
        best, selected_by = min(with_loss, key=lambda r: r["val_loss"]), "val_loss"
    if checkpoints.is_main_process():  # one writer under accelerate launch
        io.write_json(root / layout.GRID_FILE, {"selected_by": selected_by, "best": best["name"], "runs": runs})
    log.info("grid best (%s): %s", selected_by, best["name"])
    return GridResult(best=best, runs=runs, selected_by=selected_by)
