"""One training run: ``train(train_set, val_set, model_name, trainer, output_dir, config)`` fine-tunes one model
on one preference set and saves the LoRA adapter, the tokenizer and ``train_log.json`` (config, ``log_history``,
losses, timings) into ``output_dir``. A folder whose ``train_log.json`` says ``complete`` is not trained again.

Lengths are the paper's (TRL 0.9's rule, which TRL 1.16 no longer has): a pair whose prompt + longer answer exceeds
``max_length`` (1536) tokens has its prompt cut to its last ``max_prompt_length`` (512) tokens (the chat frame kept,
the start of the message text cut), and answers that still do not fit are cut at ``max_length``. No pair is dropped;
``TrainResult.truncated`` and ``train_log.json`` count the cut prompts and answers per split.

Example::

    from wow import preferences, training
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

from wow import WowError, io, layout
from wow.align_config import TRAINERS, AlignConfig, _bf16, _device, _lora_config, _trainer_class, _trl_config

log = logging.getLogger(__name__)

LOG_FILE = layout.TRAIN_LOG_FILE
#: Written after every optimiser step while training (how far a long run is).
PROGRESS_FILE = layout.PROGRESS_FILE


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
        n_train: training pairs used (every pair of the set: over-long ones are truncated, not dropped).
        n_val: validation pairs used.
        truncated: per split (``train``, ``validation``): ``pairs``, ``over_max_length`` (prompt + longer answer
            over ``max_length``), ``prompts_truncated`` (prompt cut to its last ``max_prompt_length`` tokens),
            ``answers_truncated`` (an answer cut at ``max_length``) and ``longest_prompt`` (tokens, before cutting);
            see :class:`AlignConfig` ``max_prompt_length``.
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
    truncated: dict[str, dict[str, int]] = field(default_factory=dict)


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


#: The :class:`TrainResult` fields that ``train_log.json`` records as they are, in its key order; one list for the
#: writer (:func:`_write_log`) and the reader (:func:`_result_from_log`).
_LOGGED_FIELDS = ("train_loss", "val_loss", "steps", "seconds", "s_per_step", "n_train", "n_val", "truncated")


def _result_from_log(folder: Path) -> TrainResult:
    logged = io.read_json(folder / LOG_FILE)
    logged.setdefault("truncated", {})  # absent from logs written before prompts were truncated
    return TrainResult(
        output_dir=folder,
        trainer=logged["trainer"],
        model_name=logged["model_name"],
        config=AlignConfig.from_dict(logged["config"]),
        log_history=logged["log_history"],
        skipped=True,
        **{f: logged[f] for f in _LOGGED_FIELDS},
    )


#: AlignConfig fields that do not change the trained weights (a complete run with other values is reused).
_NEUTRAL_FIELDS = ("logging_steps", "device", "cpu_threads", "progress")


def _changed_settings(done: TrainResult, trainer: str, model_name: str, config: AlignConfig) -> list[str]:
    """Names of the settings in which a finished run differs from the one asked for."""
    changed = [k for k, a, b in (("trainer", done.trainer, trainer), ("model", done.model_name, model_name)) if a != b]
    old, new = dataclasses.asdict(done.config), dataclasses.asdict(config)
    return changed + [k for k in new if k not in _NEUTRAL_FIELDS and old.get(k) != new[k]]


def _chat_lengths(tokenizer, conversations: list[list[dict]], generation_prompt: bool) -> list[int]:
    """Token counts of conversations rendered with the chat template."""
    ids = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    return [len(x) for x in ids]


def _keep_prompt_end(tokenizer, prompt: list[dict], max_prompt_length: int) -> list[dict]:
    """The prompt with the start of its message text cut until the rendered prompt fits ``max_prompt_length`` tokens.

    The chat frame (system turn, role headers, generation prompt) stays whole; text is cut from the first message
    on, so the end of the prompt (the question) is kept, as TRL 0.9's ``keep_end`` kept the last tokens.

    Raises:
        WowError: the frame alone is longer than ``max_prompt_length``.
    """
    messages = [dict(m) for m in prompt]
    for m in messages:
        while (excess := _chat_lengths(tokenizer, [messages], True)[0] - max_prompt_length) > 0 and m["content"]:
            ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"]
            cut = tokenizer.decode(ids[excess:])  # re-tokenised text may differ by a token: measured again
            m["content"] = cut if len(cut) < len(m["content"]) else m["content"][1:]
        if excess <= 0:
            return messages
    raise WowError(
        f"the chat template alone takes more than max_prompt_length={max_prompt_length} tokens; raise "
        "max_prompt_length (the paper: 512)."
    )


#: ``_prepare`` results of this process: a grid trains the same pairs up to 81 times (measuring and cutting 4000
#: long pairs takes about a minute on 2 CPU cores).
_PREPARED: dict[tuple, tuple] = {}


def _prepare(ds, tokenizer, config: AlignConfig, name: str):
    """Keep the TRL columns and truncate over-long prompts as TRL 0.9 (the paper's) did; see ``max_prompt_length``.

    Returns:
        ``(dataset or None, counts)``; counts: ``pairs``, ``over_max_length`` (prompt + longer answer over
        ``max_length``), ``prompts_truncated`` (of those, prompts over ``max_prompt_length``: cut), ``answers_truncated``
        (pairs with an answer that still does not fit, which TRL then cuts at the end) and ``longest_prompt``.
    """
    if ds is None or len(ds) == 0:
        return None, {
            "pairs": 0,
            "over_max_length": 0,
            "prompts_truncated": 0,
            "answers_truncated": 0,
            "longest_prompt": 0,
        }
    key = (ds._fingerprint, tokenizer.name_or_path, len(tokenizer), config.max_length, config.max_prompt_length)
    if key not in _PREPARED:
        if len(_PREPARED) >= 8:
            _PREPARED.clear()
        _PREPARED[key] = _truncate(ds, tokenizer, config)
    prepared, counts = _PREPARED[key]
    if counts["over_max_length"]:
        log.info(
            "%s: %d of %d pairs have prompt + answer over max_length=%d tokens: %d prompts cut to their last %d "
            "tokens (longest was %d), %d pairs with an answer cut at max_length",
            name,
            counts["over_max_length"],
            counts["pairs"],
            config.max_length,
            counts["prompts_truncated"],
            config.max_prompt_length,
            counts["longest_prompt"],
            counts["answers_truncated"],
        )
    return prepared, dict(counts)


def _truncate(ds, tokenizer, config: AlignConfig):
    """:func:`_prepare` of a non-empty set, uncached."""
    import datasets

    ds = ds.select_columns(["prompt", "chosen", "rejected"])
    prompts, chosen, rejected = list(ds["prompt"]), list(ds["chosen"]), list(ds["rejected"])
    prompt_len = _chat_lengths(tokenizer, prompts, True)
    chosen_len = _chat_lengths(tokenizer, [p + c for p, c in zip(prompts, chosen, strict=True)], False)
    rejected_len = _chat_lengths(tokenizer, [p + r for p, r in zip(prompts, rejected, strict=True)], False)
    # the longer answer's tokens, as TRL 0.9 measured them
    answer_len = [max(c, r) - n for n, c, r in zip(prompt_len, chosen_len, rejected_len, strict=True)]
    too_long = [n + a > config.max_length for n, a in zip(prompt_len, answer_len, strict=True)]
    cut = [i for i, n in enumerate(prompt_len) if too_long[i] and n > config.max_prompt_length]
    final_len = list(prompt_len)
    for i in cut:
        prompts[i] = _keep_prompt_end(tokenizer, prompts[i], config.max_prompt_length)
        final_len[i] = _chat_lengths(tokenizer, [prompts[i]], True)[0]
    if cut:
        columns = {"prompt": prompts, "chosen": chosen, "rejected": rejected}
        ds = datasets.Dataset.from_dict(columns, features=ds.features)
    counts = {
        "pairs": len(ds),
        "over_max_length": sum(too_long),
        "prompts_truncated": len(cut),
        "answers_truncated": sum(n + a > config.max_length for n, a in zip(final_len, answer_len, strict=True)),
        "longest_prompt": max(prompt_len),
    }
    return ds, counts


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
        WowError: unknown trainer, invalid settings (:meth:`AlignConfig.check`), no training pairs,
            ``reduce_lr_on_plateau`` without validation pairs, or a non-finite training loss.
    """
    if trainer not in TRAINERS:
        raise WowError(f"unknown trainer {trainer!r}; valid: {', '.join(TRAINERS)}.")
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

    import torch

    from wow import models

    (output_dir / LOG_FILE).unlink(missing_ok=True)  # a run killed from here on leaves an incomplete folder
    device = _device(config)
    dtype = "float32" if device == "cpu" or not _bf16(config, device) else "bfloat16"
    # Loaded on the CPU: the trainer moves it to its device (under `accelerate launch`, one GPU per process).
    model, tokenizer = models.load(model_name, dtype=dtype, device="cpu", for_training=True)
    model.config.use_cache = False
    train_ds, train_cut = _prepare(preferences_train, tokenizer, config, "train")
    val_ds, val_cut = _prepare(preferences_val, tokenizer, config, "validation")
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
        truncated={"train": train_cut, "validation": val_cut},
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
        **{f: getattr(result, f) for f in _LOGGED_FIELDS},
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
