"""One training run: ``train(train_set, val_set, model_name, trainer, output_dir, config)`` fine-tunes one model
on one preference set and saves the LoRA adapter, the tokenizer and ``train_log.json`` (config, ``log_history``,
losses, timings) into ``output_dir``. A folder whose ``train_log.json`` says ``complete`` is not trained again; an
interrupted run resumes from its last checkpoint (:mod:`wow.align.checkpoints`).

With validation pairs the run is evaluated every ``eval_steps`` steps and at its last step, and the adapter saved
is the checkpoint of the lowest validation loss (the paper's ``load_best_model_at_end``); ``train_log.json`` records
its step (``best_step``) and loss (``val_loss``). Without validation pairs, or where one evaluation would choose
nothing (``in_run_validation: auto``, :mod:`wow.align.in_run_validation`), the final weights are saved.

Lengths are the paper's (TRL 0.9's rule, which TRL 1.16 no longer has): a pair whose prompt + longer answer exceeds
``max_length`` (1536) tokens has its prompt cut to its last ``max_prompt_length`` (512) tokens (the chat frame kept,
the start of the message text cut), and answers that still do not fit are cut at ``max_length``. No pair is dropped;
``TrainResult.truncated`` and ``train_log.json`` count the cut prompts and answers per split.

Example::

    from wow import preferences
    from wow.align import training
    ds = preferences.load_preferences("outputs/demo/preferences/self_oracle")
    result = training.train(ds["train"], ds["validation"], "smollm2-135m", "dpo", "outputs/demo/models/self_oracle_dpo")
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wow import WowError, io, layout, schema
from wow.align import answer_token_scoring, checkpoints, in_run_validation, quantization, reference_logps
from wow.align.align_config import AlignConfig, lora_config, trainer_class, training_device, trl_config, use_bf16
from wow.align.shared_prompts import share_prompts
from wow.align.truncation import prepare_examples

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training run produced.

    Attributes:
        output_dir: folder with the adapter (or full model), tokenizer and ``train_log.json``.
        trainer: trainer name.
        model_name: base model name.
        config: the settings used.
        train_loss: mean training loss over the run.
        val_loss: validation loss of the weights saved: the best checkpoint's (None without validation pairs).
        steps: optimiser steps taken.
        seconds: training time.
        s_per_step: seconds per optimiser step.
        n_train: training pairs used (every pair of the set: over-long ones are truncated, not dropped).
        n_val: validation pairs used.
        truncated: per split (``train``, ``validation``): ``pairs``, ``over_max_length`` (prompt + longer answer
            over ``max_length``), ``prompts_truncated`` (prompt cut to its last ``max_prompt_length`` tokens),
            ``answers_truncated`` (an answer cut at ``max_length``) and ``longest_prompt`` (tokens, before cutting);
            see :class:`AlignConfig` ``max_prompt_length``.
        log_history: the trainer's ``log_history`` (losses, rewards, learning rate per logging step).
        skipped: True when the folder was already complete and nothing was trained.
        best_step: the step of the checkpoint saved, the one of the lowest validation loss among those evaluated
            (every ``eval_steps`` steps and the last; None without validation pairs).
        resumed_from: the step of the checkpoint this run resumed from (None: trained from the start).
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
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)
    best_step: int | None = None
    resumed_from: int | None = None


def is_complete(output_dir: str | os.PathLike) -> bool:
    """True when ``output_dir`` holds a finished run (``train_log.json`` marked complete, and the weights)."""
    folder = Path(output_dir)
    if not (folder / layout.TRAIN_LOG_FILE).exists():
        return False
    try:
        logged = json.loads((folder / layout.TRAIN_LOG_FILE).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    weights = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
    return bool(logged.get("complete")) and any((folder / w).exists() for w in weights)


#: The :class:`TrainResult` fields that ``train_log.json`` records as they are, in its key order; one list for the
#: writer (:func:`_write_log`) and the reader (:func:`_result_from_log`).
_LOGGED_FIELDS = (
    "train_loss",
    "val_loss",
    "steps",
    "seconds",
    "s_per_step",
    "n_train",
    "n_val",
    "truncated",
    "best_step",
    "resumed_from",
)


#: AlignConfig fields renamed since a train_log.json may have been written: old name -> new name (a complete training
#: of an older run is still read and reused).
RENAMED_CONFIG_FIELDS = {"batch_size": "train_batch_size"}


def _result_from_log(folder: Path) -> TrainResult:
    logged = io.read_json(folder / layout.TRAIN_LOG_FILE)
    logged.setdefault("truncated", {})  # absent from logs written before prompts were truncated
    logged.setdefault("best_step", None)  # and these before in-run selection and resuming
    logged.setdefault("resumed_from", None)
    config = dict(logged["config"])
    for old, new in RENAMED_CONFIG_FIELDS.items():  # logs written before a field was renamed
        if old in config:
            config.setdefault(new, config.pop(old))
    return TrainResult(
        output_dir=folder,
        trainer=logged["trainer"],
        model_name=logged["model_name"],
        config=AlignConfig.from_dict(config),
        log_history=logged["log_history"],
        skipped=True,
        **{f: logged[f] for f in _LOGGED_FIELDS},
    )


#: AlignConfig fields that do not change the trained weights (a complete run with other values is reused).
_NEUTRAL_FIELDS = (
    "logging_steps",
    "device",
    "cpu_threads",
    "progress",
    "gradient_checkpointing",
    "keep_checkpoints",
    "precompute_ref_log_probs",
    "reference_cache",
    "report_to",
    "in_run_validation",  # it skips only an evaluation that chooses nothing: the weights saved are the same
    "shared_prompts",  # the same log-probabilities up to rounding
)


def _changed_settings(done: TrainResult, trainer: str, model_name: str, config: AlignConfig) -> list[str]:
    """Names of the settings in which a finished run differs from the one asked for."""
    changed = [k for k, a, b in (("trainer", done.trainer, trainer), ("model", done.model_name, model_name)) if a != b]
    old, new = dataclasses.asdict(done.config), dataclasses.asdict(config)
    return changed + [k for k in new if k not in _NEUTRAL_FIELDS and old.get(k) != new[k]]


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
        model_name: base model (see :func:`wow.backends.models.resolve`: the offline default, a local folder, a hub id).
        trainer: one of :data:`TRAINERS`.
        output_dir: folder for the adapter, tokenizer and ``train_log.json``.
        config: training settings (default :class:`AlignConfig()`).
        overwrite: retrain even when ``output_dir`` already holds a complete run.
        callbacks: extra ``transformers.TrainerCallback`` objects (progress displays, tests).

    Returns:
        A :class:`TrainResult`; ``skipped=True`` when the run was already complete.

    Raises:
        WowError: unknown trainer, invalid settings (:meth:`AlignConfig.check`), no training pairs,
            ``reduce_lr_on_plateau`` without validation pairs, ``quantization: 4bit`` without a CUDA GPU or
            bitsandbytes (:func:`wow.align.quantization.check_available`), or a non-finite training loss.
    """
    if trainer not in schema.TRAINERS:
        raise WowError(f"unknown trainer {trainer!r}; valid: {', '.join(schema.TRAINERS)}.")
    config = config or AlignConfig()
    config.check()
    if preferences_train is None or len(preferences_train) == 0:
        raise WowError(f"no training pairs for {Path(output_dir).name}; build a non-empty preference set.")
    if config.lr_scheduler == "reduce_lr_on_plateau" and (preferences_val is None or len(preferences_val) == 0):
        raise WowError(
            "lr_scheduler reduce_lr_on_plateau lowers the rate on the validation loss, but there are no validation "
            "pairs; build the preference set with a validation share or use another scheduler."
        )
    output_dir = Path(output_dir)
    if not overwrite and is_complete(output_dir):
        done = _result_from_log(output_dir)
        changed = _changed_settings(done, trainer, model_name, config)
        if not changed:
            log.info("%s is complete; not training again (overwrite=True retrains)", output_dir)
            return done
        log.warning("%s was trained with other settings (%s); training again", output_dir, ", ".join(changed))

    device = training_device(config)
    quantization.check_available(config.quantization, device)  # before any model is loaded

    import torch

    settings = _settings(trainer, model_name, config)
    resume = None if overwrite else checkpoints.resume_from(output_dir, settings)
    (output_dir / layout.TRAIN_LOG_FILE).unlink(missing_ok=True)  # killed from here on: an incomplete folder
    model, tokenizer = _load(model_name, config, device)
    train_ds, train_cut = prepare_examples(preferences_train, tokenizer, config, "train")
    val_ds, val_cut = prepare_examples(preferences_val, tokenizer, config, "validation")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    val_ds = in_run_validation.validation_pairs(val_ds, config, len(train_ds), str(output_dir), world_size)
    args = trl_config(trainer, config, output_dir, device, has_validation=val_ds is not None, n_train=len(train_ds))
    checkpoints.barrier()  # every process has chosen its checkpoint before the main one clears stale ones
    checkpoints.start(output_dir, settings, resume)
    # the CPU projects only the answer tokens onto the vocabulary, as Triton devices do; from the constructor on
    # (TRL's precompute of the reference's log-probabilities, when on, runs there)
    with answer_token_scoring.answer_tokens_only():
        trl_trainer = trainer_class(trainer)(
            model=model,
            args=args,
            train_dataset=train_ds,
            eval_dataset=val_ds,
            processing_class=tokenizer,
            peft_config=lora_config(config) if config.use_lora else None,
            callbacks=[
                *(callbacks or []),
                checkpoints.log_at_saves(),
                checkpoints.progress_file(output_dir),
                checkpoints.loss_lines("/".join(Path(output_dir).parts[-2:]), trainer, config.beta),
            ],
        )
        packed = config.shared_prompts and share_prompts(trl_trainer)  # before the reference's store
        store = reference_logps.for_training(trl_trainer, model_name, model, config, device, packed)
        n_val, resuming = 0 if val_ds is None else len(val_ds), f", resuming from {resume}" if resume else ""
        log.info(
            "training %s with %s on %d pairs (%d validation) on %s, bf16=%s, quantization=%s, prompts read %s%s",
            *(model_name, trainer, len(train_ds), n_val, device, args.bf16, config.quantization),
            "once per pair" if packed else "per answer",
            resuming,
        )
        threads = torch.get_num_threads()
        if device == "cpu" and config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        try:
            start = time.perf_counter()
            out = trl_trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            seconds = time.perf_counter() - start
            best_step, val_loss = checkpoints.best(trl_trainer.state)
            if val_ds is not None and val_loss is None:  # not reached: transformers evaluates the last step
                val_loss = trl_trainer.evaluate().get("eval_loss")
        finally:
            torch.set_num_threads(threads)
        answer_tokens_only = answer_token_scoring.scores_answer_tokens_only(trl_trainer, device)
    resumed_from = checkpoints.step_of(resume)
    train_loss = _mean_train_loss(out, trl_trainer.state, resumed_from)
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
        truncated={"train": train_cut, "validation": val_cut},
        best_step=best_step,
        resumed_from=resumed_from,
    )
    if best_step is not None:
        log.info("%s: best checkpoint at step %d of %d, validation loss %.4f", output_dir, best_step, steps, val_loss)
    trl_trainer.save_model(str(output_dir))
    checkpoints.barrier()  # the adapter is written before the run is marked complete and its checkpoints go
    if trl_trainer.is_world_process_zero():
        precomputed = bool(getattr(args, "precompute_ref_log_probs", False))
        reference = reference_logps.train_log_entry(store)  # what the trainer computed and reused; the store closed
        _write_log(result, device, args.bf16, args.world_size, precomputed, answer_tokens_only, reference, packed)
        checkpoints.remove_checkpoints(output_dir, config.keep_checkpoints)
    del trl_trainer, model
    _free_memory()
    return result


def _settings(trainer: str, model_name: str, config: AlignConfig) -> dict:
    """What a checkpoint depends on: a run resumes only from checkpoints trained with these."""
    weights = {k: v for k, v in dataclasses.asdict(config).items() if k not in _NEUTRAL_FIELDS}
    return {"trainer": trainer, "model_name": model_name, "config": weights}


def _load(model_name: str, config: AlignConfig, device: str):
    """The model to train and its tokenizer: on the CPU in float32 or bfloat16 (the trainer moves it to its device;
    under ``accelerate launch`` one GPU per process), or in 4 bits straight onto this process's GPU."""
    from wow.backends import models

    if config.quantization == "4bit":
        gpu = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        model, tokenizer = models.load_model(
            model_name, dtype="bfloat16", device=gpu, for_training=True, quantization_config=quantization.bnb_config()
        )
        model = quantization.prepare_for_training(model, config.gradient_checkpointing)
    else:
        dtype = "float32" if device == "cpu" or not use_bf16(config, device) else "bfloat16"
        model, tokenizer = models.load_model(model_name, dtype=dtype, device="cpu", for_training=True)
    model.config.use_cache = False
    return model, tokenizer


def _mean_train_loss(out, state, resumed_from: int | None) -> float | None:
    """Mean training loss per step over the whole run. transformers averages over the steps of this call only, so
    a resumed run adds the logged losses of the steps before its checkpoint (each logged loss is the mean of the
    steps since the previous one; :func:`wow.align.checkpoints.log_at_saves` logs at every checkpoint step)."""
    loss = out.metrics.get("train_loss")
    if not resumed_from or loss is None:
        return loss
    before, last = 0.0, 0
    for h in state.log_history:
        if "loss" in h and h["step"] <= resumed_from:
            before += h["loss"] * (h["step"] - last)
            last = h["step"]
    total = state.global_step
    return (before + loss * (total - resumed_from)) / total if total else loss


def _write_log(
    result: TrainResult,
    device: str,
    bf16: bool,
    world_size: int = 1,
    precomputed: bool = False,
    answer_tokens_only: bool = False,
    reference: dict | None = None,
    packed: bool = False,
) -> None:
    import peft
    import torch
    import transformers
    import trl

    record = {
        "complete": True,  # written last: a folder without it is retrained
        "trainer": result.trainer,
        "trl_loss": schema.TRAINERS[result.trainer][1],
        "model_name": result.model_name,
        "config": dataclasses.asdict(result.config),
        **{f: getattr(result, f) for f in _LOGGED_FIELDS},
        "device": device,
        "bf16": bf16,
        "world_size": world_size,  # processes of a data-parallel run (accelerate launch)
        "precomputed_ref_log_probs": precomputed,  # the reference's log-probabilities before the first step
        # DPO-style trainers: TRL's fused LM head projected only the answer tokens (wow.align.answer_token_scoring)
        "answer_tokens_only": answer_tokens_only,
        "reference_logps": reference or reference_logps.train_log_entry(None),  # computed here, or reused
        "shared_prompts": bool(packed),  # each pair's prompt read once per pass (wow.align.shared_prompts)
        "versions": {
            "trl": trl.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "torch": torch.__version__,
        },
        "log_history": result.log_history,
    }
    io.write_json(result.output_dir / layout.TRAIN_LOG_FILE, record)


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
