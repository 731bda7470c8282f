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

``grid_search`` trains every point of a grid of learning rate x scheduler x weight decay x epochs (x beta) and picks
the configuration with the best ``select_fn(adapter_dir)`` (mean correctness of sampled answers on the validation
questions; see :func:`wow.evaluate.make_select_fn`), recording the validation loss of each run too. The paper's grid
(``grid_search.py``) has 81 points: learning rate {1e-4, 5e-5, 1e-5} (:data:`PAPER_LEARNING_RATES`) x scheduler
{cosine, cosine_with_restarts, reduce_lr_on_plateau} (:data:`PAPER_SCHEDULERS`) x weight decay {0, 1e-5, 1e-3}
(:data:`PAPER_WEIGHT_DECAYS`) x epochs {1, 3, 5} (:data:`PAPER_EPOCHS`), beta 0.1 and warm-up ratio 0.1 fixed.
``grid_search``'s defaults are the 9 points learning rate x epochs at the base config's scheduler and weight decay;
pass ``schedulers=PAPER_SCHEDULERS, weight_decays=PAPER_WEIGHT_DECAYS`` (``python -m wow.align --grid`` does) for
all 81. Two quirks of the paper's grid carry over as they are: transformers' ``cosine_with_restarts`` with its
default single cycle is the same curve as ``cosine`` (the paper passed no cycle count), and ``reduce_lr_on_plateau``
has no warm-up and only lowers the rate after ``eval_steps``-step validations stop improving (constant otherwise).

Lengths are the paper's (TRL 0.9's rule, which TRL 1.16 no longer has): a pair whose prompt + longer answer exceeds
``max_length`` (1536) tokens has its prompt cut to its last ``max_prompt_length`` (512) tokens (the chat frame kept,
the start of the message text cut), and answers that still do not fit are cut at ``max_length``. No pair is dropped;
``TrainResult.truncated`` and ``train_log.json`` count the cut prompts and answers per split.

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
import difflib
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
#: The paper's schedulers; its grid_search.py spells the second ``cosine_with_restart``, which transformers rejects
#: (reference W19): its grid stopped after the first 9 runs (lr 1e-4, cosine). ``cosine_with_restarts`` is the HF name.
PAPER_SCHEDULERS = ("cosine", "cosine_with_restarts", "reduce_lr_on_plateau")
PAPER_WEIGHT_DECAYS = (0.0, 1e-5, 1e-3)
PAPER_EPOCHS = (1, 3, 5)
#: transformers' (5.24) schedulers that need no extra arguments: the valid ``AlignConfig.lr_scheduler`` values
#: (tests/test_align.py checks them against transformers' ``SchedulerType``).
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
)
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
        max_length: most tokens of prompt + answer (the paper: 1536); see ``max_prompt_length``, then answers that
            still do not fit are cut at the end (TRL's ``keep_start``).
        max_prompt_length: the paper's prompt limit (512), applied as TRL 0.9 did (TRL 1.16 dropped it): when a
            pair's prompt (chat template applied) + its longer answer exceed ``max_length``, a prompt longer than
            this keeps its last ``max_prompt_length`` tokens. The chat frame (system turn, role headers) stays
            whole and the start of the message text is cut (TRL 0.9 also cut the frame's start). No pair is
            dropped; :class:`TrainResult` ``truncated`` counts them. Must be below ``max_length``.
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
        lr_scheduler: transformers scheduler name, one of :data:`SCHEDULERS` (the paper's default ``cosine``; its
            grid {cosine, cosine_with_restarts, reduce_lr_on_plateau}). ``reduce_lr_on_plateau`` needs validation
            pairs: it evaluates them every ``eval_steps`` steps and lowers the rate when the loss stops improving
            (transformers: no warm-up, factor 0.1 after 10 evaluations without improvement).
        weight_decay: AdamW weight decay (the paper's default 1e-5; its grid {0, 1e-5, 1e-3}).
        eval_steps: with ``reduce_lr_on_plateau``: validation loss every this many steps (1000, as the paper
            evaluated); unused by the other schedulers, which train without evaluating.
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
    max_length: int = 1536
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
    eval_steps: int = 1000
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

    def check(self) -> None:
        """Refuse settings that cannot train, before any model is loaded.

        Raises:
            WowError: an unknown scheduler (with the closest valid name), ``max_prompt_length`` not below
                ``max_length``, a negative weight decay or a non-positive ``eval_steps``.
        """
        if self.lr_scheduler not in SCHEDULERS:
            close = difflib.get_close_matches(self.lr_scheduler, SCHEDULERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WowError(f"unknown lr_scheduler {self.lr_scheduler!r}{hint}; valid: {', '.join(SCHEDULERS)}.")
        if not 0 < self.max_prompt_length < self.max_length:
            raise WowError(
                f"max_prompt_length ({self.max_prompt_length}) must be positive and below max_length "
                f"({self.max_length}), which leaves room for the answers (the paper: 512 and 1536)."
            )
        if self.weight_decay < 0:
            raise WowError(f"weight_decay must be >= 0; got {self.weight_decay}.")
        if self.eval_steps < 1:
            raise WowError(f"eval_steps must be >= 1; got {self.eval_steps}.")


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
        truncated=logged.get("truncated", {}),  # absent from logs written before prompts were truncated
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
    # reduce_lr_on_plateau steps on the validation loss, so it needs evaluations while training (transformers
    # refuses it with eval_strategy "no"); the other schedulers train without evaluating.
    plateau = config.lr_scheduler == "reduce_lr_on_plateau"
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
        eval_strategy="steps" if plateau else "no",
        eval_steps=config.eval_steps if plateau else None,
        metric_for_best_model="loss" if plateau else None,
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
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "steps": result.steps,
        "seconds": result.seconds,
        "s_per_step": result.s_per_step,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "truncated": result.truncated,
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
        runs: one row per configuration (``name, output_dir, learning_rate, lr_scheduler, weight_decay, epochs, beta,
            train_loss, val_loss, select_score, seconds, skipped``), in grid order.
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
    schedulers: Sequence[str] | None = None,
    weight_decays: Sequence[float] | None = None,
    betas: Sequence[float] | None = None,
    select_fn: Callable[[Path], float] | None = None,
    callbacks: Sequence | None = None,
) -> GridResult:
    """Train every grid configuration (resumable) and choose the best one.

    The grid is learning rate x scheduler x weight decay x epochs x beta, in that order (the paper's). The defaults
    train 9 points (the paper's learning rates and epochs, the base config's scheduler and weight decay); the
    paper's full 81-point grid also passes ``schedulers=PAPER_SCHEDULERS, weight_decays=PAPER_WEIGHT_DECAYS``.
    Each configuration trains into ``output_root/<config_name>``; a scheduler or weight-decay axis of one value is
    left out of the names (so names stay those of a learning rate x epochs grid), one of several values is in
    them. Complete folders are skipped, and the scores stored in ``output_root/selection.json`` save re-evaluating
    them. ``grid.json`` in ``output_root`` lists all runs and the choice. Every configuration is checked
    (:meth:`AlignConfig.check`) before the first one trains.

    Args:
        preferences_train: training pairs (see :func:`train`).
        preferences_val: validation pairs (validation loss).
        model_name: base model.
        trainer: one of :data:`TRAINERS`.
        output_root: folder of the setting (``models/<setting>``).
        base_config: settings other than the grid's (learning rate, epochs, and the axes given below are
            overridden).
        learning_rates: grid of learning rates (paper: 1e-4, 5e-5, 1e-5).
        epochs: grid of epochs (paper: 1, 3, 5).
        schedulers: grid of ``lr_scheduler`` names (paper: :data:`PAPER_SCHEDULERS`); None keeps
            ``base_config.lr_scheduler``. ``reduce_lr_on_plateau`` needs validation pairs.
        weight_decays: grid of weight decays (paper: 0, 1e-5, 1e-3); None keeps ``base_config.weight_decay``.
        betas: optional grid of betas; None keeps ``base_config.beta`` (and leaves it out of folder names).
        select_fn: ``adapter_dir -> score``, higher is better (the paper: mean correctness of answers sampled on
            validation questions; :func:`wow.evaluate.make_select_fn` builds one). None: lowest validation loss.
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
    schedulers = [base.lr_scheduler] if schedulers is None else list(schedulers)
    weight_decays = [base.weight_decay] if weight_decays is None else list(weight_decays)
    axes = {"learning_rates": learning_rates, "schedulers": schedulers, "weight_decays": weight_decays}
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
            lr_scheduler=sched if len(schedulers) > 1 else None,
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
    no_val = preferences_val is None or len(preferences_val) == 0
    if no_val and any(cfg.lr_scheduler == "reduce_lr_on_plateau" for _, cfg in grid):
        raise WowError(
            "grid_search: reduce_lr_on_plateau lowers the rate on the validation loss, but there are no validation "
            "pairs; build the preference set with a validation share or leave that scheduler out."
        )
    for i, (name, cfg) in enumerate(grid, 1):
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
                "learning_rate": cfg.learning_rate,
                "lr_scheduler": cfg.lr_scheduler,
                "weight_decay": cfg.weight_decay,
                "epochs": cfg.epochs,
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
    p.add_argument(
        "--grid",
        action="store_true",
        help="run the paper's 81-point grid (lr x scheduler x weight decay x epochs), choosing by validation loss",
    )
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
        paper_axes = {"schedulers": PAPER_SCHEDULERS, "weight_decays": PAPER_WEIGHT_DECAYS}
        result = grid_search(ds["train"], val, a.model, a.trainer, a.output, config, **paper_axes)
        log.info("best: %s (validation loss %s)", result.best["output_dir"], result.best["val_loss"])
    else:
        res = train(ds["train"], val, a.model, a.trainer, a.output, config, overwrite=a.overwrite)
        log.info("adapter in %s: train loss %s, validation loss %s", res.output_dir, res.train_loss, res.val_loss)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
