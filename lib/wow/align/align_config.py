"""The trainer table and a training run's settings: which TRL trainer and loss each trainer name is, the
:class:`AlignConfig` of one run, and how they become TRL's config, trainer class and LoRA config.

Trainers (TRL 1.16, checked against the installed source):

======== ================================================================ =======================================
name     TRL                                                              paper
======== ================================================================ =======================================
dpo      ``DPOTrainer``, ``loss_type="sigmoid"``                          DPO
ipo      ``DPOTrainer``, ``loss_type="ipo"``                              IPO
rso      ``DPOTrainer``, ``loss_type="hinge"``                            RSO's loss (no rejection sampling)
sppo     ``DPOTrainer``, ``loss_type="sppo_hard"``                        SPPO
rpo      ``DPOTrainer``, ``loss_type=["sigmoid", "sft"]``, weights 1, a   RPO: DPO anchored by the chosen NLL
cpo      ``trl.experimental.cpo.CPOTrainer``, ``loss_type="sigmoid"``     CPO
simpo    ``CPOTrainer``, ``loss_type="simpo"``, ``cpo_alpha=0``           SimPO
orpo     ``trl.experimental.orpo.ORPOTrainer``                            ORPO
======== ================================================================ =======================================

With LoRA no reference model is loaded: DPO-style trainers use the model with its adapter disabled (the frozen
base, in 4 bits with ``quantization: 4bit``, as in the paper) as the reference.

Example::

    from wow.align.align_config import AlignConfig
    config = AlignConfig(learning_rate=5e-5, epochs=1, beta=0.1)
    config.check()
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from wow import WowError, schema
from wow.align import checkpoints
from wow.align.quantization import QUANTIZATIONS

#: ``in_run_validation``: ``auto`` validates where the loss chooses something, ``always`` wherever there are pairs.
VALIDATION_MODES = ("auto", "always")


@dataclass
class AlignConfig:
    """Training settings shared by every trainer (the paper's values where it has them).

    Attributes:
        learning_rate: peak learning rate (paper default 5e-5; grid {1e-4, 5e-5, 1e-5}).
        epochs: passes over the training pairs (paper default 3; grid {1, 3, 5}).
        beta: DPO/IPO/RSO/SPPO/CPO/SimPO beta, ORPO's lambda (0.1, the paper's and TRL's default).
        train_batch_size: pairs per device and step (the parameter sets' ``train_batch_size``; TRL's
            ``per_device_train_batch_size``) (the paper: 1; 4 measured at 3-7 s/step on 2 CPU cores).
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
        eval_steps: with validation pairs, the validation loss every this many steps and at the last step, each time
            with a checkpoint; the adapter saved is the checkpoint of the lowest validation loss (the paper: 1000,
            ``load_best_model_at_end``). A run shorter than this is evaluated at its last step only, so it keeps its
            final weights. Without validation pairs a checkpoint is still saved every this many steps (to resume).
            ``reduce_lr_on_plateau`` steps on these evaluations.
        logging_steps: log the loss every this many steps (the first step is always logged).
        cpo_alpha: weight of CPO's behaviour-cloning term (``cpo`` only; SimPO always uses 0).
        rpo_alpha: weight a of RPO's NLL term (``rpo`` only): the loss is DPO's plus a times the mean negative
            log-likelihood of the chosen answers' tokens (Pang et al., 2024; TRL's ``loss_weights`` of ``sigmoid``
            and ``sft``, since ``rpo_alpha`` left TRL). It anchors the chosen answers' likelihood, which plain DPO
            lets fall (likelihood displacement).
        simpo_gamma: SimPO's target reward margin (TRL's default 0.5).
        device: ``cpu``, ``cuda``; None: cuda when available. On CPU ``use_cpu`` is passed to the trainer.
        bf16: bfloat16 autocast; None: on for CPUs that multiply bf16 fast (AMX, ARM BF16: about 1.7x faster than
            fp32 on AMX; emulated elsewhere, 4x slower, and slower with AVX512-BF16 alone, see
            :mod:`wow.backends.precision`) and for GPUs that support it. The weights stay fp32 on CPU. A run passes its resolved ``dtype``.
        cpu_threads: torch threads while training on CPU (restored afterwards); None keeps torch's default (one
            per core). On a machine shared with other busy processes use 1 (or start Python with
            ``OMP_WAIT_POLICY=PASSIVE``): OpenMP threads otherwise spin-wait for a descheduled sibling. Measured on
            2 shared cores, DPO on the default model at batch 4: 50-75 s/step with 2 threads, 7.6 s with 1, 8.2 s
            with 2 passive threads.
        progress: show the trainer's progress bar.
        quantization: ``none`` (LoRA on the unquantised model, any machine) or ``4bit`` (the paper's QLoRA: NF4,
            double quantisation, bfloat16 compute; a CUDA GPU and ``bitsandbytes``; see :mod:`wow.align.quantization`).
            ``4bit`` needs ``use_lora``.
        max_eval_pairs: the in-run validation reads at most this many validation pairs, a subset drawn with
            ``seed`` (HF's ``max_eval_samples``); None reads them all. A short training (``max_steps``) would
            otherwise spend more on its validation than on its steps (the demo: 39 pairs read after 8 trained).
        in_run_validation: ``always`` (the library's default): a training given validation pairs computes their loss;
            ``auto`` (a run's default): only where the loss chooses something, the best of several checkpoints, a
            ``reduce_lr_on_plateau`` schedule or a grid chosen by validation loss
            (:mod:`wow.align.in_run_validation`).
        gradient_checkpointing: recompute activations in the backward pass (less memory, one more forward pass of time;
            the paper: on). TRL's ``activation_checkpointing``.
        keep_checkpoints: keep ``checkpoints/`` (the trainer checkpoints) once the run is complete; by default it is
            removed then (for Llama-3-8B's adapter, about 0.5 GB a checkpoint with its optimiser state).
        report_to: experiment trackers (TRL's ``report_to``: ``tensorboard``, ``wandb``); none by default. TensorBoard
            logs land in the run's ``checkpoints/runs/``.
        precompute_ref_log_probs: DPO-family trainers compute the reference model's log-probability of each
            training and validation sequence once and reuse it, instead of one extra forward pass per step and per
            validation. With LoRA (the reference is the model with its adapters off) each sequence's value is
            computed on its first read and kept in a store shared by every training of the process, or of the run
            with ``reference_cache`` (:mod:`wow.align.reference_logps`): the arms of a stage that train on the same
            pairs with labels flipped (oracle, noisy, random), the points of a grid and its seeds compute it once.
            Full-weight training (``use_lora: false``) uses TRL's ``precompute_ref_log_probs`` instead, where the
            training reads every training pair (:func:`reads_every_pair`), so that no copy of the reference is kept
            in memory. False: TRL computes the reference per batch, nothing shared. CPO, SimPO and ORPO have no
            reference model.
        reference_cache: a wow cache file (a run's ``cache.sqlite``) in which the reference's log-probabilities are
            stored, so that other processes (Ray workers) and reruns reuse them; None keeps them in this process's
            memory only.
        shared_prompts: DPO-family trainers read each pair's prompt once per pass, both answers packed behind it
            (:mod:`wow.align.shared_prompts`): TRL's log-probabilities up to floating-point rounding, about half the
            tokens where the prompt is most of a pair. False: TRL's layout (each answer's row repeats the prompt).
    """

    learning_rate: float = 5e-5
    epochs: float = 3
    beta: float = 0.1
    train_batch_size: int = 4
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
    rpo_alpha: float = 1.0
    simpo_gamma: float = 0.5
    device: str | None = None
    bf16: bool | None = None
    cpu_threads: int | None = None
    progress: bool = True
    quantization: str = "none"
    gradient_checkpointing: bool = False
    keep_checkpoints: bool = False
    precompute_ref_log_probs: bool = True
    report_to: list[str] = dataclasses.field(default_factory=list)
    max_eval_pairs: int | None = None
    in_run_validation: str = "always"
    reference_cache: str | None = None
    shared_prompts: bool = True

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
                ``max_length``, a negative weight decay, a non-positive ``eval_steps``, an unknown ``in_run_validation``
                or ``quantization``, or a quantised full fine-tuning.
        """
        if self.lr_scheduler not in schema.SCHEDULERS:
            close = difflib.get_close_matches(self.lr_scheduler, schema.SCHEDULERS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise WowError(f"unknown lr_scheduler {self.lr_scheduler!r}{hint}; valid: {', '.join(schema.SCHEDULERS)}.")
        if not 0 < self.max_prompt_length < self.max_length:
            raise WowError(
                f"max_prompt_length ({self.max_prompt_length}) must be positive and below max_length "
                f"({self.max_length}), which leaves room for the answers (the paper: 512 and 1536)."
            )
        if self.weight_decay < 0:
            raise WowError(f"weight_decay must be >= 0; got {self.weight_decay}.")
        if self.eval_steps < 1:
            raise WowError(f"eval_steps must be >= 1; got {self.eval_steps}.")
        if self.max_eval_pairs is not None and self.max_eval_pairs < 1:
            raise WowError(f"max_eval_pairs must be >= 1 or None (all); got {self.max_eval_pairs}.")
        if self.in_run_validation not in VALIDATION_MODES:
            raise WowError(
                f"unknown in_run_validation {self.in_run_validation!r}; valid: {', '.join(VALIDATION_MODES)}."
            )
        if self.quantization not in QUANTIZATIONS:
            raise WowError(f"unknown quantization {self.quantization!r}; valid: {', '.join(QUANTIZATIONS)}.")
        if self.quantization != "none" and not self.use_lora:
            raise WowError(
                f"quantization {self.quantization} trains LoRA adapters on a frozen quantised model; set use_lora "
                "true, or quantization: none for full fine-tuning."
            )


def training_device(config: AlignConfig) -> str:
    import torch

    if config.device:
        return config.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def use_bf16(config: AlignConfig, device: str) -> bool:
    import torch

    if config.bf16 is not None:
        return config.bf16
    if config.quantization == "4bit":
        return True  # the compute dtype of the 4-bit layers
    if device == "cpu":
        from wow.backends import precision

        return precision.cpu_native_bf16()
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def reads_every_pair(config: AlignConfig, n_train: int | None, world_size: int = 1) -> bool:
    """True when the training reads each of its ``n_train`` pairs at least once: no ``max_steps``, or enough steps
    (``max_steps x train_batch_size x grad_accumulation x world_size >= n_train``); unknown ``n_train``: True."""
    if config.max_steps <= 0 or n_train is None:
        return True
    return config.max_steps * config.train_batch_size * config.grad_accumulation * world_size >= n_train


def trl_config(
    trainer: str,
    config: AlignConfig,
    output_dir: Path,
    device: str,
    has_validation: bool = False,
    n_train: int | None = None,
):
    """TRL's config of one run into ``output_dir`` (checkpoints in its ``checkpoints/``); with ``has_validation``
    the validation loss every ``eval_steps`` steps selects the checkpoint that is loaded at the end (the paper's
    ``load_best_model_at_end`` on ``eval_loss``, lower is better). ``n_train`` decides whether the reference's
    log-probabilities are precomputed by TRL (full-weight training only, :func:`reads_every_pair`; LoRA trainings
    share them instead: :mod:`wow.align.reference_logps`)."""
    family, method = schema.TRAINERS[trainer]
    common = dict(
        output_dir=str(checkpoints.folder(output_dir)),
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.train_batch_size,
        per_device_eval_batch_size=config.train_batch_size,
        gradient_accumulation_steps=config.grad_accumulation,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps (transformers 5)
        weight_decay=config.weight_decay,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        # a checkpoint every eval_steps and at the last step (transformers saves and evaluates there too)
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=checkpoints.SAVE_TOTAL_LIMIT,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=config.eval_steps if has_validation else None,
        load_best_model_at_end=has_validation,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        report_to=list(config.report_to) or "none",
        seed=config.seed,
        use_cpu=device == "cpu",
        bf16=use_bf16(config, device),
        activation_checkpointing=config.gradient_checkpointing,  # the new name of gradient_checkpointing
        disable_tqdm=not config.progress,
        max_length=config.max_length,
        beta=config.beta,
    )
    if family == "dpo":
        from trl import DPOConfig

        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        precompute = (
            config.precompute_ref_log_probs and not config.use_lora and reads_every_pair(config, n_train, world_size)
        )
        weights = {"loss_weights": [1.0, config.rpo_alpha]} if trainer == "rpo" else {}
        return DPOConfig(**common, **method, **weights, precompute_ref_log_probs=precompute)
    if family == "cpo":
        from trl.experimental.cpo import CPOConfig

        return CPOConfig(**common, **({"cpo_alpha": config.cpo_alpha} | method), simpo_gamma=config.simpo_gamma)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common, **method)


def trainer_class(trainer: str):
    family = schema.TRAINERS[trainer][0]
    if family == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    if family == "cpo":
        from trl.experimental.cpo import CPOTrainer

        return CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


def lora_config(config: AlignConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
