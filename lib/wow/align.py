"""Preference alignment through TRL, with LoRA adapters (peft), and the paper's grid search.

``train(train_set, val_set, model_name, trainer, output_dir, config)`` fine-tunes one model on one preference set
and saves the LoRA adapter, the tokenizer and ``train_log.json`` (config, ``log_history``, losses, timings) into
``output_dir``. A folder whose ``train_log.json`` says ``complete`` is not trained again.

Trainers (TRL 1.16, checked against the installed source):

======== ================================================================ =======================================
name     TRL                                                              paper
======== ================================================================ =======================================
dpo      ``DPOTrainer``, ``loss_type="sigmoid"``                          DPO
ipo      ``DPOTrainer``, ``loss_type="ipo"``                              IPO
rso      ``DPOTrainer``, ``loss_type="hinge"``                            RSO's loss (no rejection sampling)
sppo     ``DPOTrainer``, ``loss_type="sppo_hard"``                        SPPO
cpo      ``trl.experimental.cpo.CPOTrainer``, ``loss_type="sigmoid"``     CPO
simpo    ``CPOTrainer``, ``loss_type="simpo"``, ``cpo_alpha=0``           SimPO
orpo     ``trl.experimental.orpo.ORPOTrainer``                            ORPO
======== ================================================================ =======================================

With LoRA no reference model is loaded: DPO-style trainers use the model with its adapter disabled (the frozen
base) as the reference; CPO, SimPO and ORPO need none.

``grid_search`` runs the paper's grid (learning rate {1e-4, 5e-5, 1e-5} x epochs {1, 3, 5}, optionally beta) and
picks the configuration with the best ``select_fn(adapter_dir)`` (mean correctness of sampled answers on the
validation questions; see :func:`wow.evaluate.make_select_fn`), recording the validation loss of each run too.

The same entry point runs on several GPUs::

    accelerate launch -m wow.align --preferences outputs/demo/preferences/self_oracle --trainer dpo \\
        --output outputs/demo/models/self_oracle_dpo

Example::

    from wow import align, preferences
    ds = preferences.load_preferences("outputs/demo/preferences/self_oracle")
    result = align.train(ds["train"], ds["validation"], "smollm2-135m", "dpo", "outputs/demo/models/self_oracle_dpo")
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wow import WowError, io

log = logging.getLogger(__name__)

#: trainer name -> (TRL trainer family, config fields that define the method)
TRAINERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dpo": ("dpo", {"loss_type": "sigmoid"}),
    "ipo": ("dpo", {"loss_type": "ipo"}),
    "rso": ("dpo", {"loss_type": "hinge"}),
    "sppo": ("dpo", {"loss_type": "sppo_hard"}),
    "cpo": ("cpo", {"loss_type": "sigmoid"}),
    "simpo": ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0}),
    "orpo": ("orpo", {}),
}
PAPER_LEARNING_RATES = (1e-4, 5e-5, 1e-5)
PAPER_EPOCHS = (1, 3, 5)
LOG_FILE = "train_log.json"
#: Written after every optimiser step while training (how far a long run is).
PROGRESS_FILE = "progress.json"
SELECTION_FILE = "selection.json"
GRID_FILE = "grid.json"


@dataclass
class AlignConfig:
    """Training settings shared by every trainer (the paper's values where it has them).

    Attributes:
        learning_rate: peak learning rate (paper default 5e-5; grid {1e-4, 5e-5, 1e-5}).
        epochs: passes over the training pairs (paper default 3; grid {1, 3, 5}).
        beta: DPO/IPO/RSO/SPPO/CPO/SimPO beta, ORPO's lambda (0.1, the paper's and TRL's default).
        batch_size: pairs per device and step (the paper: 1; 4 measured at 3-7 s/step on 2 CPU cores).
        grad_accumulation: gradient accumulation steps.
        max_length: most tokens of prompt + answer; longer sequences are truncated at the end.
        max_prompt_length: pairs whose prompt (chat template applied) is longer are dropped, with a warning.
            TRL 1.16 removed its own prompt truncation; cutting a chat prompt would garble it.
        max_steps: stop after this many optimiser steps (-1: run all epochs); for smoke runs and tests.
        use_lora: train a LoRA adapter (True) or the full model (False; DPO-style trainers then keep a copy of the
            model as reference).
        lora_r: LoRA rank (16).
        lora_alpha: LoRA alpha (16).
        lora_dropout: LoRA dropout (0).
        lora_target_modules: modules that get adapters; ``"all-linear"`` is every projection (on Llama-style
            models: q/k/v/o and gate/up/down, the paper's list), the output head excluded.
        seed: seed of the adapter initialisation and the data order (42 as in the paper).
        warmup_ratio: share of steps of linear warm-up (0.1).
        lr_scheduler: transformers scheduler name (``cosine``).
        weight_decay: AdamW weight decay (the paper's default 1e-5).
        logging_steps: log the loss every this many steps (the first step is always logged).
        cpo_alpha: weight of CPO's behaviour-cloning term (``cpo`` only; SimPO always uses 0).
        simpo_gamma: SimPO's target reward margin (TRL's default 0.5).
        device: ``cpu``, ``cuda``; None: cuda when available. On CPU ``use_cpu`` is passed to the trainer.
        bf16: bfloat16 autocast; None: on for CPU (about 1.7x faster than fp32 on this machine) and for GPUs that
            support it. The weights stay fp32 on CPU.
        cpu_threads: torch threads while training on CPU (restored afterwards); None keeps torch's default (one
            per core). On a machine shared with other busy processes use 1 (or start Python with
            ``OMP_WAIT_POLICY=PASSIVE``): OpenMP threads otherwise spin-wait for a descheduled sibling. Measured on
            2 shared cores, DPO on the default model at batch 4: 50-75 s/step with 2 threads, 7.6 s with 1, 8.2 s
            with 2 passive threads.
        progress: show the trainer's progress bar.
    """

    learning_rate: float = 5e-5
    epochs: float = 3
    beta: float = 0.1
    batch_size: int = 4
    grad_accumulation: int = 1
    max_length: int = 1024
    max_prompt_length: int = 512
    max_steps: int = -1
    use_lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: str | list[str] = "all-linear"
    seed: int = 42
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    weight_decay: float = 1e-5
    logging_steps: int = 5
    cpo_alpha: float = 1.0
    simpo_gamma: float = 0.5
    device: str | None = None
    bf16: bool | None = None
    cpu_threads: int | None = None
    progress: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> AlignConfig:
        """Build from a dict; unknown keys are an error (they would otherwise be silently ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise WowError(f"unknown AlignConfig field(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}.")
        return cls(**d)


@dataclass
class TrainResult:
    """What one training run produced.

    Attributes:
        output_dir: folder with the adapter (or full model), tokenizer and ``train_log.json``.
        trainer: trainer name.
        model_name: base model name.
        config: the settings used.
        train_loss: mean training loss over the run.
        val_loss: loss on the validation pairs after training (None without validation pairs).
        steps: optimiser steps taken.
        seconds: training time.
        s_per_step: seconds per optimiser step.
        n_train: training pairs used (after dropping over-long prompts).
        n_val: validation pairs used.
        log_history: the trainer's ``log_history`` (losses, rewards, learning rate per logging step).
        skipped: True when the folder was already complete and nothing was trained.
    """

    output_dir: Path
    trainer: str
    model_name: str
    config: AlignConfig
    train_loss: float | None
    val_loss: float | None
    steps: int
    seconds: float
    s_per_step: float | None
    n_train: int
    n_val: int
    log_history: list[dict] = field(default_factory=list)
    skipped: bool = False


def is_complete(output_dir: str | os.PathLike) -> bool:
    """True when ``output_dir`` holds a finished run (``train_log.json`` marked complete, and the weights)."""
    folder = Path(output_dir)
    if not (folder / LOG_FILE).exists():
        return False
    try:
        logged = json.loads((folder / LOG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    weights = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
    return bool(logged.get("complete")) and any((folder / w).exists() for w in weights)


def _result_from_log(folder: Path) -> TrainResult:
    logged = io.read_json(folder / LOG_FILE)
    return TrainResult(
        output_dir=folder,
        trainer=logged["trainer"],
        model_name=logged["model_name"],
        config=AlignConfig.from_dict(logged["config"]),
        train_loss=logged["train_loss"],
        val_loss=logged["val_loss"],
        steps=logged["steps"],
        seconds=logged["seconds"],
        s_per_step=logged["s_per_step"],
        n_train=logged["n_train"],
        n_val=logged["n_val"],
        log_history=logged["log_history"],
        skipped=True,
    )


#: AlignConfig fields that do not change the trained weights (a complete run with other values is reused).
_NEUTRAL_FIELDS = ("logging_steps", "device", "cpu_threads", "progress")


def _changed_settings(done: TrainResult, trainer: str, model_name: str, config: AlignConfig) -> list[str]:
    """Names of the settings in which a finished run differs from the one asked for."""
    changed = [k for k, a, b in (("trainer", done.trainer, trainer), ("model", done.model_name, model_name)) if a != b]
    old, new = dataclasses.asdict(done.config), dataclasses.asdict(config)
    return changed + [k for k in new if k not in _NEUTRAL_FIELDS and old.get(k) != new[k]]


def _device(config: AlignConfig) -> str:
    import torch

    if config.device:
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _bf16(config: AlignConfig, device: str) -> bool:
    import torch

    if config.bf16 is not None:
        return config.bf16
    if device == "cpu":
        return True
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _trl_config(trainer: str, config: AlignConfig, output_dir: Path, device: str):
    family, method = TRAINERS[trainer]
    common = dict(
        output_dir=str(output_dir),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps (transformers 5)
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=_bf16(config, device),
        activation_checkpointing=False,  # the new name of gradient_checkpointing (off: slower on CPU, not needed)
        disable_tqdm=not config.progress,
        max_length=config.max_length,
        beta=config.beta,
    )
    if family == "dpo":
        from trl import DPOConfig

        return DPOConfig(**common, **method)
    if family == "cpo":
        from trl.experimental.cpo import CPOConfig

        return CPOConfig(**common, **({"cpo_alpha": config.cpo_alpha} | method), simpo_gamma=config.simpo_gamma)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common, **method)


def _trainer_class(trainer: str):
    family = TRAINERS[trainer][0]
    if family == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    if family == "cpo":
        from trl.experimental.cpo import CPOTrainer

        return CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


def _prepare(ds, tokenizer, max_prompt_length: int, name: str):
    """Keep the TRL columns; drop pairs whose prompt is longer than ``max_prompt_length`` tokens."""
    if ds is None or len(ds) == 0:
        return None
    ds = ds.select_columns(["prompt", "chosen", "rejected"])
    lengths = [
        len(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False))
        for p in ds["prompt"]
    ]
    keep = [i for i, n in enumerate(lengths) if n <= max_prompt_length]
    if len(keep) < len(ds):
        log.warning(
            "%s: dropped %d of %d pairs whose prompt exceeds max_prompt_length=%d tokens (longest %d)",
            name,
            len(ds) - len(keep),
            len(ds),
            max_prompt_length,
            max(lengths),
        )
        ds = ds.select(keep)
    return ds


def _lora_config(config: AlignConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def train(
    preferences_train,
    preferences_val,
    model_name: str,
    trainer: str,
    output_dir: str | os.PathLike,
    config: AlignConfig | None = None,
    *,
    overwrite: bool = False,
    callbacks: Sequence | None = None,
) -> TrainResult:
    """Align ``model_name`` on a preference set with one trainer, and save the result into ``output_dir``.

    Args:
        preferences_train: ``datasets.Dataset`` in TRL's conversational format (``prompt``, ``chosen``,
            ``rejected``; other columns are ignored), e.g. ``build_preferences(...)["train"]``.
        preferences_val: validation pairs (same format) for the validation loss, or None / empty.
        model_name: base model (see :func:`wow.models.resolve`: the offline default, a local folder, a hub id).
        trainer: one of :data:`TRAINERS`.
        output_dir: folder for the adapter, tokenizer and ``train_log.json``.
        config: training settings (default :class:`AlignConfig()`).
        overwrite: retrain even when ``output_dir`` already holds a complete run.
        callbacks: extra ``transformers.TrainerCallback`` objects (progress displays, tests).

    Returns:
        A :class:`TrainResult`; ``skipped=True`` when the run was already complete.

    Raises:
        WowError: unknown trainer, no training pairs, or a non-finite training loss.
    """
    if trainer not in TRAINERS:
        raise WowError(f"unknown trainer {trainer!r}; valid: {', '.join(TRAINERS)}.")
    config = config or AlignConfig()
    output_dir = Path(output_dir)
    if not overwrite and is_complete(output_dir):
        done = _result_from_log(output_dir)
        changed = _changed_settings(done, trainer, model_name, config)
        if not changed:
            log.info("%s is complete; not training again (overwrite=True retrains)", output_dir)
            return done
        log.warning("%s was trained with other settings (%s); training again", output_dir, ", ".join(changed))

    import torch

    from wow import models

    (output_dir / LOG_FILE).unlink(missing_ok=True)  # a run killed from here on leaves an incomplete folder
    device = _device(config)
    dtype = "float32" if device == "cpu" or not _bf16(config, device) else "bfloat16"
    # Loaded on the CPU: the trainer moves it to its device (under `accelerate launch`, one GPU per process).
    model, tokenizer = models.load(model_name, dtype=dtype, device="cpu", for_training=True)
    model.config.use_cache = False
    train_ds = _prepare(preferences_train, tokenizer, config.max_prompt_length, "train")
    val_ds = _prepare(preferences_val, tokenizer, config.max_prompt_length, "validation")
    if train_ds is None or len(train_ds) == 0:
        raise WowError(
            f"no training pairs for {output_dir.name} (after dropping prompts over {config.max_prompt_length} "
            "tokens); build a non-empty preference set or raise max_prompt_length."
        )
    args = _trl_config(trainer, config, output_dir, device)
    trl_trainer = _trainer_class(trainer)(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        peft_config=_lora_config(config) if config.use_lora else None,
        callbacks=[*(callbacks or []), _progress_file(output_dir)],
    )
    log.info(
        "training %s with %s on %d pairs (%d validation) on %s, bf16=%s",
        model_name,
        trainer,
        len(train_ds),
        0 if val_ds is None else len(val_ds),
        device,
        args.bf16,
    )
    threads = torch.get_num_threads()
    if device == "cpu" and config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    try:
        start = time.perf_counter()
        out = trl_trainer.train()
        seconds = time.perf_counter() - start
        val_loss = trl_trainer.evaluate().get("eval_loss") if val_ds is not None else None
    finally:
        torch.set_num_threads(threads)
    train_loss = out.metrics.get("train_loss")
    if train_loss is None or not math.isfinite(train_loss):
        raise WowError(
            f"{trainer} training of {model_name} gave a non-finite loss ({train_loss}); lower the learning rate "
            f"(now {config.learning_rate}) or check the preference pairs."
        )
    steps = trl_trainer.state.global_step
    result = TrainResult(
        output_dir=output_dir,
        trainer=trainer,
        model_name=model_name,
        config=config,
        train_loss=train_loss,
        val_loss=val_loss,
        steps=steps,
        seconds=seconds,
        s_per_step=seconds / steps if steps else None,
        n_train=len(train_ds),
        n_val=0 if val_ds is None else len(val_ds),
        log_history=list(trl_trainer.state.log_history),
    )
    trl_trainer.save_model(str(output_dir))
    if trl_trainer.is_world_process_zero():
        _write_log(result, device, args.bf16)
    del trl_trainer, model
    _free_memory()
    return result


def _progress_file(output_dir: Path):
    """A callback that keeps ``progress.json`` (step, max_steps, epoch, last logged loss) current while training."""
    from transformers import TrainerCallback

    path = output_dir / PROGRESS_FILE

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


def _write_log(result: TrainResult, device: str, bf16: bool) -> None:
    import peft
    import torch
    import transformers
    import trl

    record = {
        "complete": True,  # written last: a folder without it is retrained
        "trainer": result.trainer,
        "trl_loss": TRAINERS[result.trainer][1],
        "model_name": result.model_name,
        "config": dataclasses.asdict(result.config),
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "steps": result.steps,
        "seconds": result.seconds,
        "s_per_step": result.s_per_step,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "device": device,
        "bf16": bf16,
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "torch": torch.__version__,
        },
        "log_history": result.log_history,
    }
    io.write_json(result.output_dir / LOG_FILE, record)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- grid search --------------------------------------------------------------------------------------------------
@dataclass
class GridResult:
    """Outcome of :func:`grid_search`.

    Attributes:
        best: the row of the chosen configuration.
        runs: one row per configuration (``name, output_dir, learning_rate, epochs, beta, train_loss, val_loss,
            select_score, seconds, skipped``), in grid order.
        selected_by: ``select_fn`` (validation mean correctness, higher is better) or ``val_loss`` (lower).
    """

    best: dict
    runs: list[dict]
    selected_by: str


def config_name(learning_rate: float, epochs: float, beta: float | None = None) -> str:
    """Folder name of one grid point (the paper's format), e.g. ``lr=5.0e-05_epochs=3_beta=0.1``."""
    name = f"lr={learning_rate:.1e}_epochs={epochs:g}"
    return name if beta is None else f"{name}_beta={beta:g}"


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
    betas: Sequence[float] | None = None,
    select_fn: Callable[[Path], float] | None = None,
    callbacks: Sequence | None = None,
) -> GridResult:
    """Train every grid configuration (resumable) and choose the best one.

    Each configuration trains into ``output_root/<config_name>``; complete folders are skipped, and the scores
    stored in ``output_root/selection.json`` save re-evaluating them. ``grid.json`` in ``output_root`` lists all
    runs and the choice.

    Args:
        preferences_train: training pairs (see :func:`train`).
        preferences_val: validation pairs (validation loss).
        model_name: base model.
        trainer: one of :data:`TRAINERS`.
        output_root: folder of the setting (``models/<setting>``).
        base_config: settings other than the grid's (learning rate, epochs, beta are overridden).
        learning_rates: grid of learning rates (paper: 1e-4, 5e-5, 1e-5).
        epochs: grid of epochs (paper: 1, 3, 5).
        betas: optional grid of betas; None keeps ``base_config.beta`` (and leaves it out of folder names).
        select_fn: ``adapter_dir -> score``, higher is better (the paper: mean correctness of answers sampled on
            validation questions; :func:`wow.evaluate.make_select_fn` builds one). None: lowest validation loss.
            A grid of one configuration selects it without calling ``select_fn``.
        callbacks: extra trainer callbacks for every run.

    Returns:
        A :class:`GridResult`.

    Raises:
        WowError: nothing to select on (no ``select_fn`` and no validation pairs).
    """
    base = base_config or AlignConfig()
    root = Path(output_root)
    runs = []
    grid = list(itertools.product(learning_rates, epochs, betas if betas is not None else [None]))
    for i, (lr, ep, beta) in enumerate(grid, 1):
        name = config_name(lr, ep, beta)
        cfg = dataclasses.replace(base, learning_rate=lr, epochs=ep, beta=base.beta if beta is None else beta)
        log.info("grid %d/%d: %s", i, len(grid), name)
        res = train(preferences_train, preferences_val, model_name, trainer, root / name, cfg, callbacks=callbacks)
        score = None
        if select_fn is not None and len(grid) > 1:
            # Scores live beside the adapters, not in them: engines hash the adapter folder for their cache keys.
            selection = io.read_json(root / SELECTION_FILE) if (root / SELECTION_FILE).exists() else {}
            if name not in selection or not res.skipped:
                selection[name] = float(select_fn(root / name))
                io.write_json(root / SELECTION_FILE, selection)
            score = selection[name]
        runs.append(
            {
                "name": name,
                "output_dir": str(root / name),
                "learning_rate": lr,
                "epochs": ep,
                "beta": cfg.beta,
                "train_loss": res.train_loss,
                "val_loss": res.val_loss,
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
    io.write_json(root / GRID_FILE, {"selected_by": selected_by, "best": best["name"], "runs": runs})
    log.info("grid best (%s): %s", selected_by, best["name"])
    return GridResult(best=best, runs=runs, selected_by=selected_by)


def setting_name(
    source: str,
    pref_type: str,
    trainer: str | None,
    judge: str | None = None,
    margin: float | None = None,
    check: bool = True,
) -> str:
    """The paper's setting name, e.g. ``self_oracle_dpo``, ``mix_direct_filtered_gpt-4o_dpo``,
    ``mix_score_0.1_gpt-4o_dpo`` (folder name under ``models/`` and row key of ``alignment.csv``).

    Args:
        source: ``self`` or ``mix``.
        pref_type: preference type.
        trainer: trainer name; None names the preference set alone (its folder under ``preferences/``).
        judge: judge of ``direct``/``score`` types.
        margin: margin of ``score`` types.
        check: ``direct`` types: built with the consistency check (``filtered``).

    Returns:
        The name.
    """
    suffix = ""
    if pref_type.endswith("direct"):
        suffix = f"_filtered_{judge}" if check else f"_{judge}"
    elif pref_type.endswith("score"):
        suffix = f"_{margin:g}_{judge}"
    name = f"{source}_{pref_type}{suffix}"
    return f"{name}_{trainer}" if trainer else name


# -- command line -------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m wow.align`` (or ``accelerate launch -m wow.align``): train on a saved preference set.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status (0).
    """
    p = argparse.ArgumentParser(prog="python -m wow.align", description=main.__doc__.splitlines()[0])
    p.add_argument("--preferences", required=True, help="folder written by wow.preferences.save_preferences")
    p.add_argument("--trainer", required=True, choices=list(TRAINERS))
    p.add_argument("--output", required=True, help="adapter folder (with --grid: the setting folder)")
    p.add_argument("--model", default="smollm2-135m", help="base model name (wow.models)")
    p.add_argument("--config", help="AlignConfig fields as a JSON object or a path to a JSON file")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--epochs", type=float)
    p.add_argument("--beta", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--grad-accum", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--no-lora", action="store_true", help="train the full model")
    p.add_argument("--grid", action="store_true", help="run the paper's grid, choosing by validation loss")
    p.add_argument("--overwrite", action="store_true", help="retrain a complete output folder")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    fields: dict[str, Any] = {}
    if a.config:
        text = Path(a.config).read_text(encoding="utf-8") if Path(a.config).is_file() else a.config
        fields = json.loads(text)
    for key, value in (
        ("learning_rate", a.lr),
        ("epochs", a.epochs),
        ("beta", a.beta),
        ("batch_size", a.batch_size),
        ("grad_accumulation", a.grad_accum),
        ("max_steps", a.max_steps),
    ):
        if value is not None:
            fields[key] = value
    if a.no_lora:
        fields["use_lora"] = False
    config = AlignConfig.from_dict(fields)

    from wow.preferences import load_preferences

    ds = load_preferences(a.preferences)
    val = ds["validation"] if "validation" in ds else None
    if a.grid:
        result = grid_search(ds["train"], val, a.model, a.trainer, a.output, config)
        log.info("best: %s (validation loss %s)", result.best["output_dir"], result.best["val_loss"])
    else:
        res = train(ds["train"], val, a.model, a.trainer, a.output, config, overwrite=a.overwrite)
        log.info("adapter in %s: train loss %s, validation loss %s", res.output_dir, res.train_loss, res.val_loss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
