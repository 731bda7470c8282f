"""The validation pairs a training reads while it trains: a seeded subset of at most ``max_eval_pairs``, and none where
the validation loss would choose nothing (``in_run_validation: auto``, the default of a run).

The loss of the in-run validation chooses in three cases: a run evaluated more than once keeps the checkpoint of the
lowest loss (``eval_steps`` below its step count, :func:`planned_steps`); the ``reduce_lr_on_plateau`` schedule lowers
the rate on it; a grid of several points without validation questions keeps the point of the lowest loss
(:func:`wow.align.grid.grid_points` sets ``in_run_validation: always`` on such points). Elsewhere a run is evaluated
once, at its last step, and keeps its final weights whatever the loss, so ``auto`` skips that pass, as the paper's
runs of fewer than ``eval_steps`` (1000) steps never validated (docs/fidelity.md, row 33); ``always`` computes it for
the record (``val_loss`` in ``train_log.json``). What it costs: a forward pass of the policy (and, on its first read,
of the reference) over every validation sequence at each evaluation; in the demo, 8 pairs after 4 steps of 2 took a
quarter of each training.

Example::

    from wow.align import in_run_validation
    from wow.align.align_config import AlignConfig
    cfg = AlignConfig(max_steps=4, eval_steps=1000)
    in_run_validation.chooses(cfg, n_train=53)  # False: one evaluation, at step 4
"""

from __future__ import annotations

import logging
import math

from wow.align.align_config import AlignConfig

__all__ = ["chooses", "planned_steps", "validation_pairs"]

log = logging.getLogger(__name__)


def planned_steps(config: AlignConfig, n_train: int, world_size: int = 1) -> int:
    """The optimiser steps of a training on ``n_train`` pairs, counted as transformers counts them: ``max_steps``
    where set, else ``ceil(epochs x updates per epoch)``, an epoch's last batch and accumulation partial."""
    if config.max_steps > 0:
        return config.max_steps
    batches = math.ceil(n_train / (config.train_batch_size * world_size))
    per_epoch = max(math.ceil(batches / config.grad_accumulation), 1)
    return math.ceil(config.epochs * per_epoch)


def chooses(config: AlignConfig, n_train: int, world_size: int = 1) -> bool:
    """True where the validation loss of a training decides something: several evaluations (``eval_steps`` below the
    step count: the best checkpoint is kept), the ``reduce_lr_on_plateau`` schedule, or ``in_run_validation:
    always``."""
    if config.in_run_validation == "always" or config.lr_scheduler == "reduce_lr_on_plateau":
        return True
    return config.eval_steps < planned_steps(config, n_train, world_size)


def validation_pairs(val_ds, config: AlignConfig, n_train: int, name: str, world_size: int = 1):
    """The validation pairs a training of ``n_train`` pairs reads: None where there are none or where the loss would
    choose nothing (:func:`chooses`), else at most ``max_eval_pairs`` of them, a subset drawn with ``seed``.

    Args:
        val_ds: the prepared validation dataset (or None).
        config: the training's settings.
        n_train: the training pairs.
        name: the run, for the log lines.
        world_size: the training processes.
    """
    if val_ds is None:
        log.info("%s: no validation pairs, so no evaluation while training: the final weights are saved", name)
        return None
    if not chooses(config, n_train, world_size):
        log.info(
            "%s: no in-run validation: its one evaluation, at step %d, would choose nothing (the final weights are "
            "saved; in_run_validation: always computes the loss for the record)",
            name,
            planned_steps(config, n_train, world_size),
        )
        return None
    if config.max_eval_pairs is not None and len(val_ds) > config.max_eval_pairs:
        log.info("%s: validating on %d of %d pairs (max_eval_pairs)", name, config.max_eval_pairs, len(val_ds))
        val_ds = val_ds.shuffle(seed=config.seed).select(range(config.max_eval_pairs))
    return val_ds
