"""Checkpoints of one training run: where they live, resuming from the last one, the best one by validation loss,
and the progress file.

A run into ``<output_dir>`` keeps its trainer checkpoints in ``<output_dir>/checkpoints/checkpoint-<step>/`` (the
adapter, optimiser, scheduler and RNG states, ``trainer_state.json``), every ``eval_steps`` steps and at the last
step, at most ``save_total_limit`` (3, the paper's) of them besides the best. ``checkpoints/settings.json`` holds
the settings they were trained with: a rerun with the same settings resumes from the last checkpoint, one with other
settings starts afresh. The folder is removed once the run is complete (``keep_checkpoints`` keeps it). The
adapter engines hash is the top level of ``<output_dir>``, so the checkpoints never change a cache key.

Example::

    from wow.align import checkpoints
    checkpoints.latest("outputs/demo/models/shortest_path/self_oracle_dpo/lr=5.0e-05_epochs=1")  # Path or None
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

from wow import io, layout

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
#: Checkpoints kept besides the best one (the paper's ``save_total_limit``).
SAVE_TOTAL_LIMIT = 3
_STEP = re.compile(r"checkpoint-(\d+)$")


def folder(output_dir: str | os.PathLike) -> Path:
    """The checkpoints folder of a run into ``output_dir`` (the trainer's ``output_dir``)."""
    return Path(output_dir) / layout.CHECKPOINTS_DIR


def step_of(checkpoint: str | os.PathLike | None) -> int | None:
    """The step of a ``checkpoint-<step>`` folder (None for None or another name)."""
    match = _STEP.search(str(checkpoint)) if checkpoint else None
    return int(match.group(1)) if match else None


def latest(output_dir: str | os.PathLike) -> Path | None:
    """The last complete checkpoint of a run into ``output_dir`` (one with ``trainer_state.json``), or None."""
    found = [p for p in folder(output_dir).glob("checkpoint-*") if step_of(p) is not None]
    found = [p for p in found if (p / "trainer_state.json").exists()]
    return max(found, key=step_of) if found else None


def is_main_process() -> bool:
    """Whether this process writes the run's files: the only one, or rank 0 under ``accelerate launch``."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every process of a multi-process run (nothing in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def resume_from(output_dir: str | os.PathLike, settings: dict) -> Path | None:
    """The checkpoint to resume from: the last one, when ``checkpoints/settings.json`` records ``settings``.

    Every process of a multi-process run computes the same answer from the same files; only the main process then
    changes them (:func:`start`).
    """
    path = folder(output_dir) / SETTINGS_FILE
    try:
        same = path.exists() and json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(settings))
    except json.JSONDecodeError:
        same = False
    return latest(output_dir) if same else None


def start(output_dir: str | os.PathLike, settings: dict, resume: Path | None) -> None:
    """Make the checkpoints folder ready for a run (main process only): without a checkpoint to resume from, remove
    checkpoints trained with other settings and record ``settings``."""
    if not is_main_process() or resume is not None:
        return
    ckpt = folder(output_dir)
    stale = [p for p in ckpt.glob("checkpoint-*") if p.is_dir()]
    if stale:
        log.warning("%s: removing %d checkpoints trained with other settings", ckpt, len(stale))
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    io.write_json(ckpt / SETTINGS_FILE, settings)


def remove_checkpoints(output_dir: str | os.PathLike, keep: bool) -> None:
    """After a complete run (main process only): remove the checkpoints folder unless ``keep``."""
    if is_main_process() and not keep:
        shutil.rmtree(folder(output_dir), ignore_errors=True)


def best(state) -> tuple[int | None, float | None]:
    """``(step, eval_loss)`` of the checkpoint the trainer chose by validation loss (None, None without one)."""
    return step_of(state.best_model_checkpoint), state.best_metric


def log_at_saves():
    """A callback that logs the training loss at every step that saves a checkpoint, so a checkpoint's
    ``log_history`` holds the losses of every step before it (a resumed run's mean loss needs them)."""
    from transformers import TrainerCallback

    class LogAtSaves(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            saves = state.save_steps > 0 and state.global_step % state.save_steps == 0
            if saves or state.global_step >= state.max_steps:
                control.should_log = True
            return control

    return LogAtSaves()


def progress_file(output_dir: Path):
    """A callback that keeps ``progress.json`` (step, max_steps, epoch, last logged loss) current while training."""
    from transformers import TrainerCallback

    path = Path(output_dir) / layout.PROGRESS_FILE

    class ProgressFile(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                losses = [h["loss"] for h in state.log_history if "loss" in h]
                io.write_json(
                    path,
                    {
                        "step": state.global_step,
                        "max_steps": state.max_steps,
                        "epoch": state.epoch,
                        "loss": losses[-1] if losses else None,
                    },
                )

    return ProgressFile()


def loss_lines(name: str, trainer: str = "dpo", beta: float = 0.1):
    """A callback that logs each logged training loss with the step, the steps planned, the loss of a model that
    cannot tell chosen from rejected (the trainer's starting point: ln 2 for DPO;
    :func:`wow.analysis.no_preference_loss.no_preference_loss`; none for reference-free trainers) and the time left,
    so ``wow run``'s terminal shows a training's progress and whether it learns (:class:`wow.cli.run.StageEcho`)."""
    import time

    from transformers import TrainerCallback

    from wow.analysis.no_preference_loss import no_preference_loss
    from wow.progress import duration

    chance = no_preference_loss(trainer, beta)
    chance_text = f" ({chance[0]} = {chance[1]:.4f}: no preference learnt)" if chance else ""

    class LossLines(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.start, self.first_step = time.monotonic(), state.global_step

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            done = state.global_step - getattr(self, "first_step", 0)
            left = state.max_steps - state.global_step
            eta = (time.monotonic() - self.start) / done * left if done and hasattr(self, "start") else None
            log.info(
                "%s: step %d/%d, loss %.4f%s%s",
                name,
                state.global_step,
                state.max_steps,
                logs["loss"],
                chance_text,
                f", about {duration(eta)} left" if eta is not None and left > 0 else "",
            )

    return LossLines()
